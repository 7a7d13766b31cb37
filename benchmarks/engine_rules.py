"""Measure the rules behind `fuse(impl="auto")`: eager fused (oneDNN prepacked / ATen convs), oneDNN
Graph, onnxruntime (when installed) and the plain model, side by side in one process, as ratios to the plain model.

    python -m benchmarks.engine_rules [--batches 1,4,32] [--rounds 5]
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m benchmarks.engine_rules   # AVX2 class

Engines are timed in interleaved rounds, so a neighbour's load hits them alike; the best round of
each is reported (a neighbour only ever slows a round down), the ratio of the medians beside it.
The result is a table of images/s and x plain per engine and batch; models/engines/engine_rules.py holds the
rules read from it (quote the table and the CPU class there when you change them).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_inference import random_model  # noqa: E402
from facenet_tf2pt.models.engines.cpu_caps import current  # noqa: E402
from facenet_tf2pt.models.engines.fused import fuse_inception  # noqa: E402


def measure(batches=(1, 32), rounds: int = 5, round_s: float = 0.5, image_size: int = 160) -> dict:
    model = random_model(512)
    engines = {"plain": model, "fused-onednn": fuse_inception(model, impl="onednn"),
               "fused-aten": fuse_inception(model, impl="aten"), "graph": fuse_inception(model, impl="graph")}
    if current().onnxruntime:
        engines["onnxruntime"] = fuse_inception(model, impl="onnxruntime")
    out = {}
    for b in batches:
        x = torch.randn(b, 3, image_size, image_size)
        times = {k: [] for k in engines}
        with torch.inference_mode():
            for m in engines.values():
                m(x)  # warm-up (and the graph's compile)
            for _ in range(rounds):
                for name, m in engines.items():
                    n, t0 = 0, time.perf_counter()
                    while n == 0 or time.perf_counter() - t0 < round_s:
                        m(x)
                        n += 1
                    times[name].append((time.perf_counter() - t0) / n)
        # the best round: on a shared machine a neighbour only ever slows a round down
        best = {k: min(v) for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        out[b] = {k: {"images_per_s": b / t, "x_plain": best["plain"] / t,
                      "x_plain_median": med["plain"] / med[k]} for k, t in best.items()}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,32")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--round-seconds", type=float, default=0.3)
    a = p.parse_args(argv)
    caps = current()
    print(f"{caps.cpu_model}: class {caps.isa_class}, {caps.describe()}, torch threads {torch.get_num_threads()}")
    res = measure(tuple(int(b) for b in a.batches.split(",")), a.rounds, a.round_seconds)
    for b, rows in res.items():
        print(f"batch {b}: " + ", ".join(f"{k} {r['images_per_s']:.1f} img/s ({r['x_plain']:.2f}x plain, "
                                         f"medians {r['x_plain_median']:.2f}x)"
                                         for k, r in rows.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
