"""FaceDataset, load_image and the loader over a temp tree of awkward files."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from facenet_tf2pt.models.data.datasets import (NO_FACE, FaceDataset, ImageLoadError, ImageTooLargeError, collate_faces, crops_transform,
                         load_image, make_loader, scan_tree)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _halves(w, h, left, right, mode="RGB"):
    img = Image.new(mode, (w, h), left)
    img.paste(right, (w // 2, 0, w, h))
    return img


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    for d in ("alice", "bob", "carol", "dave", ".cache"):
        (root / d).mkdir()
    Image.new("L", (12, 10), 77).save(root / "alice" / "gray.png")
    rgba = Image.new("RGBA", (8, 8), (0, 128, 0, 255))
    rgba.paste((9, 9, 9, 0), (0, 0, 4, 8))            # left half fully transparent
    rgba.save(root / "alice" / "rgba.png")
    # 40x20 stored landscape, left red / right blue; EXIF orientation 6 = display rotated 90 deg clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    _halves(40, 20, RED, BLUE).save(root / "bob" / "rotated.jpg", exif=exif, quality=95)
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(root / "bob" / "cmyk.jpg", quality=95)   # pure red ink
    a16 = np.zeros((6, 8), np.uint16)
    a16[:, :4] = 65535
    a16[:, 4:] = 128 * 257
    Image.fromarray(a16).save(root / "carol" / "deep.png")
    frames = [Image.new("RGB", (10, 10), RED), Image.new("RGB", (10, 10), BLUE)]
    frames[0].save(root / "carol" / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    good = root / "dave" / "ok.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good, quality=90)      # noise: the entropy-coded data dominates the file
    data = good.read_bytes()
    assert len(data) > 3000
    (root / "dave" / "truncated.jpg").write_bytes(data[: len(data) * 3 // 4])   # header fine, data cut
    (root / "dave" / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    (root / "dave" / "notes.txt").write_text("not an image")
    Image.new("RGB", (8, 8)).save(root / "dave" / ".hidden.jpg")
    Image.new("RGB", (8, 8)).save(root / ".cache" / "x.jpg")
    Image.new("RGB", (9, 9), (1, 2, 3)).save(root / "loose.png")            # label ''
    return root


def test_scan_tree_labels_and_order(tree):
    paths, labels = scan_tree(tree)
    rel = [str(__import__("pathlib").Path(p).relative_to(tree)) for p in paths]
    assert rel == ["loose.png", "alice/gray.png", "alice/rgba.png", "bob/cmyk.jpg", "bob/rotated.jpg",
                   "carol/anim.gif", "carol/deep.png", "dave/garbage.png", "dave/ok.jpg", "dave/truncated.jpg"]
    assert labels == ["", "alice", "alice", "bob", "bob", "carol", "carol", "dave", "dave", "dave"]


def test_grayscale_to_rgb(tree):
    im = load_image(tree / "alice" / "gray.png")
    assert im.mode == "RGB" and im.size == (12, 10)
    assert im.getpixel((3, 3)) == (77, 77, 77)


def test_rgba_composited_on_white(tree):
    im = load_image(tree / "alice" / "rgba.png")
    assert im.mode == "RGB"
    assert im.getpixel((1, 1)) == (255, 255, 255)     # transparent -> background, not the hidden (9,9,9)
    assert im.getpixel((6, 6)) == (0, 128, 0)


def test_exif_orientation_applied(tree):
    with Image.open(tree / "bob" / "rotated.jpg") as raw:
        assert raw.size == (40, 20) and raw.getexif()[0x0112] == 6
    im = load_image(tree / "bob" / "rotated.jpg")
    assert im.size == (20, 40)                        # upright: portrait
    top, bottom = np.asarray(im)[5, 10].astype(int), np.asarray(im)[35, 10].astype(int)
    assert top[0] > 200 and top[2] < 60               # the stored left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_cmyk_to_rgb(tree):
    im = load_image(tree / "bob" / "cmyk.jpg")
    assert im.mode == "RGB"
    r, g, b = np.asarray(im)[5, 5].astype(int)
    assert r > 230 and g < 30 and b < 30


def test_16bit_scaled_not_clipped(tree):
    with Image.open(tree / "carol" / "deep.png") as raw:
        assert raw.mode.startswith("I")
    a = np.asarray(load_image(tree / "carol" / "deep.png"))
    assert a.dtype == np.uint8 and a.shape == (6, 8, 3)
    assert (a[:, :4] == 255).all() and (a[:, 4:] == 128).all()


def test_animated_gif_first_frame(tree):
    with Image.open(tree / "carol" / "anim.gif") as raw:
        assert raw.n_frames == 2
    im = load_image(tree / "carol" / "anim.gif")
    assert im.mode == "RGB" and im.getpixel((5, 5)) == RED


def test_corrupt_files_raise_with_path(tree):
    with pytest.raises(ImageLoadError) as e:
        load_image(tree / "dave" / "garbage.png")
    assert "garbage.png" in str(e.value) and "not an image" in e.value.reason
    with pytest.raises(ImageLoadError) as e:
        load_image(tree / "dave" / "truncated.jpg")
    assert "truncated.jpg" in str(e.value) and "truncated" in e.value.reason


def test_dataset_skips_and_reports(tree):
    ds = FaceDataset(tree)
    # garbage.png fails its header check at construction; truncated.jpg only when decoded
    assert [p.rsplit("/", 1)[-1] for p, _ in ds.skipped] == ["garbage.png"]
    assert len(ds) == 9
    assert ds.classes == ["", "alice", "bob", "carol", "dave"]
    items = [ds[i] for i in range(len(ds))]
    assert all(isinstance(it["image"], Image.Image) and it["image"].mode == "RGB" for it in items if not it["error"])
    bad = [it for it in items if it["error"]]
    assert [it["path"].rsplit("/", 1)[-1] for it in bad] == ["truncated.jpg"]
    assert ds.label_names[ds.paths.index(str(tree / "bob" / "cmyk.jpg"))] == "bob"


def test_loader_collects_failures_into_skipped(tree):
    ds = FaceDataset(tree, transform=crops_transform(16, "fixed"))
    batches = list(make_loader(ds, batch_size=4))
    n_images = sum(len(b) for b in batches)
    assert n_images == 8
    assert [len(b) for b in batches] == [4, 4, 0]     # the last batch held only truncated.jpg
    assert batches[-1].images.numel() == 0 and len(batches[-1].failed) == 1
    for b in batches[:2]:
        assert b.images.shape == (len(b), 3, 16, 16) and b.images.dtype == torch.float32
        assert b.images.min() >= -1 and b.images.max() <= 1
        assert [ds.classes[i] for i in b.labels.tolist()] == [ds.label_names[i] for i in b.indices.tolist()]
    reasons = dict(ds.skipped)
    assert set(p.rsplit("/", 1)[-1] for p in reasons) == {"garbage.png", "truncated.jpg"}
    assert "truncated" in reasons[str(tree / "dave" / "truncated.jpg")]


def test_loader_with_worker_process(tree):
    ds = FaceDataset(tree, transform=crops_transform(8, "prewhiten"))
    loader = make_loader(ds, batch_size=16, num_workers=1, device="cpu")
    assert loader.loader.pin_memory is False
    (batch,) = list(loader)
    assert len(batch) == 8 and batch.images.shape == (8, 3, 8, 8)
    assert "truncated.jpg" in " ".join(p for p, _ in ds.skipped)   # recorded in the main process


def test_pin_memory_follows_device(tree):
    ds = FaceDataset(tree, check_headers=False)
    assert make_loader(ds, device="cuda").loader.pin_memory is True
    assert make_loader(ds, device="cpu").loader.pin_memory is False


def test_strict_mode_raises(tree):
    with pytest.raises(ImageLoadError, match="garbage.png"):
        FaceDataset(tree, strict=True)
    ds = FaceDataset([tree / "dave" / "truncated.jpg"], strict=True)
    with pytest.raises(ImageLoadError, match="truncated.jpg"):
        ds[0]


def test_list_of_paths_with_labels(tree):
    paths = [tree / "alice" / "gray.png", tree / "carol" / "anim.gif"]
    ds = FaceDataset(paths, labels=["x", "y"])
    assert ds.root is None and ds.classes == ["x", "y"] and ds.targets == [0, 1]
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        FaceDataset(paths, labels=["x"])


def test_collate_tolerates_no_face():
    items = [
        {"image": torch.ones(3, 4, 4), "label": 0, "path": "a", "index": 0, "error": None},
        {"image": None, "label": 1, "path": "b", "index": 1, "error": None},           # detector: no face
        {"image": None, "label": 1, "path": "c", "index": 2, "error": "OSError: broken"},
        {"image": torch.zeros(3, 4, 4), "label": 2, "path": "d", "index": 3, "error": None},
    ]
    b = collate_faces(items)
    assert b.paths == ["a", "d"] and b.images.shape == (2, 3, 4, 4)
    assert b.labels.tolist() == [0, 2] and b.indices.tolist() == [0, 3]
    assert b.failed == [("b", NO_FACE), ("c", "OSError: broken")]
    empty = collate_faces(items[1:3])
    assert len(empty) == 0 and empty.images.numel() == 0 and len(empty.failed) == 2


def test_transform_returning_none_is_skipped(tree):
    ds = FaceDataset([tree / "alice" / "gray.png", tree / "loose.png"],
                     transform=lambda im: None if im.size == (12, 10) else crops_transform(8)(im))
    (b,) = list(make_loader(ds, batch_size=8))
    assert b.paths == [str(tree / "loose.png")]
    assert ds.skipped == [(str(tree / "alice" / "gray.png"), NO_FACE)]


def test_pixel_bound(tmp_path):
    Image.new("RGB", (120, 100), (50, 60, 70)).save(tmp_path / "big.png")
    Image.new("RGB", (160, 120), (50, 60, 70)).save(tmp_path / "big.jpg", quality=90)
    with pytest.raises(ImageTooLargeError, match=r"120x100.*max_pixels"):
        load_image(tmp_path / "big.png", max_pixels=5000)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        im = load_image(tmp_path / "big.jpg", max_pixels=5000)      # JPEG: decoded downscaled
    assert im.width * im.height <= 5000 and im.width > im.height
    assert any("decoded downscaled" in str(x.message) for x in w)
    ds = FaceDataset(tmp_path, max_pixels=5000)
    assert [p.rsplit("/", 1)[-1] for p, _ in ds.skipped] == ["big.png"]
    assert "decompression bomb" in ds.skipped[0][1]
    assert len(ds) == 1
    assert load_image(tmp_path / "big.png").size == (120, 100)      # default bound: fine
