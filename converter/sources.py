"""Find and read Sandberg's TF artifacts: a model directory, a checkpoint prefix, or a frozen `.pb`
(and Keras 2 `.h5` files holding his weights: converter/h5_source.py).

`resolve_source` says what a path is and which files it stands for; `read_variables` returns
{TF variable name: ndarray}. Checkpoints are read by the pure-Python tensor-bundle reader (exact,
and no TensorFlow needed) or by TensorFlow's own reader; frozen graphs need TensorFlow.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models.common.paths import open_regular, require_regular

from .errors import ConversionError
from .h5_source import H5_SUFFIXES
from .mapping import KERAS_NAMES, TF_NAMES, Naming

_CKPT_INDEX = re.compile(r"^(?P<prefix>.+\.ckpt-(?P<step>\d+))\.index$")


@dataclass
class TFSource:
    """What a user-given path stands for."""
    path: Path                          # as given
    kind: str                           # 'model_dir' | 'checkpoint' | 'frozen_graph' | 'keras_h5'
    checkpoint_prefix: Path | None = None
    frozen_graph: Path | None = None
    meta_graph: Path | None = None
    step: int | None = None
    keras_h5: Path | None = None
    notes: list[str] = field(default_factory=list)   # choices made, shown to the user

    @property
    def weights_kind(self) -> str:
        if self.keras_h5 is not None:
            return "keras_h5"
        return "checkpoint" if self.checkpoint_prefix else "frozen_graph"

    def input_files(self) -> list[Path]:
        """Every file a run on this source may read (for the output rule: none may be overwritten)."""
        return [self.path, *self.weight_files(), self.frozen_graph, self.meta_graph]

    @property
    def names(self) -> Naming:
        """How this source spells the mapping table's variables."""
        return KERAS_NAMES if self.keras_h5 is not None else TF_NAMES

    def weight_files(self) -> list[Path]:
        """The files the weights are read from (hashed into the conversion report)."""
        if self.keras_h5 is not None:
            return [self.keras_h5]
        if self.checkpoint_prefix is None:
            return [self.frozen_graph]
        from .bundle_reader import BundleReader

        prefix = self.checkpoint_prefix
        reader = BundleReader(prefix)   # the index says how many shards: a stale one is not listed
        return [Path(reader.index_path), *(Path(reader.shard_path(i)) for i in range(reader.header.num_shards))]


def _regular_files(paths) -> list[Path]:
    """`paths`, each checked to be a regular file: a FIFO or device among a model's files is
    refused by name before anything opens it (it would block or never end)."""
    return [require_regular(p) for p in sorted(paths)]


def _checkpoints_in(directory: Path) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    for index in _regular_files(directory.glob("*.ckpt-*.index")):
        m = _CKPT_INDEX.match(index.name)
        if m:
            found.setdefault(int(m["step"]), []).append(directory / m["prefix"])
    return found


def _resolve_dir(directory: Path, step: int | None) -> TFSource:
    src = TFSource(directory, "model_dir")
    by_step = _checkpoints_in(directory)
    if by_step:
        if step is None:
            step = max(by_step)
            if len(by_step) > 1:
                src.notes.append(f"{directory}: {len(by_step)} checkpoints (steps "
                                 f"{', '.join(map(str, sorted(by_step)))}); using the newest, step {step} "
                                 f"(choose another with --step)")
        elif step not in by_step:
            raise ConversionError(f"{directory}: no checkpoint at step {step}; steps present: "
                                  f"{', '.join(map(str, sorted(by_step)))}")
        prefixes = by_step[step]
        if len(prefixes) > 1:
            raise ConversionError(f"{directory}: several checkpoints at step {step} "
                                  f"({', '.join(p.name for p in sorted(prefixes))}); give the prefix itself")
        src.checkpoint_prefix, src.step = prefixes[0], step
    elif step is not None:
        raise ConversionError(f"{directory}: --step {step} given, but the folder holds no checkpoint")

    pbs = _regular_files(directory.glob("*.pb"))
    if len(pbs) == 1:
        src.frozen_graph = pbs[0]
    elif len(pbs) > 1:
        src.notes.append(f"{directory}: several .pb files ({', '.join(p.name for p in pbs)}); "
                         f"none used: give the one to use as the source")
    metas = _regular_files(directory.glob("*.meta"))
    if len(metas) == 1:
        src.meta_graph = metas[0]

    if src.checkpoint_prefix is None and src.frozen_graph is None:
        raise ConversionError(f"{directory}: no checkpoint (model-*.ckpt-N.index) and no frozen "
                              f"graph (*.pb) found")
    return src


