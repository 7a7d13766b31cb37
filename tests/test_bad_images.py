"""Awkward and hostile image files, through the dataset (models.data.datasets: FaceDataset + make_loader)
and through MTCNN: a truncated JPEG, a zero-byte file, a 1x1 image, a 10000x10000 JPEG and a
10000x10000 PNG header (decompression bombs), a 16-bit PNG (grey and RGB), a CMYK JPEG and an
animated GIF (the first frame counts).

Unreadable files are set aside with their path and a reason, never a crash and never a lost
batch; readable ones come out RGB; MTCNN finds the face in the converted photos and nothing in
the blank ones. Memory for the 10000x10000 photo is measured as peak RSS in subprocesses: the
dataset must decode it downscaled within a bound, and MTCNN must refuse it with a message
(and stay within a bound on the largest frame it accepts).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facenet_tf2pt.models.data.datasets import MAX_PIXELS, FaceDataset, ImageLoadError, load_image, make_loader
from facenet_tf2pt.models.detection.mtcnn import MTCNN
from tests.helpers import REPO, linux_only

HUGE = 10_000


def _png(path: Path, width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> Path:
    """A PNG written chunk by chunk (Pillow cannot write 48-bit RGB, nor a lying header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw_rows))
                     + chunk(b"IEND", b""))
    return path


