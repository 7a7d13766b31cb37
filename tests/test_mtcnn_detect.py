"""The MTCNN detector on the committed (real, converted) weights and a real photo,
skimage.data.astronaut(); plus the cascade's building blocks against plain references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from facenet_tf2pt.models.detection.align import alignment_affine, template_points
from facenet_tf2pt.models.detection.detect import (
    batched_nms,
    bbreg,
    box_affine,
    crop_boxes,
    pyramid_scales,
    rerec,
    sample_affine,
)
from facenet_tf2pt.models.detection.mtcnn import MTCNN, ONet, PNet, RNet, load_net, weight_file
from tests.helpers import greedy_nms


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The cascade is many small ops: on a shared 2-core machine one thread is steadier and
    about as fast. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mtcnn() -> MTCNN:
    return MTCNN()


@pytest.fixture(scope="module")
def astro_detection(mtcnn, astronaut):
    return mtcnn.detect(astronaut, landmarks=True)


def _small(img: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


# -------------------------------------------------------------------------------- the real photo

def test_astronaut_one_face(astro_detection):
    boxes, probs, points = astro_detection
    assert boxes.shape == (1, 4) and probs.shape == (1,) and points.shape == (1, 5, 2)
    assert probs[0] > 0.99
    x1, y1, x2, y2 = boxes[0]
    # the face sits around x 180..268, y 60..172 in the 512 px photo
    assert 160 < x1 < 200 and 240 < x2 < 290 and 40 < y1 < 80 and 150 < y2 < 195
    pts = points[0]
    assert np.all((pts[:, 0] > x1) & (pts[:, 0] < x2) & (pts[:, 1] > y1) & (pts[:, 1] < y2))
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])  # eyes above mouth
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]


def test_float_photo_not_holding_uint8_values(mtcnn, astronaut, astro_detection):
    """A float image with fractional values takes the float64 pyramid (Sandberg resizes it in
    double, unrounded) and its levels reach P-Net as float32: the same face, within a pixel."""
    boxes, probs = mtcnn.detect(astronaut.astype(np.float32) + 0.25)
    assert boxes.shape == (1, 4) and probs[0] > 0.99
    np.testing.assert_allclose(boxes, astro_detection[0], atol=1.0)


def test_crop_is_160_and_standardized(mtcnn, astronaut, astro_detection):
    face, prob = mtcnn(astronaut, return_prob=True)
    assert isinstance(face, torch.Tensor) and face.shape == (3, 160, 160) and face.dtype == torch.float32
    assert -1.0 <= float(face.min()) and float(face.max()) <= 1.0
    assert isinstance(prob, float) and prob > 0.99
    # extract() with the detected box gives the same crop
    torch.testing.assert_close(mtcnn.extract(astronaut, astro_detection[0], None), face)


def test_noise_and_blank_have_no_face(mtcnn):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    assert mtcnn.detect(noise) == (None, None)
    assert mtcnn(noise) is None
    assert mtcnn(np.zeros((200, 200, 3), np.uint8), return_prob=True) == (None, None)


def test_batch_face_and_blank(mtcnn, astronaut, astro_detection):
    blank = np.full_like(astronaut, 127)
    boxes, probs, points = mtcnn.detect([astronaut, blank], landmarks=True)
    assert boxes[1] is None and probs[1] is None and points[1] is None
    np.testing.assert_allclose(boxes[0], astro_detection[0], atol=1e-3)
    faces = mtcnn([astronaut, blank])
    assert faces[0].shape == (3, 160, 160) and faces[1] is None
    # a 4-D batch of same-size frames gives the same per-frame answers
    batch = np.stack([astronaut, blank, astronaut])
    b4, p4 = mtcnn.detect(batch)
    assert b4[1] is None
    np.testing.assert_allclose(b4[0], astro_detection[0], atol=1e-3)
    np.testing.assert_allclose(b4[2], astro_detection[0], atol=1e-3)
    b5, _ = mtcnn.detect(torch.from_numpy(batch))
    np.testing.assert_allclose(b5[2], b4[2])


def test_large_batches_are_detected_in_bounded_calls(mtcnn, astronaut, monkeypatch):
    """Same-size frames go through the cascade BATCH_PIXELS at a time (large frames one by one:
    batching them was slower); the results are those of one call per frame."""
    from facenet_tf2pt.models.detection import mtcnn as mtcnn_module

    frames = np.stack([astronaut, astronaut[:, ::-1], (astronaut // 2 + 60).astype(np.uint8)])
    calls = []
    real = mtcnn_module.detect_faces
    monkeypatch.setattr(mtcnn_module, "detect_faces", lambda x, *a: calls.append(len(x)) or real(x, *a))
    monkeypatch.setattr(mtcnn_module, "BATCH_PIXELS", 2 * 512 * 512)
    boxes, probs = mtcnn.detect(frames)
    assert calls == [2, 1]
    for frame, b, p in zip(frames, boxes, probs):
        one_b, one_p = mtcnn.detect(np.ascontiguousarray(frame))
        np.testing.assert_allclose(b, one_b, atol=1e-3)
        np.testing.assert_allclose(p, one_p, atol=1e-6)


def test_input_kinds(mtcnn, astronaut, astro_detection):
    ref = astro_detection[0]
    pil = Image.fromarray(astronaut)
    np.testing.assert_allclose(mtcnn.detect(pil)[0], ref, atol=1e-3)
    np.testing.assert_allclose(mtcnn.detect(torch.from_numpy(astronaut))[0], ref, atol=1e-3)
    rgba = np.concatenate([astronaut, np.full(astronaut.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(mtcnn.detect(rgba)[0], ref, atol=1e-3)
    np.testing.assert_allclose(mtcnn.detect(pil.convert("RGBA"))[0], ref, atol=1e-3)
    gray = np.asarray(pil.convert("L"))
    for g in (gray, pil.convert("L"), gray[..., None]):
        boxes, probs = mtcnn.detect(g)
        assert boxes is not None and len(boxes) == 1 and probs[0] > 0.9
        assert np.abs(boxes[0] - ref[0]).max() < 15


def test_lists_of_mixed_sizes(mtcnn, astronaut, astro_detection):
    half = _small(astronaut, 256)
    boxes, probs = mtcnn.detect([half, astronaut, half])
    np.testing.assert_allclose(boxes[1], astro_detection[0], atol=1e-3)
    np.testing.assert_allclose(boxes[0], boxes[2])
    assert np.abs(boxes[0][0] * 2 - astro_detection[0][0]).max() < 12


def test_too_small_images(mtcnn, astronaut):
    tiny = _small(astronaut, 19)  # below min_face_size
    assert mtcnn.detect(tiny) == (None, None)
    assert mtcnn.detect([tiny, astronaut])[0][0] is None
    assert mtcnn.detect(np.zeros((1, 1, 3), np.uint8)) == (None, None)


def test_bad_inputs(mtcnn):
    with pytest.raises(ValueError, match="shape"):
        mtcnn.detect(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(TypeError):
        mtcnn.detect("photo.jpg")
    with pytest.raises(ValueError):
        MTCNN(selection_method="biggest")


# ------------------------------------------------------------------------- several faces, choice

@pytest.fixture(scope="module")
def two_faces(astronaut):
    """The astronaut, plus a half-size copy of her at the right edge: two faces of known sizes."""
    canvas = np.full((512, 1024, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    canvas[256:, 700:956] = _small(astronaut, 256)
    return canvas


def test_keep_all_and_selection(two_faces):
    m = MTCNN(keep_all=True)
    boxes, probs = m.detect(two_faces)
    assert boxes.shape == (2, 4) and np.all(probs > 0.95)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert areas[0] > 3 * areas[1]  # ordered by size
    faces = m(two_faces)
    assert faces.shape == (2, 3, 160, 160)
    assert MTCNN(keep_all=True, select_largest=False).detect(two_faces)[1][0] == probs.max()

    big, small = boxes
    for method, expect in [("largest", big), ("probability", boxes[np.argmax(probs)])]:
        picked, _, pts = MTCNN(selection_method=method).select_boxes(boxes, probs, None, two_faces)
        np.testing.assert_array_equal(picked[0], expect)
    # over 0.9 both qualify -> the larger; a threshold above both -> none
    assert MTCNN().select_boxes(boxes, probs, None, two_faces, method="largest_over_threshold")[0][0][0] == big[0]
    assert MTCNN().select_boxes(boxes, probs, None, two_faces, method="largest_over_threshold",
                                threshold=1.1)[0] is None


def test_center_weighted_size():
    """Sandberg's LFW choice: area - 2 * squared offset from the image centre."""
    m = MTCNN(selection_method="center_weighted_size")
    img = np.zeros((200, 300, 3), np.uint8)  # centre (150, 100)
    boxes = np.array([[0, 0, 60, 60], [120, 70, 170, 120]], np.float32)  # large off-centre; small centred
    probs = np.array([0.99, 0.98], np.float32)
    picked, prob, _ = m.select_boxes(boxes, probs, None, img)
    # 3600 - 2 * (120^2 + 70^2) < 2500 - 2 * (5^2 + 5^2)
    np.testing.assert_array_equal(picked[0], boxes[1])
    assert prob == pytest.approx(0.98)
    near = np.array([[100, 40, 220, 160], [120, 70, 170, 120]], np.float32)
    np.testing.assert_array_equal(m.select_boxes(near, probs, None, img)[0][0], near[0])


