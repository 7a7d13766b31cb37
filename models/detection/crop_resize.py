"""Sandberg's candidate crops, all at once: for each box, the zero-padded patch of the image
resized to 24 x 24 or 48 x 48 by OpenCV's INTER_AREA in float64 (``pad`` + ``imresample`` in his
detect_face), identical to ``cv2.resize(patch.astype(float64), ..., INTER_AREA)``.

Two ways to the same numbers:
- images holding uint8 values (Sandberg's case): every horizontal-pass product ``pixel * weight``
  (8-bit integer times a float32 weight) and every partial sum is exact in float64, so the order of
  the horizontal sums does not matter: a run of whole pixels is a difference of row prefix sums.
  The cost per output pixel is then independent of the box width. The vertical pass, whose products
  do round, is done tap by tap in OpenCV's order; the integer-ratio fast path is an exact box sum
  times float32(1 / area), as OpenCV computes it;
- other images: OpenCV's sequence of taps, literally (``_patches_by_taps``).
Patches of similar size are processed together, so the work is a few batched gathers per tap,
never a loop over boxes.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from .resample import _f32, _fast_area, _integer_scale, area_runs, area_taps, linear_taps


@lru_cache(maxsize=1024)
def column_runs(src: int, dst: int, enlarging: bool) -> torch.Tensor:
    """Per output column: (first index, first weight, run start, run end, run weight, last index,
    last weight), float64 (dst, 7); an absent tap has weight 0."""
    rows = []
    if enlarging:
        index, weight = linear_taps(src, dst, True)
        for d in range(dst):
            last = (int(index[d, 1]), float(weight[d, 1])) if index.shape[1] > 1 else (0, 0.0)
            rows.append((int(index[d, 0]), float(weight[d, 0]), 0, 0, 0.0, *last))
    else:
        for first, (lo, hi, w), last in area_runs(src, dst):
            rows.append((*(first or (0, 0.0)), lo, hi, w, *(last or (0, 0.0))))
    return torch.tensor(rows, dtype=torch.float64)


class _RowSums:
    """Prefix sums along every image row, (N * (H + 2) * (W + 1), C) int32: image n's row r is
    table row n * (H + 2) + r + 1, between two zero rows (rows outside the image are clamped onto
    them), and column x holds the sum of the pixels left of x (columns are clamped to 0 .. W). So
    pixels outside the image read as 0 with index arithmetic alone, no masking."""

    def __init__(self, images: torch.Tensor):
        n, c, h, w = images.shape
        self.h, self.w = h, w
        # the sums are written in place into the table (no copy of a frame-sized tensor)
        self.table = torch.empty((n * (h + 2) * (w + 1), c), dtype=torch.int32, device=images.device)
        sums = self.table.view(n, h + 2, w + 1, c)
        sums[:, 0] = 0
        sums[:, h + 1] = 0
        sums[:, :, 0] = 0
        torch.cumsum(images.permute(0, 2, 3, 1).to(torch.int32), dim=2, out=sums[:, 1: h + 1, 1:])

    def between(self, image, row, x0, x1) -> torch.Tensor:
        """Sum of the pixels ``x0 <= x < x1`` of ``row`` (broadcast), float64 (..., C)."""
        base = (image * (self.h + 2) + row.clamp(-1, self.h) + 1) * (self.w + 1)
        shape = torch.broadcast_shapes(base.shape, x0.shape, x1.shape)
        ends = torch.stack([(base + x.clamp(0, self.w)).expand(shape) for x in (x1, x0)])
        hi, lo = self.table.index_select(0, ends.reshape(-1)).view(2, *shape, -1)  # one gather
        return (hi - lo).to(torch.float64)


def _rows_by_runs(sums: _RowSums, image_index, top, left, height: int, runs: torch.Tensor) -> torch.Tensor:
    """The horizontal pass for ``height`` rows of each patch from prefix sums: (K, height, size, C).
    The first pixel, the run and the last pixel of every output are read in one gather."""
    dev = image_index.device
    runs = runs.to(dev)
    size = runs.shape[1]
    col = left[:, None, None] + runs[:, :, [0, 2, 5]].long()  # (K, size, 3) starts
    end = col + torch.stack((torch.ones_like(col[..., 0]), runs[..., 3].long() - runs[..., 2].long(),
                             torch.ones_like(col[..., 0])), dim=2)
    row = top[:, None, None] + torch.arange(height, device=dev)[None, :, None]
    part = sums.between(image_index[:, None, None], row, col.reshape(len(col), 1, -1), end.reshape(len(end), 1, -1))
    part = part.view(len(col), height, size, 3, -1) * runs[:, None, :, [1, 4, 6], None]
    return part[:, :, :, 0] + part[:, :, :, 1] + part[:, :, :, 2]  # exact: the order cannot matter


def _fast_by_sums(sums: _RowSums, image_index, top, left, kx: int, ky: int, size: int) -> torch.Tensor:
    """resizeAreaFast_ in double: the exact kx x ky box sum times float32(1 / area)."""
    dev = image_index.device
    steps = torch.arange(size, device=dev)
    x0 = left[:, None, None] + steps[None, None, :] * kx
    total = None
    for j in range(ky):
        row = top[:, None, None] + steps[None, :, None] * ky + j
        part = sums.between(image_index[:, None, None], row, x0, x0 + kx)
        total = part if total is None else total + part
    return (total * _f32(1.0 / (kx * ky))).permute(0, 3, 1, 2)


def _vertical(rows: torch.Tensor, yt, size: int) -> torch.Tensor:
    """The vertical pass, tap by tap in OpenCV's order: rows (K, gh, size, C) -> (K, C, size, size)."""
    k, gh = rows.shape[0], rows.shape[1]
    dev = rows.device
    yi, yw = yt[0].to(dev), yt[1].to(dev)
    index = (torch.arange(k, device=dev)[:, None, None, None] * gh + yi[:, :, None, :]) * size \
        + torch.arange(size, device=dev)[None, None, :, None]  # (K, size, size, Ty)
    weight = yw[:, :, None, :].expand(k, size, size, yw.shape[-1])
    return _rows_accumulate(rows.reshape(-1, rows.shape[-1]), index, weight).permute(0, 3, 1, 2)


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


