"""Standardization formulas against hand-computed values, for numpy and torch; the resize helper."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from facenet_tf2pt.models.data.preprocessing import (fixed_image_standardization, prewhiten, resize, standardize, to_tensor,
                                  unfixed)


def test_fixed_standardization_hand_values():
    x = np.array([0, 127.5, 255, 63.5], dtype=np.float32)
    # (0 - 127.5)/128, 0, (255 - 127.5)/128, (63.5 - 127.5)/128
    expected = np.array([-0.99609375, 0.0, 0.99609375, -0.5], dtype=np.float32)
    np.testing.assert_array_equal(fixed_image_standardization(x), expected)
    t = fixed_image_standardization(torch.tensor(x))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), expected)


def test_fixed_standardization_uint8_becomes_float32_and_inverts():
    x = np.array([[[0, 128, 255]]], dtype=np.uint8)
    y = fixed_image_standardization(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [[[-0.99609375, 0.00390625, 0.99609375]]])
    np.testing.assert_array_equal(unfixed(y), x.astype(np.float32))
    ty = fixed_image_standardization(torch.from_numpy(x))
    assert ty.dtype == torch.float32


def test_prewhiten_hand_computed():
    # one 1x2x2 "image" of values 1, 2, 3, 4: mean 2.5, population std sqrt(1.25)
    x = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    s = math.sqrt(1.25)
    expected = (np.array([[[1.0, 2.0], [3.0, 4.0]]]) - 2.5) / s
    np.testing.assert_allclose(prewhiten(x), expected, rtol=1e-12)
    np.testing.assert_allclose(prewhiten(torch.tensor(x)).numpy(), expected, rtol=1e-12)
    # ddof=0, not torch's default unbiased std (which would give sqrt(5/3))
    assert not np.allclose(prewhiten(x), (x - 2.5) / math.sqrt(5 / 3))


def test_prewhiten_constant_image_uses_floor():
    # std 0 -> divide by 1/sqrt(n), n = 2*2*3 = 12; x - mean = 0 so the output is all 0
    x = np.full((2, 2, 3), 7.0)
    np.testing.assert_array_equal(prewhiten(x), np.zeros_like(x))
    # tiny std below the floor: values 0 and 0.01 -> std 0.005 < 1/sqrt(4) = 0.5
    y = np.array([[[0.0, 0.01], [0.0, 0.01]]])
    np.testing.assert_allclose(prewhiten(y), (y - 0.005) / 0.5)
    np.testing.assert_allclose(prewhiten(torch.tensor(y)).numpy(), (y - 0.005) / 0.5)


def test_prewhiten_batch_is_per_image():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (3, 5, 4)).astype(np.float32)
    b = (a * 0.1 + 50).astype(np.float32)          # same image, other scale and offset
    batch = np.stack([a, b])
    out = prewhiten(batch)
    np.testing.assert_allclose(out[0], prewhiten(a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], prewhiten(b), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[0], out[1], atol=1e-4)   # affine-invariant
    for img in out:
        assert abs(img.mean()) < 1e-5 and abs(img.std() - 1) < 1e-5
    tout = prewhiten(torch.from_numpy(batch))
    np.testing.assert_allclose(tout.numpy(), out, rtol=1e-5, atol=1e-5)


def test_prewhiten_rejects_other_ranks():
    with pytest.raises(ValueError, match="3 dims"):
        prewhiten(np.zeros((4, 4)))


def test_standardize_dispatch():
    x = np.array([[[0.0, 255.0]]])
    np.testing.assert_array_equal(standardize(x, "fixed"), fixed_image_standardization(x))
    np.testing.assert_array_equal(standardize(x, "prewhiten"), prewhiten(x))
    with pytest.raises(ValueError, match="unknown standardization"):
        standardize(x, "imagenet")


def test_resize_pil_numpy_tensor():
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    r = resize(img, 16)
    assert r.size == (16, 16) and r.getpixel((5, 5)) == (10, 20, 30)
    assert resize(img, (8, 4)).size == (8, 4)
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 20:] = 200
    out = resize(arr, 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, 9, 0] == 200
    t = torch.ones(2, 3, 20, 40) * 5
    assert torch.allclose(resize(t, 16), torch.full((2, 3, 16, 16), 5.0))
    assert resize(t[0], 16).shape == (3, 16, 16)
    same = Image.new("RGB", (16, 16))
    assert resize(same, 16) is same


def test_to_tensor_layout_and_range():
    arr = np.zeros((2, 3, 3), np.uint8)
    arr[0, 1] = (255, 1, 2)
    t = to_tensor(arr)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert t[:, 0, 1].tolist() == [255.0, 1.0, 2.0]
