"""Property tests (hypothesis): the mapping's transforms, the NMS, the preprocessing, and the
readers' refusal of mangled input.

- mapping: every TF<->PyTorch transform round-trips exactly (PT -> TF -> PT and TF -> PT -> TF) on
  random shapes, TF_SHAPE_FOR agrees with what the transform produces, and for any model size the
  table's rows produce exactly the model's state_dict shapes;
- NMS: `batched_nms` equals a plain-Python greedy NMS on boxes built to hit the corner cases the
  detector meets (tied scores, duplicate boxes, overlaps exactly at the threshold, sparse group ids);
- preprocessing: fixed standardization and prewhiten against a float64 NumPy reference, plus
  their invariants (per image, shift/scale, layout, torch == numpy);
- the loader and the det*.npy reader on mutated inputs: our ConversionError naming the culprit,
  never another exception. (The checkpoint reader's own fuzzing lives in test_bundle_reader.py.)
Each property runs at most 100 examples, without deadlines (the machine is shared).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from facenet_tf2pt.converter.errors import ConversionError
from facenet_tf2pt.converter.loader import arrays_to_state_dict
from facenet_tf2pt.converter.mapping import TF_SHAPE_FOR, TRANSFORMS, expected_shapes, inception_resnet_v1_table
from facenet_tf2pt.models import InceptionResNetV1
from facenet_tf2pt.models.detection.detect import batched_nms
from facenet_tf2pt.models.data.preprocessing import fixed_image_standardization, prewhiten, unfixed
from tests.helpers import greedy_nms

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- mapping ------------------------------------------------------------------------------------

# PyTorch -> TF, the inverse of each named transform (written independently of converter.mapping)
TO_TF = {
    "conv_hwio_to_oihw": lambda t: t.permute(2, 3, 1, 0).numpy(),      # OIHW -> HWIO
    "dense_io_to_oi": lambda t: t.T.numpy(),                           # [out, in] -> [in, out]
    "identity": lambda t: t.numpy(),
}
RANK = {"conv_hwio_to_oihw": 4, "dense_io_to_oi": 2, "identity": None}


@st.composite
def pt_tensors(draw, transform):
    rank = RANK[transform] or draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=rank, max_size=rank)))
    seed = draw(st.integers(0, 2**32 - 1))
    t = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
    return t


@FAST
@given(data=st.data(), transform=st.sampled_from(sorted(TF_SHAPE_FOR)))
def test_transforms_round_trip(data, transform):
    pt = data.draw(pt_tensors(transform))
    shape = tuple(pt.shape)
    tf = TO_TF[transform](pt)
    assert TF_SHAPE_FOR[transform](shape) == tf.shape
    back = TRANSFORMS[transform](tf, shape)
    assert back.dtype == np.float32 and back.shape == shape and back.flags.c_contiguous
    assert not np.shares_memory(back, tf)                                # a new array, never a view
    assert torch.equal(torch.from_numpy(back), pt)                       # PT -> TF -> PT
    np.testing.assert_array_equal(TO_TF[transform](torch.from_numpy(back)), tf)  # TF -> PT -> TF


@FAST
@given(embedding=st.integers(1, 1024), classes=st.one_of(st.none(), st.integers(1, 20000)))
def test_table_shapes_agree_with_the_model_for_any_size(embedding, classes):
    shapes = expected_shapes(embedding, classes)
    with torch.device("meta"):   # the PyTorch model is the oracle for the table's torch-free shapes
        model = InceptionResNetV1(embedding_size=embedding, num_classes=classes)
    assert shapes == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    table = inception_resnet_v1_table(with_logits=classes is not None)
    assert sorted(r.pt_key for r in table) == sorted(shapes)
    assert len({r.pt_key for r in table}) == len(table) == len(shapes)
    tf_names = [r.tf_name for r in table if r.tf_name is not None]
    assert len(set(tf_names)) == len(tf_names)
    for row in table:
        shape = shapes[row.pt_key]
        if row.tf_name is None:                                          # synthesized tensors
            assert row.transform not in TF_SHAPE_FOR
            assert tuple(TRANSFORMS[row.transform](None, shape).shape) == shape
        else:
            tf_shape = TF_SHAPE_FOR[row.transform](shape)
            assert math.prod(tf_shape) == math.prod(shape)
            probe = np.zeros(tf_shape, np.float32) if math.prod(shape) <= 4096 else None
            if probe is not None:
                assert tuple(TRANSFORMS[row.transform](probe, shape).shape) == shape


# --- NMS against a plain-Python greedy NMS --------------------------------------------------------

coordinate = st.integers(0, 160).map(lambda v: v / 4)          # quarter pixels: exact in binary
extent = st.integers(0, 80).map(lambda v: v / 4)


@st.composite
def detections(draw):
    n = draw(st.integers(0, 40))
    boxes = []
    for _ in range(n):
        if boxes and draw(st.booleans()) and draw(st.booleans()):
            boxes.append(list(draw(st.sampled_from(boxes))))          # exact duplicates
        else:
            x, y, w, h = draw(coordinate), draw(coordinate), draw(extent), draw(extent)
            boxes.append([x, y, x + w, y + h])
    scores = draw(st.lists(st.sampled_from([0.1, 0.5, 0.5, 0.9, 0.95, 1.0]), min_size=n, max_size=n))
    groups = draw(st.lists(st.sampled_from([-3, 0, 1, 7, 10**6]), min_size=n, max_size=n))
    return boxes, scores, groups


@FAST
@given(det=detections(), threshold=st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]) | st.floats(0, 1),
       mode=st.sampled_from(["union", "min", "Min"]))
def test_batched_nms_equals_brute_force(det, threshold, mode):
    boxes, scores, groups = det
    keep = batched_nms(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                       torch.tensor(scores, dtype=torch.float64), torch.tensor(groups, dtype=torch.long),
                       threshold, mode)
    assert keep.dtype == torch.long
    assert keep.tolist() == greedy_nms(boxes, scores, groups, threshold, mode.lower())


def test_batched_nms_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        batched_nms(torch.zeros(1, 4, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                    torch.zeros(1, dtype=torch.long), 0.5, "iou")


# --- preprocessing against a float64 reference -------------------------------------------------

def _prewhiten_ref(x: np.ndarray) -> np.ndarray:
    """Per image, (x - mean) / max(std, 1/sqrt(n)), in float64 (docs/reference.md, "Preprocessing")."""
    x = np.asarray(x, np.float64)
    if x.ndim == 3:
        return (x - x.mean()) / max(x.std(), 1.0 / math.sqrt(x.size))
    return np.stack([_prewhiten_ref(im) for im in x])


@st.composite
def images(draw, batch=False):
    shape = (draw(st.integers(1, 3)),) if batch else ()
    shape += (draw(st.integers(1, 12)), draw(st.integers(1, 12)), 3)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "low-contrast", "constant", "two-level"]))
    if kind == "noise":
        x = rng.integers(0, 256, shape)
    elif kind == "low-contrast":
        x = rng.integers(0, 2, shape) + draw(st.integers(0, 254))
    elif kind == "constant":
        x = np.full(shape, draw(st.integers(0, 255)))
    else:
        x = np.where(rng.random(shape) < 0.01, 255, 0)
    return x.astype(np.uint8)


@FAST
@given(x=images(batch=True))
def test_fixed_standardization_matches_float64(x):
    ref = (x.astype(np.float64) - 127.5) / 128.0
    out = fixed_image_standardization(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref.astype(np.float32))         # exact: k/2^n values
    t = fixed_image_standardization(torch.from_numpy(x))
    assert t.dtype == torch.float32 and torch.equal(t, torch.from_numpy(ref.astype(np.float32)))
    np.testing.assert_array_equal(unfixed(out), x.astype(np.float32))   # inverts exactly


def _close(got, ref, denom, what):
    """float32 work: the error is the input's rounding scale (|x| * eps) over the denominator."""
    tol = 64 * np.finfo(np.float32).eps * (1.0 + np.abs(ref).max() + 255.0 / denom)
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=0, atol=tol, err_msg=what)


