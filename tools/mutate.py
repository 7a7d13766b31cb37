"""A short mutation check: plant one small bug at a time in a temporary copy of the tree, run the
tests that should notice it, and print mutant -> caught? / first failing test / time.

    python tools/mutate.py                 # every mutant (`make mutate`)
    python tools/mutate.py --list          # names, files and test selections
    python tools/mutate.py nms-rnet bn-eps # some of them
    python tools/mutate.py nms-rnet --tests tests/test_mtcnn_sandberg.py   # against other tests

The work tree is never modified: each mutant gets a fresh copy (without .git, virtual
environments and caches) in a temporary folder. A mutant is caught when its tests fail; it is
NOT caught when they pass, or when none of them ran (all skipped or deselected: the table shows
why). Exit status 0 only when every mutant was caught.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "*.egg-info",
                                "build", "dist", "out", "tf", ".whl", ".gl")


@dataclass(frozen=True)
class Mutant:
    name: str
    area: str
    file: str
    edits: tuple[tuple[str, str], ...]  # (exact text, replacement); each text must occur exactly once
    tests: tuple[str, ...]              # pytest node ids / files, optionally "file::-k expr"


# the detector's own parameters, the independent Sandberg reference, the cascade unit tests
DETECTOR_TESTS = ("tests/test_mtcnn_cascade_params.py", "tests/test_mtcnn_sandberg.py", "tests/test_mtcnn_detect.py")

MUTANTS = (
    Mutant("mapping-swap", "mapping: two same-shaped convs swapped (block35 branch2.1 <-> branch2.2)",
           "converter/mapping.py",
           (('("Branch_2/Conv2d_0b_3x3", "branch2.1", (3, 3, 32, 32))', '("Branch_2/Conv2d_0b_3x3", "branch2.2", (3, 3, 32, 32))'),
            ('("Branch_2/Conv2d_0c_3x3", "branch2.2", (3, 3, 32, 32))', '("Branch_2/Conv2d_0c_3x3", "branch2.1", (3, 3, 32, 32))')),
           ("tests/test_convert.py", "tests/test_verify.py")),
    Mutant("bn-eps", "model knob: BatchNorm epsilon 1e-3 -> 1e-5 (torch's default)",
           "models/nets/inception_resnet_v1.py",
           (("TF_BN_EPS = 1e-3 ", "TF_BN_EPS = 1e-5 "),),
           ("tests/test_model.py", "tests/test_verify.py")),
    Mutant("residual-scale", "model knob: block17 residual scale 0.10 -> 0.12",
           "models/nets/inception_resnet_v1.py",
           (("Block17(0.10, **bn)", "Block17(0.12, **bn)"),),
           ("tests/test_verify.py", "tests/test_convert.py")),
    Mutant("crc-off", "bundle reader: data crc32c mismatch ignored",
           "converter/bundle_reader.py",
           (("        if crc != unmask_crc(info.masked_crc):\n", "        if False and crc != unmask_crc(info.masked_crc):\n"),),
           ("tests/test_bundle_reader.py",)),
    Mutant("writer-not-atomic", "writer: targets written in place (truncate, write, fsync), no temp + rename",
           "models/common/atomic_io.py",
           (('    targets = [Path(p) for p in files]\n    orig = dict(zip(targets, files))\n',
             '    for p, data in files.items():  # MUTANT: in place\n'
             '        Path(p).parent.mkdir(parents=True, exist_ok=True)\n'
             '        with open(p, "wb") as f:\n'
             '            f.write(data)\n'
             '            f.flush()\n'
             '            os.fsync(f.fileno())\n'
             '    return\n'
             '    targets = [Path(p) for p in files]\n    orig = dict(zip(targets, files))\n'),),
           ("tests/test_faults.py",)),
    Mutant("nms-rnet", "detector: NMS after R-Net 0.7 -> 0.5 (one stage's threshold)",
           "models/detection/detect.py",
           (("NMS_RNET = 0.7", "NMS_RNET = 0.5"),),
           DETECTOR_TESTS),
    Mutant("nms-onet-union", "detector: O-Net NMS 'Min' -> 'Union'",
           "models/detection/detect.py",
           (('keep = batched_nms(boxes, score, img, NMS_ONET, mode=NMS_ONET_MODE)',
             'keep = batched_nms(boxes, score, img, NMS_ONET, mode="union")'),),
           DETECTOR_TESTS),
    Mutant("score-threshold", "detector: default R-Net score threshold 0.7 -> 0.6",
           "models/detection/mtcnn.py",
           (("thresholds: Sequence[float] = (0.6, 0.7, 0.7),", "thresholds: Sequence[float] = (0.6, 0.6, 0.7),"),),
           DETECTOR_TESTS),
    Mutant("fixed-std", "preprocessing: fixed standardization divides by 127.5 instead of 128",
           "models/data/preprocessing.py",
           (("    return (x - 127.5) / 128.0\n", "    return (x - 127.5) / 127.5\n"),),
           ("tests/test_preprocessing.py", "tests/test_fuzz.py")),
    Mutant("prewhiten-floor", "preprocessing: prewhiten's std floor 1/sqrt(n) -> 1/n",
           "models/data/preprocessing.py",
           (("    floor = 1.0 / math.sqrt(n)\n", "    floor = 1.0 / n\n"),),
           ("tests/test_preprocessing.py", "tests/test_fuzz.py")),
)


def apply(root: Path, mutant: Mutant) -> str | None:
    """Plant the mutant in the copy at root; returns why it cannot be planted (the code moved on)."""
    path = root / mutant.file
    text = path.read_text()
    for old, new in mutant.edits:
        n = text.count(old)
        if n != 1:
            return f"stale mutant: {old[:60]!r} occurs {n} times in {mutant.file}, not once (update tools/mutate.py)"
        text = text.replace(old, new)
    path.write_text(text)
    return None


def import_root(root: Path) -> Path:
    """A folder whose `facenet_tf2pt` is the copy at root (the repository root is the package): on
    PYTHONPATH it comes before the installed (editable) package, so the tests import the mutant."""
    shim = root.parent / f"{root.name}-import"
    shim.mkdir(exist_ok=True)
    link = shim / "facenet_tf2pt"
    if not link.exists():
        link.symlink_to(root, target_is_directory=True)
    return shim


def run_tests(root: Path, mutant: Mutant, timeout: float) -> tuple[str, str, float]:
    """(verdict, detail, seconds) for the mutant's test selection in the copy at root."""
    present = [t for t in mutant.tests if (root / t.split("::")[0]).is_file()]
    missing = [t for t in mutant.tests if t not in present]
    if not present:
        return "NOT CAUGHT", f"none of its test files exist: {', '.join(missing)}", 0.0
    env = dict(os.environ, PYTHONPATH=str(import_root(root)), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfs", "-p", "no:cacheprovider", *present]
    start = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "NOT CAUGHT", f"timed out after {timeout:.0f} s", time.perf_counter() - start
    took = time.perf_counter() - start
    out = r.stdout + r.stderr
    note = f" (missing: {', '.join(missing)})" if missing else ""
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    summary = (out.strip().splitlines() or ["no output"])[-1]
    if r.returncode == 1 and failed:
        return "caught", failed[0] + note, took
    if r.returncode == 0:
        passed = re.search(r"(\d+) passed", summary)
        why = "tests pass" if passed else "no test ran"
        return "NOT CAUGHT", f"{why}: {summary}{note}", took
    return "NOT CAUGHT", f"pytest exit {r.returncode}: {summary}{note}", took


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--tests", nargs="+", metavar="PATH", help="run the chosen mutants against these tests instead")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per mutant (default 1800)")
    args = ap.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:18} {m.file:32} {m.area}\n{'':18} tests: {' '.join(m.tests)}")
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        ap.error(f"unknown mutant(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[n] for n in args.names] if args.names else list(MUTANTS)
    if args.tests:
        from dataclasses import replace

        chosen = [replace(m, tests=tuple(args.tests)) for m in chosen]
    rows = []
    with tempfile.TemporaryDirectory(prefix="facenet-mutate-") as tmp:
        for m in chosen:
            root = Path(tmp) / m.name
            shutil.copytree(REPO, root, ignore=IGNORE)
            stale = apply(root, m)
            verdict, detail, took = ("NOT PLANTED", stale, 0.0) if stale else run_tests(root, m, args.timeout)
            shutil.rmtree(root, ignore_errors=True)
            rows.append((m.name, verdict, f"{took:.0f}", detail))
            print(f"{m.name:18} {verdict:10} {took:6.0f} s  {detail}", flush=True)
    print()
    print("| mutant | caught? | time (s) | first failing test / why not |")
    print("|---|---|---|---|")
    for name, verdict, took, detail in rows:
        print(f"| {name} | {verdict} | {took} | {detail} |")
    missed = [r[0] for r in rows if r[1] != "caught"]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} mutants caught" + (f"; missed: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
