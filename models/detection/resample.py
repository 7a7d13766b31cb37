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
against cv2.resize on random images of many sizes. Only the order of the adds into one output
matters, not how outputs are batched: each tap is applied to all outputs at once, on whole rows
(``SeparableResizer``), in blocks of columns that fit the CPU cache.

Images are (..., C, H, W) tensors; C is OpenCV's channel count (it selects the 2 x 2 vector path).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch
from torch.nn import functional as F

DEPTHS = ("u8", "f64")
_DBL_EPSILON = float(np.finfo(np.float64).eps)
_GATHER_ELEMENTS = 1 << 18  # elements per gather and per column block in _accumulate_rows (~1 MB)
_AREA_EPS = 1e-3  # computeResizeAreaTab ignores slivers of a source pixel below this


def _f32(x: float) -> float:
    return float(np.float32(x))


def _scales(src: int, dst: int) -> tuple[float, float]:
    """(inv_scale, scale) as cv::resize computes them: inv = dst / src, scale = 1 / inv."""
    inv = dst / src
    return inv, 1.0 / inv


@lru_cache(maxsize=8192)  # asked twice per candidate crop
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


@lru_cache(maxsize=1024)
def area_runs(src: int, dst: int) -> list[tuple]:
    """OpenCV's ``computeResizeAreaTab`` for one axis (``src >= dst``), per output pixel:
    ``(first, (lo, hi, weight), last)`` -- the partly covered pixel before the run of whole pixels
    ``lo .. hi - 1`` (all weighted ``1 / cell``) and the partly covered one after it, each
    ``(index, weight)`` or None. Weights computed in double and stored as float32, as OpenCV."""
    _, scale = _scales(src, dst)
    out = []
    for d in range(dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, src - f1)
        s2 = min(math.floor(f2), src - 1)
        s1 = min(math.ceil(f1), s2)
        first = (s1 - 1, _f32((s1 - f1) / cell)) if s1 - f1 > _AREA_EPS else None
        last = (s2, _f32(min(min(f2 - s2, 1.0), cell) / cell)) if f2 - s2 > _AREA_EPS else None
        out.append((first, (s1, s2, _f32(1.0 / cell)), last))
    return out


