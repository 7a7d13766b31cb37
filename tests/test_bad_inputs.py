"""Bad inputs for every kind of source the converter takes: a model directory, a checkpoint prefix
(or its .index), a frozen .pb, and Sandberg's det*.npy (`facenet-convert mtcnn`), plus bad output
paths.

Every case goes through the command line's entry point (`converter.cli.main`, the function behind
`facenet-convert`: same argument parsing, same error-to-exit-code mapping; in-process so that the
~60 cases cost one Python start) and must end with:
- exit code 2 and one `error: ...` message naming the file, and the variable where there is one;
- the output folder exactly as it was: an existing output (and its report) byte-identical, no new
  file, no temp file;
- the source folder untouched.
A few cases also run as real `python -m facenet_tf2pt.converter` processes (`test_real_process`).
The bad sources are built on first use from the 128-d fixture (hard links where a file is reused),
so `-k` runs build only what they need.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from facenet_tf2pt.converter import cli
from facenet_tf2pt.converter.npy_source import SOURCE_FILES
from tests.helpers import mtcnn_params, run_cli, tree_snapshot, write_det_npy

V1 = "InceptionResnetV1"
REMOVED = f"{V1}/Repeat_1/block17_4/Branch_1/Conv2d_0c_7x1/weights"
RESHAPED = f"{V1}/Repeat/block35_2/Branch_2/Conv2d_0b_3x3/weights"          # [3, 3, 32, 32]
NAN_VAR = f"{V1}/Mixed_6a/Branch_1/Conv2d_0b_3x3/BatchNorm/moving_mean"
INF_VAR = f"{V1}/Block8/Conv2d_1x1/biases"
INT_VAR = f"{V1}/Conv2d_4b_3x3/weights"
PB_VAR = f"{V1}/Conv2d_2b_3x3/weights"                                      # [3, 3, 32, 64]

# A few variables of Sandberg's Inception-ResNet-V2 (same slim conventions, 1536 pooled features).
V2_VARIABLES = {
    "InceptionResnetV2/Conv2d_1a_3x3/weights": (3, 3, 3, 32),
    "InceptionResnetV2/Conv2d_1a_3x3/BatchNorm/beta": (32,),
    "InceptionResnetV2/Mixed_5b/Branch_0/Conv2d_1x1/weights": (1, 1, 192, 96),
    "InceptionResnetV2/Repeat/block35_1/Conv2d_1x1/weights": (1, 1, 128, 320),
    "InceptionResnetV2/Bottleneck/weights": (1536, 128),
    "InceptionResnetV2/Bottleneck/BatchNorm/moving_mean": (128,),
}


@dataclass
class Case:
    command: str                      # "convert" or "mtcnn"
    source: Path
    needles: list[str]                # each must appear in the error message
    args: list[str] = field(default_factory=list)
    # bad *output* cases: prepare(out_dir) sets the folder up and returns the -o target
    prepare: Callable[[Path], Path] | None = None


class BadSources:
    """Builds each case's source on first use, under one module-wide temp folder."""

    def __init__(self, root: Path, fixture, arrays: dict, npy_dir: Path):
        self.root, self.fixture, self.arrays, self.npy_dir = root, fixture, arrays, npy_dir
        self._cases: dict[str, Case] = {}
        self._graph_def = None
        self._damaged: dict[str, tuple[Path, Path]] = {}

    def get(self, name: str) -> Case:
        if name not in self._cases:
            self._cases[name] = CASES[name](self)
        return self._cases[name]

    # -- checkpoints ------------------------------------------------------------------------
    def linked_checkpoint(self, tag: str, name: str | None = None) -> Path:
        """A folder holding the fixture's checkpoint as hard links (renamed to `name` if given)."""
        d = self.root / tag
        d.mkdir(parents=True, exist_ok=True)
        prefix = self.fixture.checkpoint_prefix
        for f in prefix.parent.glob(prefix.name + ".*"):
            os.link(f, d / f.name.replace(prefix.name, name or prefix.name))
        return d / (name or prefix.name)

    @staticmethod
    def replace_file(path: Path, data: bytes) -> Path:
        path.unlink()                      # breaks the hard link: the fixture itself is never touched
        path.write_bytes(data)
        return path

    def damaged_checkpoint(self, part: str, damage: str) -> tuple[Path, Path]:
        """(the damaged file, the checkpoint prefix), built once for the dir and prefix forms."""
        key = f"ckpt-{part}-{damage}"
        if key not in self._damaged:
            prefix = self.linked_checkpoint(key)
            f = Path(f"{prefix}.index") if part == "index" else Path(f"{prefix}.data-00000-of-00001")
            data = f.read_bytes()
            new = {"truncated": data[: len(data) // 2],
                   "random": np.random.default_rng(7).bytes(len(data)),
                   "empty": b""}[damage]
            self.replace_file(f, new)
            self._damaged[key] = (f, prefix)
        return self._damaged[key]

    def variant(self, tag: str, edit) -> Path:
        """The fixture's variables with `edit(arrays)` applied, saved by TensorFlow's SaveV2."""
        from facenet_tf2pt.converter.tf_graphs import save_checkpoint

        prefix = self.root / tag / "model-variant.ckpt-5"
        if not Path(f"{prefix}.index").exists():
            arrays = dict(self.arrays)
            edit(arrays)
            save_checkpoint(prefix, arrays)
        return prefix

    # -- frozen graphs ----------------------------------------------------------------------
    def graph_def(self):
        if self._graph_def is None:
            from facenet_tf2pt.converter.sources import load_graph_def

            self._graph_def = load_graph_def(self.fixture.frozen_graph)
        return self._graph_def

    def pb_variant(self, tag: str, edit) -> Path:
        from facenet_tf2pt.converter.tf_graphs import import_tf

        tf = import_tf()
        path = self.root / "pb" / f"{tag}.pb"
        path.parent.mkdir(exist_ok=True)
        g = tf.compat.v1.GraphDef()
        g.CopyFrom(self.graph_def())
        edit(g, tf)
        path.write_bytes(g.SerializeToString())
        return path

    def pb_bytes(self, tag: str, data: bytes) -> Path:
        path = self.root / "pb" / f"{tag}.pb"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return path

    # -- det*.npy ---------------------------------------------------------------------------
    def npy_variant(self, tag: str, edit=None) -> Path:
        d = self.root / "npy" / tag
        shutil.copytree(self.npy_dir, d)
        if edit is not None:
            params = mtcnn_params()
            edit(params)
            for net, name in SOURCE_FILES.items():
                write_det_npy(d / name, params[net])
        return d


def _set_const(name: str, value: np.ndarray):
    def edit(g, tf):
        node = next(n for n in g.node if n.name == name)
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
    return edit


def _with(arrays: dict, name: str, value) -> None:
    arrays[name] = value


def _poisoned(a: np.ndarray, where: int, value: float) -> np.ndarray:
    a = a.copy()
    a.reshape(-1)[where] = value
    return a


def _v2_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {n: rng.standard_normal(shape).astype(np.float32) for n, shape in V2_VARIABLES.items()}


def _v2_frozen_graph(s: BadSources) -> Path:
    """A real frozen TF1 graph (RefVariables with '/read' identities) whose variables are V2's."""
    from facenet_tf2pt.converter.tf_graphs import import_tf

    tf = import_tf()
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 1536], name="input")
        total = tf.constant(0.0)
        for name, value in _v2_arrays().items():
            v = v1.get_variable(name, initializer=tf.constant(value), use_resource=False)
            total = total + tf.reduce_sum(v)
        w = [v for v in v1.global_variables() if v.op.name.endswith("Bottleneck/weights")][0]
        tf.identity(tf.matmul(x, w) + total, name="embeddings")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            frozen = v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), ["embeddings"])
    return s.pb_bytes("inception-resnet-v2", frozen.SerializeToString())


