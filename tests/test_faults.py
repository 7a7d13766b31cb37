"""Faults while writing, and determinism.

- A converter killed (SIGKILL) while its output is being written, or at the rename, leaves the
  previous output byte-identical, and no temp file survives the next run.
- A write that fails (disk full, file-size limit) leaves the previous output and no temp file,
  and the CLI says so with exit code 2 instead of a traceback.
- Conversion is deterministic: identical bytes across runs and thread counts.
The kills and the file-size limit run the real CLI in a subprocess; the disk-full cases patch
`os.fsync` (where a full disk shows up on a real system) in-process.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from facenet_tf2pt.converter import cli
from tests.helpers import REPO, linux_only, run_cli, tree_snapshot

LINUX_HOOKS = linux_only("the kill hooks read /proc/self/fd and rely on SIGKILL")

# Runs `facenet-convert ARGS` with os.fsync / os.replace turned into hooks: at the first call
# that concerns a file in OUT_DIR, the process says so (creates READY) and sleeps until killed.
_HOOKED_CLI = r"""
import os, sys, time
where, ready, out_dir = sys.argv[1], sys.argv[2], os.path.realpath(sys.argv[3])
real = {"fsync": os.fsync, "replace": os.replace}

def ours(name, args):
    path = os.readlink(f"/proc/self/fd/{args[0]}") if name == "fsync" else os.fspath(args[0])
    return os.path.realpath(path.split(" (deleted)")[0]).startswith(out_dir)

def hook(name):
    def call(*args):
        if name == where and ours(name, args):
            open(ready, "w").close()
            time.sleep(600)
        return real[name](*args)
    return call

os.fsync, os.replace = hook("fsync"), hook("replace")
from facenet_tf2pt.converter.cli import main
sys.exit(main(sys.argv[4:]))
"""


def _previous_outputs(out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"previous": torch.arange(6.0)}, out_dir / "model.pt")
    (out_dir / "model.pt.json").write_text('{"previous": true}\n')
    return tree_snapshot(out_dir)


def _previous_mtcnn(out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    for net in ("pnet", "rnet", "onet"):
        torch.save({net: torch.ones(3)}, out_dir / f"{net}.pt")
    (out_dir / "manifest.json").write_text('{"previous": true}\n')
    return tree_snapshot(out_dir)


def _kill_when_ready(proc: subprocess.Popen, ready: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the converter ended (exit {proc.returncode}) before reaching the hook:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the converter never reached the hook")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@LINUX_HOOKS
@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_sigkill_while_writing_keeps_previous_output(where, fixture128, tmp_path):
    """fsync: the new bytes are written but not yet durable; replace: about to rename into place."""
    out_dir = tmp_path / "out"
    before = _previous_outputs(out_dir)
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOOKED_CLI, where, str(ready), str(out_dir), "convert", str(fixture128.directory),
         "-o", str(out_dir / "model.pt"), "-q"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when_ready(proc, ready)

    after = tree_snapshot(out_dir)
    assert {k: after[k] for k in before} == before, "the previous output changed"
    if where == "fsync":   # killed mid-write: not even a temp file may be left
        assert sorted(after) == sorted(before), f"left behind: {sorted(set(after) - set(before))}"

    # the next run replaces the output and clears whatever the killed one left behind
    assert cli.main(["convert", str(fixture128.directory), "-o", str(out_dir / "model.pt"), "-q"]) == 0
    assert sorted(os.listdir(out_dir)) == ["model.pt", "model.pt.json"]
    assert "last_linear.weight" in torch.load(out_dir / "model.pt", weights_only=True)


@LINUX_HOOKS
def test_sigkill_during_mtcnn_write_keeps_previous_weights(mtcnn_npy_dir, tmp_path):
    out_dir = tmp_path / "mtcnn"
    before = _previous_mtcnn(out_dir)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _HOOKED_CLI, "fsync", str(ready), str(out_dir), "mtcnn",
                             str(mtcnn_npy_dir),
                             "-o", str(out_dir)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when_ready(proc, ready)
    assert tree_snapshot(out_dir) == before


def _disk_full(monkeypatch, after: int = 0):
    """os.fsync reports ENOSPC from the (after+1)-th call on, as a full disk does at writeback."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("after", [0, 1], ids=["first-file", "second-file"])
def test_disk_full_keeps_previous_output(after, fixture128, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "out"
    before = _previous_outputs(out_dir)
    _disk_full(monkeypatch, after)
    assert cli.main(["convert", str(fixture128.directory), "-o", str(out_dir / "model.pt"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "No space left on device" in err and "model.pt" in err, err
    assert tree_snapshot(out_dir) == before


def test_disk_full_keeps_previous_mtcnn_weights(mtcnn_npy_dir, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "mtcnn"
    before = _previous_mtcnn(out_dir)
    _disk_full(monkeypatch, after=2)          # pnet and rnet are written, onet fails
    assert cli.main(["mtcnn", str(mtcnn_npy_dir), "-o", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "No space left on device" in err, err
    assert tree_snapshot(out_dir) == before, "a partial set of MTCNN weights was left"


@linux_only("RLIMIT_FSIZE with SIGXFSZ ignored gives EFBIG as Linux does")
def test_file_size_limit_is_a_clean_failure(fixture128, tmp_path):
    """A real kernel write error (RLIMIT_FSIZE: EFBIG past 1 MB), no patching: exit 2, old output kept."""
    out_dir = tmp_path / "out"
    before = _previous_outputs(out_dir)

    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
    r = subprocess.run([sys.executable, "-m", "facenet_tf2pt.converter", "convert", str(fixture128.directory),
                        "-o", str(out_dir / "model.pt"), "-q"],
                       cwd=REPO, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "File too large" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert tree_snapshot(out_dir) == before


# --- determinism ----------------------------------------------------------------------------

def test_conversion_bytes_are_identical_across_runs_and_thread_counts(fixture128, tmp_path):
    outputs = {}
    for label, env in [("default", {}), ("again", {}),
                       ("one-thread", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})]:
        out = tmp_path / label / "model.pt"
        r = run_cli("convert", fixture128.directory, "-o", out, "-q", env=env)
        assert r.returncode == 0, r.stderr
        outputs[label] = (out.read_bytes(), (tmp_path / label / "model.pt.json").read_bytes())
    assert outputs["default"] == outputs["again"] == outputs["one-thread"]


def test_mtcnn_conversion_bytes_are_identical_across_thread_counts(mtcnn_npy_dir, tmp_path):
    trees = []
    for label, env in [("default", {}), ("one-thread", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})]:
        r = run_cli("mtcnn", mtcnn_npy_dir, "-o", tmp_path / label, "--safetensors", env=env)
        assert r.returncode == 0, r.stderr
        trees.append(tree_snapshot(tmp_path / label))
    assert trees[0] == trees[1] and len(trees[0]) == 7
