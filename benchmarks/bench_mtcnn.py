"""MTCNN detection throughput (images/s) on a real photo at ~250 px and ~2000 px, batch 1 and 8,
and side by side with Sandberg's own detector (his detect_face.py under TensorFlow, same process,
same thread count) on photos of 512 px, 600 x 900 (three faces) and 1500 x 2000.

    python benchmarks/bench_mtcnn.py [--device cpu|cuda] [--threads N] [--min-seconds S]

``run(report)`` adds an ``mtcnn`` entry to ``report`` (a dict, for ``make bench``) and returns it.
The photo is skimage.data.astronaut() resized; a batch of 8 is a (8, H, W, 3) array of it.
Timing: one warm-up call, then repeated calls until ``min_seconds`` and at least 2 calls.
facenet-pytorch's MTCNN is not timed: it imports torchvision, which fails to import beside the
torch this project pins (2.13), and it cannot share this process's torch.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facenet_tf2pt.models.detection.mtcnn import MTCNN  # noqa: E402

SIZES = (250, 2000)
BATCHES = (1, 8)


def _photo(size: int) -> np.ndarray:
    from PIL import Image

    try:
        from skimage.data import astronaut
    except ImportError as e:  # pragma: no cover - scikit-image is in the test extra
        raise SystemExit(f"the MTCNN benchmark needs scikit-image for its photo ({e})")
    return np.asarray(Image.fromarray(astronaut()).resize((size, size), Image.BICUBIC))


def _time(fn, min_seconds: float, min_calls: int = 2) -> tuple[float, int]:
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= min_calls and elapsed >= min_seconds:
            return elapsed / calls, calls


def run(report: dict, device: str | None = None, threads: int | None = None, min_seconds: float = 2.0) -> dict:
    if threads:
        torch.set_num_threads(threads)
    mtcnn = MTCNN(device=device)
    rows = []
    for size in SIZES:
        photo = _photo(size)
        found = mtcnn.detect(photo)[0]
        for batch in BATCHES:
            data = photo if batch == 1 else np.stack([photo] * batch)
            per_call, calls = _time(lambda: mtcnn.detect(data), min_seconds)
            rows.append({
                "size": size, "batch": batch, "images_per_s": batch / per_call,
                "ms_per_call": per_call * 1000, "calls": calls, "faces": 0 if found is None else len(found),
            })
    entry = {
        "vs_sandberg": _vs_sandberg(mtcnn, min_seconds),
        "device": str(mtcnn.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "photo": "skimage.data.astronaut(), resized (bicubic)",
        "rows": rows,
    }
    report["mtcnn"] = entry
    return entry


COMPARED = ("astronaut", "three_sizes", "large_2000")
FACENET_PYTORCH = "n/a (its MTCNN imports torchvision, which fails to import beside torch 2.13)"


def _vs_sandberg(mtcnn, min_seconds: float) -> dict:
    """Our detect_faces vs Sandberg's detect_face on the same uint8 photos, one process."""
    import tempfile

    from facenet_tf2pt.converter import sandberg_mtcnn as sm
    from facenet_tf2pt.models.detection.detect import detect_faces

    try:
        with tempfile.TemporaryDirectory(prefix="sandberg-align-") as tmp:  # his weights load at creation
            theirs = sm.SandbergDetector(sm.extract_align(Path(tmp)), threads=torch.get_num_threads())
    except Exception as e:  # no package index, no TensorFlow, no OpenCV: say so in the table
        return {"error": f"Sandberg's detector unavailable: {type(e).__name__}: {e}", "rows": []}
    photos = sm.comparison_photos()
    rows = []
    for name in COMPARED:
        img = sm.as_rgb(photos[name])
        x = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
        ours_s, _ = _time(lambda: detect_faces(x, mtcnn.pnet, mtcnn.rnet, mtcnn.onet), min_seconds)
        theirs_s, _ = _time(lambda: theirs.detect(img), min_seconds)
        rows.append({"photo": name, "size": f"{img.shape[1]}x{img.shape[0]}", "faces": len(theirs.detect(img)[0]),
                     "project_images_per_s": 1 / ours_s, "sandberg_tf_images_per_s": 1 / theirs_s,
                     "ratio": theirs_s / ours_s, "facenet_pytorch": FACENET_PYTORCH})
    return {"rows": rows, "threads": torch.get_num_threads()}


def format_table(entry: dict) -> str:
    lines = [f"MTCNN detect throughput  (device {entry['device']}, torch {entry['torch']}, "
             f"{entry['threads']} threads)",
             f"{'photo':>12} {'batch':>6} {'images/s':>10} {'ms/call':>10} {'faces':>6}"]
    for r in entry["rows"]:
        lines.append(f"{r['size']:>9} px {r['batch']:>6} {r['images_per_s']:>10.2f} {r['ms_per_call']:>10.1f} {r['faces']:>6}")
    vs = entry.get("vs_sandberg", {})
    lines.append(f"MTCNN vs Sandberg's detect_face (TF), batch 1, {vs.get('threads')} threads  "
                 f"(facenet-pytorch: {FACENET_PYTORCH})")
    if vs.get("error"):
        lines.append(f"  {vs['error']}")
    lines.append(f"{'photo':>12} {'size':>10} {'faces':>6} {'project img/s':>14} {'Sandberg TF img/s':>18} {'ratio':>6}")
    for r in vs.get("rows", []):
        lines.append(f"{r['photo']:>12} {r['size']:>10} {r['faces']:>6} {r['project_images_per_s']:>14.2f} "
                     f"{r['sandberg_tf_images_per_s']:>18.2f} {r['ratio']:>6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    args = ap.parse_args(argv)
    report: dict = {}
    entry = run(report, device=args.device, threads=args.threads, min_seconds=args.min_seconds)
    print(format_table(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