def _no_variables_graph(s: BadSources) -> Path:
    from facenet_tf2pt.converter.tf_graphs import import_tf

    tf = import_tf()
    g = tf.Graph()
    with g.as_default():
        tf.identity(tf.compat.v1.placeholder(tf.float32, [None, 3], name="input"), name="embeddings")
    return s.pb_bytes("no-variables", g.as_graph_def().SerializeToString())


def _drop_node(name: str):
    def edit(g, tf):
        keep = [n for n in g.node if n.name != name]
        del g.node[:]
        g.node.extend(keep)
    return edit


def _two_checkpoints(s: BadSources) -> Path:
    """Steps 1000 (the fixture, hard-linked) and 2000 (one bias changed) of one model."""
    d = s.root / "two-steps"
    if not d.exists():
        s.linked_checkpoint("two-steps", "model-fx.ckpt-1000")
        from facenet_tf2pt.converter.tf_graphs import save_checkpoint

        arrays = dict(s.arrays)
        arrays[INF_VAR] = arrays[INF_VAR] + 1.0
        save_checkpoint(d / "model-fx.ckpt-2000", arrays)
    return d


# --- the cases ---------------------------------------------------------------------------------

def _checkpoint_damage_cases() -> dict[str, Callable[[BadSources], Case]]:
    cases = {}
    for part in ("index", "data"):
        for damage in ("truncated", "random", "empty"):
            def as_dir(s, part=part, damage=damage):
                f, prefix = s.damaged_checkpoint(part, damage)
                return Case("convert", prefix.parent, [str(f)] + (["variable '"] if part == "data" else []))

            def as_prefix(s, part=part, damage=damage):
                f, prefix = s.damaged_checkpoint(part, damage)
                # the data cases name the prefix by its .index file: both spellings are covered
                src = prefix if part == "index" else Path(f"{prefix}.index")
                return Case("convert", src, [str(f)] + (["variable '"] if part == "data" else []))

            cases[f"dir-{part}-{damage}"] = as_dir
            cases[f"prefix-{part}-{damage}"] = as_prefix
    return cases