def test_call_respects_selection_method(two_faces):
    small_face = MTCNN(selection_method="center_weighted_size")(two_faces)
    big_face = MTCNN()(two_faces)
    assert small_face.shape == big_face.shape == (3, 160, 160)
    assert not torch.allclose(small_face, big_face)


# ------------------------------------------------------------------------ crops, saving, options

def test_save_path_and_post_process(tmp_path, astronaut, two_faces):
    raw = MTCNN(post_process=False)(astronaut, save_path=str(tmp_path / "sub" / "face.png"))
    assert raw.min() >= 0 and raw.max() <= 255 and raw.max() > 100
    saved = np.asarray(Image.open(tmp_path / "sub" / "face.png"))
    assert saved.shape == (160, 160, 3)
    np.testing.assert_array_equal(saved, raw.permute(1, 2, 0).numpy().astype(np.uint8))
    MTCNN(keep_all=True, image_size=96)(two_faces, save_path=str(tmp_path / "all.png"))
    assert Image.open(tmp_path / "all.png").size == (96, 96) and (tmp_path / "all_2.png").exists()


def test_margin_widens_the_crop(astronaut):
    plain = MTCNN(post_process=False, image_size=100)
    wide = MTCNN(post_process=False, image_size=100, margin=20)
    # with margin m (output px), the face box shrinks to (size - m) px inside the crop
    inner = wide(astronaut)[:, 10:90, 10:90].unsqueeze(0)
    ref = torch.nn.functional.interpolate(plain(astronaut).unsqueeze(0), size=(80, 80), mode="area")
    assert float((inner - ref).abs().mean()) < 12
    assert float((wide(astronaut) - plain(astronaut)).abs().mean()) > 20  # and it is a different crop


