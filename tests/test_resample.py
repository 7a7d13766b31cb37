"""models.detection.resample.resize_area against OpenCV's own cv2.resize(INTER_AREA), which Sandberg's
detect_face uses: identical results (not merely close) on random uint8 and float64 images, for
shrinking (fractional and integer factors) and, in float64, enlarging."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facenet_tf2pt.models.detection.resample import resize_area, resize_area_levels

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the test extra) is the reference for INTER_AREA")


def _ours(img: np.ndarray, size: tuple[int, int], depth: str) -> np.ndarray:
    t = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0)
    return resize_area(t, size, depth)[0].permute(1, 2, 0).numpy()


def _cv2(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return out[..., None] if out.ndim == 2 else out


def _image(rng, h, w, cn, depth, integral=False):
    if depth == "u8":
        return rng.integers(0, 256, (h, w, cn), dtype=np.uint8)
    img = rng.random((h, w, cn)) * 255
    return np.round(img) if integral else img


dims = st.integers(1, 90)


@settings(max_examples=300, deadline=None)
@given(h=dims, w=dims, dh=dims, dw=dims, cn=st.sampled_from([1, 3, 4]), depth=st.sampled_from(["u8", "f64"]),
       seed=st.integers(0, 2**32 - 1))
def test_random_sizes_match_cv2_exactly(h, w, dh, dw, cn, depth, seed):
    if depth == "u8":  # uint8 enlargement is not implemented (Sandberg never enlarges uint8)
        dh, dw = min(dh, h), min(dw, w)
    img = _image(np.random.default_rng(seed), h, w, cn, depth)
    np.testing.assert_array_equal(_ours(img, (dh, dw), depth), _cv2(img, (dh, dw)))


@pytest.mark.parametrize("depth", ["u8", "f64"])
@pytest.mark.parametrize("factor", [(2, 2), (3, 3), (2, 3), (4, 4), (5, 2)])
def test_integer_factors_take_the_fast_path_exactly(depth, factor):
    """Whole-number ratios use resizeAreaFast_ (for uint8 2 x 2 its (sum + 2) >> 2 rounding)."""
    rng = np.random.default_rng(sum(factor))
    for cn in (1, 3):
        img = _image(rng, 60 * factor[0], 40 * factor[1], cn, depth)
        size = (60, 40)
        np.testing.assert_array_equal(_ours(img, size, depth), _cv2(img, size))


@pytest.mark.parametrize("factor", [(100, 100), (250, 300)])
def test_large_integer_factors_match_cv2_for_uint8_and_float_images(factor):
    """A frame's top pyramid level can be a large whole-number ratio (2000 x 1500 -> 20 x 15, 100x):
    its box sums stay exact both for uint8 images and for float images holding uint8 values (as
    the detector passes), also when a sum outgrows float32's integers (250 x 300 x 255 > 2^24)."""
    rng = np.random.default_rng(factor[0])
    size = (3, 2)
    img = rng.integers(200, 256, (size[0] * factor[0], size[1] * factor[1], 3), dtype=np.uint8)  # sums > 2^24
    expected = _cv2(img, size)
    np.testing.assert_array_equal(_ours(img, size, "u8"), expected)
    np.testing.assert_array_equal(_ours(img.astype(np.float32), size, "u8"), expected)
    np.testing.assert_array_equal(_ours(np.ascontiguousarray(img.transpose(2, 0, 1)).transpose(1, 2, 0), size, "u8"),
                                  expected)  # channels-first memory


