"""Pickle safety: files crafted to run code when unpickled are refused, and nothing in them runs.

- det*.npy (the only pickles the converter must read) go through a restricted unpickler: every
  opcode route to a callable (GLOBAL, STACK_GLOBAL, INST, persistent ids) is refused, through
  `facenet-convert mtcnn` and `verify-mtcnn` alike.
- `.pt` files are loaded weights-only by every loader in the project: models.hub.serialization,
  MTCNN(weights=...), the registry's resolvers, models.data.embed, and the CLIs that take weights.
- A static audit of the project's source: every torch.load / np.load call says weights_only=True
  / allow_pickle=False, and no other unpickling exists beside the restricted one.
Each payload would create a marker file if it ran; the tests assert that it does not exist.
"""
from __future__ import annotations

import ast
import builtins
import os
import pickle
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from facenet_tf2pt.converter import cli
from facenet_tf2pt.converter.errors import ConversionError
from facenet_tf2pt.converter.npy_source import read_det_npy
from tests.helpers import REPO, mtcnn_params

COMMITTED_MTCNN = REPO / "checkpoints" / "mtcnn"


class _Reduce:
    """An object that unpickles as `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _payloads(marker: Path) -> dict[str, object]:
    """Python objects whose unpickling would create `marker`."""
    return {
        "os.system": _Reduce(os.system, f"touch {marker}"),
        "builtins.exec": _Reduce(builtins.exec, _touch_code(marker)),
        "builtins.eval": _Reduce(builtins.eval, f"__import__('pathlib').Path({str(marker)!r}).touch()"),
        "subprocess.call": _Reduce(subprocess.call, ["touch", str(marker)]),
        "numpy.save": _Reduce(np.save, str(marker), np.zeros(1)),     # a numpy callable, not an allowed one
    }


def _npy_bytes(pickle_bytes: bytes) -> bytes:
    """A well-formed .npy header for a 0-d object array, followed by raw pickle bytes."""
    header = repr({"descr": "|O", "fortran_order": False, "shape": ()}).encode("latin1")
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + pickle_bytes


def _raw_pickles(marker: Path) -> dict[str, bytes]:
    """Hand-written pickles for the opcode routes np.save would not produce."""
    cmd = f"touch {marker}".encode()
    return {
        "protocol-0 GLOBAL": b"cos\nsystem\n(S'" + cmd + b"'\ntR.",
        "protocol-0 INST": b"(S'" + cmd + b"'\nios\nsystem\n.",
        "protocol-4 STACK_GLOBAL": pickle.dumps(_Reduce(os.system, cmd.decode()), protocol=4),
        "protocol-5 nested in a det dict": pickle.dumps(
            {"conv1": {"weights": np.zeros((3, 3, 3, 10), np.float32), "biases": _Reduce(os.system, cmd.decode())}},
            protocol=5),
        "persistent id": b"\x80\x02P0\n.",
        "extension code": b"\x80\x02\x82\x01.",      # EXT1: copyreg's registry, resolved by find_class
    }


def _evil_npy_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Every crafted det*.npy we try, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, obj in _payloads(marker).items():
        payload = np.empty((), dtype=object)
        payload[()] = {"conv1": {"weights": obj}}          # as np.save writes it (protocol 3)
        path = folder / f"{name}.npy"
        with open(path, "wb") as f:
            np.save(f, payload, allow_pickle=True)
        files[f"np.save {name}"] = path
    for name, raw in _raw_pickles(marker).items():
        path = folder / f"{name.replace(' ', '_')}.npy"
        path.write_bytes(_npy_bytes(raw))
        files[name] = path
    return files


NPY_VECTORS = [f"np.save {n}" for n in ("os.system", "builtins.exec", "builtins.eval", "subprocess.call",
                                        "numpy.save")] + \
              ["protocol-0 GLOBAL", "protocol-0 INST", "protocol-4 STACK_GLOBAL", "protocol-5 nested in a det dict",
               "persistent id", "extension code"]


def _nothing_ran(tmp_path: Path) -> None:
    assert not [p.name for p in tmp_path.rglob("PWNED*")], "a crafted pickle ran"


@pytest.mark.parametrize("vector", NPY_VECTORS)
def test_crafted_det_npy_is_refused_without_running(vector, tmp_path):
    marker = tmp_path / "PWNED"
    path = _evil_npy_files(tmp_path / "evil", marker)[vector]
    with pytest.raises(ConversionError) as e:
        read_det_npy(path)
    assert str(path) in str(e.value)
    _nothing_ran(tmp_path)


@pytest.mark.parametrize("vector", ["np.save os.system", "protocol-0 INST", "protocol-4 STACK_GLOBAL"])
def test_crafted_det_npy_through_the_cli(vector, mtcnn_npy_dir, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    src = tmp_path / "src"
    shutil.copytree(mtcnn_npy_dir, src)
    shutil.copy(_evil_npy_files(tmp_path / "evil", marker)[vector], src / "det2.npy")
    out = tmp_path / "out"
    assert cli.main(["mtcnn", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(src / "det2.npy") in err, err
    assert not out.exists()
    # verify-mtcnn reads the same sources first: refused before any TF or weights are touched
    assert cli.main(["verify-mtcnn", str(src)]) == 2
    assert str(src / "det2.npy") in capsys.readouterr().err
    _nothing_ran(tmp_path)


def test_restricted_reader_still_reads_real_layout(mtcnn_npy_dir):
    """The guard is not a blanket refusal: a det*.npy of dicts, strings and arrays reads exactly."""
    got = read_det_npy(mtcnn_npy_dir / "det3.npy")
    want = mtcnn_params()["onet"]
    assert got.keys() == want.keys()
    for layer in want:
        for p in want[layer]:
            np.testing.assert_array_equal(got[layer][p], want[layer][p])


# --- .pt files --------------------------------------------------------------------------------

def _evil_pt(path: Path, marker: Path, how: str = "os.system") -> Path:
    """A torch.save'd dict that looks like a state_dict but holds a code-running object."""
    sd = {"conv1.weight": torch.zeros(10, 3, 3, 3), "conv1.bias": _payloads(marker)[how]}
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("how", ["os.system", "builtins.exec", "subprocess.call"])
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_load_state_dict_file_refuses_crafted_pt(how, suffix, tmp_path):
    from facenet_tf2pt.models.hub.serialization import load_state_dict_file

    marker = tmp_path / "PWNED"
    path = _evil_pt(tmp_path / f"evil{suffix}", marker, how)
    with pytest.raises(ValueError) as e:
        load_state_dict_file(path)
    assert str(path) in str(e.value) and "refused" in str(e.value)
    assert "weights_only` set to `False" not in str(e.value)    # no advice to turn the guard off
    _nothing_ran(tmp_path)


