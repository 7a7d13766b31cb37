"""Write state_dicts atomically and byte-reproducibly, as `.pt` or `.safetensors`.

Atomic: see models/common/atomic_io.py (temp file, fsync, rename; nothing half-written).
Reproducible: keys are sorted and arrays made C-contiguous. `.pt` bytes come from our own writer
of torch's zip format (converter/torch_zip.py: equal to torch.save's, but independent of the
installed torch version and without importing torch); `.safetensors` from safetensors.numpy.
State dicts may hold numpy arrays or torch tensors; torch is never imported here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..models.common.atomic_io import (atomic_output, atomic_write_bytes, atomic_write_files,  # noqa: F401
                              sha256_bytes, sha256_file)  # (re-exported for the converter)

from .torch_zip import torch_save_bytes

SUFFIXES = (".pt", ".pth", ".safetensors")


def json_bytes(obj) -> bytes:
    """Canonical JSON (sorted keys, 2-space indent, trailing newline): stable bytes for a manifest."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def _as_array(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    return value.detach().cpu().numpy()  # a torch.Tensor (the caller imported torch, not us)


def _canonical(state_dict: Mapping) -> dict[str, np.ndarray]:
    # (not np.ascontiguousarray: it turns a 0-d array such as num_batches_tracked into shape (1,))
    return {k: np.require(_as_array(state_dict[k]), requirements="C") for k in sorted(state_dict)}


def serialize_state_dict(state_dict: Mapping, suffix: str) -> bytes:
    """The exact bytes `write_state_dict` would write for a file ending in `suffix`."""
    if suffix not in SUFFIXES:
        raise ValueError(f"unsupported output suffix {suffix!r}: use one of {', '.join(SUFFIXES)}")
    arrays = _canonical(state_dict)
    if suffix == ".safetensors":
        from safetensors.numpy import save

        return save(arrays, metadata={"format": "pt"})
    return torch_save_bytes(arrays)


def write_state_dict(state_dict: Mapping, path: str | os.PathLike) -> str:
    """Write atomically; the format follows the suffix. Returns the file's sha256."""
    data = serialize_state_dict(state_dict, Path(path).suffix)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)