def test_align(astronaut, astro_detection):
    m = MTCNN(align=True, post_process=False)
    face = m(astronaut)
    assert face.shape == (3, 160, 160) and face.max() > 100
    # the similarity transform takes the template onto the landmarks
    pts = torch.as_tensor(astro_detection[2], dtype=torch.float64)
    aff = alignment_affine(pts, 160)
    tmpl = template_points(160) + 0.5
    mapped = tmpl @ aff[0, :, :2].T + aff[0, :, 2] - 0.5
    assert float((mapped - pts[0]).norm(dim=1).max()) < 8  # a 5-point fit, not exact
    with pytest.raises(ValueError, match="landmarks"):
        m.extract(astronaut, astro_detection[0])
    aligned = m.extract(astronaut, astro_detection[0], landmarks=astro_detection[2])
    torch.testing.assert_close(aligned, face)


def test_weights_override(tmp_path, astronaut, astro_detection):
    from safetensors.torch import save_file

    from facenet_tf2pt.models.hub.serialization import load_state_dict_file

    for net in ("pnet", "rnet", "onet"):
        save_file(load_state_dict_file(weight_file(net)), str(tmp_path / f"{net}.safetensors"))
    m = MTCNN(weights=tmp_path, device="cpu")
    np.testing.assert_allclose(m.detect(astronaut)[0], astro_detection[0])
    with pytest.raises(FileNotFoundError, match="pnet"):
        MTCNN(weights=tmp_path / "empty")


def test_nets_modules():
    for net, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        module = load_net(net)
        assert isinstance(module, cls) and not module.training
    with torch.no_grad():
        reg, prob = load_net("pnet")(torch.zeros(2, 3, 12, 12))
        assert reg.shape == (2, 4, 1, 1) and prob.shape == (2, 2, 1, 1)
        reg, prob = load_net("pnet")(torch.zeros(1, 3, 12, 13))  # TF "SAME" pooling keeps the odd column
        assert reg.shape == (1, 4, 1, 2)
        reg, lm, prob = load_net("onet")(torch.zeros(3, 3, 48, 48))
        assert reg.shape == (3, 4) and lm.shape == (3, 10)
        torch.testing.assert_close(prob.sum(1), torch.ones(3))


# ----------------------------------------------------------------------------- building blocks

