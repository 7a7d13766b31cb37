"""Safe loading of state_dict files: safetensors, or `.pt` with `weights_only=True` (no arbitrary pickle)."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from ..common.paths import open_regular, require_regular


def _first_line(e: BaseException, limit: int = 300) -> str:
    line = (str(e).strip().splitlines() or [type(e).__name__])[0].strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a `.pt`/`.pth` or `.safetensors` file holding a plain state_dict (a dict of tensors).

    Raises FileNotFoundError for a missing file and ValueError (naming the file) for anything
    else: a corrupt file, or a `.pt` whose pickle asks for Python objects beyond tensors (refused
    by `weights_only=True` before anything in it runs)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: no such weights file")
    require_regular(path, "weights file")   # a FIFO or a device is refused before it is opened
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:  # safetensors checks every header shape against the byte ranges in the file
            return check_tensor_values(load_file(str(path)), str(path))
        except Exception as e:  # SafetensorError (not a ValueError), truncated files, bad headers
            if isinstance(e, ValueError) and str(e).startswith(str(path)):
                raise
            raise ValueError(f"{path}: not a readable safetensors file ({_first_line(e)})") from e
    mmap = _check_torch_zip(path)
    try:
        # mmap: tensors are views of the file, so no tensor can claim more memory than the file has
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # refused globals, corrupt zips, truncated files, ...
        msg = str(e)
        refused = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", msg)
        if isinstance(e, pickle.UnpicklingError) and refused:
            raise ValueError(f"{path}: refused: its pickle asks for Python objects beyond tensors "
                             f"({refused[1]}). It is not a plain state_dict and may be malicious; "
                             f"nothing in it was run") from e
        # torch prefixes every weights-only failure with advice to turn the guard off: keep the cause
        detail = msg.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in msg else msg
        raise ValueError(f"{path}: cannot be loaded as a weights-only state_dict "
                         f"({_first_line(ValueError(detail)) if detail.strip() else type(e).__name__})") from e
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise ValueError(f"{path}: not a plain state_dict (a dict of name -> tensor)")
    return check_tensor_values(obj, str(path))


_MAX_ZIP_RECORDS = 100_000


def _check_torch_zip(path: Path) -> bool:
    """torch.save writes an uncompressed zip: refuse compressed records (a small file could
    inflate to any size) and records that claim more bytes than the file has. True when the file
    is a zip (then it can be memory-mapped); False for torch's legacy format."""
    import zipfile

    with open_regular(path, "weights file") as f:
        if not zipfile.is_zipfile(f):
            return False
        size = os.fstat(f.fileno()).st_size
        try:
            records = zipfile.ZipFile(f).infolist()
        except (zipfile.BadZipFile, ValueError, OSError) as e:
            raise ValueError(f"{path}: corrupt zip ({e})") from None
    if len(records) > _MAX_ZIP_RECORDS:
        raise ValueError(f"{path}: {len(records)} zip records; not a state_dict file")
    for r in records:
        if r.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{path}: record {r.filename} is compressed; torch.save never compresses "
                             f"(refused: it could inflate to any size)")
        if r.file_size > size:
            raise ValueError(f"{path}: record {r.filename} claims {r.file_size} bytes in a {size}-byte file")
    return True


def _is_counter(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "num_batches_tracked"   # BatchNorm's step counter (int64)


def check_tensor_values(state_dict: dict, source: str) -> dict:
    """Every loader's one value check: weights are real floating point numbers, all finite.
    Complex, integer or bool weights (other than BatchNorm's counters) and NaN/Inf are refused,
    naming the key, instead of being cast or loaded into a model that returns NaN."""
    problems = []
    for key, t in state_dict.items():
        if t.is_complex():
            problems.append(f"{key}: complex dtype {t.dtype}")
        elif not t.is_floating_point():
            if not _is_counter(key):
                problems.append(f"{key}: dtype {t.dtype}, expected floating point")
        else:
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                problems.append(f"{key}: {int(t.numel() - finite.sum())} of {t.numel()} values are NaN or Inf")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValueError(f"{source}: invalid weights: {shown}")
    return state_dict
