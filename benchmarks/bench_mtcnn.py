"""MTCNN detection throughput (images/s) on a real photo at ~250 px and ~2000 px, batch 1 and 8,
and side by side with Sandberg's own detector (his detect_face.py under TensorFlow, same process,
same thread count) and with facenet-pytorch 2.6.0's MTCNN, on photos of 512 px, 600 x 900 (three
faces) and 1500 x 2000.

    python benchmarks/bench_mtcnn.py [--device cpu|cuda] [--threads N] [--min-seconds S]

``run(report)`` adds an ``mtcnn`` entry to ``report`` (a dict, for ``make bench``) and returns it.
The process tunes glibc's malloc first, as the ``facenet`` CLI does (models/common/malloc.py); the
comparison with Sandberg is also run in a child process left with glibc's defaults, so both
figures are in the table. Every detector gets the same uint8 photo through its public API
(``MTCNN.detect``; his ``detect_face``). The photo of the throughput rows is
skimage.data.astronaut() resized; a batch of 8 is a (8, H, W, 3) array of it.
Timing: 5 interleaved rounds (ours, his, ours, ...), each until ``min_seconds / rounds``; images/s
from the median round of each, the ratio as the median of the per-round ratios (each round times
both side by side, so a drift of the machine's speed between rounds cancels; they are in the JSON). facenet-pytorch imports torchvision, which fails to import beside the torch 2.13
this project pins, so it runs in its own venv (``make peer-venv``: torch 2.14.1, torchvision
0.29.1, facenet-pytorch 2.6.0 without its torch<2.3 pin) in a child process that times ours
beside it on that torch (benchmarks/peer_mtcnn.py); without that venv its columns say n/a.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facenet_tf2pt.models.common.malloc import tune_malloc  # noqa: E402
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


def _interleaved(fns: dict, min_seconds: float, rounds: int = 5) -> dict[str, list[float]]:
    """Seconds per call of each function in each of ``rounds`` interleaved rounds."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(_time(fn, min_seconds / rounds, min_calls=1)[0])
    return times


def _compare(times: dict[str, list[float]], ours: str, theirs: str) -> tuple[float, float, float]:
    """(our median s/call, theirs, ratio): the ratio is the median of the per-round ratios, each
    round having timed both side by side, so a drift of the machine's speed between rounds cancels."""
    ratio = statistics.median(t / o for o, t in zip(times[ours], times[theirs]))
    return statistics.median(times[ours]), statistics.median(times[theirs]), ratio


def run(report: dict, device: str | None = None, threads: int | None = None, min_seconds: float = 2.0) -> dict:
    tuning = tune_malloc()  # as the facenet CLI: this process is ours
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
        "malloc": str(tuning),
        "vs_sandberg": {**_vs_sandberg(mtcnn, min_seconds), "malloc": str(tuning)},
        "vs_sandberg_default_malloc": _child_vs_sandberg(min_seconds, threads),
        "vs_facenet_pytorch": {mode: _vs_facenet_pytorch(min_seconds, mode == "tuned") for mode in ("tuned", "default")},
        "agreement": _agreement_or_error(mtcnn),
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
PEER_VENV = Path(os.environ.get("FACENET_PEER_VENV", Path.home() / ".cache" / "facenet-tf2pt" / "peer-venv"))


def _vs_sandberg(mtcnn, min_seconds: float) -> dict:
    """Our MTCNN.detect vs Sandberg's detect_face on the same uint8 photos, one process."""
    import tempfile

    from facenet_tf2pt.converter import sandberg_mtcnn as sm

    try:
        with tempfile.TemporaryDirectory(prefix="sandberg-align-") as tmp:  # his weights load at creation
            theirs = sm.SandbergDetector(sm.extract_align(Path(tmp)), threads=torch.get_num_threads())
    except Exception as e:  # no package index, no TensorFlow, no OpenCV: say so in the table
        return {"error": f"Sandberg's detector unavailable: {type(e).__name__}: {e}", "rows": []}
    photos = sm.comparison_photos()
    rows = []
    for name in COMPARED:
        img = sm.as_rgb(photos[name])
        t = _interleaved({"ours": lambda: mtcnn.detect(img), "theirs": lambda: theirs.detect(img)}, 2 * min_seconds)
        ours_s, theirs_s, ratio = _compare(t, "ours", "theirs")
        rows.append({"photo": name, "size": f"{img.shape[1]}x{img.shape[0]}", "faces": len(theirs.detect(img)[0]),
                     "project_images_per_s": 1 / ours_s, "sandberg_tf_images_per_s": 1 / theirs_s,
                     "ratio": ratio, "round_ratios": [round(b / a, 3) for a, b in zip(t["ours"], t["theirs"])]})
    return {"rows": rows, "threads": torch.get_num_threads()}