@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 60),
    groups=st.integers(1, 4),
    threshold=st.sampled_from([0.3, 0.5, 0.7]),
    mode=st.sampled_from(["union", "min"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_batched_nms_is_greedy_nms(n, groups, threshold, mode, seed):
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 60, size=(n, 2)).astype(np.float64)
    wh = rng.integers(5, 40, size=(n, 2)).astype(np.float64)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.permutation(n).astype(np.float64) / max(n, 1)  # distinct: order is well defined
    g = rng.integers(0, groups, size=n)
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(g), threshold, mode)
    assert keep.tolist() == greedy_nms(boxes, scores, g, threshold, mode)


def test_pnet_packed_levels_equal_each_level_alone(astronaut):
    """Small pyramid levels packed side by side into one P-Net call give each level's maps as P-Net
    on the level alone (to float32 rounding), for every parity of height and width (the pool
    edges the packing must fix), on a batch of two real photos' levels."""
    from facenet_tf2pt.models.detection.detect import _pnet_input, _pnet_packed
    from facenet_tf2pt.models.detection.resample import resize_area

    pnet = load_net("pnet")
    photo = torch.from_numpy(np.ascontiguousarray(astronaut)).permute(2, 0, 1)
    photos = torch.stack([photo, photo.flip(2)])
    sizes = [(40, 40), (33, 47), (28, 21), (17, 17), (12, 13), (13, 12), (12, 12)]
    levels = [resize_area(photos, size, "u8") for size in sizes]
    with torch.inference_mode():
        packed = _pnet_packed(pnet, levels)
        for size, level, (reg, prob) in zip(sizes, levels, packed, strict=True):
            alone_reg, alone_prob = pnet(_pnet_input(level))
            assert reg.shape == alone_reg.shape and prob.shape == alone_prob.shape, size
            torch.testing.assert_close(reg, alone_reg, rtol=0, atol=1e-6, msg=str(size))
            torch.testing.assert_close(prob, alone_prob, rtol=0, atol=1e-6, msg=str(size))


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_batched_nms_in_small_chunks_is_greedy_nms(monkeypatch, chunk):
    """The same-group pairs compared in chunks (a chunk of one box's pairs, of a few, or of many
    boxes spanning groups) give greedy NMS exactly, on boxes crowded enough for long chains."""
    from facenet_tf2pt.models.detection import detect

    monkeypatch.setattr(detect, "_NMS_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(chunk)
    for n, groups in [(1, 1), (40, 1), (90, 6), (150, 3)]:
        xy = rng.integers(0, 30, size=(n, 2)).astype(np.float64)
        boxes = np.concatenate([xy, xy + rng.integers(5, 25, size=(n, 2))], axis=1)
        scores = rng.permutation(n).astype(np.float64) / n
        g = rng.integers(0, groups, size=n)
        for mode in ("union", "min"):
            keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(g), 0.5, mode)
            assert keep.tolist() == greedy_nms(boxes, scores, g, 0.5, mode), (n, groups, mode)


def test_pyramid_and_box_algebra():
    s = pyramid_scales(512, 512, 20, 0.709)
    assert s[0] == pytest.approx(0.6) and len(s) == 10 and 512 * s[-1] >= 12 > 512 * s[-1] * 0.709
    assert pyramid_scales(19, 500, 20, 0.709) == []
    b = torch.tensor([[10.0, 20.0, 30.0, 60.0, 0.9]], dtype=torch.float64)
    sq = rerec(b)
    assert sq[0, 2] - sq[0, 0] == sq[0, 3] - sq[0, 1] == 40 and sq[0, 0] == 0 and sq[0, 4] == 0.9
    reg = torch.tensor([[0.1, 0.0, -0.1, 0.5]], dtype=torch.float64)
    out = bbreg(b, reg)
    assert out[0, :4].tolist() == pytest.approx([12.1, 20.0, 27.9, 80.5])


def test_sampling_matches_area_resize():
    """An axis-aligned crop at an integer ratio equals area resampling of the cropped pixels."""
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 64, 80, generator=g) * 255
    boxes = torch.tensor([[9.0, 5.0, 56.0, 52.0], [1.0, 1.0, 48.0, 48.0]], dtype=torch.float64)  # 1-based
    idx = torch.tensor([1, 0])  # not sorted by image: exercises the reordering
    got = crop_boxes(img, idx, boxes, 24, cap=4)
    torch.testing.assert_close(got[0], torch.nn.functional.avg_pool2d(img[1, :, 4:52, 8:56], 2), atol=1e-3, rtol=0)
    torch.testing.assert_close(got[1], torch.nn.functional.avg_pool2d(img[0, :, 0:48, 0:48], 2), atol=1e-3, rtol=0)
    # at ratio 1 without supersampling, the crop is the pixels themselves
    one = crop_boxes(img, torch.tensor([0]), torch.tensor([[1.0, 1.0, 24.0, 24.0]], dtype=torch.float64), 24, cap=1)
    torch.testing.assert_close(one[0], img[0, :, 0:24, 0:24], atol=1e-3, rtol=0)
    # zero padding outside the image, as the original's pad()
    out = crop_boxes(img, torch.tensor([0]), torch.tensor([[-23.0, 1.0, 0.0, 24.0]], dtype=torch.float64), 24)
    assert float(out.abs().max()) == 0.0


