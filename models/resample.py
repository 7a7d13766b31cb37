"""OpenCV's ``cv2.resize(..., interpolation=cv2.INTER_AREA)`` in torch, bit for bit, without OpenCV.

Sandberg's ``detect_face`` resizes with INTER_AREA twice: each pyramid level from the uint8 photo
(OpenCV's 8-bit arithmetic, rounded to uint8) and each 24 x 24 / 48 x 48 candidate crop from a
float64 patch (double arithmetic, not rounded). ``resize_area`` reproduces both (``depth`` "u8" or
"f64"), following OpenCV's ``modules/imgproc/src/resize.cpp``:

- both scales >= 1 (shrinking) and both integer (``src / dst`` within DBL_EPSILON of an integer):
  the *fast* path, a plain k_x x k_y box sum. uint8: ``(sum + 2) >> 2`` for 2 x 2 (1, 3 or 4
  channels), else ``round(sum * float32(1 / area))``; double: ``sum * float32(1 / area)``;
- both scales >= 1 otherwise: the *area* path. Each output pixel averages the source pixels its
  footprint covers, partly covered ones weighted by the covered fraction (``computeResizeAreaTab``:
  weights computed in double, stored as float32). Horizontal pass first (per source row, taps
  summed left to right), then the rows, top to bottom; float32 accumulators for uint8 (then
  rounded half to even and saturated), double for float64;
- any scale < 1 (growing): INTER_AREA becomes a bilinear variant (``area_mode`` in resize.cpp):
  ``sx = floor(dx * scale)``, ``fx = (dx + 1) - (sx + 1) / scale`` (0 if negative, else its
  fractional part), taps ``sx, sx + 1`` weighted ``1 - fx, fx`` as float32, the last source
  column/row repeated at the border. Implemented for float64 only: Sandberg never grows a uint8
  image (his pyramid scales are <= 0.6), and OpenCV's 8-bit bilinear is fixed-point with
  vector/scalar variants that round differently;
- equal sizes: a copy.

The tables are computed once per (source size, output size) and cached. The accumulation is done
tap by tap in OpenCV's order, with separate multiplies and adds (no fused multiply-add), so the
float rounding is OpenCV's and the results are identical, not merely close; the tests compare
against cv2.resize on random images of many sizes.

Images are (..., C, H, W) tensors; C is OpenCV's channel count (it selects the 2 x 2 vector path).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

DEPTHS = ("u8", "f64")
_DBL_EPSILON = float(np.finfo(np.float64).eps)
_AREA_EPS = 1e-3  # computeResizeAreaTab ignores slivers of a source pixel below this


def _f32(x: float) -> float:
    return float(np.float32(x))


def _scales(src: int, dst: int) -> tuple[float, float]:
    """(inv_scale, scale) as cv::resize computes them: inv = dst / src, scale = 1 / inv."""
    inv = dst / src
    return inv, 1.0 / inv


def _integer_scale(src: int, dst: int) -> int | None:
    """The integer ratio when OpenCV's ``is_area_fast`` test holds for this axis."""
    _, scale = _scales(src, dst)
    k = int(round(scale))
    return k if abs(scale - k) < _DBL_EPSILON else None