def _child_vs_sandberg(min_seconds: float, threads: int | None) -> dict:
    """The Sandberg comparison in a fresh process that keeps glibc's malloc defaults."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-mtcnn-") as tmp:
        out = Path(tmp) / "vs.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--vs-sandberg-only", "--no-tune-malloc",
               "--min-seconds", str(min_seconds), "--json", str(out)] + (["--threads", str(threads)] if threads else [])
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if res.returncode != 0:
            return {"error": f"child exited {res.returncode}: {res.stderr.strip()[-500:]}", "rows": []}
        return json.loads(out.read_text())


def _run_peer(tmp: str, photos: dict, out: str, *args: str) -> subprocess.CompletedProcess | None:
    """benchmarks/peer_mtcnn.py on ``photos`` under the peer venv's Python, with this checkout
    importable as ``facenet_tf2pt``; None when there is no peer venv."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        return None
    (Path(tmp) / "facenet_tf2pt").symlink_to(Path(__file__).resolve().parents[1])  # this checkout
    np.savez(Path(tmp) / "photos.npz", **photos)
    cmd = [str(python), str(Path(__file__).with_name("peer_mtcnn.py")), str(Path(tmp) / "photos.npz"), out, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env={**os.environ, "PYTHONPATH": tmp},
                          cwd=tmp)


def _vs_facenet_pytorch(min_seconds: float, tuned: bool) -> dict:
    """facenet-pytorch 2.6.0 beside ours in the peer venv (benchmarks/peer_mtcnn.py), if made."""
    import json
    import tempfile

    from facenet_tf2pt.converter import sandberg_mtcnn as sm

    photos = sm.comparison_photos()
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        out = str(Path(tmp) / "out.json")
        res = _run_peer(tmp, {n: sm.as_rgb(photos[n]) for n in COMPARED}, out, "--min-seconds", str(2 * min_seconds),
                        *(["--tune-malloc"] if tuned else []))
        if res is None:
            return {"error": f"n/a (no peer venv at {PEER_VENV}: make peer-venv)", "rows": []}
        if res.returncode != 0:
            return {"error": f"peer venv run exited {res.returncode}: {res.stderr.strip()[-500:]}", "rows": []}
        return json.loads(Path(out).read_text())


def _pairs(ref: np.ndarray, boxes: np.ndarray) -> list[tuple[int, float]]:
    """For each reference box, (index of the box overlapping it most, that IoU), with the
    detector's own overlap (Sandberg's +1 widths)."""
    from facenet_tf2pt.models.detection.detect import _overlap_rows

    if len(boxes) == 0:
        return [(-1, 0.0)] * len(ref)
    ious = _overlap_rows(torch.as_tensor(ref, dtype=torch.float64)[None],
                         torch.as_tensor(boxes, dtype=torch.float64)[None], "union")[0]
    best = ious.max(dim=1)
    return list(zip(best.indices.tolist(), best.values.tolist()))


def agreement(mtcnn) -> dict:
    """Ours and (from the peer venv) facenet-pytorch's detections against Sandberg's detect_face on
    the comparison photos (tests/test_mtcnn_sandberg.py's), each of his faces paired with the box
    overlapping it most: photos with his face count, IoU quantiles, share of faces at IoU >= 0.99,
    landmark error (max over the 5 points, px) and probability error."""
    import tempfile

    from facenet_tf2pt.converter import sandberg_mtcnn as sm

    photos = {n: sm.as_rgb(p) for n, p in sm.comparison_photos().items()}
    with tempfile.TemporaryDirectory(prefix="bench-agree-") as tmp:
        theirs = sm.SandbergDetector(sm.extract_align(Path(tmp)), threads=torch.get_num_threads())
        found = {"project": {n: mtcnn.detect(img, landmarks=True) for n, img in photos.items()}}
        res = _run_peer(tmp, photos, str(Path(tmp) / "peer.npz"), "--detections")
        if res is not None and res.returncode == 0:
            with np.load(Path(tmp) / "peer.npz", allow_pickle=False) as z:
                found["facenet_pytorch"] = {n: (z[f"{n}/boxes"], z[f"{n}/probs"], z[f"{n}/points"]) for n in photos}
        ref = {n: theirs.detect(img) for n, img in photos.items()}
    table = {}
    for who, dets in found.items():
        same, ious, lms, prob = 0, [], [], []
        for n, (boxes, probs, points) in dets.items():
            rb, rp = ref[n]
            boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes)
            same += len(boxes) == len(rb)
            for i, (j, o) in enumerate(_pairs(rb[:, :4], boxes)):
                ious.append(o)
                if j >= 0:
                    lms.append(float(np.abs(rp[i] - np.asarray(points)[j]).max()))
                    prob.append(abs(float(rb[i, 4]) - float(np.asarray(probs)[j])))
        q = np.quantile(ious, [0, 0.5]) if ious else [float("nan")] * 2
        table[who] = {"photos": len(dets), "same_count": int(same), "faces": len(ious), "iou_min": float(q[0]),
                      "iou_median": float(q[1]), "iou_ge_099": float(np.mean(np.array(ious) >= 0.99)),
                      "landmarks_median_px": float(np.median(lms)), "landmarks_max_px": float(np.max(lms)),
                      "prob_max": float(np.max(prob))}
    return table