def _huge_jpeg(path: Path) -> Path:
    """10000 x 10000 (grey with a red square), written in a subprocess: 300 MB never enter this one."""
    code = ("import sys; from PIL import Image; im = Image.new('RGB', (%d, %d), (128, 128, 128)); "
            "im.paste((200, 40, 40), (2000, 2000, 6000, 6000)); im.save(sys.argv[1], quality=80)" % (HUGE, HUGE))
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=300)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory, astronaut) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad_images")
    photo = Image.fromarray(astronaut)
    p = {}
    photo.save(d / "photo.jpg", quality=92)
    data = (d / "photo.jpg").read_bytes()
    p["truncated.jpg"] = d / "truncated.jpg"
    p["truncated.jpg"].write_bytes(data[: len(data) * 6 // 10])
    p["zero-bytes.jpg"] = d / "zero-bytes.jpg"
    p["zero-bytes.jpg"].write_bytes(b"")
    p["one-pixel.png"] = d / "one-pixel.png"
    Image.new("RGB", (1, 1), (10, 200, 30)).save(p["one-pixel.png"])
    # 16-bit: grey (Pillow mode I;16) and 48-bit RGB, values x257 so 8-bit == original
    grey16 = (np.asarray(photo.convert("L")).astype(np.uint16) * 257)
    p["grey16.png"] = d / "grey16.png"
    Image.fromarray(grey16).save(p["grey16.png"])
    rgb16 = astronaut.astype(">u2") * 257
    rows = b"".join(b"\x00" + rgb16[y].tobytes() for y in range(rgb16.shape[0]))
    p["rgb48.png"] = _png(d / "rgb48.png", 512, 512, 16, 2, rows)
    p["cmyk.jpg"] = d / "cmyk.jpg"
    photo.convert("CMYK").save(p["cmyk.jpg"], quality=95)
    p["animated.gif"] = d / "animated.gif"
    frames = [photo.quantize(256), Image.new("RGB", (512, 512), (90, 90, 90)).quantize(8)]
    frames[0].save(p["animated.gif"], save_all=True, append_images=frames[1:], duration=50, loop=0)
    # a decompression-bomb PNG: the header claims 10000 x 10000, the data is one empty row
    p["bomb.png"] = _png(d / "bomb.png", HUGE, HUGE, 8, 2, b"\x00" * (1 + 3 * HUGE))
    p["huge.jpg"] = _huge_jpeg(d / "huge.jpg")
    return p


READABLE = ["one-pixel.png", "grey16.png", "rgb48.png", "cmyk.jpg", "animated.gif"]
FACES = ["grey16.png", "rgb48.png", "cmyk.jpg", "animated.gif"]     # the astronaut, converted


@pytest.fixture(scope="module")
def mtcnn() -> MTCNN:
    return MTCNN()


@pytest.fixture(scope="module")
def reference_box(mtcnn, astronaut):
    boxes, _ = mtcnn.detect(astronaut)
    return boxes[0]


def test_dataset_sets_aside_the_unreadable_and_decodes_the_rest(images):
    names = ["truncated.jpg", "zero-bytes.jpg", "bomb.png", *READABLE]
    ds = FaceDataset([images[n] for n in names], labels=names)
    # header check at construction: the empty file and the bomb never get decoded
    skipped = dict(ds.skipped)
    assert set(skipped) == {str(images["zero-bytes.jpg"]), str(images["bomb.png"])}, ds.skipped
    assert "not an image" in skipped[str(images["zero-bytes.jpg"])]
    assert "decompression bomb" in skipped[str(images["bomb.png"])]
    # decode errors surface while loading, as (path, reason), without losing the batch
    seen = {}
    for batch in make_loader(ds, batch_size=3):
        for path, img in zip(batch.paths, batch.images):
            seen[Path(path).name] = img
    skipped = dict(ds.skipped)
    assert "truncated" in skipped[str(images["truncated.jpg"])], ds.skipped
    assert sorted(seen) == sorted(READABLE)
    for name, img in seen.items():
        assert isinstance(img, Image.Image) and img.mode == "RGB", name
    assert seen["one-pixel.png"].size == (1, 1) and seen["one-pixel.png"].getpixel((0, 0)) == (10, 200, 30)


def test_converted_pixels_are_right(images, astronaut):
    grey = np.asarray(load_image(images["grey16.png"]))
    expected_grey = np.asarray(Image.fromarray(astronaut).convert("L"))
    assert np.array_equal(grey[..., 0], expected_grey) and np.array_equal(grey[..., 0], grey[..., 2])
    assert np.array_equal(np.asarray(load_image(images["rgb48.png"])), astronaut)      # 16 -> 8 bits exactly
    cmyk = np.asarray(load_image(images["cmyk.jpg"])).astype(int)
    assert np.abs(cmyk - astronaut).mean() < 12                                      # JPEG + CMYK round trip
    first = np.asarray(load_image(images["animated.gif"])).astype(int)
    assert np.abs(first - astronaut).mean() < 12                                     # frame 0, not the grey one


def test_mtcnn_on_what_the_dataset_gives(images, mtcnn, reference_box):
    decoded = {n: load_image(images[n]) for n in READABLE}
    boxes, probs = mtcnn.detect([decoded[n] for n in READABLE])   # a list of mixed sizes and sources
    found = dict(zip(READABLE, boxes))
    assert found["one-pixel.png"] is None
    for name in FACES:
        assert found[name] is not None and len(found[name]) == 1, name
        assert np.abs(found[name][0] - reference_box).max() < 12, (name, found[name], reference_box)
    # the crop path too: a 1x1 image gives None, a face gives a (3, 160, 160) tensor
    assert mtcnn(decoded["one-pixel.png"]) is None
    face = mtcnn(decoded["cmyk.jpg"])
    assert isinstance(face, torch.Tensor) and face.shape == (3, 160, 160)


def test_mtcnn_takes_pil_images_of_any_mode_directly(images, mtcnn):
    """What users pass without the dataset: Image.open() results, 16-bit, CMYK, palette, 1x1."""
    for name in READABLE:
        with Image.open(images[name]) as im:
            boxes, probs = mtcnn.detect(im)
        assert (boxes is None) == (name == "one-pixel.png"), name


def test_mtcnn_refuses_a_huge_frame_before_decoding_it(images, mtcnn):
    for name in ("huge.jpg", "bomb.png"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(images[name]) as im:        # lazy: nothing decoded yet
                with pytest.raises(ValueError, match=r"10000x10000 = 100 MP is over MTCNN's limit.*max_pixels"):
                    mtcnn.detect(im)
    big = np.zeros((HUGE, 5001, 3), np.uint8)[:, :5001]
    with pytest.raises(ValueError, match="max_pixels"):
        mtcnn.detect(big)


def test_load_image_strict_errors_name_the_file(images):
    for name in ("truncated.jpg", "zero-bytes.jpg", "bomb.png"):
        with pytest.raises(ImageLoadError) as e:
            load_image(images[name])
        assert str(images[name]) in str(e.value)


# --- memory for the 10000 x 10000 photo, measured in subprocesses --------------------------------

_MEASURE = r"""
import json, resource, sys, warnings
import numpy as np

def rss_mb():                       # current resident set, from /proc
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def peak_mb():                      # this process image's high-water mark (VmHWM; unlike ru_maxrss,
    with open("/proc/self/status") as f:   # it does not inherit the forking parent's size)
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024

what, arg = sys.argv[1], sys.argv[2]
import torch
if what == "dataset":
    from facenet_tf2pt.models.data.datasets import FaceDataset
    ds = FaceDataset([arg])
    before = rss_mb()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        item = ds[0]
    im = item["image"]
    out = {"size": list(im.size), "mode": im.mode, "error": item["error"],
           "warnings": [str(w.message) for w in caught]}
else:
    from facenet_tf2pt.models.detection.mtcnn import MTCNN
    mtcnn = MTCNN()
    side = int(arg)
    frame = np.full((side, side, 3), 128, np.uint8)
    frame[side // 4: side // 2, side // 4: side // 2] = (200, 40, 40)
    before = rss_mb()
    boxes, probs = mtcnn.detect(frame)
    out = {"faces": 0 if boxes is None else len(boxes), "pixels": side * side}
out.update(before_mb=before, peak_mb=peak_mb())
print(json.dumps(out))
"""


def _child_env() -> dict:
    """A minimal environment (one thread), keeping PYTHONPATH: it decides which tree's
    facenet_tf2pt runs (a worktree, `make mutate`'s copy) when the package is also installed."""
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _measure(*args) -> dict:
    r = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, args)], cwd=REPO, capture_output=True,
                       text=True, timeout=600, env=_child_env())
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@linux_only("peak memory is read from /proc/self/status (VmHWM)")
def test_dataset_decodes_the_huge_photo_downscaled_in_bounded_memory(images):
    m = _measure("dataset", images["huge.jpg"])
    w, h = m["size"]
    assert m["error"] is None and m["mode"] == "RGB"
    assert w == h and w * h <= MAX_PIXELS and w >= 2500, m           # downscaled, not refused
    assert any("decoded downscaled" in x for x in m["warnings"]), m   # and the user is told
    # The result is <= MAX_PIXELS x 3 bytes (150 MB). Allow the decode ~3 such buffers; a full-size
    # decode of all 100 MP plus a full-size copy (what an unbounded path does) is ~4x more.
    budget_mb = 10 * MAX_PIXELS / 2**20
    assert m["peak_mb"] - m["before_mb"] <= budget_mb, (
        f"decoding a {HUGE}x{HUGE} JPEG took {m['peak_mb'] - m['before_mb']:.0f} MB over the "
        f"{m['before_mb']:.0f} MB baseline (budget {budget_mb:.0f} MB): {m}")


