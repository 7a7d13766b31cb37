"""The MTCNN detection cascade, vectorized in torch: Sandberg's ``align/detect_face.py``, reproduced.

Boxes are in MATLAB-style 1-based pixel coordinates, ``[x1, y1, x2, y2]`` inclusive, as his. The
pyramid starts at ``12 / min_face_size`` and shrinks by ``factor`` while the short side stays
>= 12 px; each level is resized from the full image with OpenCV's INTER_AREA, rounded to uint8 when
the image holds uint8 values (models/detection/resample.py, bit-identical to cv2.resize). P-Net boxes come
from a 12 px window with stride 2, in his order (column-major per image) and with his quirk for a
single candidate (regression read from the mirrored column). NMS is greedy: 0.5 within a scale,
0.7 across scales and after R-Net, 0.7 "Min" after O-Net; equal scores are taken later box first,
as his loop over a stable argsort. Boxes are squared (``rerec``), truncated (``np.fix``), and the
zero-padded crops resized to 24 x 24 / 48 x 48 as float64 patches, unrounded
(models/detection/crop_resize.py). All images of a batch and all candidate boxes go through each step
together: no Python loop per box.

Measured against his code under TensorFlow (tests/test_mtcnn_sandberg.py): the same faces on every
test photo, boxes and landmarks within 1e-4 px, probabilities within 1e-6; what remains is the nets'
float32 arithmetic (TF vs torch). Boxes and scores are carried in float64 (as the NumPy original)
so that truncations and thresholds fall the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .crop_resize import crop_resize_area, crop_source
from .resample import resize_area_levels

# Sandberg's NMS thresholds: within a scale, across scales, after R-Net, after O-Net ("Min")
NMS_WITHIN_SCALE = 0.5
NMS_ACROSS_SCALES = 0.7
NMS_RNET = 0.7
NMS_ONET = 0.7
NMS_ONET_MODE = "min"  # intersection over the smaller box

PNET_STRIDE = 2
# pixels per P-Net call: its activations (about 10x the input) then stay in the L2/L3 cache;
# P-Net over the pyramid of a 2000 x 1500 photo took 100 ms instead of 212 with 2M-pixel calls
# (one thread); a strip equals the unsplit net up to float32 rounding (tests/test_bad_images.py)
PNET_CHUNK_PIXELS = 1 << 16
PNET_CELL = 12
# levels of at most this many pixels (all images) go through P-Net together (``_pnet_packed``):
# each small level alone cost ~0.1 ms of calls; the six under 10K px of a 512 px photo 0.97 ->
# 0.60 ms packed
PNET_PACK_PIXELS = 1 << 13
_CELL_CORNERS = torch.tensor([1.0, 1.0, PNET_CELL, PNET_CELL], dtype=torch.float64)  # a cell's (x1, y1, x2, y2)
_NMS_CHUNK_ELEMENTS = 1 << 20  # bounds NMS's temporaries (box pairs compared per chunk)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """The nets' input normalization: (x - 127.5) / 128."""
    return (x - 127.5) * 0.0078125


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales of the image pyramid; empty when the image's short side is below ``min_face_size``."""
    m = 12.0 / min_face_size
    minl = min(height, width) * m
    scales = []
    k = 0
    while minl >= 12:
        scales.append(m * factor**k)
        minl *= factor
        k += 1
    return scales


# ------------------------------------------------------------------------------------------ NMS

