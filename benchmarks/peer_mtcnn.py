"""facenet-pytorch's MTCNN beside ours, one process, same torch, same threads: run by
benchmarks/bench_mtcnn.py with the peer venv's Python (`make peer-venv`), because facenet-pytorch
2.6.0 needs torchvision, which does not import beside the torch 2.13 this project pins.

    PEER_PYTHON benchmarks/peer_mtcnn.py PHOTOS.npz OUT.json [--min-seconds S] [--tune-malloc]
    PEER_PYTHON benchmarks/peer_mtcnn.py PHOTOS.npz OUT.npz --detections   # facenet-pytorch's faces

PHOTOS.npz holds uint8 RGB photos (the parent's comparison photos). Both detectors get the same
uint8 array, with their defaults (min face 20, thresholds 0.6/0.7/0.7, factor 0.709); timing is
interleaved rounds, the median round per detector. ``facenet_tf2pt`` must be importable (the
parent puts a link to this checkout on PYTHONPATH).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def _detections(photos_file: str, out: str) -> int:
    from facenet_pytorch import MTCNN as PeerMTCNN

    peer, found = PeerMTCNN(device="cpu"), {}
    with np.load(photos_file, allow_pickle=False) as photos:
        for name in photos.files:
            boxes, probs, points = peer.detect(photos[name], landmarks=True)
            if boxes is None:
                boxes, probs, points = np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
            found.update({f"{name}/boxes": np.asarray(boxes, np.float64), f"{name}/probs": np.asarray(probs, np.float64),
                          f"{name}/points": np.asarray(points, np.float64)})
    np.savez(out, **found)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos")
    ap.add_argument("out")
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tune-malloc", action="store_true")
    ap.add_argument("--detections", action="store_true",
                    help="write facenet-pytorch's boxes, probabilities and landmarks per photo instead")
    a = ap.parse_args(argv)
    if a.detections:
        return _detections(a.photos, a.out)
    from bench_mtcnn import _compare, _interleaved  # beside this script, on sys.path when run as one
    from facenet_tf2pt import MTCNN, tune_malloc

    tuning = str(tune_malloc()) if a.tune_malloc else "malloc: glibc's defaults (not tuned)"
    import facenet_pytorch
    from facenet_pytorch import MTCNN as PeerMTCNN

    ours, peer = MTCNN(), PeerMTCNN(device="cpu")
    rows = []
    with np.load(a.photos, allow_pickle=False) as photos:
        for name in photos.files:
            img = photos[name]
            detectors = {"project": lambda: ours.detect(img), "facenet_pytorch": lambda: peer.detect(img)}
            faces = {}
            for k, f in detectors.items():
                boxes = f()[0]
                faces[k] = 0 if boxes is None else len(boxes)
            t = _interleaved(detectors, a.min_seconds, a.rounds)
            ours_s, peer_s, ratio = _compare(t, "project", "facenet_pytorch")
            rows.append({"photo": name, "size": f"{img.shape[1]}x{img.shape[0]}", "faces": faces,
                         "project_images_per_s": 1 / ours_s, "facenet_pytorch_images_per_s": 1 / peer_s,
                         "ratio": ratio,
                         "round_ratios": [round(b / a, 3) for a, b in zip(t["project"], t["facenet_pytorch"])]})
    with open(a.out, "w") as f:
        json.dump({"rows": rows, "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "facenet_pytorch": getattr(facenet_pytorch, "__version__", "2.6.0"), "malloc": tuning}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