def resolve_source(path, step: int | None = None) -> TFSource:
    """A model directory, a checkpoint prefix (or its .index / .data file), or a frozen .pb."""
    path = Path(path)
    if path.is_dir():
        return _resolve_dir(path, step)
    if path.name.endswith(H5_SUFFIXES):
        if not os.path.lexists(path):
            raise ConversionError(f"{path}: no such Keras .h5 file")
        require_regular(path, "Keras .h5 file")
        if step is not None:
            raise ConversionError(f"{path}: --step applies to TF checkpoints, not to a Keras .h5 file")
        return TFSource(path, "keras_h5", keras_h5=path)
    if path.suffix == ".pb":
        if not os.path.lexists(path):
            raise ConversionError(f"{path}: no such frozen graph")
        require_regular(path, "frozen graph")
        return TFSource(path, "frozen_graph", frozen_graph=path)
    prefix = path
    if path.suffix == ".index":
        prefix = path.with_suffix("")
    elif re.search(r"\.data-\d+-of-\d+$", path.name):
        prefix = path.with_name(re.sub(r"\.data-\d+-of-\d+$", "", path.name))
    if os.path.lexists(f"{prefix}.index"):
        require_regular(f"{prefix}.index", "checkpoint index")
    if not Path(f"{prefix}.index").is_file():
        raise ConversionError(f"{path}: not a model directory, a frozen .pb, or a checkpoint prefix "
                              f"(no {prefix}.index)")
    m = re.search(r"\.ckpt-(\d+)$", prefix.name)
    if step is not None and (m is None or int(m[1]) != step):
        raise ConversionError(f"{path}: --step {step} does not match this checkpoint prefix")
    metas = _regular_files(prefix.parent.glob("*.meta"))
    return TFSource(path, "checkpoint", checkpoint_prefix=prefix, step=int(m[1]) if m else None,
                    meta_graph=metas[0] if len(metas) == 1 else None)


# --- reading ---------------------------------------------------------------------------------

def read_variables(src: TFSource, reader: str = "auto") -> dict[str, np.ndarray]:
    """All variables of the source's weights, named in `src.names`' scheme. reader: 'pure', 'tf',
    or 'auto' (pure) for checkpoints; h5py for a Keras file (its notes go to src.notes)."""
    if src.keras_h5 is not None:
        from .h5_source import read_keras_h5

        h5 = read_keras_h5(src.keras_h5)
        src.notes += [f"{src.keras_h5.name}: Keras {h5.keras_version or '(version not recorded)'} "
                      f"{h5.layout} file", *h5.notes]
        return h5.arrays
    if src.checkpoint_prefix is None:
        return read_frozen_graph_variables(src.frozen_graph)
    if reader not in ("auto", "pure", "tf"):
        raise ValueError(f"unknown reader {reader!r}")
    if reader == "tf":
        return read_checkpoint_tf(src.checkpoint_prefix)
    from .bundle_reader import read_checkpoint

    return read_checkpoint(src.checkpoint_prefix)


def read_checkpoint_tf(prefix: Path) -> dict[str, np.ndarray]:
    from .tf_graphs import import_tf

    tf = import_tf()
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        names = sorted(reader.get_variable_to_shape_map())
        return {n: reader.get_tensor(n) for n in names}
    except (tf.errors.OpError, RuntimeError, ValueError) as e:
        raise ConversionError(f"{prefix}: TensorFlow cannot read this checkpoint: "
                              f"{str(e).splitlines()[0]}") from e


def load_graph_def(pb: Path):
    from .tf_graphs import import_tf

    tf = import_tf()
    graph_def = tf.compat.v1.GraphDef()
    try:
        with open_regular(pb, "frozen graph") as f:
            graph_def.ParseFromString(f.read())
    except Exception as e:  # protobuf's DecodeError and friends
        raise ConversionError(f"{pb}: not a TensorFlow GraphDef ({e.__class__.__name__}: {e})") from e
    if not graph_def.node:
        raise ConversionError(f"{pb}: the graph is empty")
    return graph_def


def read_frozen_graph_variables(pb: Path) -> dict[str, np.ndarray]:
    """Weights of a frozen graph: the Const nodes that freezing made of variables, recognised
    by the `<name>/read` Identity that TF1 variables keep after freezing."""
    from .tf_graphs import import_tf

    tf = import_tf()
    graph_def = load_graph_def(pb)
    nodes = {n.name: n for n in graph_def.node}
    out = {}
    for name, node in nodes.items():
        read = nodes.get(f"{name}/read")
        if node.op == "Const" and read is not None and read.op == "Identity":
            try:
                out[name] = tf.make_ndarray(node.attr["value"].tensor)
            except Exception as e:
                raise ConversionError(f"{pb}: constant {name!r} cannot be decoded ({e})") from e
    if not out:
        raise ConversionError(f"{pb}: no frozen variables found (Const nodes with a '/read' "
                              f"Identity); is this a frozen FaceNet graph?")
    return out