class _Pixels:
    """The images' pixels as rows of C values, (N * H * W + 1, C), the last row zero: a pixel
    outside an image is read from it (Sandberg's zero padding) without any masking."""

    def __init__(self, images: torch.Tensor):
        n, c, h, w = images.shape
        self.n, self.h, self.w = n, h, w
        self.rows = torch.cat((images.permute(0, 2, 3, 1).reshape(n * h * w, c), images.new_zeros((1, c))))
        self.zero = n * h * w

    def flat_index(self, image_index, rows, cols):
        """Broadcast (image, row, col) -> row of ``self.rows``; outside the image -> the zero row."""
        inside = (rows >= 0) & (rows < self.h) & (cols >= 0) & (cols < self.w)
        flat = (image_index * self.h + rows) * self.w + cols
        return torch.where(inside, flat, self.zero)

    def read(self, flat: torch.Tensor) -> torch.Tensor:
        """float64 pixels at a flat index of any shape: (*flat.shape, C)."""
        return self.rows.index_select(0, flat.reshape(-1)).view(*flat.shape, -1).to(torch.float64)


def _rows_accumulate(values: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Tap by tap: sum_t values.index_select(0, index[..., t]) * weight[..., t] (trailing C)."""
    out = None
    for t in range(index.shape[-1]):
        term = values.index_select(0, index[..., t].reshape(-1)).view(*index.shape[:-1], -1)
        term = term.mul_(weight[..., t, None])
        out = term if out is None else out.add_(term)
    return out


def _patches_by_taps(pixels: _Pixels, image_index, top, left, heights: list[int], xt, yt, size: int) -> torch.Tensor:
    """INTER_AREA tables applied to patches read straight from the images: the horizontal pass
    gathers each tap's pixels for every patch row, the vertical pass each tap's rows of that."""
    k, gh = len(heights), max(heights)
    dev = image_index.device
    xi, xw = xt[0].to(dev), xt[1].to(dev)  # (K, size, Tx)
    rows = top[:, None] + torch.arange(gh, device=dev)  # (K, gh)
    flat = pixels.flat_index(image_index[:, None, None, None], rows[:, :, None, None],
                             left[:, None, None, None] + xi[:, None, :, :])  # (K, gh, size, Tx)
    # horizontal: each source row of each patch -> `size` values, taps summed left to right
    src = pixels.read(flat.reshape(-1, flat.shape[-1]).T.contiguous())  # (Tx, K*gh*size, C)
    buf = None
    wx = xw[:, None, :, :].expand(k, gh, size, xw.shape[-1]).reshape(-1, xw.shape[-1]).T
    for t in range(src.shape[0]):
        term = src[t].mul_(wx[t, :, None])
        buf = term if buf is None else buf.add_(term)
    return _vertical(buf.view(k, gh, size, -1), yt, size)


def _canvas(pixels: _Pixels, image_index, top, left, height: int, width: int) -> torch.Tensor:
    """(K, C, height, width) float64 windows of the images at (top, left), zero outside them."""
    dev = image_index.device
    flat = pixels.flat_index(image_index[:, None, None], top[:, None, None] + torch.arange(height, device=dev)[:, None],
                             left[:, None, None] + torch.arange(width, device=dev))
    return pixels.read(flat).permute(0, 3, 1, 2)


def crop_source(images: torch.Tensor, integral: bool) -> _RowSums | _Pixels:
    """What ``crop_resize_area`` reads patches from: the row prefix sums of images holding uint8
    values (``integral``), else their pixels. Build it once to crop the same images again."""
    return _RowSums(images) if integral else _Pixels(images)


def crop_resize_area(images: torch.Tensor, image_index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                     heights: torch.Tensor, widths: torch.Tensor, size: int, integral: bool,
                     source: _RowSums | _Pixels | None = None) -> torch.Tensor:
    """For each patch k -- rows ``top[k] .. top[k] + heights[k] - 1``, columns likewise, of image
    ``image_index[k]`` (0-based; pixels outside the image read as 0) -- its float64 INTER_AREA
    resize to ``size`` x ``size``. ``integral``: the images hold uint8 values (enables the prefix
    sum path). ``source``: ``crop_source(images, integral)`` when already built. Returns
    (K, C, size, size) float64."""
    k = int(top.shape[0])
    c = images.shape[1]
    out = torch.zeros((k, c, size, size), dtype=torch.float64, device=images.device)
    if k == 0:
        return out
    if source is None:
        source = crop_source(images, integral)
    hs, ws = heights.tolist(), widths.tolist()
    groups: dict[tuple, list[int]] = {}
    for i, (h, w) in enumerate(zip(hs, ws)):
        if h < 1 or w < 1:
            raise ValueError(f"patch {i} has an empty size {h}x{w}")
        kx, ky = _integer_scale(w, size), _integer_scale(h, size)
        if h >= size and w >= size and kx is not None and ky is not None and (kx, ky) != (1, 1):
            key = ("fast", kx, ky)
        elif integral:  # similar heights share padded tables (a group spans a factor of about 1.41)
            key = ("taps", int(2 * math.log2(h)))
        else:
            key = ("taps", h < size or w < size, int(3 * math.log2(max(h, w))))
        groups.setdefault(key, []).append(i)
    for key, members in groups.items():
        sel = torch.tensor(members, dtype=torch.long, device=images.device)
        img, t, l = image_index[sel], top[sel], left[sel]
        if key[0] == "fast" and integral:
            out[sel] = _fast_by_sums(source, img, t, l, key[1], key[2], size)
        elif key[0] == "fast":
            out[sel] = _fast_area(_canvas(source, img, t, l, hs[members[0]], ws[members[0]]), key[1], key[2], "f64")
        else:  # INTER_AREA enlarges both axes (bilinear variant) as soon as one axis grows
            enlarging = [hs[i] < size or ws[i] < size for i in members]
            yt = _stack_taps([_axis_plan(hs[i], size, e, False) for i, e in zip(members, enlarging)])
            if integral:
                runs = torch.stack([column_runs(ws[i], size, e) for i, e in zip(members, enlarging)])
                rows = _rows_by_runs(source, img, t, l, max(hs[i] for i in members), runs)
                out[sel] = _vertical(rows, yt, size)
            else:
                xt = _stack_taps([_axis_plan(ws[i], size, e, True) for i, e in zip(members, enlarging)])
                out[sel] = _patches_by_taps(source, img, t, l, [hs[i] for i in members], xt, yt, size)
    return out
