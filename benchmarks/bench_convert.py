"""Conversion wall time and peak memory, each run in a fresh process as a user runs it:
the default (pure-Python checkpoint reader, our torch-format writer: neither TensorFlow nor torch
is imported), TensorFlow's reader, and the default with `import tensorflow` / `import torch` blocked."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Report the child's own peak RSS (KiB on Linux) after running the CLI in-process.
_MEASURE = ("import runpy, sys; sys.argv = ['facenet-convert', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('facenet_tf2pt.converter', run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
            "print('MAXRSS', hwm[0].split()[1], file=sys.stderr)\n"
            "sys.exit(code)")


def _run(prefix_args: list[str], args: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, *prefix_args, *args], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"conversion failed: {res.stderr[-2000:]}")
    rss = [line for line in res.stderr.splitlines() if line.startswith("MAXRSS")]
    return wall, (int(rss[-1].split()[1]) / 1024 if rss else float("nan"))


def run(report: dict, source: str | None = None, repeats: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            from facenet_tf2pt.converter.tf_graphs import write_fixture
            source = str(write_fixture(Path(tmp) / "fx", embedding_size=512, num_classes=17).directory)
        out = str(Path(tmp) / "out.pt")
        variants = {
            "pure reader (default)": (["-c", _MEASURE], ["convert", source, "-o", out, "-q"]),
            "TensorFlow reader": (["-c", _MEASURE], ["convert", source, "-o", out, "-q", "--reader", "tf"]),
            # peak RSS is not reported for this one (the blocker runs the CLI directly)
            "TensorFlow and torch blocked": ([str(REPO / "tools" / "without_tf.py"), "--also", "torch",
                                              "-m", "facenet_tf2pt.converter"],
                                   ["convert", source, "-o", out, "-q"]),
        }
        rows = {}
        for _ in range(repeats):  # interleaved, so load changes hit every variant alike
            for name, (prefix, args) in variants.items():
                rows.setdefault(name, []).append(_run(prefix, args))
    result = {name: {"wall_s_median": statistics.median(w for w, _ in runs),
                     "wall_s_min": min(w for w, _ in runs),
                     "peak_rss_mib": max(r for _, r in runs)} for name, runs in rows.items()}
    report["convert"] = {"source": source, "repeats": repeats, "variants": result}
    return report["convert"]


def format_table(entry: dict) -> str:
    base = entry["variants"]["TensorFlow reader"]["wall_s_median"]
    lines = [f"{'conversion (512-d fixture, fresh process)':<44}{'wall s (median)':>16}{'vs TF reader':>14}"
             f"{'peak RSS MiB':>14}"]
    for name, v in entry["variants"].items():
        lines.append(f"{name:<44}{v['wall_s_median']:>16.2f}{base / v['wall_s_median']:>13.2f}x"
                     f"{v['peak_rss_mib']:>14.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", help="model dir / checkpoint (default: build the 512-d fixture)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    report: dict = {}
    entry = run(report, a.source, a.repeats)
    print(format_table(entry))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