@lru_cache(maxsize=1024)
def area_taps(src: int, dst: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``area_runs`` as taps in OpenCV's summation order (index, weight), each (dst, T)."""
    rows = []
    for first, (lo, hi, w), last in area_runs(src, dst):
        rows.append(([first] if first else []) + [(s, w) for s in range(lo, hi)] + ([last] if last else []))
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


def _taps(spec: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis's (dst, T) tap table from its spec: ("area", src, dst) or ("linear", src, dst, clamp_last)."""
    return area_taps(*spec[1:]) if spec[0] == "area" else linear_taps(*spec[1:])


class TapTable:
    """Taps in the flat layout ``_accumulate_rows`` reads: tap t's ``counts[t]`` entries (source
    row, weight) follow tap t - 1's, for outputs ``0 .. counts[t] - 1``. ``counts`` does not
    increase, so output d has the taps t with ``d < counts[t]``, in order: tables of outputs with
    different tap counts (several pyramid levels) share one pass, each tap over a prefix of them."""

    def __init__(self, index: torch.Tensor, weight: torch.Tensor, counts: tuple[int, ...]):
        self.index, self.weight, self.counts = index, weight, counts

    def to(self, device) -> "TapTable":
        """This table on ``device`` (the cached tables are built on the CPU)."""
        if self.index.device == torch.device(device):
            return self
        return TapTable(self.index.to(device), self.weight.to(device), self.counts)

    @staticmethod
    @lru_cache(maxsize=256)
    def stacked(specs: tuple[tuple, ...], dtype, planes: int = 1, stride: int = 0) -> tuple["TapTable", tuple[int, ...]]:
        """The tables of ``specs`` (``_taps``) as one, their outputs side by side ordered by
        decreasing tap count, each repeated for ``planes`` planes of ``stride`` source rows (the
        vertical pass over N * C planes); also each table's first output column. Cached."""
        tables = [_taps(spec) for spec in specs]
        order = sorted(range(len(tables)), key=lambda k: -tables[k][0].shape[1])
        most = tables[order[0]][0].shape[1]
        plane_rows = torch.arange(planes)[:, None, None] * stride
        index, weight, live, first, start = [], [], [], [0] * len(tables), 0
        for k in order:
            idx, wt = tables[k]
            dst, taps = idx.shape
            first[k] = start
            start += dst * planes
            # (T, planes * dst), padded to the most taps; the padding is masked out below
            index.append(F.pad((idx[None] + plane_rows).permute(2, 0, 1).reshape(taps, -1), (0, 0, 0, most - taps)))
            weight.append(F.pad(wt.t().repeat(1, planes), (0, 0, 0, most - taps)))
            live.append((torch.arange(most) < taps)[:, None].expand(most, dst * planes))
        live = torch.cat(live, 1)
        counts = tuple(int(n) for n in live.sum(1))
        table = TapTable(torch.cat(index, 1)[live], torch.cat(weight, 1)[live].to(dtype).unsqueeze(-1), counts)
        return table, tuple(first)


def _accumulate_rows(src: torch.Tensor, taps: TapTable, transposed: bool = False) -> torch.Tensor:
    """``sum_t src[index_t] * weight_t`` over whole rows of ``src`` (S, F) -> (dst, F), or its
    transpose (F, dst) when ``transposed``, in the weights' dtype (``src`` may be stored narrower,
    e.g. uint8; each gathered block is converted). The taps are added one at a time in table
    order, each product rounded before its add (separate multiply and add; ``addcmul_`` would fuse
    them and round differently): OpenCV's order, hence its rounding. Large outputs are computed in
    blocks of columns (independent sums) of about ``_GATHER_ELEMENTS``, so that every tap's pass
    stays in the CPU cache; an output's last add writes into the result (transposed there while
    the block is in cache: a transpose of the whole result afterwards cost as much as the taps)."""
    dst, width = taps.counts[0], src.shape[1]
    taps = taps.to(src.device)
    block = max(1, _GATHER_ELEMENTS // dst)
    out = torch.empty((width, dst) if transposed else (dst, width), dtype=taps.weight.dtype, device=src.device)
    for f0 in range(0, width, block):
        part = out[f0: f0 + block].t() if transposed else out[:, f0: f0 + block]
        _accumulate_block(src[:, f0: f0 + block], taps, part)
    return out


def _accumulate_block(src: torch.Tensor, taps: TapTable, out: torch.Tensor) -> None:
    """``_accumulate_rows`` on one block, into ``out`` (dst, block), a view of any strides. The
    products of several taps come from one gather of rows and one multiply by per-row weights
    (as many taps as fit in ``_GATHER_ELEMENTS``: small outputs with many taps -- a pyramid's
    top -- take few calls), then are added tap by tap. After tap t, outputs counts[t + 1] ..
    counts[t] - 1 are complete: that add lands in ``out``."""
    counts, width = taps.counts + (0,), src.shape[1]
    acc, t, at = None, 0, 0
    while t < len(taps.counts):
        t1, rows = t + 1, counts[t]
        while t1 < len(taps.counts) and (rows + counts[t1]) * width <= _GATHER_ELEMENTS:
            rows += counts[t1]
            t1 += 1
        # one op converts and multiplies (uint8 x float32 promotes to float32: the same products)
        terms = torch.mul(src.index_select(0, taps.index[at: at + rows]), taps.weight[at: at + rows])
        at += rows
        for u, term in zip(range(t, t1), terms.split(counts[t:t1]) if t1 > t + 1 else (terms,)):
            n, going_on = counts[u], counts[u + 1]
            # (slices only where some outputs have no more taps: they were most of the calls)
            if acc is None:  # the first tap covers every output
                acc = term
                if going_on < n:
                    out[going_on:].copy_(term[going_on:])
            elif going_on == n:  # no output completes here
                (acc if n == counts[0] else acc[:n]).add_(term)
            elif going_on == 0:  # the rest complete here
                whole = n == counts[0]
                torch.add(acc if whole else acc[:n], term, out=out if whole else out[:n])
            else:
                acc[:going_on].add_(term[:going_on])
                torch.add(acc[going_on:n], term[going_on:], out=out[going_on:n])
        t = t1


class SeparableResizer:
    """resize.cpp's separable passes -- horizontal (per source row, taps left to right), then
    vertical (rows top to bottom) -- for one batch of images and any number of output sizes.

    Both passes gather whole rows: the images are kept transposed, (W, N * C * H), so that a
    horizontal tap reads one row per output column, and the horizontal result is transposed back,
    (N * C * H, w'), so that a vertical tap reads one row per output row. The transposed copy
    is made once and shared by every output size (an image pyramid resizes one photo many times).
    Several sizes can share one horizontal pass (``sizes``): a pyramid's small levels each cost a
    whole pass over the image in many small per-tap operations, together one pass with fewer.
    """

    def __init__(self, x: torch.Tensor, dtype, depth: str):
        *self.lead, c, h, w = x.shape
        # the copy holds uint8 values: stored as uint8 (a quarter of float32's memory, exact), each
        # gathered block converted to the working dtype before its products
        store = torch.uint8 if depth == "u8" else dtype
        images = x.reshape(-1, c, h, w).to(store)
        self.planes, self.h, self.c, self.dtype = images.shape[0] * c, h, c, dtype
        self.columns = images.permute(3, 0, 1, 2).contiguous().view(w, -1)  # (W, N * C * H)

    def __call__(self, size: tuple[int, int], width_taps: tuple, height_taps: tuple) -> torch.Tensor:
        return self.sizes([(size, width_taps, height_taps)])[0]

    def sizes(self, plans) -> list[torch.Tensor]:
        """Each ``(size, width spec, height spec)`` of ``plans`` (``_taps``); one horizontal pass
        for all."""
        horizontal, first = TapTable.stacked(tuple(w for _, w, _ in plans), self.dtype)
        rows = _accumulate_rows(self.columns, horizontal, transposed=True)  # (N * C * H, sum of w')
        outs = []
        for ((dh, dw), _, height), c0 in zip(plans, first):
            part = rows[:, c0: c0 + dw] if len(plans) > 1 else rows
            vertical, _ = TapTable.stacked((height,), self.dtype, self.planes, self.h)
            out = _accumulate_rows(part, vertical)  # (N * C * h', w')
            outs.append(out.view(*self.lead, self.c, dh, dw))
        return outs


def _fast_area(x: torch.Tensor, kx: int, ky: int, depth: str) -> torch.Tensor:
    """resizeAreaFast_: box sums over ky x kx blocks. uint8: ``_fast_area_u8``. double: summed
    row-major in groups of four, as OpenCV's unrolled loop, times float32(1 / area)."""
    if depth == "u8":
        return _fast_area_u8(x, kx, ky)
    *lead, c, h, w = x.shape
    area = kx * ky
    blocks = x.reshape(*lead, c, h // ky, ky, w // kx, kx).movedim(-3, -2)
    blocks = blocks.reshape(*lead, c, h // ky, w // kx, area)
    total = torch.zeros(blocks.shape[:-1], dtype=torch.float64, device=x.device)
    k = 0
    while k + 4 <= area:  # CV_ENABLE_UNROLLED: sum += S0 + S1 + S2 + S3
        total += blocks[..., k] + blocks[..., k + 1] + blocks[..., k + 2] + blocks[..., k + 3]
        k += 4
    for k in range(k, area):
        total += blocks[..., k]
    return total * _f32(1.0 / area)


def _box_sums(x: torch.Tensor, kx: int, ky: int) -> torch.Tensor:
    """Exact sums over the whole ky x kx blocks of (..., H, W) images holding uint8 values, in an
    integer dtype for integer images, else a float one, narrow where ``255 * kx * ky`` allows.
    The ky rows of each block are added as strided views of whole image rows, then the kx
    columns likewise, in the image's own memory layout: a reduction over the strided block dims
    took 16 ms for 100 x 100 blocks of a channels-last 2000 x 1500 frame, the strided adds 1.7."""
    dh, dw = x.shape[-2] // ky, x.shape[-1] // kx
    wide = 255 * kx * ky >= (1 << 24 if x.is_floating_point() else 1 << 31)
    acc_dtype = ((torch.float64 if wide else torch.float32) if x.is_floating_point()
                 else (torch.int64 if wide else torch.int32))
    rows = None
    for j in range(ky):
        part = x[..., j: dh * ky: ky, : dw * kx]
        rows = part.to(acc_dtype) if rows is None else rows.add_(part)
    total = rows[..., 0::kx].clone()
    for i in range(1, kx):
        total.add_(rows[..., i::kx])
    return total


def _fast_area_u8(x: torch.Tensor, kx: int, ky: int) -> torch.Tensor:
    """resizeAreaFast_ for uint8 (int sums): ``(sum + 2) >> 2`` for 2 x 2 with 1, 3 or 4 channels
    (OpenCV's vector path), else ``round(float(sum) * float32(1 / area))``. Returns float32."""
    total = _box_sums(x, kx, ky)
    if kx == 2 and ky == 2 and x.shape[-3] in (1, 3, 4):
        return torch.floor((total + 2) * 0.25).float()
    # int sum -> float (rounded to nearest, as C++'s conversion), times float(1 / area), rounded
    return torch.round(total.float() * _f32(1.0 / (kx * ky))).clamp_(0, 255)


def resize_area(x: torch.Tensor, size: tuple[int, int], depth: str) -> torch.Tensor:
    """``cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)`` for (..., C, H, W) images.

    depth "u8": ``x`` holds uint8 values (any dtype); returns float32 holding the uint8 result.
    depth "f64": ``x`` is computed in float64; returns float64.
    """
    return next(resize_area_levels(x, [size], depth))


def resize_area_levels(x: torch.Tensor, sizes, depth: str) -> Iterator[torch.Tensor]:
    """``resize_area(x, size, depth)`` for each size in turn (an image pyramid), computed lazily;
    the separable sizes share one transposed copy of ``x`` (``SeparableResizer``), and consecutive
    ones share a horizontal pass while all their columns fit one block of ``_accumulate_rows``
    (the small levels, where per-tap calls dominated: pyramids 6-11% faster at 512 px, 5-10% at
    900 x 600, 2-4% at 2000 x 1500, measured interleaved against separate passes)."""
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, not {depth!r}")
    if x.dim() < 3:
        raise ValueError(f"expected a (..., C, H, W) tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2], x.shape[-1]
    work = torch.float32 if depth == "u8" else torch.float64
    plans = [_plan(h, w, int(size[0]), int(size[1]), depth) for size in sizes]
    groups = _shared_passes(plans, _GATHER_ELEMENTS // max(1, x.numel() // w))
    resizer, ready = None, {}
    for i, (kind, _, *args) in enumerate(plans):
        if kind == "copy":
            yield x.to(work, copy=True)
            continue
        if kind == "fast":
            yield _fast_area(x, *args, depth)
            continue
        if i in groups:
            resizer = resizer or SeparableResizer(x, work, depth)
            ready.update(zip(groups[i], resizer.sizes([plans[j][1:] for j in groups[i]])))
        out = ready.pop(i)
        if depth == "u8":
            out = out.round_().clamp_(0, 255)  # saturate_cast<uchar>: cvRound, half to even
        yield out


def _shared_passes(plans: list[tuple], columns: int) -> dict[int, list[int]]:
    """The separable plans in groups of consecutive ones whose output widths sum to at most
    ``columns`` (a group of one may be wider), keyed by their first plan's index."""
    groups: dict[int, list[int]] = {}
    group, total = None, 0
    for i, (kind, (_, dw), *_) in enumerate(plans):
        if kind != "separable":
            continue
        if group is None or total + dw > columns:
            group, total = groups.setdefault(i, []), 0
        group.append(i)
        total += dw
    return groups


def _plan(h: int, w: int, dh: int, dw: int, depth: str) -> tuple:
    """How one size is made: ("copy", size), ("fast", size, kx, ky) or ("separable", size,
    width spec, height spec) (``_taps``)."""
    if dh < 1 or dw < 1 or h < 1 or w < 1:
        raise ValueError(f"cannot resize {h}x{w} to {dh}x{dw}: sizes must be positive")
    if (dh, dw) == (h, w):
        return ("copy", (dh, dw))
    if dh <= h and dw <= w:
        kx, ky = _integer_scale(w, dw), _integer_scale(h, dh)
        if kx is not None and ky is not None:
            return ("fast", (dh, dw), kx, ky)
        return ("separable", (dh, dw), ("area", w, dw), ("area", h, dh))
    if depth == "u8":
        raise NotImplementedError(
            "uint8 INTER_AREA enlargement (OpenCV's fixed-point bilinear) is not implemented: "
            "Sandberg's pipeline only enlarges float64 crops")
    return ("separable", (dh, dw), ("linear", w, dw, True), ("linear", h, dh, False))
