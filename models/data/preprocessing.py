"""Input standardization and resizing for FaceNet models, for torch tensors and numpy arrays.

Sandberg's models expect 160x160 RGB face crops with pixel values in [0, 255], standardized one of
two ways (the registry records which; `standardize(x, method)` dispatches):

- ``fixed``: ``(x - 127.5) / 128``: the 2018 models (20180402-114759, 20180408-102900).
- ``prewhiten``: per image, over all its pixels and channels,
  ``(x - mean) / max(std, 1 / sqrt(x.size))`` with the population std (ddof=0, as numpy's
  ``np.std``): the 2017 models (20170512-110547, 20170511-185253).

Arrays may be one image (3 dims, HWC or CHW: the layout does not matter for either formula) or
a batch (4 dims, the first indexes images). Integer inputs are converted to float32; float64 stays
float64.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
from PIL import Image

ArrayLike = Union[np.ndarray, torch.Tensor]

STANDARDIZATIONS = ("fixed", "prewhiten")


def _as_float(x: ArrayLike) -> ArrayLike:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.float32)
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)


def fixed_image_standardization(x: ArrayLike) -> ArrayLike:
    """``(x - 127.5) / 128``, elementwise. Returns the same kind (tensor or ndarray) as given."""
    x = _as_float(x)
    return (x - 127.5) / 128.0


def prewhiten(x: ArrayLike) -> ArrayLike:
    """Per-image ``(x - mean) / max(std, 1/sqrt(n))`` where n counts the image's values.

    A 3-dim input is one image; a 4-dim input is a batch, each image standardized on its own.
    """
    x = _as_float(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"prewhiten expects one image (3 dims) or a batch (4 dims); got shape {tuple(x.shape)}")
    per_image = x.ndim == 4
    n = math.prod(x.shape[1:] if per_image else x.shape)
    floor = 1.0 / math.sqrt(n)
    if isinstance(x, torch.Tensor):
        dims = tuple(range(1, 4)) if per_image else tuple(range(3))
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True, unbiased=False)
        return (x - mean) / torch.clamp(std, min=floor)
    axes = (1, 2, 3) if per_image else None
    mean = x.mean(axis=axes, keepdims=per_image)
    std = x.std(axis=axes, keepdims=per_image)
    return (x - mean) / np.maximum(std, np.asarray(floor, dtype=x.dtype))


def standardize(x: ArrayLike, method: str | None) -> ArrayLike:
    """Apply the named standardization ('fixed' or 'prewhiten'); None returns x as float."""
    if method is None:
        return _as_float(x)
    if method == "fixed":
        return fixed_image_standardization(x)
    if method == "prewhiten":
        return prewhiten(x)
    raise ValueError(f"unknown standardization {method!r}; expected one of {STANDARDIZATIONS}")


def unfixed(x: ArrayLike) -> ArrayLike:
    """Invert fixed standardization: back to [0, 255] pixel values (``x * 128 + 127.5``)."""
    return _as_float(x) * 128.0 + 127.5


def resize(img, size: int | tuple[int, int] = 160):
    """Resize a face crop to ``size`` (an int gives a square; a tuple is (width, height)).

    - PIL image → PIL image (bilinear, Pillow's antialiasing filter when shrinking: what
      ``scipy.misc.imresize(..., interp='bilinear')`` did for Sandberg's aligned crops).
    - numpy HWC uint8 array → the same, via Pillow.
    - torch tensor, (C,H,W) or (N,C,H,W) float → bilinear ``interpolate`` with antialias.
    """
    w, h = (size, size) if isinstance(size, int) else size
    if isinstance(img, Image.Image):
        return img if img.size == (w, h) else img.resize((w, h), Image.BILINEAR)
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f"resize expects an HWC or HW array; got shape {img.shape}")
        if img.shape[:2] == (h, w):
            return img
        if img.dtype != np.uint8:
            raise ValueError("resize of numpy arrays takes uint8 images; use a tensor for floats")
        return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    if isinstance(img, torch.Tensor):
        batched = img.ndim == 4
        t = img if batched else img.unsqueeze(0)
        if t.ndim != 4:
            raise ValueError(f"resize expects a (C,H,W) or (N,C,H,W) tensor; got {tuple(img.shape)}")
        if tuple(t.shape[-2:]) == (h, w):
            return img
        out = torch.nn.functional.interpolate(_as_float(t), size=(h, w), mode="bilinear",
                                              align_corners=False, antialias=True)
        return out if batched else out[0]
    raise TypeError(f"resize: unsupported image type {type(img).__name__}")


def to_tensor(img) -> torch.Tensor:
    """An RGB PIL image or HWC uint8 array → float32 (3, H, W) tensor of [0, 255] values (not /255)."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"to_tensor expects an RGB image (H, W, 3); got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32)
