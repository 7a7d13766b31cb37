"""Session-scoped fixtures: Sandberg-format model directories built by our TF builder (once per
run), their conversions, and real data (Sandberg's det*.npy, facenet-pytorch's wheel) fetched
sha256-checked into a cache outside the checkout. A session that changes `git status` fails."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The shared helpers live in tests/helpers.py; these names stay importable from here too.
from tests.helpers import (  # noqa: F401
    REPO,
    cache_dir,
    copy_checkpoint,
    mtcnn_params,
    run_cli,
    tree_snapshot,
    write_det_npy,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def fixture512(tmp_path_factory):
    """512-d model with 17-class Logits (like the 2018 models, fewer classes)."""
    from facenet_tf2pt.converter.tf_graphs import write_fixture

    return write_fixture(tmp_path_factory.mktemp("fx512"), embedding_size=512, num_classes=17, seed=0)


@pytest.fixture(scope="session")
def fixture128(tmp_path_factory):
    """128-d model without Logits (like a 2017 frozen release)."""
    from facenet_tf2pt.converter.tf_graphs import write_fixture

    return write_fixture(tmp_path_factory.mktemp("fx128"), embedding_size=128, num_classes=None, seed=1)


@pytest.fixture(scope="session")
def converted512(fixture512, tmp_path_factory):
    from facenet_tf2pt.converter.convert import convert

    return convert(fixture512.directory, tmp_path_factory.mktemp("out512") / "fx512.pt")


@pytest.fixture(scope="session")
def fixture512_arrays(fixture512):
    from facenet_tf2pt.converter.sources import read_checkpoint_tf

    return read_checkpoint_tf(fixture512.checkpoint_prefix)


# --- shared by the reliability battery (test_bad_inputs, test_faults, test_pickle_safety, ...) ---

@pytest.fixture(scope="session")
def fixture128_arrays(fixture128):
    """The 128-d fixture's variables, read once (TensorFlow's reader), for checkpoint variants."""
    from facenet_tf2pt.converter.sources import read_checkpoint_tf

    return read_checkpoint_tf(fixture128.checkpoint_prefix)


@pytest.fixture(scope="session")
def mtcnn_npy_dir(tmp_path_factory):
    """A folder with synthetic det1/det2/det3.npy (random weights, real layout): needs no download."""
    from facenet_tf2pt.converter.npy_source import SOURCE_FILES

    root = tmp_path_factory.mktemp("det_npy")
    params = mtcnn_params()
    for net, name in SOURCE_FILES.items():
        write_det_npy(root / name, params[net])
    return root


# --- real data: downloaded once into the cache outside the work tree (tests.helpers.cache_dir) ---

@pytest.fixture(scope="session")
def astronaut():
    """skimage.data.astronaut(): a real 512 x 512 RGB photo (uint8) with one face."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (the test extra) is not installed")
    return skimage_data.astronaut()


@pytest.fixture(scope="session")
def mtcnn_src():
    """Sandberg's det1/det2/det3.npy, fetched sha256-checked into the cache (never into the checkout).
    Needs the network on the first run; without it the tests that use it skip, saying why."""
    from facenet_tf2pt.converter.errors import ConversionError
    from facenet_tf2pt.converter.mtcnn_fetch import fetch_mtcnn_sources

    try:
        report = fetch_mtcnn_sources(cache_dir("mtcnn-sandberg"), timeout=5.0)
    except ConversionError as e:
        pytest.skip(f"Sandberg's det*.npy cannot be obtained here (no network?): {e}")
    return Path(report.dest)


FACENET_PYTORCH_WHEEL = ("facenet-pytorch==2.6.0", "facenet_pytorch-2.6.0-py3-none-any.whl",
                         "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca")


@pytest.fixture(scope="session")
def facenet_pytorch_weights(tmp_path_factory):
    """facenet-pytorch 2.6.0's own pnet/rnet/onet.pt, from its PyPI wheel (sha256-pinned, cached
    outside the checkout); the wheel is opened as a zip, never installed or imported."""
    import zipfile

    from facenet_tf2pt.converter.writer import sha256_file

    spec, name, digest = FACENET_PYTORCH_WHEEL
    wheel = cache_dir("wheels") / name
    if not (wheel.is_file() and sha256_file(wheel) == digest):
        tmp = tmp_path_factory.mktemp("wheel")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
               "--disable-pip-version-check", "-d", str(tmp), spec]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"{spec} cannot be downloaded here (no package index?): {e}")
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["no message"])[-1]
            pytest.skip(f"{spec} cannot be downloaded here (no package index?): pip: {tail}")
        got = tmp / name
        if not got.is_file() or sha256_file(got) != digest:
            pytest.fail(f"pip downloaded {spec} but {name} is missing or its sha256 is not {digest}")
        shutil.move(str(got), wheel)
    out = tmp_path_factory.mktemp("facenet_pytorch")
    with zipfile.ZipFile(wheel) as zf:
        for net in ("pnet", "rnet", "onet"):
            (out / f"{net}.pt").write_bytes(zf.read(f"facenet_pytorch/data/{net}.pt"))
    return out


# --- a run leaves the checkout as it found it ------------------------------------------------------

def _git_status():
    """`git status --porcelain` of the checkout (untracked files included), or None outside git."""
    try:
        r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def pytest_sessionstart(session):
    session.config._git_status_before = _git_status()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_git_status_before", None)
    if before is None:
        return
    after = _git_status()
    if after != before:
        changed = sorted(set((after or "").splitlines()) ^ set(before.splitlines()))
        session.config._git_changed = changed
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    changed = getattr(config, "_git_changed", None)
    if changed:
        terminalreporter.write_line("FAILED: the test run changed the checkout (tests must write only to "
                                    "temporary folders or the cache):", red=True)
        for line in changed:
            terminalreporter.write_line(f"    {line}")
