"""Write state_dicts atomically and byte-reproducibly, as `.pt` or `.safetensors`.

Atomic: see models/atomic_io.py (temp file, fsync, rename; nothing half-written).
Reproducible: tensors are made contiguous and keys sorted; `.pt` is serialized into memory so
the zip archive's inner folder name does not depend on the temp file's name.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Mapping

import torch

from models.atomic_io import (atomic_output, atomic_write_bytes, atomic_write_files,  # noqa: F401
                              sha256_bytes, sha256_file)  # (re-exported for the converter)
from models.serialization import load_state_dict_file  # noqa: F401  (re-exported)

SUFFIXES = (".pt", ".pth", ".safetensors")


def json_bytes(obj) -> bytes:
    """Canonical JSON (sorted keys, 2-space indent, trailing newline): stable bytes for a manifest."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def _canonical(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: state_dict[k].detach().cpu().contiguous() for k in sorted(state_dict)}


def serialize_state_dict(state_dict: Mapping[str, torch.Tensor], suffix: str) -> bytes:
    """The exact bytes `write_state_dict` would write for a file ending in `suffix`."""
    tensors = _canonical(state_dict)
    if suffix == ".safetensors":
        from safetensors.torch import save

        return save(tensors, metadata={"format": "pt"})
    if suffix in (".pt", ".pth"):
        buf = io.BytesIO()
        torch.save(tensors, buf)
        return buf.getvalue()
    raise ValueError(f"unsupported output suffix {suffix!r}: use one of {', '.join(SUFFIXES)}")


def write_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Write atomically; the format follows the suffix. Returns the file's sha256."""
    data = serialize_state_dict(state_dict, Path(path).suffix)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)