def test_pickle_named_safetensors_is_refused_cleanly(tmp_path):
    from facenet_tf2pt.models.hub.serialization import load_state_dict_file

    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(_evil_pt(tmp_path / "evil.pt", marker).read_bytes())
    with pytest.raises(ValueError, match="evil.safetensors"):
        load_state_dict_file(path)
    _nothing_ran(tmp_path)


@pytest.fixture()
def evil_mtcnn_dir(tmp_path):
    d = tmp_path / "mtcnn"
    d.mkdir()
    for net in ("rnet", "onet"):
        shutil.copy(COMMITTED_MTCNN / f"{net}.pt", d / f"{net}.pt")
    _evil_pt(d / "pnet.pt", tmp_path / "PWNED")
    return d


def test_mtcnn_weights_folder_refuses_crafted_pt(evil_mtcnn_dir, tmp_path):
    from facenet_tf2pt.models.detection.mtcnn import MTCNN

    with pytest.raises(ValueError, match="pnet.pt"):
        MTCNN(weights=evil_mtcnn_dir)
    _nothing_ran(tmp_path)


def test_registry_resolvers_refuse_crafted_pt(evil_mtcnn_dir, tmp_path):
    from facenet_tf2pt.models.hub.pretrained import load_mtcnn_state_dicts, resolve_inception_weights

    with pytest.raises(ValueError, match="pnet.pt"):
        load_mtcnn_state_dicts(evil_mtcnn_dir)
    evil = _evil_pt(tmp_path / "inception.pt", tmp_path / "PWNED")
    with pytest.raises(ValueError, match="inception.pt"):
        resolve_inception_weights(str(evil))
    _nothing_ran(tmp_path)


def test_embed_loader_refuses_crafted_pt(tmp_path):
    from facenet_tf2pt.models.data.embed import ModelLoadError, load_model

    evil = _evil_pt(tmp_path / "inception.pt", tmp_path / "PWNED", "builtins.exec")
    with pytest.raises(ModelLoadError, match="inception.pt"):
        load_model(weights=evil)
    _nothing_ran(tmp_path)