def _overlap_rows(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """Overlap of every box in ``a`` (G, R, 4) with every box in ``b`` (G, K, 4): (G, R, K).
    Widths count pixels inclusively (+1), as in the original."""
    ax1, ay1, ax2, ay2 = (t.unsqueeze(2) for t in a.unbind(-1))
    bx1, by1, bx2, by2 = (t.unsqueeze(1) for t in b.unbind(-1))
    iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1) + 1).clamp_(min=0)
    ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1) + 1).clamp_(min=0)
    inter = iw * ih
    area_a = (ax2 - ax1 + 1) * (ay2 - ay1 + 1)
    area_b = (bx2 - bx1 + 1) * (by2 - by1 + 1)
    if mode == "min":
        denom = torch.minimum(area_a, area_b)
    else:
        denom = area_a + area_b - inter
    return inter / denom


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float, mode: str = "union"
) -> torch.Tensor:
    """Greedy NMS run independently within each group; exact, without a loop over boxes.

    Returns indices into ``boxes`` of the kept boxes, ordered by group then by score (descending).
    A box is suppressed when its overlap (``union``: IoU; ``min``: intersection over the smaller
    area) with a kept, higher-scoring box of its group exceeds ``threshold``.

    Greedy NMS is a recursion over the score order (box i is kept iff no kept box before it
    overlaps it). With the pairs (i, j) where i, before j in its group, would suppress j,
    iterating ``keep <- not any_i(keep_i for pairs (i, j))`` from all-kept fixes one more prefix
    position per round and stops at the unique fixed point, which is the greedy answer; the number
    of rounds is the length of the longest suppression chain (a handful in practice), each a few
    tensor ops. Only same-group pairs are compared, in chunks of ``_NMS_CHUNK_ELEMENTS`` (a
    square matrix padded to the largest group cost 5x more on P-Net's per-scale groups).
    """
    mode = mode.lower()
    if mode not in ("union", "min"):
        raise ValueError(f"NMS mode must be 'union' or 'min', not {mode!r}")
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    # descending score; equal scores: the later box first, as Sandberg's loop over
    # np.argsort(s) (stable for his small arrays), which takes the last index first
    order = torch.argsort(scores, stable=True).flip(0)
    order = order[torch.argsort(groups[order], stable=True)]
    ordered = boxes[order]
    _, counts = torch.unique_consecutive(groups[order], return_counts=True)
    later = torch.repeat_interleave(torch.cumsum(counts, 0), counts) - torch.arange(n, device=device) - 1
    pairs_to = torch.cumsum(later, 0)  # pairs of the boxes up to each one
    first, second = [], []
    r0, done = 0, 0
    while r0 < n:  # rows r0 .. r1 - 1: each box against the later boxes of its group
        r1 = max(r0 + 1, int(torch.searchsorted(pairs_to, done + _NMS_CHUNK_ELEMENTS, right=True)))
        r1 = min(r1, n)
        per_row = later[r0:r1]
        i = torch.repeat_interleave(torch.arange(r0, r1, device=device), per_row)
        step = torch.arange(i.numel(), device=device) - torch.repeat_interleave(torch.cumsum(per_row, 0) - per_row, per_row)
        j = i + 1 + step
        over = _overlap_rows(ordered.index_select(0, i)[:, None], ordered.index_select(0, j)[:, None], mode).view(-1) > threshold
        first.append(i[over])
        second.append(j[over])
        done, r0 = int(pairs_to[r1 - 1]), r1
    first, second = torch.cat(first), torch.cat(second)
    keep = torch.ones(n, dtype=torch.bool, device=device)
    for _ in range(n + 1):
        suppressed = torch.zeros(n, dtype=torch.bool, device=device)
        suppressed[second[keep[first]]] = True
        if torch.equal(~suppressed, keep):
            break
        keep = ~suppressed
    return order[keep]


# ---------------------------------------------------------------------------------- box algebra