def _agreement_or_error(mtcnn) -> dict:
    try:
        return agreement(mtcnn)
    except Exception as e:  # no package index, no TensorFlow, no OpenCV: say so in the table
        return {"error": f"Sandberg's detector unavailable: {type(e).__name__}: {e}"}


def _comparison(title: str, vs: dict, peer: str, peer_key: str) -> list[str]:
    lines = [f"{title}  [{vs.get('malloc', '')}; {vs.get('threads')} threads{vs.get('torch') and ', torch ' + vs['torch'] or ''}]"]
    if vs.get("error"):
        return lines + [f"  {vs['error']}"]
    lines.append(f"{'photo':>12} {'size':>10} {'faces':>6} {'project img/s':>14} {peer + ' img/s':>22} {'ratio':>6}")
    for r in vs.get("rows", []):
        faces = r["faces"] if not isinstance(r["faces"], dict) else "/".join(str(v) for v in r["faces"].values())
        lines.append(f"{r['photo']:>12} {r['size']:>10} {faces:>6} {r['project_images_per_s']:>14.2f} "
                     f"{r[peer_key]:>22.2f} {r['ratio']:>6.2f}")
    return lines


def format_table(entry: dict) -> str:
    lines = [f"MTCNN detect throughput  (device {entry['device']}, torch {entry['torch']}, "
             f"{entry['threads']} threads; {entry.get('malloc')})",
             f"{'photo':>12} {'batch':>6} {'images/s':>10} {'ms/call':>10} {'faces':>6}"]
    for r in entry["rows"]:
        lines.append(f"{r['size']:>9} px {r['batch']:>6} {r['images_per_s']:>10.2f} {r['ms_per_call']:>10.1f} {r['faces']:>6}")
    for key in ("vs_sandberg", "vs_sandberg_default_malloc"):  # the bracket says which malloc
        lines += _comparison("MTCNN vs Sandberg's detect_face (TF), one process", entry.get(key, {}), "Sandberg TF",
                             "sandberg_tf_images_per_s")
    for mode, vs in entry.get("vs_facenet_pytorch", {}).items():
        lines += _comparison("MTCNN vs facenet-pytorch 2.6.0 (peer venv), one process", vs, "facenet-pytorch",
                             "facenet_pytorch_images_per_s")
    agree = entry.get("agreement", {})
    lines.append("Agreement with Sandberg's detect_face on the comparison photos (his faces paired by overlap)")
    if agree.get("error"):
        lines.append(f"  {agree['error']}")
    lines.append(f"{'detector':>16} {'same count':>11} {'faces':>6} {'IoU min':>9} {'IoU median':>11} "
                 f"{'IoU>=0.99':>10} {'landmarks median/max px':>24} {'prob max':>9}")
    for who, a in agree.items():
        if who != "error":
            lines.append(f"{who:>16} {a['same_count']:>5} / {a['photos']:<3} {a['faces']:>6} {a['iou_min']:>9.4f} "
                         f"{a['iou_median']:>11.4f} {100 * a['iou_ge_099']:>9.0f}% "
                         f"{a['landmarks_median_px']:>11.2e} / {a['landmarks_max_px']:<10.2e} {a['prob_max']:>9.1e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--vs-sandberg-only", action="store_true", help="only the comparison with Sandberg's detector")
    ap.add_argument("--no-tune-malloc", action="store_true", help="keep glibc's malloc defaults")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    if args.vs_sandberg_only:
        malloc = "malloc: glibc's defaults (not tuned)" if args.no_tune_malloc else str(tune_malloc())
        if args.threads:
            torch.set_num_threads(args.threads)
        entry = {**_vs_sandberg(MTCNN(device=args.device), args.min_seconds), "malloc": malloc}
    else:
        entry = run({}, device=args.device, threads=args.threads, min_seconds=args.min_seconds)
        print(format_table(entry))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
