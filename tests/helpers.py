"""Helpers shared by the tests (imported by conftest.py and the test files; never a test file's
private helpers): the repository root, running a CLI as a user would, the download cache, writing
det*.npy files, snapshots of folders, and the plain greedy-NMS oracle."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WITHOUT_TF = REPO / "tools" / "without_tf.py"  # the one TensorFlow (and torch) blocker


def linux_only(why: str):
    """Skip (saying why) where the test needs Linux: /proc, O_TMPFILE, RLIMIT_FSIZE, SIGKILL timing."""
    import pytest

    return pytest.mark.skipif(not sys.platform.startswith("linux"), reason=f"Linux only: {why}")


def same_torch_as_pinned() -> tuple[bool, str]:
    """(installed torch is the release our .pt writer was checked against, reason to skip otherwise).
    Byte-for-byte comparisons with torch.save hold for that release; another release may pickle
    differently without anything being wrong with the files (they still load: tested apart)."""
    from importlib.metadata import version

    from facenet_tf2pt.converter.torch_zip import CHECKED_WITH_TORCH

    installed = version("torch").split("+")[0]
    return installed == CHECKED_WITH_TORCH, (
        f"byte equality with torch.save is checked against torch {CHECKED_WITH_TORCH} "
        f"(converter/torch_zip.py CHECKED_WITH_TORCH, the Makefile's pin); torch {installed} is installed")


def cache_dir(*parts: str) -> Path:
    """Where tests keep downloads between runs: $FACENET_TF2PT_CACHE, else ~/.cache/facenet-tf2pt.
    Outside the work tree, so a run never changes the checkout."""
    root = os.environ.get("FACENET_TF2PT_CACHE") or Path.home() / ".cache" / "facenet-tf2pt"
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_cli(*args, module="facenet_tf2pt.converter", env=None, timeout=600, without=()):
    """Run `python -m MODULE ARGS` in a fresh process from the repository root, as a user would;
    returns the CompletedProcess (text). `without=("tensorflow",)` runs it through
    tools/without_tf.py so that importing those packages fails (tensorflow is always blocked
    then; name "torch" to block it too)."""
    full_env = dict(os.environ, **(env or {}))
    cmd = [sys.executable, "-m", module]
    if without:
        also = [a for name in without if name != "tensorflow" for a in ("--also", name)]
        cmd = [sys.executable, str(WITHOUT_TF), *also, "-m", module]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=REPO)


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

    from facenet_tf2pt.converter.mtcnn_mapping import MTCNN_TABLE

    rng = np.random.default_rng(seed)
    params: dict = {}
    for row in MTCNN_TABLE:
        params.setdefault(row.net, {}).setdefault(row.src_layer, {})[row.src_param] = (
            rng.standard_normal(row.src_shape).astype(np.float32) * 0.1)
    return params


def tree_snapshot(root: Path) -> dict:
    """{relative path: bytes} of every file under root (hidden temp files included)."""
    root = Path(root)
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def box_overlap(a, b, mode: str) -> float:
    """Overlap of two [x1, y1, x2, y2] boxes with MTCNN's inclusive pixel convention (+1):
    intersection over union, or over the smaller area for mode "min"."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (min(area_a, area_b) if mode == "min" else area_a + area_b - inter)


def greedy_nms(boxes, scores, groups, threshold: float, mode: str) -> list[int]:
    """Plain sequential greedy NMS per group (the original's definition): visit boxes by group,
    then by descending score (equal scores: the later box first, as Sandberg's loop over a stable
    np.argsort takes the last); keep one unless it overlaps a kept box of its group
    by more than `threshold`. Returns the kept indices in visiting order."""
    boxes, scores, groups = [list(map(float, b)) for b in boxes], list(scores), list(groups)
    order = sorted(range(len(boxes)), key=lambda i: (groups[i], -scores[i], -i))
    kept: list[int] = []
    for i in order:
        if all(groups[k] != groups[i] or box_overlap(boxes[k], boxes[i], mode) <= threshold for k in kept):
            kept.append(i)
    return kept


# --- seeded random InceptionResNetV1 for the fused / oneDNN-graph paths ---------------------------

FP32_TOL = 1e-5  # max abs difference allowed between the plain model and a float32 fast path


def random_model(embedding_size: int, num_classes: int | None, seed: int):
    """Seeded random weights that keep activations alive: He-scaled convs, BatchNorm statistics
    calibrated on random images (so embeddings really depend on the input), then every BN's
    mean/variance/beta/gamma perturbed away from the calibrated values and from 0/1, so that
    folding is really exercised (TF-slim BN has gamma=1; fold it generally anyway)."""
    import torch

    from facenet_tf2pt.models import InceptionResNetV1

    torch.manual_seed(seed)
    model = InceptionResNetV1(embedding_size=embedding_size, num_classes=num_classes)
    g = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=g)
                if mod.bias is not None:
                    mod.bias.normal_(0.0, 0.05, generator=g)
        for bn in bns:
            bn.momentum = 1.0  # one training-mode pass sets the running stats to the batch stats
        model.train()
        model(torch.randn(6, 3, 160, 160, generator=g))
        model.eval()
        for bn in bns:
            n = bn.num_features
            std = bn.running_var.sqrt()
            bn.running_mean.add_(0.2 * std * torch.randn(n, generator=g))
            bn.running_var.mul_(torch.rand(n, generator=g) * 0.8 + 0.6)
            bn.bias.copy_(torch.randn(n, generator=g) * 0.2)
            bn.weight.copy_(torch.rand(n, generator=g) * 0.8 + 0.6)
            bn.momentum = 0.005
    return model


def model_snapshot(model):
    """What fusing must not change: the state dict, training/classify flags, requires_grad."""
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.training, model.classify,
            {k: v.requires_grad for k, v in model.named_parameters()})


def assert_model_unchanged(model, snap):
    import torch

    state, training, classify, rg = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(now[k], v), k
    assert model.training == training and model.classify == classify
    assert {k: v.requires_grad for k, v in model.named_parameters()} == rg