@linux_only("peak memory is read from /proc/self/status (VmHWM)")
def test_mtcnn_memory_on_the_largest_frame_it_accepts():
    side = int(MAX_PIXELS ** 0.5)                 # what the dataset hands over for a huge photo
    m = _measure("mtcnn", side)
    assert m["faces"] == 0
    per_pixel = (m["peak_mb"] - m["before_mb"]) * 2**20 / m["pixels"]
    # float32 frame (12 B/px) + its pyramid (~5 B/px) + P-Net strips: well under 40 B/px
    assert per_pixel < 40, m


def test_pnet_strips_equal_the_unsplit_net(monkeypatch):
    """The strip-wise P-Net (large levels) gives the same maps as one call on the whole level."""
    from facenet_tf2pt.models.detection import detect
    from facenet_tf2pt.models.detection.mtcnn import load_net

    pnet = load_net("pnet")
    torch.manual_seed(0)
    monkeypatch.setattr(detect, "PNET_CHUNK_PIXELS", 2048)      # many small strips
    for h, w in [(12, 40), (13, 40), (97, 61), (200, 150), (201, 33)]:
        x = torch.rand(1, 3, h, w) * 255
        with torch.inference_mode():
            whole = pnet(detect._channels_last(detect.normalize(x)))
            strips = detect._pnet_in_strips(pnet, x)
        for a, b in zip(whole, strips):
            assert a.shape == b.shape, (h, w)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