def _missing_shard(s):
    prefix = s.linked_checkpoint("ckpt-no-data")
    shard = Path(f"{prefix}.data-00000-of-00001")
    shard.unlink()
    return Case("convert", prefix.parent, [str(shard), "not found", "variable '"])


def _empty_dir(s):
    d = s.root / "empty-dir"
    d.mkdir()
    return Case("convert", d, [str(d), "no checkpoint"])


def _dir_without_checkpoint(s):
    d = s.root / "meta-only"
    d.mkdir()
    os.link(s.fixture.meta_graph, d / s.fixture.meta_graph.name)
    (d / "checkpoint").write_text('model_checkpoint_path: "model-gone.ckpt-1000"\n')
    (d / "model-gone.ckpt-1000.data-00000-of-00001").write_bytes(b"")   # a shard without its index
    return Case("convert", d, [str(d), "no checkpoint"])


def _missing_prefix(s):
    p = s.root / "nowhere" / "model-x.ckpt-1"
    return Case("convert", p, [str(p), ".index"])


def _step_absent(s):
    d = _two_checkpoints(s)
    return Case("convert", d, [str(d), "no checkpoint at step 1500", "1000, 2000"], args=["--step", "1500"])


def _step_without_checkpoints(s):
    d = s.root / "pb-only"
    d.mkdir()
    os.link(s.fixture.frozen_graph, d / s.fixture.frozen_graph.name)
    return Case("convert", d, [str(d), "--step 5", "no checkpoint"], args=["--step", "5"])


def _step_mismatch(s):
    prefix = s.fixture.checkpoint_prefix
    return Case("convert", prefix, [str(prefix), "--step 7"], args=["--step", "7"])


def _same_step_twice(s):
    d = s.root / "same-step"
    s.linked_checkpoint("same-step", "model-a.ckpt-5")
    s.linked_checkpoint("same-step", "model-b.ckpt-5")
    return Case("convert", d, [str(d), "several checkpoints at step 5", "model-a.ckpt-5", "model-b.ckpt-5"])


