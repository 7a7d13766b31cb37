"""converter.torch_zip writes, without torch, the exact bytes torch.save writes for a dict of
tensors: compared here with real torch.save output (and the committed MTCNN checkpoints)."""
from __future__ import annotations

import io
import pickletools
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facenet_tf2pt.converter.torch_zip import torch_save_bytes
from tests.helpers import REPO, same_torch_as_pinned

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_]


def torch_save_reference(arrays) -> bytes:
    """torch.save of the same dict, each array copied into a fresh contiguous tensor (on the
    pinned torch only: another release may pickle differently; the tests say so and skip)."""
    same, why = same_torch_as_pinned()
    if not same:
        pytest.skip(why)
    tensors = {}
    for key, a in arrays.items():
        src = torch.from_numpy(a.astype(a.dtype.newbyteorder("="), copy=True))
        tensors[key] = torch.empty(a.shape, dtype=src.dtype).copy_(src)
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return buf.getvalue()


def assert_same_bytes(ours: bytes, ref: bytes) -> None:
    if ours != ref:
        i = next((i for i, (x, y) in enumerate(zip(ours, ref)) if x != y), min(len(ours), len(ref)))
        pytest.fail(f"bytes differ from the installed torch {torch.__version__}'s torch.save (the writer was "
                    f"checked against torch 2.13.0; see converter/torch_zip.py) (ours {len(ours)} B, torch "
                    f"{len(ref)} B); first at {i}: ours {ours[i - 8:i + 8]!r} vs torch {ref[i - 8:i + 8]!r}")


def pickle_opcodes(archive: bytes) -> list[str]:
    pkl = zipfile.ZipFile(io.BytesIO(archive)).read("archive/data.pkl")
    return [op.name for op, _, _ in pickletools.genops(pkl)]


def mixed_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    weird = np.lib.stride_tricks.as_strided(np.arange(12, dtype=np.float32), (3, 1, 4), (16, 7, 4))
    assert weird.flags.c_contiguous  # size-1 dims' strides don't count for contiguity
    return {
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),  # 0-d
        "conv.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),  # > 3 dims: MARK..TUPLE
        "empty": np.zeros((0,), np.float32),
        "empty3d": np.zeros((3, 0, 2), np.float64),
        "fp16": rng.standard_normal((2, 3)).astype(np.float16),
        "i16": np.arange(-6, 6, dtype=np.int16).reshape(3, 4),
        "i32": np.arange(300, dtype=np.int32),  # numel > 255: BININT2
        "i8": np.arange(-5, 5, dtype=np.int8),
        "mask": rng.random(9) > 0.5,
        "one": np.array([1.5], np.float64),  # 1 element
        "u8": np.zeros((70000, 1), np.uint8),  # > 65535: BININT
        "weird_strides": weird,
        "big_endian": np.arange(5, dtype=">f4"),
        # data that starts with the zip data-descriptor signature PK\7\8: torch's writer
        # folds bytes 4..8 of it into the serialization id as if it were a crc32
        "zz_pk": np.array([0x08074B50, 12345, 6], np.int32),
    }


@pytest.mark.parametrize(
    "arrays",
    [
        pytest.param({}, id="empty-dict"),
        pytest.param({"w": np.zeros(3, np.float32)}, id="one-entry"),  # SETITEM, no MARK
        pytest.param(mixed_arrays(), id="mixed"),
    ],
)
def test_bytes_equal_torch_save(arrays):
    assert_same_bytes(torch_save_bytes(arrays), torch_save_reference(arrays))