def test_clis_refuse_crafted_weights(fixture128, mtcnn_npy_dir, evil_mtcnn_dir, tmp_path, capsys):
    from PIL import Image

    from facenet_tf2pt.models.cli import facenet as facenet_cli

    evil = _evil_pt(tmp_path / "inception.pt", tmp_path / "PWNED")
    # facenet-convert verify SOURCE WEIGHTS: the weights are loaded before TF runs
    assert cli.main(["verify", str(fixture128.directory), str(evil)]) == 2
    assert "inception.pt" in capsys.readouterr().err
    # facenet-convert verify-mtcnn SRC --weights DIR
    assert cli.main(["verify-mtcnn", str(mtcnn_npy_dir), "--weights", str(evil_mtcnn_dir)]) == 2
    assert "pnet.pt" in capsys.readouterr().err
    # facenet embed DIR --weights FILE
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (160, 160), (120, 90, 60)).save(images / "a.png")
    assert facenet_cli.main(["embed", str(images), "-o", str(tmp_path / "e.npz"), "--weights", str(evil), "-q"]) == 2
    assert "inception.pt" in capsys.readouterr().err
    assert not (tmp_path / "e.npz").exists()
    _nothing_ran(tmp_path)


# --- static audit of every loading call in the project ---------------------------------------

AUDITED = ("converter", "models", "checkpoints", "tools", "benchmarks")
# module-level names that unpickle (or eval) data; none may be called anywhere in the project
FORBIDDEN_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
                   "cPickle.load", "cPickle.loads", "dill.load", "dill.loads", "joblib.load",
                   "cloudpickle.load", "cloudpickle.loads", "marshal.load", "marshal.loads", "shelve.open",
                   "yaml.load", "yaml.unsafe_load", "torch.jit.load", "pandas.read_pickle", "pd.read_pickle",
                   "numpy.lib.format.read_array", "np.lib.format.read_array", "torch.export.load"}
# the one exception: `export` loads back the .pt2 / .ts it has just written into its own temp file
# to check parity before delivering it (never a file it was handed); only this function may do so
OWN_ARTIFACT_LOADER = ("converter/export.py", "_load_own_artifact", {"torch.jit.load", "torch.export.load"})


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _keyword_is(call: ast.Call, name: str, value) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
               for k in call.keywords)


def _project_files() -> list[Path]:
    files = [p for d in AUDITED if (REPO / d).is_dir() for p in sorted((REPO / d).rglob("*.py"))]
    return files + sorted(REPO.glob("*.py"))


def _own_artifact_loads(rel: str, tree: ast.AST) -> set[int]:
    """The ids of the allowed calls: those inside OWN_ARTIFACT_LOADER's function, nowhere else."""
    where, function, names = OWN_ARTIFACT_LOADER
    if rel != where:
        return set()
    return {id(call) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) and fn.name == function
            for call in ast.walk(fn) if isinstance(call, ast.Call) and _dotted(call.func) in names}


def test_every_load_call_in_the_project_is_safe():
    problems, sites = [], []
    for path in _project_files():
        rel = str(path.relative_to(REPO))
        tree = ast.parse(path.read_text(), filename=rel)
        own_loads = _own_artifact_loads(rel, tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "numpy", "pickle", "_pickle",
                                                                    "dill", "joblib", "marshal"):
                bad = [a.name for a in node.names if a.name in ("load", "loads", "Unpickler")]
                if bad:
                    problems.append(f"{rel}:{node.lineno}: from {node.module} import {', '.join(bad)} "
                                    "(hides the call from this audit)")
            if isinstance(node, ast.ClassDef):
                bases = {_dotted(b) for b in node.bases}
                if bases & {"pickle.Unpickler", "_pickle.Unpickler"}:
                    methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                    sites.append(f"{rel}:{node.lineno}: restricted unpickler {node.name}")
                    if not {"find_class", "persistent_load"} <= methods:
                        problems.append(f"{rel}:{node.lineno}: {node.name} subclasses Unpickler without "
                                        "overriding find_class and persistent_load")
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            if name is None:
                continue
            if name in FORBIDDEN_CALLS:
                if id(node) in own_loads:
                    sites.append(f"{rel}:{node.lineno}: {name} of its own artifact")
                    continue
                problems.append(f"{rel}:{node.lineno}: {name}(...)")
            elif name == "torch.load" or name.endswith("load_state_dict_from_url"):
                sites.append(f"{rel}:{node.lineno}: {name}")
                if not _keyword_is(node, "weights_only", True):
                    problems.append(f"{rel}:{node.lineno}: {name} without weights_only=True")
            elif name in ("np.load", "numpy.load"):
                sites.append(f"{rel}:{node.lineno}: {name}")
                if not _keyword_is(node, "allow_pickle", False):
                    problems.append(f"{rel}:{node.lineno}: {name} without allow_pickle=False")
    assert not problems, "\n".join(problems)
    # the audit saw the known loaders (so it is looking at the right files)
    assert any(s.startswith("models/hub/serialization.py") and "torch.load" in s for s in sites), sites
    assert any(s.startswith("converter/npy_source.py") and "restricted unpickler" in s for s in sites), sites
    assert sum(s.startswith(OWN_ARTIFACT_LOADER[0]) and "own artifact" in s for s in sites) == 2, sites