def _variant_cases() -> dict[str, Callable[[BadSources], Case]]:
    def v2(s):
        from facenet_tf2pt.converter.tf_graphs import save_checkpoint

        prefix = s.root / "v2" / "model-v2.ckpt-9"
        if not Path(f"{prefix}.index").exists():
            save_checkpoint(prefix, _v2_arrays())
        return prefix, ["InceptionResnetV2", f"{V1}/Bottleneck/weights"]

    def removed(s):
        return s.variant("removed", lambda a: a.pop(REMOVED)), [f"missing TF variable {REMOVED}"]

    def reshaped(s):
        # V2's shape for this conv: a plausible mix-up
        return (s.variant("reshaped", lambda a: _with(a, RESHAPED, np.zeros((3, 3, 32, 48), np.float32))),
                [RESHAPED, "is [3, 3, 32, 48], expected [3, 3, 32, 32]"])

    def nan(s):
        return (s.variant("nan", lambda a: _with(a, NAN_VAR, _poisoned(a[NAN_VAR], 5, np.nan))),
                [NAN_VAR, "1 of 192 values are NaN or Inf"])

    def inf(s):
        return (s.variant("inf", lambda a: _with(a, INF_VAR, _poisoned(a[INF_VAR], 0, -np.inf))),
                [INF_VAR, "NaN or Inf"])

    def int32(s):
        return (s.variant("int32", lambda a: _with(a, INT_VAR, (a[INT_VAR] * 100).astype(np.int32))),
                [INT_VAR, "dtype int32, expected float32"])

    cases = {}
    for label, make in [("other-architecture", v2), ("variable-removed", removed), ("wrong-shape", reshaped),
                        ("nan", nan), ("inf", inf), ("int32-weights", int32)]:
        def as_dir(s, make=make):
            prefix, needles = make(s)
            return Case("convert", prefix.parent, [str(prefix), *needles])

        def as_prefix(s, make=make):
            prefix, needles = make(s)
            return Case("convert", prefix, [str(prefix), *needles])

        cases[f"dir-{label}"] = as_dir
        cases[f"prefix-{label}"] = as_prefix
    return cases


