"""Safe loading of state_dict files: safetensors, or `.pt` with `weights_only=True` (no arbitrary pickle)."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch


def _first_line(e: BaseException, limit: int = 300) -> str:
    line = (str(e).strip().splitlines() or [type(e).__name__])[0].strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a `.pt`/`.pth` or `.safetensors` file holding a plain state_dict (a dict of tensors).

    Raises FileNotFoundError for a missing file and ValueError (naming the file) for anything
    else: a corrupt file, or a `.pt` whose pickle asks for Python objects beyond tensors (refused
    by `weights_only=True` before anything in it runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError (not a ValueError), truncated files, bad headers
            raise ValueError(f"{path}: not a readable safetensors file ({_first_line(e)})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
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
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a plain state_dict (a dict of name -> tensor)")
    return obj