def rerec(boxes: torch.Tensor) -> torch.Tensor:
    """Square boxes (N, >=4) around their centres, side = the longer side."""
    out = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def bbreg(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Calibrate boxes with regression offsets in units of the (inclusive) box size."""
    out = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0] = boxes[:, 0] + reg[:, 0] * w
    out[:, 1] = boxes[:, 1] + reg[:, 1] * h
    out[:, 2] = boxes[:, 2] + reg[:, 2] * w
    out[:, 3] = boxes[:, 3] + reg[:, 3] * h
    return out


# ------------------------------------------------------------------------------------- sampling

def sample_affine(
    images: torch.Tensor,
    image_index: torch.Tensor,
    affine: torch.Tensor,
    size: int,
    supersample: int = 1,
) -> torch.Tensor:
    """Resample ``size`` x ``size`` patches from a batch of images.

    images: (N, C, H, W) float. image_index: (K,) which image each patch comes from.
    affine: (K, 2, 3) maps a patch point (u, v) to the image point (x, y), both in pixel-edge
    coordinates (pixel k spans [k, k+1)). Each output pixel averages ``supersample``^2 bilinear
    samples spread over its footprint -- a box filter, so downscaling does not alias. Points
    outside the image read as zeros (the original's zero padding). Returns (K, C, size, size).

    All patches of one image come from a single ``grid_sample`` call (one call per image that has
    patches), their sampling grids from one batched matrix product.
    """
    k = image_index.shape[0]
    n, c, h, w = images.shape
    if k == 0:
        return images.new_zeros((0, c, size, size))
    s = max(1, int(supersample))
    side = size * s
    device, dtype = images.device, images.dtype
    # fold grid_sample's normalization (align_corners=False: edges -1 .. 1) into the maps
    to_norm = torch.tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0], [0.0, 0.0, 1.0]],
                           dtype=torch.float64, device=device)
    last_row = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=device).expand(k, 1, 3)
    full = torch.cat((affine.to(device=device, dtype=torch.float64), last_row), dim=1)
    maps = (to_norm @ full)[:, :2].to(dtype)  # (K, 2, 3)
    # patches sorted by image (a no-op when they already are), so each image's are one slice
    order = torch.argsort(image_index, stable=True)
    in_order = bool((order == torch.arange(k, device=device)).all())
    if not in_order:
        maps, image_index = maps[order], image_index[order]
    t = (torch.arange(side, device=device, dtype=dtype) + 0.5) / s  # patch coordinates
    ones = torch.ones(side * side, device=device, dtype=dtype)
    uv1 = torch.stack((t.repeat(side), t.repeat_interleave(side), ones), 1)  # row-major (v, u)
    grid = torch.matmul(uv1, maps.transpose(1, 2))  # (K, side*side, 2)

    counts = torch.bincount(image_index, minlength=n).tolist()
    pieces, start = [], 0
    for i, count in enumerate(counts):
        if count == 0:
            continue
        g = grid[start : start + count].view(1, count * side, side, 2)
        patches = F.grid_sample(images[i : i + 1], g, mode="bilinear", padding_mode="zeros", align_corners=False)
        if s > 1:
            patches = F.avg_pool2d(patches, s)
        pieces.append(patches.view(c, count, size, size).transpose(0, 1))
        start += count
    out = torch.cat(pieces) if len(pieces) > 1 else pieces[0].contiguous()
    if not in_order:
        out = out[torch.argsort(order)]
    return out


def box_affine(edges: torch.Tensor, size: int) -> torch.Tensor:
    """Affine maps (K, 2, 3) taking a size x size patch onto boxes given as pixel-edge rectangles
    (K, 4) = (left, top, right, bottom)."""
    a = edges.new_zeros((edges.shape[0], 2, 3))
    a[:, 0, 0] = (edges[:, 2] - edges[:, 0]) / size
    a[:, 0, 2] = edges[:, 0]
    a[:, 1, 1] = (edges[:, 3] - edges[:, 1]) / size
    a[:, 1, 2] = edges[:, 1]
    return a


def supersample_for(edges: torch.Tensor, size: int, cap: int) -> int:
    """Samples per output pixel (per axis) so that samples are at most ~1 source pixel apart."""
    if edges.numel() == 0:
        return 1
    longest = float(torch.maximum(edges[:, 2] - edges[:, 0], edges[:, 3] - edges[:, 1]).max())
    return int(min(cap, max(1, math.ceil(longest / size))))


def box_edges(boxes: torch.Tensor) -> torch.Tensor:
    """1-based inclusive boxes [x1, y1, x2, y2] -> pixel-edge rectangles [left, top, right, bottom]."""
    return torch.stack((boxes[:, 0] - 1, boxes[:, 1] - 1, boxes[:, 2], boxes[:, 3]), dim=1)


def crop_boxes(images: torch.Tensor, image_index: torch.Tensor, boxes: torch.Tensor, size: int,
               cap: int = 4) -> torch.Tensor:
    """Crops of 1-based inclusive boxes (the original's ``pad`` + resize), resized to size x size."""
    edges = box_edges(boxes)
    return sample_affine(images, image_index, box_affine(edges, size), size, supersample_for(edges, size, cap))


# ------------------------------------------------------------------------------------ the cascade

@dataclass
class Detections:
    """All faces found in a batch, flat: ``image_index[k]`` says which image face k belongs to."""

    boxes: torch.Tensor  # (K, 4) float64, [x1, y1, x2, y2]
    scores: torch.Tensor  # (K,) float64
    points: torch.Tensor  # (K, 5, 2) float64, (x, y) of left eye, right eye, nose, mouth left, right
    image_index: torch.Tensor  # (K,) long

    @classmethod
    def empty(cls, device) -> "Detections":
        f = torch.float64
        return cls(torch.zeros((0, 4), dtype=f, device=device), torch.zeros(0, dtype=f, device=device),
                   torch.zeros((0, 5, 2), dtype=f, device=device), torch.zeros(0, dtype=torch.long, device=device))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # the nets run 1.5-3x faster on CPU with channels-last activations (same results)
    return x.contiguous(memory_format=torch.channels_last)


def _pnet_input(level: torch.Tensor) -> torch.Tensor:
    """A pyramid level normalized in its own precision (float64 for images not holding uint8
    values, as his NumPy code), then float32 channels-last for the net (his feed casts too)."""
    return normalize(level).to(torch.float32, memory_format=torch.channels_last)


def _pnet_out_rows(rows: int) -> int:
    """P-Net's output height for ``rows`` input rows: 3x3 conv, 2x2/2 max pool (ceil), 3x3, 3x3."""
    return -(-(rows - 2) // 2) - 4


def _pnet_in_strips(pnet, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """P-Net over one large (1, 3, H, W) level, in horizontal strips of ~PNET_CHUNK_PIXELS, so
    that its activations (some 10x the input) stay bounded however large the frame. Output row i
    sees input rows [2i, 2i + 12): a strip for output rows [a, a + S) takes input rows
    [2a, 2a + 2S + 10), starting on an even row (the pool grid stays aligned) and, but for the
    last strip, ending before any partial pool window: each output equals the unsplit one's."""
    _, _, hs, ws = image.shape
    total = _pnet_out_rows(hs)
    step = max(1, (PNET_CHUNK_PIXELS // ws - 10) // 2)
    reg = prob = None
    for a in range(0, total, step):
        strip = image[:, :, 2 * a: min(hs, 2 * a + 2 * step + 10)]
        r, p = pnet(_pnet_input(strip))
        if reg is None:  # the whole level's maps, allocated before the strips' temporaries (a
            # list of strip maps joined at the end left them scattered among freed temporaries,
            # and glibc's heap then grew by up to 0.8 GB more on a 7071 px frame, at random)
            reg = r.new_empty((1, r.shape[1], total, r.shape[3]))
            prob = p.new_empty((1, p.shape[1], total, p.shape[3]))
        reg[:, :, a: a + r.shape[2]] = r
        prob[:, :, a: a + p.shape[2]] = p
    return reg, prob


def _pnet_in_chunks(pnet, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """P-Net over a pyramid level, a few images at a time when they are large: activations of
    ~PNET_CHUNK_PIXELS stay cache- and memory-friendly; small levels go in one batch, and a
    level larger than a chunk is run in strips (``_pnet_in_strips``)."""
    n, _, hs, ws = level.shape
    if hs * ws > 2 * PNET_CHUNK_PIXELS and _pnet_out_rows(hs) > 1:
        outs = [_pnet_in_strips(pnet, level[k: k + 1]) for k in range(n)]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
    per_call = max(1, PNET_CHUNK_PIXELS // (hs * ws))
    if per_call >= n:
        return pnet(_pnet_input(level))
    outs = [pnet(_pnet_input(level[k : k + per_call])) for k in range(0, n, per_call)]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def _pnet_packed(pnet, levels: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """P-Net over several small pyramid levels in one call: the levels side by side in one input,
    each at an even column (so the 2x2 pool's grid stays each level's own). An output whose
    window lies in one level is that level's output (up to float32 rounding: oneDNN's
    arithmetic depends a little on the position); the outputs across a seam are dropped. One
    thing differs: where a level's pre-pool map has an odd width (height), its last pool window
    would take a column (row) of the seam, where the level alone has none. That column (row) is
    overwritten with a copy of the level's last one before pooling: the maximum is the same.
    Returns each level's (reg, prob), views into the packed maps."""
    n = levels[0].shape[0]
    left, x0 = [], 0
    for level in levels:
        left.append(x0)
        x0 += level.shape[3] + (level.shape[3] & 1)
    height = max(level.shape[2] for level in levels)
    packed = levels[0].new_zeros((n, 3, height + 1, x0 + 1), dtype=torch.float32)
    packed = packed.contiguous(memory_format=torch.channels_last)
    for level, x in zip(levels, left):
        packed[:, :, : level.shape[2], x: x + level.shape[3]] = normalize(level)
    maps = pnet.stem(packed)
    for level, x in zip(levels, left):
        h, w = level.shape[2] - 2, level.shape[3] - 2  # the level's pre-pool map
        if w & 1:
            maps[:, :, :h, x + w] = maps[:, :, :h, x + w - 1]
        if h & 1:
            maps[:, :, h, x: x + w + 1] = maps[:, :, h - 1, x: x + w + 1]
    reg, prob = pnet.tail(maps)
    out = []
    for level, x in zip(levels, left):
        oh, ow = _pnet_out_rows(level.shape[2]), _pnet_out_rows(level.shape[3])
        out.append((reg[:, :, :oh, x // 2: x // 2 + ow], prob[:, :, :oh, x // 2: x // 2 + ow]))
    return out


def _candidates(prob: torch.Tensor, reg: torch.Tensor, scale: float, threshold: float):
    """Sandberg's ``generateBoundingBox`` for a batch of P-Net maps (N, 2, H', W'), (N, 4, H', W').

    Candidates come in his order: per image, column-major (he transposes the map before
    ``np.where``). Boxes are ``fix((stride * (col, row) + 1) / scale)`` and
    ``fix((stride * (col, row) + cell) / scale)``. His quirk is kept: when an image has a single
    candidate at a scale, its regression is read from the mirrored column (``W' - 1 - col``) -- the
    ``np.flipud`` he applies to the transposed regression maps in that case."""
    img, j, i = torch.nonzero(prob[:, 1].transpose(1, 2) >= threshold, as_tuple=True)
    counts = torch.bincount(img, minlength=prob.shape[0])
    single = counts[img] == 1
    jr = torch.where(single, prob.shape[3] - 1 - j, j)
    score = prob[img, 1, i, j].double()
    offsets = reg[img, :, i, jr].double()
    corner = torch.stack((j, i, j, i), dim=1).double() * PNET_STRIDE + _CELL_CORNERS.to(prob.device)
    return torch.trunc(corner / scale), score, offsets, img


def _integral_uint8(images: torch.Tensor) -> bool:
    """Whether the images hold uint8 values (then the pyramid is resized and rounded as uint8, as
    Sandberg's detect_face does with the uint8 photo it is given)."""
    return torch.equal(images, images.round().clamp_(0, 255))


def _stage1(images, pnet, min_face_size, threshold, factor, depth):
    n, _, h, w = images.shape
    scales = pyramid_scales(h, w, min_face_size, factor)
    sizes = [(int(math.ceil(h * scale)), int(math.ceil(w * scale))) for scale in scales]
    found = []

    def take(si, reg, prob):
        boxes, score, offsets, img = _candidates(prob, reg, scales[si], threshold)
        if img.numel():
            found.append((boxes, score, offsets, img, torch.full_like(img, si)))

    # (scale index, level) of the pyramid's top (levels shrink: the small ones come last, so the
    # candidates stay in scale order), packed into one P-Net call; a P-Net without stem / tail
    # (another implementation) runs level by level
    small = []
    for si, level in enumerate(resize_area_levels(images, sizes, depth)):
        if level.shape[2] * level.shape[3] * n > PNET_PACK_PIXELS or not hasattr(pnet, "stem"):
            take(si, *_pnet_in_chunks(pnet, level))
        else:
            small.append((si, level))
    if len(small) == 1:
        take(small[0][0], *_pnet_in_chunks(pnet, small[0][1]))
    elif small:
        for (si, _), maps in zip(small, _pnet_packed(pnet, [level for _, level in small])):
            take(si, *maps)
    if not found:
        return None
    boxes, score, offsets, img, scale_idx = (torch.cat(parts) for parts in zip(*found))
    keep = batched_nms(boxes, score, img * len(scales) + scale_idx, NMS_WITHIN_SCALE)
    boxes, score, offsets, img = boxes[keep], score[keep], offsets[keep], img[keep]
    keep = batched_nms(boxes, score, img, NMS_ACROSS_SCALES)
    boxes, score, offsets, img = boxes[keep], score[keep], offsets[keep], img[keep]
    # stage-1 regression uses exclusive widths, as the original
    regw = (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
    regh = (boxes[:, 3] - boxes[:, 1]).unsqueeze(1)
    scale_wh = torch.cat((regw, regh, regw, regh), dim=1)
    boxes = rerec(boxes + offsets * scale_wh)
    return torch.trunc(boxes), score, img


def crop_candidates(images: torch.Tensor, image_index: torch.Tensor, boxes: torch.Tensor, size: int,
                    integral: bool, source=None) -> torch.Tensor:
    """Sandberg's ``pad`` + ``imresample`` for whole-pixel boxes, all at once: box k covers the
    1-based pixels ``x1 .. x2``, ``y1 .. y2`` (``x2 - x1 + 1`` wide), zero outside the image, and is
    resized to ``size`` x ``size`` as a float64 patch (OpenCV INTER_AREA, not rounded). Returns the
    nets' input, ``(x - 127.5) / 128`` computed in float64, as float32 (K, C, size, size).
    ``source``: ``crop_source(images, integral)``, shared by the R-Net and O-Net crops."""
    b = boxes.to(torch.long)
    patches = crop_resize_area(images, image_index, b[:, 1] - 1, b[:, 0] - 1,
                               b[:, 3] - b[:, 1] + 1, b[:, 2] - b[:, 0] + 1, size, integral, source)
    return normalize(patches).float()


@torch.inference_mode()
def detect_faces(
    images: torch.Tensor,
    pnet,
    rnet,
    onet,
    min_face_size: float = 20,
    thresholds=(0.6, 0.7, 0.7),
    factor: float = 0.709,
) -> Detections:
    """Run the cascade on a batch of same-size images (N, 3, H, W), RGB in 0..255: uint8, or float
    (treated as uint8, and so resized as Sandberg resizes his photo, when it holds uint8 values)."""
    device = images.device
    if images.dtype == torch.uint8:  # Sandberg's case, a uint8 photo: no float copy, nothing to check
        images, integral = images.contiguous(memory_format=torch.channels_last), True
    else:
        images = images.float().contiguous(memory_format=torch.channels_last)  # crops gather pixels
        integral = _integral_uint8(images)
    first = _stage1(images, pnet, min_face_size, thresholds[0], factor, "u8" if integral else "f64")
    if first is None:
        return Detections.empty(device)
    boxes, _, img = first

    # stage 2: R-Net on 24x24 crops
    source = crop_source(images, integral)
    reg, prob = rnet(_channels_last(crop_candidates(images, img, boxes, 24, integral, source)))
    ok = prob[:, 1] > thresholds[1]
    boxes, score, reg, img = boxes[ok], prob[ok, 1].double(), reg[ok].double(), img[ok]
    if img.numel() == 0:
        return Detections.empty(device)
    keep = batched_nms(boxes, score, img, NMS_RNET)
    boxes = rerec(bbreg(boxes[keep], reg[keep]))
    img = img[keep]

    # stage 3: O-Net on 48x48 crops
    boxes = torch.trunc(boxes)
    reg, landmarks, prob = onet(_channels_last(crop_candidates(images, img, boxes, 48, integral, source)))
    ok = prob[:, 1] > thresholds[2]
    boxes, score, reg, landmarks, img = boxes[ok], prob[ok, 1].double(), reg[ok].double(), landmarks[ok].double(), img[ok]
    if img.numel() == 0:
        return Detections.empty(device)
    bw = (boxes[:, 2] - boxes[:, 0] + 1).unsqueeze(1)
    bh = (boxes[:, 3] - boxes[:, 1] + 1).unsqueeze(1)
    px = bw * landmarks[:, :5] + boxes[:, 0:1] - 1
    py = bh * landmarks[:, 5:] + boxes[:, 1:2] - 1
    points = torch.stack((px, py), dim=2)
    boxes = bbreg(boxes, reg)
    keep = batched_nms(boxes, score, img, NMS_ONET, mode=NMS_ONET_MODE)
    return Detections(boxes[keep], score[keep], points[keep], img[keep])