def _dense(rows: list[list[tuple[int, float]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output tap lists -> (index (dst, T) long, weight (dst, T) float64), padded with
    zero-weight taps on source pixel 0 (adding ``x * 0`` leaves a sum unchanged)."""
    taps = max(len(r) for r in rows)
    index = torch.zeros((len(rows), taps), dtype=torch.long)
    weight = torch.zeros((len(rows), taps), dtype=torch.float64)
    for d, r in enumerate(rows):
        for t, (s, a) in enumerate(r):
            index[d, t] = s
            weight[d, t] = a
    return index, weight


@lru_cache(maxsize=512)
def area_taps(src: int, dst: int) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's ``computeResizeAreaTab`` for one axis (``src >= dst``): taps in summation order."""
    _, scale = _scales(src, dst)
    rows = []
    for d in range(dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, src - f1)
        s2 = min(math.floor(f2), src - 1)
        s1 = min(math.ceil(f1), s2)
        taps = []
        if s1 - f1 > _AREA_EPS:
            taps.append((s1 - 1, _f32((s1 - f1) / cell)))
        taps.extend((s, _f32(1.0 / cell)) for s in range(s1, s2))
        if f2 - s2 > _AREA_EPS:
            taps.append((s2, _f32(min(min(f2 - s2, 1.0), cell) / cell)))
        rows.append(taps)
    return _dense(rows)


@lru_cache(maxsize=512)
def linear_taps(src: int, dst: int, clamp_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """INTER_AREA's bilinear variant for one axis (used when either axis grows): two taps
    ``sx, sx + 1`` weighted ``1 - fx, fx`` (float32). Columns (``clamp_last``) past the last
    source pixel read it with weight 1; rows keep both weights on the clamped row, as
    resizeGeneric_ does."""
    inv, scale = _scales(src, dst)
    rows = []
    for d in range(dst):
        sx = math.floor(d * scale)
        fx = _f32((d + 1) - (sx + 1) * inv)
        fx = 0.0 if fx <= 0 else _f32(fx - math.floor(fx))
        if clamp_last and sx + 1 >= src:
            rows.append([(src - 1, 1.0)])
            continue
        rows.append([(min(sx, src - 1), _f32(1.0 - fx)), (min(sx + 1, src - 1), fx)])
    return _dense(rows)


def _accumulate(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_t x[:, index[:, t]] * weight[:, t] over dim 1, tap by tap in order, in x's dtype.
    The resized axis is dim 1 (outside the others), so each tap copies whole rows."""
    index = index.to(x.device)
    weight = weight.to(device=x.device, dtype=x.dtype)
    out = None
    for t in range(index.shape[1]):
        term = x.index_select(1, index[:, t]).mul_(weight[:, t].view(1, -1, 1, 1))
        out = term if out is None else out.add_(term)
    return out


def _separable(x: torch.Tensor, width_taps, height_taps) -> torch.Tensor:
    """Horizontal pass (per source row), then vertical: resize.cpp's order."""
    *lead, c, h, w = x.shape
    x = x.reshape(-1, c, h, w)
    rows = _accumulate(x.permute(0, 3, 1, 2).contiguous(), *width_taps)  # (N, w', C, H)
    out = _accumulate(rows.permute(0, 3, 2, 1).contiguous(), *height_taps)  # (N, h', C, w')
    return out.permute(0, 2, 1, 3).reshape(*lead, c, out.shape[1], out.shape[3])


def _fast_area(x: torch.Tensor, kx: int, ky: int, depth: str) -> torch.Tensor:
    """resizeAreaFast_: box sums over ky x kx blocks, summed row-major in groups of four."""
    *lead, c, h, w = x.shape
    blocks = x.reshape(*lead, c, h // ky, ky, w // kx, kx).movedim(-3, -2)
    blocks = blocks.reshape(*lead, c, h // ky, w // kx, ky * kx)
    area = kx * ky
    if depth == "u8":
        total = blocks.to(torch.int32).sum(-1)
        if kx == 2 and ky == 2 and c in (1, 3, 4):
            return ((total + 2) >> 2).to(torch.float32)  # the vector path's rounding
        return torch.round(total.to(torch.float32) * _f32(1.0 / area)).clamp_(0, 255)
    total = torch.zeros(blocks.shape[:-1], dtype=torch.float64, device=x.device)
    k = 0
    while k + 4 <= area:  # CV_ENABLE_UNROLLED: sum += S0 + S1 + S2 + S3
        total += blocks[..., k] + blocks[..., k + 1] + blocks[..., k + 2] + blocks[..., k + 3]
        k += 4
    for k in range(k, area):
        total += blocks[..., k]
    return total * _f32(1.0 / area)


def resize_area(x: torch.Tensor, size: tuple[int, int], depth: str) -> torch.Tensor:
    """``cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)`` for (..., C, H, W) images.

    depth "u8": ``x`` holds uint8 values (any dtype); returns float32 holding the uint8 result.
    depth "f64": ``x`` is computed in float64; returns float64.
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, not {depth!r}")
    if x.dim() < 3:
        raise ValueError(f"expected a (..., C, H, W) tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2], x.shape[-1]
    dh, dw = int(size[0]), int(size[1])
    if dh < 1 or dw < 1 or h < 1 or w < 1:
        raise ValueError(f"cannot resize {h}x{w} to {dh}x{dw}: sizes must be positive")
    work = torch.float32 if depth == "u8" else torch.float64
    if (dh, dw) == (h, w):
        return x.to(work, copy=True)
    shrink = dh <= h and dw <= w
    if shrink:
        kx, ky = _integer_scale(w, dw), _integer_scale(h, dh)
        if kx is not None and ky is not None:
            return _fast_area(x, kx, ky, depth)
        out = _separable(x.to(work), area_taps(w, dw), area_taps(h, dh))
    else:
        if depth == "u8":
            raise NotImplementedError(
                "uint8 INTER_AREA enlargement (OpenCV's fixed-point bilinear) is not implemented: "
                "Sandberg's pipeline only enlarges float64 crops")
        out = _separable(x.to(work), linear_taps(w, dw, True), linear_taps(h, dh, False))
    if depth == "u8":
        out = torch.round(out).clamp_(0, 255)  # saturate_cast<uchar>: cvRound, half to even
    return out


# ------------------------------------------------------------------ many patches, one call

def _axis_plan(src: int, dst: int, enlarging: bool, columns: bool):
    return linear_taps(src, dst, columns) if enlarging else area_taps(src, dst)


def _stack_taps(tables: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch (dst, T_k) tables -> (K, dst, T) with zero-weight padding taps."""
    taps = max(t[0].shape[1] for t in tables)
    index = torch.zeros((len(tables), tables[0][0].shape[0], taps), dtype=torch.long)
    weight = torch.zeros(index.shape, dtype=torch.float64)
    for k, (i, w) in enumerate(tables):
        index[k, :, : i.shape[1]] = i
        weight[k, :, : w.shape[1]] = w
    return index, weight


def _gather_accumulate(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Like _accumulate, with a table per patch: x (K, C, H, W), index/weight (K, dst, T)."""
    k, c = x.shape[0], x.shape[1]
    index, weight = index.to(x.device), weight.to(device=x.device, dtype=x.dtype)
    out = None
    for t in range(index.shape[2]):
        if dim == -1:
            shape = (k, c, x.shape[2], index.shape[1])
            i = index[:, None, None, :, t].expand(shape)
            w = weight[:, None, None, :, t]
        else:
            shape = (k, c, index.shape[1], x.shape[3])
            i = index[:, None, :, None, t].expand(shape)
            w = weight[:, None, :, None, t]
        term = x.gather(dim, i).mul_(w)
        out = term if out is None else out.add_(term)
    return out


def _canvas(images: torch.Tensor, image_index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
            height: int, width: int) -> torch.Tensor:
    """(K, C, height, width) float64 windows of the images at (top, left), zero outside them."""
    n, c, h, w = images.shape
    rows = top[:, None] + torch.arange(height, device=top.device)
    cols = left[:, None] + torch.arange(width, device=left.device)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    flat = (image_index[:, None, None] * (h * w) + rows.clamp(0, h - 1)[:, :, None] * w
            + cols.clamp(0, w - 1)[:, None, :])
    pixels = images.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view if channels-last
    win = pixels.index_select(0, flat.reshape(-1)).view(*flat.shape, c)
    return (win.to(torch.float64) * inside[..., None]).permute(0, 3, 1, 2)


def crop_resize_area(images: torch.Tensor, image_index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                     heights: torch.Tensor, widths: torch.Tensor, size: int) -> torch.Tensor:
    """For each patch k -- rows ``top[k] .. top[k] + heights[k]``, columns likewise, of image
    ``image_index[k]`` (0-based; pixels outside the image read as 0) -- its float64 INTER_AREA
    resize to ``size`` x ``size``, identical to ``cv2.resize(patch.astype(float64), ...)``.

    Patches of similar size are processed together (each with its own tables, padded to the
    group's largest), so the work is a few batched gathers per tap, not a loop over patches.
    Returns (K, C, size, size) float64.
    """
    k = int(top.shape[0])
    c = images.shape[1]
    out = torch.zeros((k, c, size, size), dtype=torch.float64, device=images.device)
    if k == 0:
        return out
    hs, ws = heights.tolist(), widths.tolist()
    groups: dict[tuple, list[int]] = {}
    for i, (h, w) in enumerate(zip(hs, ws)):
        if h < 1 or w < 1:
            raise ValueError(f"patch {i} has an empty size {h}x{w}")
        kx, ky = _integer_scale(w, size), _integer_scale(h, size)
        if h >= size and w >= size and kx is not None and ky is not None and (kx, ky) != (1, 1):
            key = ("fast", kx, ky)
        else:  # similar sizes share a padded canvas (a group spans a factor of about 1.26)
            key = ("taps", h < size or w < size, int(3 * math.log2(max(h, w))))
        groups.setdefault(key, []).append(i)
    for key, members in groups.items():
        sel = torch.tensor(members, dtype=torch.long, device=images.device)
        gh, gw = max(hs[i] for i in members), max(ws[i] for i in members)
        canvas = _canvas(images, image_index[sel], top[sel], left[sel], gh, gw)
        if key[0] == "fast":
            out[sel] = _fast_area(canvas, key[1], key[2], "f64")
            continue
        enlarging = key[1]
        xt = _stack_taps([_axis_plan(ws[i], size, enlarging, True) for i in members])
        yt = _stack_taps([_axis_plan(hs[i], size, enlarging, False) for i in members])
        out[sel] = _gather_accumulate(_gather_accumulate(canvas, *xt, dim=-1), *yt, dim=-2)
    return out
