"""Write state_dicts atomically and byte-reproducibly, as `.pt` or `.safetensors`.

Atomic: bytes go to a temp file in the destination folder, are fsync'ed, then renamed over the
target, so a crash leaves either the old file or the new one, never half of one.
Reproducible: tensors are made contiguous and keys sorted; `.pt` is serialized into memory so
the zip archive's inner folder name does not depend on the temp file's name.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

import torch

from models.serialization import load_state_dict_file  # noqa: F401  (re-exported)

SUFFIXES = (".pt", ".pth", ".safetensors")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_files(files: Mapping[str | os.PathLike, bytes]) -> None:
    """Write several files so that none is replaced unless all were written: each goes to a temp
    file beside its target (fsync'ed), and only then are all renamed into place. On any failure
    the temp files are removed and the targets keep their old contents."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temp file + rename; on any failure the temp file is removed."""
    atomic_write_files({path: data})


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
