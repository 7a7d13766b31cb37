"""Safe loading of state_dict files: safetensors, or `.pt` with `weights_only=True` (no arbitrary pickle)."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a `.pt`/`.pth` or `.safetensors` file holding a plain state_dict (a dict of tensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses arbitrary objects; corrupt zips fail here too
        raise ValueError(f"{path}: cannot be loaded as a weights-only state_dict ({e})") from e
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a plain state_dict (a dict of name -> tensor)")
    return obj