def test_sandberg_pyramid_levels_match_cv2():
    """Pyramid levels as detect_face makes them (minsize 20, factor 0.709) from uint8 photos of
    several sizes, rounded to uint8 by OpenCV; computed as the detector does, all levels in one
    ``resize_area_levels`` call (the small ones sharing horizontal passes)."""
    from facenet_tf2pt.models.detection.detect import pyramid_scales

    rng = np.random.default_rng(7)
    for h, w in [(250, 250), (333, 500), (512, 512), (701, 467), (1000, 1500)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        sizes = [(int(np.ceil(h * scale)), int(np.ceil(w * scale))) for scale in pyramid_scales(h, w, 20, 0.709)]
        levels = resize_area_levels(torch.from_numpy(img).permute(2, 0, 1)[None], sizes, "u8")
        for size, level in zip(sizes, levels, strict=True):
            np.testing.assert_array_equal(level[0].permute(1, 2, 0).numpy(), _cv2(img, size))


def test_levels_of_mixed_kinds_in_one_call_match_cv2():
    """One ``resize_area_levels`` call over a batch of two float64 images, with sizes of every
    kind interleaved -- fractional and whole-number shrinking, a copy, enlarging on one or both
    axes, many small ones (which share passes) -- each image's every level equal to cv2.resize."""
    rng = np.random.default_rng(11)
    imgs = rng.random((2, 96, 120, 3)) * 255
    sizes = [(48, 60), (70, 90), (96, 120), (130, 100), (31, 17), (12, 40), (9, 9), (7, 12), (5, 6), (200, 250),
             (3, 4), (32, 40), (2, 2)]
    levels = resize_area_levels(torch.from_numpy(imgs).permute(0, 3, 1, 2), sizes, "f64")
    for size, level in zip(sizes, levels, strict=True):
        for k in range(2):
            np.testing.assert_array_equal(level[k].permute(1, 2, 0).numpy(), _cv2(imgs[k], size), err_msg=str(size))


@pytest.mark.parametrize("out", [24, 48])
def test_candidate_crops_match_cv2(out):
    """Candidate crops as detect_face makes them: float64 patches of uint8 values (zero-padded
    where the box leaves the image), shrunk or enlarged to 24 x 24 / 48 x 48, not rounded."""
    rng = np.random.default_rng(out)
    for side in list(range(8, 110, 3)) + [out, 2 * out, 3 * out]:
        for dw in (0, 1):  # boxes after np.fix may be one pixel off square
            patch = np.round(rng.random((side, side + dw, 3)) * 255)
            patch[: side // 4] = 0
            np.testing.assert_array_equal(_ours(patch, (out, out), "f64"), _cv2(patch, (out, out)))


def test_batches_and_errors():
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (4, 37, 53, 3), dtype=np.uint8)
    batch = resize_area(torch.from_numpy(imgs).permute(0, 3, 1, 2), (20, 30), "u8")
    for k in range(4):
        np.testing.assert_array_equal(batch[k].permute(1, 2, 0).numpy(), _cv2(imgs[k], (20, 30)))
    x = torch.zeros(1, 3, 10, 10)
    with pytest.raises(ValueError, match="depth"):
        resize_area(x, (5, 5), "u16")
    with pytest.raises(ValueError, match="positive"):
        resize_area(x, (0, 5), "u8")
    with pytest.raises(NotImplementedError, match="uint8"):
        resize_area(x, (20, 20), "u8")


@pytest.mark.parametrize("kind", ["uint8", "float-unpacked", "fractional"])
@pytest.mark.parametrize("size", [24, 48])
def test_crop_resize_area_matches_cv2_on_padded_patches(kind, size):
    """Many patches at once (boxes partly or wholly outside the image, shrunk, enlarged, at
    integer ratios), each identical to cv2.resize of the zero-padded float64 patch -- on images
    holding uint8 values (the prefix-sum path: a uint8 tensor with the channels' sums packed into
    one int64, a float one with an int32 sum per channel, as for boxes with runs over 128 px) and
    on fractional ones (OpenCV's taps, literally)."""
    from facenet_tf2pt.models.detection.crop_resize import _RowSums, crop_resize_area

    integral = kind != "fractional"
    rng = np.random.default_rng(size + integral)
    n, h, w = 2, 90, 110
    images = rng.integers(0, 256, (n, h, w, 3)).astype(np.float64)
    if not integral:
        images += rng.random(images.shape)
    k = 120
    idx, top, left = rng.integers(0, n, k), rng.integers(-40, h, k), rng.integers(-40, w, k)
    side = rng.integers(3, 130, k)
    heights, widths = side + rng.integers(0, 2, k), side + rng.integers(0, 2, k)
    heights[:6], widths[:6] = [size, 2 * size, 3 * size, 2 * size, size, 2 * size], [size, 2 * size, 3 * size,
                                                                                       3 * size, 2 * size, size]
    t = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731
    x = t(images).permute(0, 3, 1, 2)
    x = {"uint8": x.to(torch.uint8), "float-unpacked": x.float(), "fractional": x}[kind]
    source = _RowSums(x, packed=False) if kind == "float-unpacked" else None
    if kind == "uint8":
        assert _RowSums(x).packed
    got = crop_resize_area(x, t(idx), t(top), t(left), t(heights), t(widths), size, integral, source)
    for i in range(k):
        patch = np.zeros((heights[i], widths[i], 3))
        y0, x0 = max(top[i], 0), max(left[i], 0)
        y1, x1 = min(top[i] + heights[i], h), min(left[i] + widths[i], w)
        if y1 > y0 and x1 > x0:
            patch[y0 - top[i]: y1 - top[i], x0 - left[i]: x1 - left[i]] = images[idx[i], y0:y1, x0:x1]
        np.testing.assert_array_equal(got[i].permute(1, 2, 0).numpy(), _cv2(patch, (size, size)), err_msg=f"patch {i}")


@pytest.mark.parametrize("size", [24, 48])
def test_column_bounds_hold_for_every_width(size):
    """The horizontal pass reads each weighted pixel as the difference of two consecutive prefix
    sums (crop_resize.column_bounds checks this as it builds a table): every patch width from the
    output size to 5000 px builds, positions never decrease, and the weights of every column are
    OpenCV's area weights (``area_runs``), each once."""
    from facenet_tf2pt.models.detection.crop_resize import column_bounds
    from facenet_tf2pt.models.detection.resample import area_runs

    for src in range(size, 5001):
        positions, weights, stride = column_bounds(src, size, False)
        assert stride == 2 and positions.shape == (2 * size + 2,)
        assert bool((positions[1:] >= positions[:-1]).all()), src
        want = [((f or (0, 0.0))[1], w, (l or (0, 0.0))[1]) for f, (_, _, w), l in area_runs(src, size)]
        np.testing.assert_array_equal(weights.numpy(), np.array(want), err_msg=str(src))


def _padded_cv2(images, i, top, left, height, width, size):
    """cv2.resize of patch i of ``images`` (N, H, W, C), zero outside the image, as detect_face pads."""
    h, w = images.shape[1:3]
    patch = np.zeros((height, width, images.shape[3]))
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + height, h), min(left + width, w)
    if y1 > y0 and x1 > x0:
        patch[y0 - top: y1 - top, x0 - left: x1 - left] = images[i, y0:y1, x0:x1]
    return _cv2(patch, (size, size))


