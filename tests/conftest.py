"""Session-scoped fixtures: Sandberg-format model directories built by our TF builder (once per
run), and their conversions. Everything is made here; nothing comes from outside the repo."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fixture512(tmp_path_factory):
    """512-d model with 17-class Logits (like the 2018 models, fewer classes)."""
    from converter.tf_graphs import write_fixture

    return write_fixture(tmp_path_factory.mktemp("fx512"), embedding_size=512, num_classes=17, seed=0)


@pytest.fixture(scope="session")
def fixture128(tmp_path_factory):
    """128-d model without Logits (like a 2017 frozen release)."""
    from converter.tf_graphs import write_fixture

    return write_fixture(tmp_path_factory.mktemp("fx128"), embedding_size=128, num_classes=None, seed=1)


@pytest.fixture(scope="session")
def converted512(fixture512, tmp_path_factory):
    from converter.convert import convert

    return convert(fixture512.directory, tmp_path_factory.mktemp("out512") / "fx512.pt")


@pytest.fixture(scope="session")
def fixture512_arrays(fixture512):
    from converter.sources import read_checkpoint_tf

    return read_checkpoint_tf(fixture512.checkpoint_prefix)


def run_cli(*args, module="converter", env=None, timeout=600):
    """Run a console entry point as a user would; returns CompletedProcess (text)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=REPO)


def copy_checkpoint(fixture, dest: Path, with_meta=False, with_pb=False) -> Path:
    """Copy a fixture's checkpoint files (optionally its meta graph / frozen graph) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    prefix = fixture.checkpoint_prefix
    for f in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(f, dest / f.name)
    if with_meta:
        shutil.copy(fixture.meta_graph, dest)
    if with_pb:
        shutil.copy(fixture.frozen_graph, dest)
    return dest / prefix.name


# --- shared by the reliability battery (test_bad_inputs, test_faults, test_pickle_safety, ...) ---

@pytest.fixture(scope="session")
def fixture128_arrays(fixture128):
    """The 128-d fixture's variables, read once (TensorFlow's reader), for checkpoint variants."""
    from converter.sources import read_checkpoint_tf

    return read_checkpoint_tf(fixture128.checkpoint_prefix)


def write_det_npy(path: Path, params: dict) -> Path:
    """Write {layer: {param: array}} the way Sandberg's det*.npy are stored: a pickled 0-d object array."""
    import numpy as np

    payload = np.empty((), dtype=object)
    payload[()] = params
    with open(path, "wb") as f:
        np.save(f, payload, allow_pickle=True)
    return path


def mtcnn_params(seed: int = 0) -> dict:
    """Random det1/det2/det3 contents with the real layer names and shapes: net -> layer -> param -> array."""
    import numpy as np

    from converter.mtcnn_mapping import MTCNN_TABLE

    rng = np.random.default_rng(seed)
    params: dict = {}
    for row in MTCNN_TABLE:
        params.setdefault(row.net, {}).setdefault(row.src_layer, {})[row.src_param] = (
            rng.standard_normal(row.src_shape).astype(np.float32) * 0.1)
    return params


@pytest.fixture(scope="session")
def mtcnn_npy_dir(tmp_path_factory):
    """A folder with synthetic det1/det2/det3.npy (random weights, real layout): needs no download."""
    from converter.npy_source import SOURCE_FILES

    root = tmp_path_factory.mktemp("det_npy")
    params = mtcnn_params()
    for net, name in SOURCE_FILES.items():
        write_det_npy(root / name, params[net])
    return root


def tree_snapshot(root: Path) -> dict:
    """{relative path: bytes} of every file under root (hidden temp files included)."""
    root = Path(root)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