def test_sample_affine_rotation():
    img = torch.zeros(1, 1, 50, 50)
    img[0, 0, 10:20, 30:40] = 1.0  # a square up and right of the centre
    # rotate the patch 90 degrees about the centre: patch (u, v) -> image (50 - v, u)
    aff = torch.tensor([[[0.0, -1.0, 50.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    out = sample_affine(img, torch.zeros(1, dtype=torch.long), aff, 50)
    # patch (row v, col u) shows image (row u, col 49 - v): the square lands at rows/cols 10..19
    assert float(out[0, 0, 10:20, 10:20].min()) == pytest.approx(1.0)
    assert float(out.sum()) == pytest.approx(100.0)
    assert box_affine(torch.tensor([[0.0, 0.0, 10.0, 20.0]]), 10)[0, 1, 1] == 2.0


@pytest.mark.parametrize("kernel", [2, 3])
def test_ceil_max_pool_equals_aten_pooling(kernel):
    """The nets' slice-wise max pool gives ATen's ceil-mode max pool exactly (values, shape and
    channels-last layout), for every map size from the kernel to 40, ragged edges included."""
    from torch.nn import functional as F

    from facenet_tf2pt.models.detection.mtcnn_nets import CeilMaxPool2d

    pool = CeilMaxPool2d(kernel, 2)
    gen = torch.Generator().manual_seed(kernel)
    for h in range(kernel, 41):
        for w in (kernel, kernel + 1, 17, 40):
            x = torch.randn(2, 4, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
            ours, aten = pool(x), F.max_pool2d(x, kernel, 2, ceil_mode=True)
            assert torch.equal(ours, aten), (h, w)
            assert ours.is_contiguous(memory_format=torch.channels_last), (h, w)


def _net_input(net: str, astronaut: np.ndarray) -> torch.Tensor:
    """What the detector feeds ``net`` on a real photo: a pyramid level (P-Net), or 24 x 24 crops
    of boxes of many sizes and positions, some over the border (R-Net)."""
    from facenet_tf2pt.models.detection.detect import _pnet_input, crop_candidates
    from facenet_tf2pt.models.detection.resample import resize_area

    photo = torch.from_numpy(np.ascontiguousarray(astronaut)).permute(2, 0, 1)[None]
    if net == "pnet":
        return _pnet_input(resize_area(photo, (307, 307), "u8"))
    gen = torch.Generator().manual_seed(3)
    x1y1 = torch.randint(-20, 480, (64, 2), generator=gen).double()
    side = torch.randint(12, 200, (64, 1), generator=gen).double()
    boxes = torch.cat((x1y1, x1y1 + side), 1)
    crops = crop_candidates(photo, torch.zeros(64, dtype=torch.long), boxes, 24, True)
    return crops.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("net,cls", [("pnet", PNet), ("rnet", RNet)])
def test_padded_first_layers_equal_the_plain_layers(astronaut, net, cls):
    """The inference path of P-Net and R-Net (conv1 padded to 16 / 32 channels, for fast
    channels-last kernels) gives exactly what their plain layers give on what the detector feeds
    them from a real photo, and follows the weights: after loading other weights its output
    changes with them (no stale cache)."""
    model = load_net(net)
    x = _net_input(net, astronaut)
    with torch.no_grad():
        fast = model(x)
    model.requires_grad_(True)
    with torch.enable_grad():
        plain = model(x)    # with gradients the plain layers run
    assert all(torch.equal(a, b.detach()) for a, b in zip(fast, plain))
    other = {k: v * 0.5 for k, v in model.state_dict().items()}
    model.load_state_dict(other)
    model.requires_grad_(False)
    with torch.no_grad():
        changed = model(x)
    reference = cls()
    reference.load_state_dict(other)
    reference.requires_grad_(True)
    with torch.enable_grad():
        expected = reference(x)
    assert not torch.equal(changed[0], fast[0])
    assert all(torch.equal(a, b.detach()) for a, b in zip(changed, expected))
