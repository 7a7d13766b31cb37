"""Read Sandberg's Inception-ResNet-V1 from a Keras 2 `.h5` file, with h5py only.

Two layouts, both written by Keras 2 / tf.keras 2:
- full model (`model.save`): weights under `model_weights/`, the architecture in the root
  attribute `model_config` (nyoki-mtl's facenet_keras.h5, keras-facenet's `20180402-114759.h5`);
- weights only (`model.save_weights`): the same layer groups at the root (deepface's
  `facenet_weights.h5`, keras-facenet's `-weights.h5`).
In both, the attribute `layer_names` lists the layers and each layer group's `weight_names` lists
its datasets, stored at `<layer>/<weight name>` (`Conv2d_1a_3x3/Conv2d_1a_3x3/kernel:0`). Every
dataset found is returned under that path; converter.mapping.KERAS_NAMES spells the table's rows
the same way, so the loader's accounting applies unchanged.

Nothing from the file is executed or deserialized: `model_config` is read as JSON data only (its
Lambda layers carry marshalled Python bytecode, which is never loaded). Declared dataset sizes are
checked before anything is read, and datasets stored in other files are refused.

Keras 3 `.weights.h5` files are not supported: they name layers by class and creation order
(`layers/conv2d_5/vars/0`), not by Sandberg's layer names, so they cannot be tied to the table
without guessing.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConversionError

H5_SUFFIXES = (".h5", ".hdf5", ".keras.h5")
# The largest Inception-ResNet-V1 weight is a classifier: 512 x 10575 float32 = 21.7 MB
# (CASIA-WebFace Logits). A dataset declaring more is refused before it is read.
MAX_DATASET_BYTES = 64 << 20
KERAS3_HINT = ("Keras 3 .weights.h5 files are not supported: they name layers by class and "
               "creation order (layers/conv2d_5/vars/0), not by layer name, so their tensors cannot "
               "be tied to Sandberg's variables without guessing. Save the model with Keras 2 / "
               "tf.keras (model.save('x.h5') or model.save_weights('x.h5')) and convert that file")


@dataclass
class KerasH5:
    path: Path
    layout: str                                   # 'full model' | 'weights only'
    keras_version: str | None
    arrays: dict[str, np.ndarray]                 # '<layer>/<layer>/<weight>:0' -> array
    config_embedding_size: int | None = None      # Bottleneck units from model_config
    notes: list[str] = field(default_factory=list)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _names(attr) -> list[str]:
    return [_text(v) for v in np.asarray(attr).ravel()]


def _config_layers(config) -> list[dict]:
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else inner
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise ValueError("no list of layers")
    return layers


def read_model_config(path: Path, raw) -> tuple[int | None, list[str]]:
    """(Bottleneck units, notes) from `model_config`, read as JSON data only."""
    try:
        layers = _config_layers(json.loads(_text(raw)))
    except ValueError as e:   # json.JSONDecodeError is a ValueError
        raise ConversionError(f"{path}: model_config is not a Keras model description ({e})") from e
    kinds = Counter(str(layer.get("class_name")) for layer in layers)
    by_name = {layer.get("config", {}).get("name", layer.get("name")): layer for layer in layers}
    bottleneck = by_name.get("Bottleneck")
    if bottleneck is None or bottleneck.get("class_name") != "Dense":
        raise ConversionError(f"{path}: model_config has no Dense layer named Bottleneck: not "
                              f"Sandberg's Inception-ResNet-V1 ({len(layers)} layers: "
                              f"{', '.join(f'{n} {k}' for k, n in kinds.most_common(5))})")
    units = bottleneck.get("config", {}).get("units")
    notes = [f"model_config read as JSON only: {len(layers)} layers "
             f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})"]
    if kinds.get("Lambda"):
        notes.append(f"{kinds['Lambda']} Lambda layers hold marshalled Python bytecode: never "
                     f"loaded or run (only weights are read)")
    return (int(units) if isinstance(units, int) else None), notes


def _dataset(path: Path, name: str, ds) -> np.ndarray:
    """One dataset, after checking it is stored in this file and small enough to read."""
    if ds.is_virtual or ds.external:
        raise ConversionError(f"{path}: dataset {name} is stored outside this file; refused")
    declared = int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize if ds.shape else ds.dtype.itemsize
    if declared > MAX_DATASET_BYTES:
        raise ConversionError(f"{path}: dataset {name} declares shape {list(ds.shape)} "
                              f"{ds.dtype} ({declared} bytes), more than any Inception-ResNet-V1 "
                              f"weight ({MAX_DATASET_BYTES} bytes at most); not read")
    try:
        return np.asarray(ds[()])
    except Exception as e:  # h5py raises OSError / KeyError / RuntimeError for a corrupt file
        raise ConversionError(f"{path}: dataset {name} cannot be read (truncated or corrupt "
                              f"file?): {type(e).__name__}: {e}") from e


def _read_weights(path: Path, root) -> dict[str, np.ndarray]:
    import h5py

    found: dict[str, object] = {}
    root.visititems(lambda name, obj: found.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    listed = set()
    for layer in _names(root.attrs["layer_names"]):
        group = root.get(layer)
        if group is None:
            raise ConversionError(f"{path}: layer {layer} is listed in layer_names but has no group")
        listed.update(f"{layer}/{w}" for w in _names(group.attrs.get("weight_names", [])))
    absent = sorted(listed - set(found))
    unlisted = sorted(set(found) - listed)
    if absent or unlisted:
        lines = [f"listed in weight_names but absent: {n}" for n in absent]
        lines += [f"dataset not listed in any weight_names: {n}" for n in unlisted]
        raise ConversionError(f"{path}: the weight lists disagree with the datasets:\n  " + "\n  ".join(lines))
    return {name: _dataset(path, name, found[name]) for name in sorted(found)}


def read_keras_h5(path) -> KerasH5:
    """The weights of a Keras 2 h5 file (full model or weights only); raises ConversionError."""
    import h5py

    path = Path(path)
    if path.name.endswith(".weights.h5"):
        raise ConversionError(f"{path}: {KERAS3_HINT}")
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: not a readable HDF5 file ({e})") from e
    try:
        with f:
            if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
                root, layout = f["model_weights"], "full model"
            elif "layer_names" in f.attrs:
                root, layout = f, "weights only"
            elif "layers" in f and "vars" in f:
                raise ConversionError(f"{path}: {KERAS3_HINT}")
            else:
                raise ConversionError(f"{path}: not a Keras 2 weights file: no model_weights group "
                                      f"and no layer_names attribute (top level: {', '.join(sorted(f)) or 'empty'})")
            units, notes = (read_model_config(path, f.attrs["model_config"])
                            if "model_config" in f.attrs else (None, []))
            version = f.attrs.get("keras_version", root.attrs.get("keras_version"))
            arrays = _read_weights(path, root)
    except ConversionError:
        raise
    except Exception as e:  # a corrupt file can fail anywhere in h5py
        raise ConversionError(f"{path}: cannot read this HDF5 file (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from e
    _check_embedding_size(path, arrays, units)
    return KerasH5(path, layout, None if version is None else _text(version), arrays, units, notes)


def _check_embedding_size(path: Path, arrays: dict, units: int | None) -> None:
    from .mapping import KERAS_NAMES, bottleneck_weights

    kernel = arrays.get(bottleneck_weights(KERAS_NAMES))
    if units is not None and kernel is not None and kernel.shape[-1:] != (units,):
        raise ConversionError(f"{path}: model_config says Bottleneck has {units} units, but "
                              f"{bottleneck_weights(KERAS_NAMES)} is {list(kernel.shape)}")


def to_tf_names(arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """The same arrays under Sandberg's TF variable names (row i of the table is the same tensor in
    both naming schemes): for running our TF graph on them, or writing them as a TF checkpoint.
    Raises ConversionError when the accounting does not balance, as the conversion would."""
    from .loader import arrays_to_state_dict
    from .mapping import KERAS_NAMES, TF_NAMES, inception_resnet_v1_table

    _, report = arrays_to_state_dict(arrays, source, names=KERAS_NAMES)   # every check, once
    with_logits = report.num_classes is not None
    pairs = zip(inception_resnet_v1_table(with_logits, KERAS_NAMES), inception_resnet_v1_table(with_logits, TF_NAMES))
    return {tf.tf_name: arrays[keras.tf_name] for keras, tf in pairs if keras.tf_name is not None}
