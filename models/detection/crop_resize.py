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
import sys
from functools import lru_cache

import numpy as np
import torch

from .resample import _f32, _fast_area, _integer_scale, area_runs, area_taps, linear_taps


@lru_cache(maxsize=1024)
def column_bounds(src: int, dst: int, enlarging: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One patch width's horizontal pass as differences of row prefix sums: ``positions`` (P,)
    where each row's prefix sums are read, ``weights`` (dst, 3) and ``stride``: output column d is
    ``sum_j weights[d, j] * D[stride * d + j]``, D the differences of consecutive positions.

    Shrinking (stride 2): the positions are the boundaries of every column's first pixel, run
    and last pixel, in order; the last pixel of column d is the first of column d + 1 whenever
    both exist, so a row takes 2 * dst + 2 reads. Enlarging (stride 4, the bilinear variant):
    per column its two pixels i0, i1, read at i0, i0 + 1, i1, i1 + 1 (the middle difference
    weighted 0); the padding tap of a one-tap column has weight 0."""
    if enlarging:
        index, weight = linear_taps(src, dst, True)
        positions, weights = [], []
        for d in range(dst):
            i0, i1 = int(index[d, 0]), int(index[d, -1])
            positions += [i0, i0 + 1, i1, i1 + 1]
            weights.append((float(weight[d, 0]), 0.0, float(weight[d, -1]) if index.shape[1] > 1 else 0.0))
        return torch.tensor(positions), torch.tensor(weights, dtype=torch.float64), 4
    runs = area_runs(src, dst)
    first0 = runs[0][0]
    positions = [first0[0] if first0 else runs[0][1][0]]
    for _, (lo, hi, _), _ in runs:
        positions += [lo, hi]
    positions.append(runs[-1][1][1] + (1 if runs[-1][2] else 0))
    weights = []
    for d, (first, (lo, hi, w), last) in enumerate(runs):
        # each weighted difference must be exactly its pixel (checked for every width up to 5000)
        for piece, at in ((first, 2 * d), (last, 2 * d + 2)):
            if piece and positions[at: at + 2] != [piece[0], piece[0] + 1]:
                raise AssertionError(f"INTER_AREA {src}->{dst}: column {d}'s pixel {piece[0]} is not "
                                     f"between positions {positions[at: at + 2]}")
        weights.append((first[1] if first else 0.0, w, last[1] if last else 0.0))
    return torch.tensor(positions), torch.tensor(weights, dtype=torch.float64), 2


MAX_PACKED_RUN = (1 << 15) // 256  # pixels: 255 * 128 < 2^15, a packed field's exact difference


class _RowSums:
    """Prefix sums along every image row: image n's row r is table row n * (H + 2) + r + 1,
    between two zero rows (rows outside the image are clamped onto them), and column x holds the
    sum of the pixels left of x (columns are clamped to 0 .. W). So pixels outside the image read
    as 0 with index arithmetic alone, no masking.

    Packed (up to 4 channels, the default): channel k's sums in bits 16k .. 16k + 15 of one int64
    per pixel, summed with the carries between the fields (the top one wrapping). The sums
    overflow their fields, but the difference of two packed sums is the packed difference of the
    fields, each exact while its true value is below 2^15 -- a run of at most ``MAX_PACKED_RUN``
    pixels -- and read back by viewing the int64 as four int16s: no shifts or masks (which were a
    quarter of the crops' time). A gather of one int64 per position is 2.5x faster than of a row
    of C int32s. Patches with longer runs (``for_runs``) read the unpacked table, one int32 per
    channel, (N * (H + 2) * (W + 1), C), made when first needed."""

    def __init__(self, images: torch.Tensor, packed: bool | None = None):
        n, c, h, w = images.shape
        self.h, self.w, self.c = h, w, c
        self.packed = c <= 4 if packed is None else packed
        if self.packed and c > 4:
            raise ValueError(f"cannot pack {c} channels' row sums into one int64 (at most 4)")
        self._images, self._unpacked = images, None
        # the sums are written in place into the table (no copy of a frame-sized tensor)
        shape = (n * (h + 2) * (w + 1),) if self.packed else (n * (h + 2) * (w + 1), c)
        self.table = torch.empty(shape, dtype=torch.int64 if self.packed else torch.int32, device=images.device)
        table = self.table.view(n, h + 2, w + 1, -1)
        table[:, 0] = 0
        table[:, h + 1] = 0
        table[:, :, 0] = 0
        sums = table[:, 1: h + 1, 1:]
        pixels = images.permute(0, 2, 3, 1).to(torch.uint8)  # exact: the images hold uint8 values
        if self.packed:  # channel k in the field at bit 16k
            for k in range(c):
                field = pixels[..., k: k + 1].to(torch.int64).bitwise_left_shift_(16 * k)
                sums.copy_(field) if k == 0 else sums.add_(field)
        if images.device.type == "cpu":  # NumPy's scan is 3x torch's here (7 vs 25 ms on 2000 x 1500)
            source = sums.numpy() if self.packed else pixels.numpy()
            np.cumsum(source, axis=2, dtype=source.dtype if self.packed else np.int32, out=sums.numpy())
        else:
            sums.copy_(torch.cumsum(sums if self.packed else pixels.to(torch.int32), dim=2))

    def for_runs(self, run: int) -> "_RowSums":
        """The table to read sums over runs of up to ``run`` pixels from: this one, or where its
        packed fields could not hold them, the unpacked table."""
        if not self.packed or run <= MAX_PACKED_RUN:
            return self
        if self._unpacked is None:
            self._unpacked = _RowSums(self._images, packed=False)
        return self._unpacked

    def _gather(self, image, row, col) -> torch.Tensor:
        flat = (image * (self.h + 2) + row.clamp(-1, self.h) + 1) * (self.w + 1) + col.clamp(0, self.w)
        return self.table.index_select(0, flat.reshape(-1)).view(*flat.shape, *self.table.shape[1:])

    def _channels(self, v: torch.Tensor) -> torch.Tensor:
        """Differences (...) -> float64 (..., C). Packed: each field as an int16; a difference that
        spans too many pixels, or a negative one (both only where weighted 0), reads as some
        finite value."""
        if not self.packed:
            return v.to(torch.float64)
        fields = v.contiguous().view(torch.int16).unflatten(-1, (-1, 4))
        if sys.byteorder == "big":  # field 0 (bits 0-15) is the last int16 of each int64
            fields = fields.flip(-1)
        return fields[..., : self.c].to(torch.float64)

    def differences(self, image, row, cols) -> torch.Tensor:
        """``sums[cols[..., j + 1]] - sums[cols[..., j]]`` on each broadcast (image, row): the pixel
        sums between consecutive columns, float64 (..., P - 1, C). One gather."""
        at = self._gather(image, row, cols)
        return self._channels(torch.diff(at, dim=-1 if self.packed else -2))  # unpacked: C trails

    def between(self, image, row, x0, x1) -> torch.Tensor:
        """Sum of the pixels ``x0 <= x < x1`` of ``row`` (broadcast), float64 (..., C)."""
        hi, lo = self._gather(image, row, torch.stack(torch.broadcast_tensors(x1, x0)))
        return self._channels(hi - lo)


def _rows_by_bounds(sums: _RowSums, image_index, top, left, height: int, positions: torch.Tensor,
                    weights: torch.Tensor, stride: int) -> torch.Tensor:
    """The horizontal pass for ``height`` rows of each patch from prefix sums (``column_bounds``
    tables stacked: positions (K, P), weights (K, size, 3)): (K, height, size, C) float64."""
    dev = image_index.device
    positions, weights = positions.to(dev), weights.to(dev)
    size = weights.shape[1]
    row = top[:, None, None] + torch.arange(height, device=dev)[None, :, None]
    diffs = sums.differences(image_index[:, None, None], row, left[:, None, None] + positions[:, None, :])
    last = stride * (size - 1) + 1
    part = [diffs[:, :, j: j + last: stride] * weights[:, None, :, j, None] for j in range(3)]
    return part[0] + part[1] + part[2]  # products and sums exact: the order cannot matter


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
    """The vertical pass, tap by tap in OpenCV's order: rows (K, gh, size, C) -> (K, C, size, size).
    Each tap gathers whole patch rows (size * C values: 10x faster than C at a time)."""
    k, gh = rows.shape[0], rows.shape[1]
    dev = rows.device
    yi, yw = yt[0].to(dev), yt[1].to(dev)  # (K, size, Ty)
    index = torch.arange(k, device=dev)[:, None, None] * gh + yi  # rows of (K * gh, size * C)
    out = _rows_accumulate(rows.reshape(k * gh, -1), index, yw)  # (K, size, size * C)
    return out.view(k, size, size, -1).permute(0, 3, 1, 2)


def _axis_plan(src: int, dst: int, enlarging: bool, columns: bool):
    return linear_taps(src, dst, columns) if enlarging else area_taps(src, dst)


@lru_cache(maxsize=4096)
def _padded_plan(src: int, dst: int, enlarging: bool, columns: bool, taps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``_axis_plan`` padded to ``taps`` taps with zero weights (on source pixel 0)."""
    index, weight = _axis_plan(src, dst, enlarging, columns)
    pad = taps - index.shape[1]
    return torch.nn.functional.pad(index, (0, pad)), torch.nn.functional.pad(weight, (0, pad))


def _stack_taps(plans: list[tuple[int, int, bool, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch tables (``_axis_plan`` arguments) -> (K, dst, T), padded with zero-weight taps."""
    taps = max(_axis_plan(*p)[0].shape[1] for p in plans)
    tables = [_padded_plan(*p, taps) for p in plans]
    return torch.stack([i for i, _ in tables]), torch.stack([w for _, w in tables])


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
    """Tap by tap: sum_t values.index_select(0, index[..., t]) * weight[..., t], each gathered row
    of ``values`` scaled by its weight."""
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


# a group's fixed cost (some 60 tensor calls) in prefix-sum reads: crops of the bench photos were
# fastest with 5000-10000 (1.05-1.1x against no merging, few-patch O-Net calls gaining most)
MERGE_READS = 8000


def _merge_groups(groups: dict[tuple, list[int]], hs: list[int], size: int) -> dict[tuple, list[int]]:
    """Consecutive height buckets of the prefix-sum path (same enlarging flag) joined while padding
    the members so far to the next bucket's height costs fewer prefix-sum reads (a row reads
    ``column_bounds``' 2 * size + 2 positions, 4 * size enlarging) than ``MERGE_READS``: a few
    patches spread over many buckets, as O-Net's, take one or two groups instead of one per bucket."""
    out = {k: v for k, v in groups.items() if k[0] != "taps"}
    current, key_now, tallest = None, None, 0
    for key in sorted((k for k in groups if k[0] == "taps"), key=lambda k: (k[2], k[1])):
        members = groups[key]
        top = max(hs[i] for i in members)
        positions = 4 * size if key[2] else 2 * size + 2
        if current is not None and key_now[2] == key[2] and len(current) * (top - tallest) * positions < MERGE_READS:
            current += members
            tallest = top
            continue
        if current is not None:
            out[key_now] = current
        current, key_now, tallest = list(members), key, top
    if current is not None:
        out[key_now] = current
    return out


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
            key = ("taps", int(2 * math.log2(h)), h < size or w < size)
        else:
            key = ("taps", h < size or w < size, int(3 * math.log2(max(h, w))))
        groups.setdefault(key, []).append(i)
    if integral:
        groups = _merge_groups(groups, hs, size)
    for key, members in groups.items():
        sel = torch.tensor(members, dtype=torch.long, device=images.device)
        img, t, l = image_index[sel], top[sel], left[sel]
        if key[0] == "fast" and integral:
            out[sel] = _fast_by_sums(source.for_runs(key[1]), img, t, l, key[1], key[2], size)
        elif key[0] == "fast":
            out[sel] = _fast_area(_canvas(source, img, t, l, hs[members[0]], ws[members[0]]), key[1], key[2], "f64")
        else:  # INTER_AREA enlarges both axes (bilinear variant) as soon as one axis grows
            enlarging = [hs[i] < size or ws[i] < size for i in members]
            yt = _stack_taps([(hs[i], size, e, False) for i, e in zip(members, enlarging)])
            if integral:
                tables = [column_bounds(ws[i], size, e) for i, e in zip(members, enlarging)]
                run = -(-max(ws[i] for i in members) // size)  # whole pixels per output column, at most
                rows = _rows_by_bounds(source.for_runs(run), img, t, l, max(hs[i] for i in members),
                                       torch.stack([p for p, _, _ in tables]),
                                       torch.stack([w for _, w, _ in tables]), tables[0][2])
                out[sel] = _vertical(rows, yt, size)
            else:
                xt = _stack_taps([(ws[i], size, e, True) for i, e in zip(members, enlarging)])
                out[sel] = _patches_by_taps(source, img, t, l, [hs[i] for i in members], xt, yt, size)
    return out