def test_packed_row_sums_hold_on_wide_frames_and_long_runs_use_the_unpacked_ones():
    """The packed row sums overflow their 16-bit fields on any wide frame, yet crops read from
    them stay exact, and a crop whose runs of whole pixels exceed MAX_PACKED_RUN (a box over
    128 x 24 px wide) reads the unpacked table: on bright pixels (a 138 px run sums past 2^15),
    each crop equal to cv2.resize of the padded patch. Packing refuses more than 4 channels."""
    from facenet_tf2pt.models.detection.crop_resize import _RowSums, crop_resize_area

    rng = np.random.default_rng(5)
    images = rng.integers(240, 256, (1, 12, 9000, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    # (top, left, height, width): runs of 128 (packed) and 134-138 (unpacked) at 24, ordinary boxes
    # far right (prefix sums many times over their fields), one partly outside
    boxes = [(0, 100, 12, 24 * 128), (-2, 5000, 12, 24 * 134), (0, 20, 10, 3300), (3, 8900, 9, 100),
             (1, 8960, 11, 60), (-3, 4000, 20, 30)]
    top, left, heights, widths = (torch.tensor(v) for v in zip(*boxes))
    sums = _RowSums(x)
    got = crop_resize_area(x, torch.zeros(len(boxes), dtype=torch.long), top, left, heights, widths, 24, True, sums)
    for i, box in enumerate(boxes):
        np.testing.assert_array_equal(got[i].permute(1, 2, 0).numpy(), _padded_cv2(images, 0, *box, 24), err_msg=str(box))
    assert sums.packed and sums.for_runs(128) is sums and not sums.for_runs(129).packed
    with pytest.raises(ValueError, match="at most 4"):
        _RowSums(torch.zeros((1, 5, 2, 2), dtype=torch.uint8), packed=True)


def test_pyramid_stays_on_the_input_device():
    """Every tensor of a pyramid (its cached tap tables included) follows the input's device: on
    PyTorch's meta device (shapes only, available everywhere) a tensor left on the CPU raises, as
    it would on CUDA. Whole-number, shared-pass and single levels, uint8 and float64."""
    from facenet_tf2pt.models.detection.detect import pyramid_scales

    for h, w, depth in [(600, 900, "u8"), (1500, 2000, "u8"), (120, 90, "f64")]:
        x = torch.zeros(2, 3, h, w, dtype=torch.uint8 if depth == "u8" else torch.float64, device="meta")
        sizes = [(int(np.ceil(h * s)), int(np.ceil(w * s))) for s in pyramid_scales(h, w, 20, 0.709)]
        for size, level in zip(sizes, resize_area_levels(x, sizes, depth), strict=True):
            assert level.device.type == "meta" and level.shape == (2, 3, *size)