def _pb_cases() -> dict[str, Callable[[BadSources], Case]]:
    def damaged(damage):
        def make(s):
            data = s.fixture.frozen_graph.read_bytes()
            new = {"truncated": data[: len(data) // 2], "random": np.random.default_rng(3).bytes(1 << 20),
                   "empty": b""}[damage]
            p = s.pb_bytes(damage, new)
            return Case("convert", p, [str(p)])
        return make

    def variant(tag, edit_for, needles):
        def make(s):
            p = s.pb_variant(tag, edit_for(s))
            return Case("convert", p, [str(p), *needles])
        return make

    w = lambda s: s.arrays[PB_VAR]  # noqa: E731
    return {
        "pb-truncated": damaged("truncated"),
        "pb-random": damaged("random"),
        "pb-empty": damaged("empty"),
        "pb-other-architecture": lambda s: Case("convert", p := _v2_frozen_graph(s), [str(p), "InceptionResnetV2"]),
        "pb-no-variables": lambda s: Case("convert", p := _no_variables_graph(s), [str(p), "no frozen variables"]),
        "pb-variable-removed": variant("removed", lambda s: _drop_node(PB_VAR), [f"missing TF variable {PB_VAR}"]),
        "pb-wrong-shape": variant("reshaped", lambda s: _set_const(PB_VAR, np.zeros((3, 3, 32, 63), np.float32)),
                                  [PB_VAR, "[3, 3, 32, 63]", "[3, 3, 32, 64]"]),
        "pb-nan": variant("nan", lambda s: _set_const(PB_VAR, _poisoned(w(s), 17, np.nan)), [PB_VAR, "NaN or Inf"]),
        "pb-inf": variant("inf", lambda s: _set_const(PB_VAR, _poisoned(w(s), 3, np.inf)), [PB_VAR, "NaN or Inf"]),
        "pb-int32-weights": variant("int32", lambda s: _set_const(PB_VAR, w(s).astype(np.int32)),
                                    [PB_VAR, "dtype int32"]),
    }


def _npy_cases() -> dict[str, Callable[[BadSources], Case]]:
    def damaged(damage):
        def make(s):
            d = s.npy_variant(f"det2-{damage}")
            data = (d / "det2.npy").read_bytes()
            (d / "det2.npy").write_bytes({"truncated": data[: len(data) // 2],
                                          "random": np.random.default_rng(4).bytes(len(data)),
                                          "empty": b""}[damage])
            return Case("mtcnn", d, [str(d / "det2.npy")])
        return make

    def edited(tag, edit, file, needles):
        def make(s):
            d = s.npy_variant(tag, edit)
            return Case("mtcnn", d, [str(d / file), *needles])
        return make

    def no_files(s):
        d = s.root / "npy" / "empty"
        d.mkdir(parents=True)
        return Case("mtcnn", d, [str(d / "det1.npy"), "missing"])

    def one_missing(s):
        d = s.npy_variant("no-det3")
        (d / "det3.npy").unlink()
        return Case("mtcnn", d, [str(d / "det3.npy"), "missing"])

    def plain_array(s):
        d = s.npy_variant("plain")
        np.save(d / "det1.npy", np.zeros((3, 3), np.float32))
        return Case("mtcnn", d, [str(d / "det1.npy"), "plain"])

    def put(net, layer, param, value_of):
        def edit(p):
            p[net][layer][param] = value_of(p[net][layer][param])
        return edit

    return {
        "npy-truncated": damaged("truncated"),
        "npy-random": damaged("random"),
        "npy-empty": damaged("empty"),
        "npy-no-files": no_files,
        "npy-det3-missing": one_missing,
        "npy-plain-array": plain_array,
        # another architecture: det1.npy holds O-Net's layers
        "npy-other-architecture": edited("onet-as-pnet", lambda p: p.__setitem__("pnet", copy.deepcopy(p["onet"])),
                                         "det1.npy", ["pnet", "conv5/weights"]),
        "npy-param-removed": edited("removed", lambda p: p["rnet"]["conv4"].pop("biases"), "det2.npy",
                                    ["missing conv4/biases"]),
        "npy-wrong-shape": edited("reshaped", put("rnet", "conv4", "weights", lambda a: np.zeros((575, 128), np.float32)),
                                  "det2.npy", ["conv4/weights", "(575, 128)", "(576, 128)"]),
        "npy-nan": edited("nan", put("onet", "conv5", "weights", lambda a: _poisoned(a, 99, np.nan)), "det3.npy",
                          ["conv5/weights", "NaN or Inf"]),
        "npy-inf": edited("inf", put("pnet", "PReLU1", "alpha", lambda a: _poisoned(a, 0, np.inf)), "det1.npy",
                          ["PReLU1/alpha", "NaN or Inf"]),
        "npy-int32-weights": edited("int32", put("pnet", "conv1", "weights", lambda a: (a * 100).astype(np.int32)),
                                    "det1.npy", ["conv1", "int32"]),
    }


def _output_cases() -> dict[str, Callable[[BadSources], Case]]:
    def parent_is_file(s):
        def prepare(out):
            (out / "blocker").write_bytes(b"a file where a folder should be")
            return out / "blocker" / "model.pt"
        return Case("convert", s.fixture.directory, ["blocker: cannot write"], prepare=prepare)

    def report_is_dir(s):
        def prepare(out):
            (out / "report-dir").mkdir()
            return out / "model.pt"
        return Case("convert", s.fixture.directory, ["report-dir", "is a directory"],
                    args=["--report", "{out}/report-dir"], prepare=prepare)

    def output_is_dir(s):
        def prepare(out):
            (out / "as-dir.pt").mkdir()
            return out / "as-dir.pt"
        return Case("convert", s.fixture.directory, ["as-dir.pt", "is a directory"], prepare=prepare)

    def mtcnn_out_is_file(s):
        def prepare(out):
            (out / "weights").write_bytes(b"not a folder")
            return out / "weights"
        return Case("mtcnn", s.npy_dir, ["weights: cannot write"], prepare=prepare)

    return {"out-parent-is-a-file": parent_is_file, "out-report-is-a-directory": report_is_dir,
            "out-output-is-a-directory": output_is_dir, "out-mtcnn-folder-is-a-file": mtcnn_out_is_file}


CASES: dict[str, Callable[[BadSources], Case]] = {
    **_checkpoint_damage_cases(),
    "dir-data-shard-missing": _missing_shard,
    "dir-empty": _empty_dir,
    "dir-no-checkpoint": _dir_without_checkpoint,
    "prefix-missing": _missing_prefix,
    "dir-step-absent": _step_absent,
    "dir-step-without-checkpoints": _step_without_checkpoints,
    "prefix-step-mismatch": _step_mismatch,
    "dir-two-checkpoints-same-step": _same_step_twice,
    **_variant_cases(),
    **_pb_cases(),
    **_npy_cases(),
    **_output_cases(),
}


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory, fixture128, fixture128_arrays, mtcnn_npy_dir):
    return BadSources(tmp_path_factory.mktemp("bad_sources"), fixture128, fixture128_arrays, mtcnn_npy_dir)


def _previous_output(out_dir: Path, command: str) -> Path:
    """An earlier, good-looking output that a failed run must leave exactly as it is."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if command == "convert":
        torch.save({"previous": torch.arange(4.0)}, out_dir / "model.pt")
        (out_dir / "model.pt.json").write_text(json.dumps({"output": {"file": "model.pt"}}) + "\n")
        return out_dir / "model.pt"
    for net in ("pnet", "rnet", "onet"):
        torch.save({f"{net}.previous": torch.ones(2)}, out_dir / f"{net}.pt")
    (out_dir / "manifest.json").write_text('{"previous": true}\n')
    return out_dir


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under the folder: the source must not be touched."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _argv(case: Case, target: Path, out_dir: Path) -> list[str]:
    args = [a.replace("{out}", str(out_dir)) for a in case.args]
    return [case.command, str(case.source), "-o", str(target), *args] + (["-q"] if case.command == "convert" else [])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_cleanly(name, bad_sources, tmp_path, capsys):
    case = bad_sources.get(name)
    out_dir = tmp_path / "out"
    target = _previous_output(out_dir, case.command)
    if case.prepare is not None:
        target = case.prepare(out_dir)
    watched = case.source if case.source.is_dir() else case.source.parent
    before_out, before_src = tree_snapshot(out_dir), (_listing(watched) if watched.exists() else None)

    rc = cli.main(_argv(case, target, out_dir))
    captured = capsys.readouterr()

    assert rc == 2, f"exit {rc}\n{captured.err}"
    assert captured.err.startswith("error: "), captured.err
    missing = [n for n in case.needles if n not in captured.err]
    assert not missing, f"message lacks {missing}:\n{captured.err}"
    assert tree_snapshot(out_dir) == before_out, "the output folder changed"
    if before_src is not None:
        assert _listing(watched) == before_src, "the source folder changed"


# --- several checkpoints in one folder: the newest is used and said; --step picks another ----

def _bias_in(output: Path) -> torch.Tensor:
    return torch.load(output, weights_only=True)["block8.conv2d.bias"]


def test_two_checkpoints_newest_is_used_and_said(bad_sources, tmp_path, capsys):
    d = _two_checkpoints(bad_sources)
    out = tmp_path / "newest.pt"
    assert cli.main(["convert", str(d), "-o", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"note: {d}: 2 checkpoints (steps 1000, 2000); using the newest, step 2000" in err
    assert "--step" in err
    report = json.loads((tmp_path / "newest.pt.json").read_text())
    assert report["source"]["step"] == 2000 and report["source"]["notes"]
    expected = torch.from_numpy(bad_sources.arrays[INF_VAR] + 1.0)
    assert torch.equal(_bias_in(out), expected)


def test_step_picks_the_other_checkpoint(bad_sources, tmp_path, capsys):
    d = _two_checkpoints(bad_sources)
    out = tmp_path / "older.pt"
    assert cli.main(["convert", str(d), "-o", str(out), "-q", "--step", "1000"]) == 0
    assert "note:" not in capsys.readouterr().err    # a choice the user made needs no note
    assert json.loads((tmp_path / "older.pt.json").read_text())["source"]["step"] == 1000
    assert torch.equal(_bias_in(out), torch.from_numpy(bad_sources.arrays[INF_VAR]))


# --- a handful as real processes, with no previous output: nothing may appear --------------

@pytest.mark.parametrize("name", ["dir-index-truncated", "prefix-nan", "pb-random", "npy-nan",
                                  "out-report-is-a-directory"])
def test_real_process(name, bad_sources, tmp_path):
    case = bad_sources.get(name)
    out_dir = tmp_path / "fresh"
    out_dir.mkdir()
    target = case.prepare(out_dir) if case.prepare else (out_dir / ("model.pt" if case.command == "convert" else "w"))
    before = tree_snapshot(out_dir)
    r = run_cli(*_argv(case, target, out_dir), env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    error_lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, r.stderr
    assert all(n in r.stderr for n in case.needles), r.stderr
    assert tree_snapshot(out_dir) == before
    assert not re.search(r"\.tmp$", "\n".join(os.listdir(out_dir)), re.M)
