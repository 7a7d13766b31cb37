"""`make bench`: every benchmark in one run, side by side, on one machine state.

Builds the 512-d Sandberg-format fixture once, converts it, then measures: inference (TF frozen
graph vs onnxruntime (tf2onnx) vs PyTorch plain / fuse() default / onnxruntime on our torch.onnx export /
eager fused / oneDNN Graph / fused bf16,
batch 1 and 32; rows this CPU can't run say "n/a (reason)"), conversion wall
time and peak memory (with and without TensorFlow), MTCNN detection, and `facenet embed`.
Prints the tables and writes everything as JSON (default out/bench.json). Timings are ratios
taken in one run; absolute numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(REPO / "out" / "bench.json"))
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, noisier)")
    ap.add_argument("--rounds", type=int, help="inference: interleaved rounds (default 5, --quick 3)")
    ap.add_argument("--round-seconds", type=float, help="inference: seconds per variant per round")
    ap.add_argument("--only", nargs="*", choices=("inference", "convert", "mtcnn", "embed"),
                    help="run only these sections")
    a = ap.parse_args(argv)
    sections = set(a.only or ("inference", "convert", "mtcnn", "embed"))
    from benchmarks import bench_convert, bench_embed, bench_inference, bench_mtcnn
    from facenet_tf2pt.converter.convert import convert
    from facenet_tf2pt.converter.tf_graphs import write_fixture

    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_avg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        fx = write_fixture(Path(tmp) / "fx512", embedding_size=512, num_classes=17, seed=0)
        weights = convert(fx.directory, Path(tmp) / "fx512.pt").output
        if "inference" in sections:
            print("== inference (160x160) ==", flush=True)
            bench_inference.run(report, str(fx.frozen_graph), pt_weights=str(weights),
                                rounds=a.rounds or (3 if a.quick else 5),
                                round_s=a.round_seconds or (0.5 if a.quick else 1.0))
        if "convert" in sections:
            print("\n== conversion ==", flush=True)
            print(bench_convert.format_table(bench_convert.run(report, str(fx.directory),
                                                               repeats=1 if a.quick else 3)))
    if "mtcnn" in sections:
        print("\n== MTCNN detection ==", flush=True)
        print(bench_mtcnn.format_table(bench_mtcnn.run(report, min_seconds=1.0 if a.quick else 2.0)))
    if "embed" in sections:
        print("\n== facenet embed ==", flush=True)
        report["embed"] = bench_embed.run({}, n_crops=64 if a.quick else 128, n_photos=8 if a.quick else 16)
        print(json.dumps(report["embed"], indent=2))
    report["load_avg_end"] = os.getloadavg()
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