@pytest.mark.parametrize("n", [14, 300, 1000, 1001, 2400])
def test_bytes_equal_torch_save_many_entries(n):
    arrays = {f"block{i:04d}.conv.weight": np.full((2, 2), i, np.float32) for i in range(n - 2)}
    # the last two are int64: 'torch LongStorage' is memoised late, then fetched (LONG_BINGET)
    arrays.update({f"zz{i}.num_batches_tracked": np.array(i, np.int64) for i in range(2)})
    ref = torch_save_reference(arrays)
    ops = pickle_opcodes(ref)
    if n >= 300:  # the cases we mean to cover are really in torch's output
        assert "LONG_BINPUT" in ops and "LONG_BINGET" in ops
    if n == 1000:  # the C pickler ends a full last batch with an empty MARK SETITEMS
        assert ops[-3:] == ["MARK", "SETITEMS", "STOP"]
    assert_same_bytes(torch_save_bytes(arrays), ref)


@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_rewrites_committed_mtcnn_checkpoints(net):
    path = REPO / "checkpoints" / "mtcnn" / f"{net}.pt"
    state = torch.load(path, weights_only=True)
    arrays = {k: v.numpy() for k, v in state.items()}
    assert_same_bytes(torch_save_bytes(arrays), path.read_bytes())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.sampled_from(DTYPES),
                          st.lists(st.integers(0, 4), max_size=4), st.integers(0, 2**32 - 1)),
                max_size=8))
def test_bytes_equal_torch_save_random(specs):
    arrays = {}
    for key, dtype, shape, seed in specs:
        rng = np.random.default_rng(seed)
        n = int(np.prod(shape))
        if dtype is np.bool_:
            a = rng.random(n) > 0.5
        else:
            a = rng.integers(0, 256, n * np.dtype(dtype).itemsize, dtype=np.uint8).view(dtype)
        arrays[key] = a.reshape(shape)
    assert_same_bytes(torch_save_bytes(arrays), torch_save_reference(arrays))


def test_torch_load_round_trip():
    arrays = mixed_arrays()
    loaded = torch.load(io.BytesIO(torch_save_bytes(arrays)), weights_only=True)
    assert type(loaded) is dict and list(loaded) == list(arrays)
    for key, a in arrays.items():
        t = loaded[key]
        assert t.dtype == torch.from_numpy(a.astype(a.dtype.newbyteorder("="))).dtype, key
        assert tuple(t.shape) == a.shape, key
        assert t.stride() == torch.empty(a.shape).stride(), key
        assert not t.requires_grad
        got = t.numpy()
        assert got.dtype == a.dtype.newbyteorder("=") and got.tobytes() == a.astype(got.dtype).tobytes(), key


def test_import_does_not_import_torch():
    code = ("import sys, numpy as np\n"
            "import facenet_tf2pt.converter, facenet_tf2pt.converter.torch_zip as tz\n"
            "tz.torch_save_bytes({'a': np.zeros(2, np.float32), 'n': np.array(1)})\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "arrays, error, words",
    [
        ({"fc.weight": np.zeros((4, 6), np.float32)[:, ::2]}, ValueError, ["fc.weight", "float32", "contiguous"]),
        ({"fc.weight": np.zeros((4, 6), np.float32).T}, ValueError, ["fc.weight", "float32", "contiguous"]),
        ({"z": np.zeros(3, np.complex64)}, TypeError, ["'z'", "complex64"]),
        ({"objs": np.array([None, 1], dtype=object)}, TypeError, ["objs", "object"]),
        ({"u16": np.zeros(3, np.uint16)}, TypeError, ["u16", "uint16"]),
        ({1: np.zeros(3, np.float32)}, TypeError, ["1", "int", "str"]),
        ({"lst": [1.0, 2.0]}, TypeError, ["lst", "list"]),
    ],
)
def test_clear_errors(arrays, error, words):
    with pytest.raises(error) as info:
        torch_save_bytes({"ok": np.zeros(1, np.float32), **arrays})
    for w in words:
        assert w in str(info.value)


def test_ci_installs_the_torch_the_writer_was_checked_against():
    """The Makefile's pin (what `make install`, hence CI, installs) is CHECKED_WITH_TORCH, so the
    byte-equality tests above run in CI rather than skip."""
    from facenet_tf2pt.converter.torch_zip import CHECKED_WITH_TORCH

    assert f"torch=={CHECKED_WITH_TORCH}" in (REPO / "Makefile").read_text()
