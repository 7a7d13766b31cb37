"""The cascade's parameters are Sandberg's, stage by stage (docs/reference.md, "MTCNN"): which NMS
threshold and overlap each stage uses, and the defaults the detector hands to the cascade.

The box-level comparison with Sandberg's own detect_face lives in test_mtcnn_sandberg.py; this
file pins the per-stage settings directly, so that a change to one stage's NMS threshold fails
even where that comparison cannot run."""
from __future__ import annotations

from facenet_tf2pt.models.detection import detect
from facenet_tf2pt.models.detection import mtcnn

# Sandberg src/align/detect_face.py lines 336, 343, 377, 414: nms(boxes, threshold, method), in
# cascade order (within a P-Net scale, across scales, after R-Net, after O-Net).
SANDBERG_NMS = [(0.5, "union"), (0.7, "union"), (0.7, "union"), (0.7, "min")]
# Sandberg src/align/align_dataset_mtcnn.py lines 57-59.
SANDBERG_DEFAULTS = {"min_face_size": 20, "thresholds": (0.6, 0.7, 0.7), "factor": 0.709}


def test_each_stage_uses_sandbergs_nms(astronaut, monkeypatch):
    calls = []
    real = detect.batched_nms

    def spy(boxes, scores, groups, threshold, mode="union"):
        calls.append((threshold, mode.lower()))
        return real(boxes, scores, groups, threshold, mode)

    monkeypatch.setattr(detect, "batched_nms", spy)
    boxes, _ = mtcnn.MTCNN().detect(astronaut)
    assert boxes is not None and len(boxes) >= 1, "the photo's face reaches the last stage"
    assert calls == SANDBERG_NMS


def test_detector_defaults_reach_the_cascade(astronaut, monkeypatch):
    seen = {}
    real = detect.detect_faces

    def spy(images, pnet, rnet, onet, min_face_size, thresholds, factor):
        seen.update(min_face_size=min_face_size, thresholds=tuple(thresholds), factor=factor)
        return real(images, pnet, rnet, onet, min_face_size, thresholds, factor)

    monkeypatch.setattr(mtcnn, "detect_faces", spy)
    mtcnn.MTCNN().detect(astronaut[::4, ::4].copy())
    assert seen == SANDBERG_DEFAULTS