@FAST
@given(x=images(batch=True))
def test_prewhiten_matches_float64_and_keeps_its_invariants(x):
    ref = _prewhiten_ref(x)
    denoms = [max(im.astype(np.float64).std(), 1 / math.sqrt(im.size)) for im in x]
    out = prewhiten(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    for i in range(len(x)):
        _close(out[i], ref[i], denoms[i], "numpy float32 vs float64 reference")
        _close(prewhiten(x[i]), ref[i], denoms[i], "one image vs the same image in a batch")
        _close(prewhiten(x[i].transpose(2, 0, 1)).transpose(1, 2, 0), ref[i], denoms[i], "CHW vs HWC")
    t = prewhiten(torch.from_numpy(x))
    assert t.dtype == torch.float32
    for i in range(len(x)):
        _close(t[i].numpy(), ref[i], denoms[i], "torch vs reference")
    # float64 in, float64 out, equal to the reference to rounding
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(prewhiten(x64), ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(prewhiten(torch.from_numpy(x64)).numpy(), ref, rtol=1e-12, atol=1e-9)
    for i, im in enumerate(ref):
        assert abs(im.mean()) < 1e-9
        expected_std = x64[i].std() / denoms[i]                       # 1 unless the floor applied
        assert abs(im.std() - expected_std) < 1e-9 and expected_std <= 1 + 1e-12


@FAST
@given(x=images(), shift=st.floats(-1000, 1000), scale=st.floats(0.01, 100))
def test_prewhiten_is_shift_and_scale_invariant(x, shift, scale):
    x64 = x.astype(np.float64)
    floor = 1 / math.sqrt(x.size)
    assume(x64.std() * min(scale, 1) > 2 * floor)            # the floor would make scale matter
    np.testing.assert_allclose(prewhiten(x64 + shift), prewhiten(x64), atol=1e-7)
    np.testing.assert_allclose(prewhiten(x64 * scale), prewhiten(x64), atol=1e-7)


# --- the loader on mutated variable sets ---------------------------------------------------------

MUTATIONS = ("drop", "reshape", "int32", "float64", "nan", "inf", "rename")


@SLOW
@given(data=st.data())
def test_loader_names_the_culprit_of_any_single_mutation(fixture128_arrays, data):
    names = sorted(fixture128_arrays)
    name = data.draw(st.sampled_from(names), label="variable")
    how = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    arrays = dict(fixture128_arrays)
    a = arrays[name]
    if how == "drop":
        del arrays[name]
    elif how == "reshape":
        new = tuple(data.draw(st.lists(st.integers(1, 9), min_size=1, max_size=4), label="shape"))
        assume(new != a.shape)
        arrays[name] = np.zeros(new, np.float32)
    elif how in ("int32", "float64"):
        arrays[name] = a.astype(how)
    elif how in ("nan", "inf"):
        a = a.copy()
        a.reshape(-1)[data.draw(st.integers(0, a.size - 1), label="where")] = np.nan if how == "nan" else -np.inf
        arrays[name] = a
    else:
        arrays[name.replace("InceptionResnetV1/", "InceptionResnetV1_1/")] = arrays.pop(name)
    with pytest.raises(ConversionError) as e:
        arrays_to_state_dict(arrays, "SOURCE-LABEL")
    msg = str(e.value)
    assert msg.startswith("SOURCE-LABEL: ") and name in msg, msg


def test_loader_output_owns_its_memory(fixture128_arrays):
    """Identity rows (BN vectors, biases) and no-op transposes view the source array; the state_dict
    must not change when the caller later edits the arrays it passed."""
    arrays = {k: v.copy() for k, v in fixture128_arrays.items()}
    state_dict, _ = arrays_to_state_dict(arrays, "copy")
    before = {k: v.copy() for k, v in state_dict.items()}
    for a in arrays.values():
        a[...] = 0
    assert all(np.array_equal(state_dict[k], before[k]) for k in before)


# --- the det*.npy reader on mutated files -------------------------------------------------------

@pytest.fixture(scope="module")
def det1_bytes(mtcnn_npy_dir):
    return (mtcnn_npy_dir / "det1.npy").read_bytes()


@FAST
@given(data=st.data())
def test_det_npy_reader_refuses_mutations_cleanly(det1_bytes, tmp_path_factory, data):
    from facenet_tf2pt.converter.npy_source import read_det_npy

    b = bytearray(det1_bytes)
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    if kind == "flip":
        for pos, value in data.draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(0, 255)),
                                             min_size=1, max_size=8)):
            b[pos] = value
    elif kind == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    else:
        pos = data.draw(st.integers(0, len(b)))
        b[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    path = tmp_path_factory.getbasetemp() / "fuzz-det1.npy"
    path.write_bytes(bytes(b))
    try:
        params = read_det_npy(path)
    except ConversionError as e:
        assert str(path) in str(e)
        return
    # a mutation that still parses must still give {layer: {param: float32 array}}
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for ps in params.values() for v in ps.values())
