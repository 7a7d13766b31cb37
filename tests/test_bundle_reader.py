"""The pure-Python TensorFlow checkpoint reader (converter.bundle_reader) against TensorFlow itself.

TensorFlow writes the reference checkpoints (tf.compat.v1 Graph + Variables + Saver) and reads
them back with tf.train.load_checkpoint; our reader must give byte-identical tensors. A small
writer below crafts bundles TensorFlow would not write (big-endian, snappy-compressed index,
corrupt entries); TensorFlow cross-checks those too. The corruption tests start from TensorFlow's
own file. Tests that need TensorFlow skip without it, saying so; the crafted-file tests do not.
"""
from __future__ import annotations

import os
import shutil
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facenet_tf2pt.converter.bundle_reader import BundleReader, list_variables, read_checkpoint
from facenet_tf2pt.converter.errors import ConversionError
from facenet_tf2pt.converter.leveldb_table import (
    FOOTER_SIZE,
    TABLE_MAGIC,
    TableFormatError,
    crc32c,
    mask_crc,
    snappy_decompress,
    table_block_handles,
    unmask_crc,
)

# ---------------------------------------------------------------------------------------------
# A minimal bundle writer, for crafted inputs.
# ---------------------------------------------------------------------------------------------

DT = {np.dtype("float32"): 1, np.dtype("float64"): 2, np.dtype("int32"): 3, np.dtype("uint8"): 4,
      np.dtype("int16"): 5, np.dtype("int8"): 6, np.dtype("complex64"): 8, np.dtype("int64"): 9,
      np.dtype("bool"): 10, np.dtype("uint16"): 17, np.dtype("float16"): 19}
DT_STRING = 7


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _f_varint(field: int, v: int) -> bytes:
    return _varint(field << 3) + _varint(v)


def _f_bytes(field: int, b: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(b)) + b


def _f_fixed32(field: int, v: int) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<I", v)


def encode_entry(dtype: int, shape, shard=0, offset=0, size=0, crc=0, slices=False) -> bytes:
    shape_msg = b"".join(_f_bytes(2, _f_varint(1, d)) for d in shape)
    out = _f_varint(1, dtype) + _f_bytes(2, shape_msg)
    if shard:
        out += _f_varint(3, shard)
    out += _f_varint(4, offset) + _f_varint(5, size) + _f_fixed32(6, crc)
    if slices:
        out += _f_bytes(7, _f_bytes(1, b""))
    return out


def encode_header(num_shards: int, big_endian=False, min_consumer=0) -> bytes:
    version = _f_varint(1, 1) + (_f_varint(2, min_consumer) if min_consumer else b"")
    return (_f_varint(1, num_shards) + (_f_varint(2, 1) if big_endian else b"")
            + _f_bytes(3, version))


def _snappy_compress(data: bytes) -> bytes:
    """Greedy snappy: 4-byte hash matches as copy-2 elements (overlapping ones too), literals."""
    out = bytearray(_varint(len(data)))
    lit = 0

    def literal(end):
        pos = lit
        while pos < end:
            k = min(end - pos, 200)
            if k <= 60:
                out.append((k - 1) << 2)
            else:
                out.extend((60 << 2, k - 1))
            out.extend(data[pos:pos + k])
            pos += k

    seen: dict[bytes, int] = {}
    i = 0
    while i + 4 <= len(data):
        j = seen.get(data[i:i + 4])
        seen[data[i:i + 4]] = i
        if j is not None and i - j < 65536:
            n = 4
            while i + n < len(data) and n < 64 and data[j + n] == data[i + n]:
                n += 1
            literal(i)
            out.append(((n - 1) << 2) | 2)
            out += struct.pack("<H", i - j)
            i += n
            lit = i
        else:
            i += 1
    literal(len(data))
    return bytes(out)


def _block(pairs, restart_interval=4) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (k, v) in enumerate(pairs):
        shared = 0
        if i % restart_interval:
            while shared < min(len(k), len(prev)) and k[shared] == prev[shared]:
                shared += 1
        else:
            restarts.append(len(out))
        out += _varint(shared) + _varint(len(k) - shared) + _varint(len(v)) + k[shared:] + v
        prev = k
    restarts = restarts or [0]
    for r in restarts:
        out += struct.pack("<I", r)
    return bytes(out + struct.pack("<I", len(restarts)))


def _put_block(out: bytearray, contents: bytes, ctype: int) -> bytes:
    if ctype == 1:
        contents = _snappy_compress(contents)
    off = len(out)
    out += contents + bytes([ctype])
    out += struct.pack("<I", mask_crc(crc32c(contents + bytes([ctype]))))
    return _varint(off) + _varint(len(contents))


def build_table(pairs, per_block=3, ctype=0) -> bytes:
    out = bytearray()
    index = []
    for i in range(0, len(pairs), per_block):
        chunk = pairs[i:i + per_block]
        index.append((chunk[-1][0], _put_block(out, _block(chunk), ctype)))
    meta = _put_block(out, _block([]), 0)
    handles = meta + _put_block(out, _block(index), ctype)
    return bytes(out + handles + bytes(40 - len(handles)) + struct.pack("<Q", TABLE_MAGIC))


def _tensor_bytes(value: np.ndarray, big_endian: bool) -> tuple[bytes, int]:
    """(stored bytes, unmasked crc) as TensorFlow's BundleWriter writes them."""
    order = ">" if big_endian else "<"
    if value.dtype == object:
        items = [bytes(x) for x in value.reshape(-1)]
        lengths = b"".join(_varint(len(x)) for x in items)
        crc = crc32c(b"".join(struct.pack(order + "I", len(x)) for x in items))
        len_crc = struct.pack(order + "I", mask_crc(crc))
        crc = crc32c(len_crc, crc)
        body = b"".join(items)
        return lengths + len_crc + body, crc32c(body, crc)
    raw = value.astype(value.dtype.newbyteorder(order)).tobytes()
    return raw, crc32c(raw)


def write_bundle(prefix, tensors: dict, num_shards=1, big_endian=False, ctype=0, per_block=3,
                 extra_entries=()) -> None:
    """Write `tensors` ({name: array}) as a tensor bundle; extra_entries are (key, value) pairs."""
    shards = [bytearray() for _ in range(num_shards)]
    pairs = [(b"", encode_header(num_shards, big_endian))]
    for i, (name, value) in enumerate(sorted(tensors.items())):
        value = np.asarray(value)
        shard = i % num_shards
        raw, crc = _tensor_bytes(value, big_endian)
        dtype = DT_STRING if value.dtype == object else DT[value.dtype]
        pairs.append((name.encode(), encode_entry(dtype, value.shape, shard, len(shards[shard]),
                                                  len(raw), mask_crc(crc))))
        shards[shard] += raw
    pairs = sorted(pairs + list(extra_entries))
    with open(f"{prefix}.index", "wb") as f:
        f.write(build_table(pairs, per_block, ctype))
    for i, data in enumerate(shards):
        with open(f"{prefix}.data-{i:05d}-of-{num_shards:05d}", "wb") as f:
            f.write(data)


def rewrite_index(prefix, edit) -> None:
    """Replace the index of `prefix` by one whose (key, value) list is edit(list)."""
    from facenet_tf2pt.converter.leveldb_table import read_table
    with open(f"{prefix}.index", "rb") as f:
        pairs = read_table(f.read())
    with open(f"{prefix}.index", "wb") as f:
        f.write(build_table(sorted(edit(list(pairs)))))


def replace_entry(prefix, name: str, **changes) -> None:
    """Re-encode the entry of `name` with some fields changed."""
    info = BundleReader(prefix).variables[name]
    fields = dict(dtype=info.dtype_enum, shape=info.shape, shard=info.shard_id,
                  offset=info.offset, size=info.size, crc=info.masked_crc, slices=info.sliced)
    changes = dict(changes)
    raw = changes.pop("raw", None)
    fields.update(changes)
    value = raw if raw is not None else encode_entry(**fields)
    rewrite_index(prefix, lambda pairs: [(k, value if k == name.encode() else v)
                                         for k, v in pairs])


# ---------------------------------------------------------------------------------------------
# Reference checkpoints written by TensorFlow.
# ---------------------------------------------------------------------------------------------

BLOCK = "InceptionResnetV1/Repeat/block35_1/Branch_0/Conv2d_1x1"


def _tf():
    tf = pytest.importorskip("tensorflow", reason="TensorFlow (the tf and test extras) is the reference here")
    return tf


@pytest.fixture(scope="session")
def tf_ckpts(tmp_path_factory):
    """{'main', 'sharded', 'partitioned', 'object'}: checkpoint prefixes written by TensorFlow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = _tf()
    d = tmp_path_factory.mktemp("tf_ckpts")
    rng = np.random.default_rng(0)
    out = {}
    g = tf.Graph()
    with g.as_default():
        def var(name, value, dtype=None):
            return tf.compat.v1.Variable(value, name=name, dtype=dtype)

        main = [
            var(f"{BLOCK}/weights", rng.standard_normal((1, 1, 256, 32)).astype(np.float32)),
            var(f"{BLOCK}/BatchNorm/moving_mean", rng.standard_normal(32).astype(np.float32)),
            var("InceptionResnetV1/Conv2d_1a_3x3/weights",
                rng.standard_normal((3, 3, 3, 32)).astype(np.float32)),
            var("InceptionResnetV1/Bottleneck/weights",
                rng.standard_normal((1792, 128)).astype(np.float32)),
            var("InceptionResnetV1/Block8/Conv2d_1x1/weights",
                rng.standard_normal((1, 1, 384, 1792)).astype(np.float32)),
            var("scalar_f32", np.float32(-2.5)),
            var("empty_f32", np.zeros((0, 3), np.float32)),
            var("f64", rng.standard_normal((5, 7))),
            var("f16", rng.standard_normal(6).astype(np.float16)),
            var("bf16", tf.constant(rng.standard_normal(5), dtype=tf.bfloat16)),
            var("i8", np.array([-128, 0, 127], np.int8)),
            var("i16", np.array([-32768, 7], np.int16)),
            var("i32", np.arange(-3, 9, dtype=np.int32).reshape(3, 4)),
            var("u8", np.array([0, 1, 255], np.uint8)),
            var("u16", np.array([1, 65535], np.uint16)),
            var("c64", np.array([1 + 2j, -3.5j], np.complex64)),
            var("flags", np.array([[True, False, True], [False, False, True]])),
            var("names", np.array([b"a", b"", b"\x00\xff\xfe binary", b"q" * 300],
                                  dtype=object), dtype=tf.string),
            var("scalar_str", b"hello", dtype=tf.string),
        ]
        step = tf.compat.v1.train.get_or_create_global_step()
        with tf.device("/cpu:0"):
            s0 = var("dev0/weights", rng.standard_normal((4, 5)).astype(np.float32))
            s1 = var("dev0/step", np.int64(3))
        with tf.device("/cpu:1"):
            s2 = var("dev1/weights", rng.standard_normal((2, 3, 4)).astype(np.float32))
            s3 = var("dev1/label", b"shard one", dtype=tf.string)
        part = tf.compat.v1.get_variable(
            "partitioned", shape=[10, 4], initializer=tf.compat.v1.ones_initializer(),
            partitioner=tf.compat.v1.fixed_size_partitioner(2))
        init = tf.compat.v1.global_variables_initializer()
        savers = {
            "main": tf.compat.v1.train.Saver(main + [step]),
            "sharded": tf.compat.v1.train.Saver([s0, s1, s2, s3], sharded=True),
            "partitioned": tf.compat.v1.train.Saver({"partitioned": part, "plain": s0}),
        }
        config = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
        with tf.compat.v1.Session(graph=g, config=config) as sess:
            sess.run(init)
            sess.run(step.assign(123456789012))
            for key, saver in savers.items():
                (d / key).mkdir()
                out[key] = saver.save(sess, str(d / key / "model.ckpt"), write_meta_graph=False)
    ckpt = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0]), step=tf.Variable(7, dtype=tf.int64))
    out["object"] = ckpt.write(str(d / "object" / "ckpt"))
    return out


def _tf_tensors(prefix) -> dict:
    tf = _tf()
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)}


def assert_same(ours: np.ndarray, theirs, name: str) -> None:
    assert isinstance(ours, np.ndarray), name
    if ours.dtype == object:
        ref = np.array(theirs, dtype=object)  # TF gives `bytes` for a string scalar
        assert ours.shape == ref.shape, name
        assert all(type(x) is bytes for x in ours.reshape(-1)), name
        assert ours.tolist() == ref.tolist(), name
    else:
        ref = np.asarray(theirs)
        assert (ours.dtype, ours.shape) == (ref.dtype, ref.shape), name
        assert ours.tobytes() == ref.tobytes(), name


def assert_matches_tf(prefix) -> dict:
    tf = _tf()
    ours = read_checkpoint(prefix)
    theirs = _tf_tensors(prefix)
    assert list(ours) == list(theirs)
    for name, value in ours.items():
        assert_same(value, theirs[name], name)
    listed = list_variables(prefix)
    assert [(n, list(s)) for n, (_, s) in listed.items()] == tf.train.list_variables(prefix)
    dtypes = tf.train.load_checkpoint(prefix).get_variable_to_dtype_map()
    for name, (dtype, _) in listed.items():
        assert dtype == np.dtype(dtypes[name].as_numpy_dtype), name
    return ours


@pytest.fixture(scope="session")
def main_ckpt(tf_ckpts):
    """TensorFlow's main checkpoint: the corruption and property tests start from a file that
    TensorFlow wrote (our crafted writer shares the crc code under test, so it cannot be the base)."""
    return tf_ckpts["main"]


@pytest.fixture
def ckpt_copy(main_ckpt, tmp_path):
    """A private copy of the main checkpoint, to corrupt."""
    src = main_ckpt
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(src + suffix, tmp_path / ("model.ckpt" + suffix))
    return str(tmp_path / "model.ckpt")


def raises_conversion(fn, *args, match: str | None = None, **kwargs) -> str:
    with pytest.raises(ConversionError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "internal decoding error" not in msg
    if match is not None:
        assert match in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------
# Byte equality with TensorFlow.
# ---------------------------------------------------------------------------------------------

def test_main_checkpoint_matches_tensorflow(tf_ckpts):
    ours = assert_matches_tf(tf_ckpts["main"])
    assert ours["global_step"].shape == () and ours["global_step"] == 123456789012
    assert ours["scalar_str"].shape == () and ours["scalar_str"][()] == b"hello"
    assert ours["names"].tolist() == [b"a", b"", b"\x00\xff\xfe binary", b"q" * 300]
    assert ours["empty_f32"].shape == (0, 3)
    for value in ours.values():  # usable as-is by torch.from_numpy
        assert value.flags.writeable and value.flags.aligned and value.flags.c_contiguous


def test_two_shard_checkpoint_matches_tensorflow(tf_ckpts):
    prefix = tf_ckpts["sharded"]
    assert os.path.exists(prefix + ".data-00000-of-00002")
    assert os.path.exists(prefix + ".data-00001-of-00002")
    reader = BundleReader(prefix)
    assert {info.shard_id for info in reader.variables.values()} == {0, 1}
    assert_matches_tf(prefix)


def test_object_checkpoint_matches_tensorflow(tf_ckpts):
    ours = assert_matches_tf(tf_ckpts["object"])
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in ours


def test_partitioned_variable_is_listed_but_not_read(tf_ckpts):
    tf = _tf()
    prefix = tf_ckpts["partitioned"]
    listed = list_variables(prefix)
    assert [(n, list(s)) for n, (_, s) in listed.items()] == tf.train.list_variables(prefix)
    raises_conversion(read_checkpoint, prefix, match="not supported")
    msg = raises_conversion(read_checkpoint, prefix, ["partitioned"], match="not supported")
    assert "'partitioned'" in msg
    assert_same(read_checkpoint(prefix, ["plain"])["plain"], _tf_tensors(prefix)["plain"], "plain")


def test_read_selected_names_and_prefix_forms(main_ckpt):
    prefix = main_ckpt
    names = ["i32", f"{BLOCK}/weights", "global_step"]
    ours = read_checkpoint(prefix, names)
    assert list(ours) == names
    assert list(read_checkpoint(prefix + ".index", ["i32"])) == ["i32"]
    from pathlib import Path
    assert list(read_checkpoint(Path(prefix), "i32")) == ["i32"]
    raises_conversion(read_checkpoint, prefix, ["nope"], match="'nope' not in checkpoint")


# ---------------------------------------------------------------------------------------------
# Crafted bundles: our writer, TF as a cross-check where it reads them.
# ---------------------------------------------------------------------------------------------

CRAFTED = {
    "a/weights": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    "b/i64": np.array([-1, 2**40], np.int64),
    "c/f64": np.float64(1.5),
    "d/str": np.array([[b"x", b"yy"], [b"", b"z" * 70]], dtype=object),
    "e/c64": np.array([1 - 1j], np.complex64),
    "f/u16": np.array([1, 258], np.uint16),
    "g/flags": np.array([True, False]),
    "h/repeat": np.tile(np.arange(7, dtype=np.int16), 50),
}


@pytest.mark.parametrize("variant", ["plain", "big_endian", "snappy", "three_shards"])
def test_crafted_bundles(tmp_path, variant):
    prefix = str(tmp_path / "crafted")
    write_bundle(prefix, CRAFTED, num_shards=3 if variant == "three_shards" else 1,
                 big_endian=variant == "big_endian", ctype=1 if variant == "snappy" else 0,
                 per_block=2)
    ours = read_checkpoint(prefix)
    assert list(ours) == sorted(CRAFTED)
    for name, value in CRAFTED.items():
        value = np.asarray(value)
        assert ours[name].dtype == value.dtype and ours[name].shape == value.shape
        if value.dtype == object:
            assert ours[name].tolist() == value.tolist()
        else:
            assert ours[name].tobytes() == value.tobytes()


@pytest.mark.parametrize("variant", ["plain", "big_endian", "snappy", "three_shards"])
def test_tensorflow_reads_crafted_bundles_the_same_way(tmp_path, variant):
    """The crafted writer is ours: TensorFlow reading its files confirms they are real bundles."""
    _tf()
    prefix = str(tmp_path / "crafted")
    write_bundle(prefix, CRAFTED, num_shards=3 if variant == "three_shards" else 1,
                 big_endian=variant == "big_endian", ctype=1 if variant == "snappy" else 0,
                 per_block=2)
    ours = read_checkpoint(prefix)
    theirs = _tf_tensors(prefix)
    assert sorted(ours) == sorted(theirs)
    for name, value in ours.items():
        assert_same(value, theirs[name], name)


def test_snappy_decompress_all_element_kinds():
    # literal "abcd", copy-1 (len 8, offset 4), copy-4 (len 8, offset 4), overlapping copy-2
    stream = (_varint(4 + 8 + 8 + 20) + b"\x0cabcd" + b"\x11\x04"
              + bytes([(7 << 2) | 3]) + b"\x04\x00\x00\x00"
              + bytes([(19 << 2) | 2]) + b"\x01\x00")
    assert snappy_decompress(stream) == b"abcd" * 5 + b"d" * 20
    for data in (b"", b"x", os.urandom(5000), b"ab" * 3000, bytes(range(256)) * 40):
        assert snappy_decompress(_snappy_compress(data)) == data
    for bad in (b"", b"\x05\x00a", b"\x04\x0cabcd\x01", b"\x08\x0cabcd\x11\x09",
                b"\x08\x0cabcd\x11\x00", b"\x03\x0cabcd", b"\x80\x80\x80\x80\x80\x01",
                b"\x05\x10abcd"):
        with pytest.raises(TableFormatError):
            snappy_decompress(bad)


def test_unknown_compression_type(tmp_path):
    prefix = str(tmp_path / "c")
    write_bundle(prefix, {"x": np.ones(3, np.float32)}, ctype=2)
    raises_conversion(read_checkpoint, prefix, match="unsupported block compression type 2")


# ---------------------------------------------------------------------------------------------
# Corrupt and missing files.
# ---------------------------------------------------------------------------------------------

def test_missing_index(tmp_path):
    msg = raises_conversion(read_checkpoint, str(tmp_path / "nothing"), match="not found")
    assert "nothing.index" in msg
    raises_conversion(list_variables, str(tmp_path), match=".index")


@pytest.mark.parametrize("length", [0, 1, 47, 48, 100, -1, -48, -49, "half"])
def test_truncated_index(ckpt_copy, length):
    path = ckpt_copy + ".index"
    data = open(path, "rb").read()
    cut = len(data) // 2 if length == "half" else (length if length >= 0 else len(data) + length)
    with open(path, "wb") as f:
        f.write(data[:cut])
    raises_conversion(list_variables, ckpt_copy, match="model.ckpt.index")
    raises_conversion(read_checkpoint, ckpt_copy, match="model.ckpt.index")


@pytest.mark.parametrize("size", [10, 48, 4096])
def test_random_bytes_index(ckpt_copy, size):
    rng = np.random.default_rng(size)
    with open(ckpt_copy + ".index", "wb") as f:
        f.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    raises_conversion(read_checkpoint, ckpt_copy, match="model.ckpt.index")


def test_random_bytes_with_valid_magic(ckpt_copy):
    rng = np.random.default_rng(1)
    with open(ckpt_copy + ".index", "wb") as f:
        f.write(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
                + struct.pack("<Q", TABLE_MAGIC))
    raises_conversion(read_checkpoint, ckpt_copy, match="model.ckpt.index")


def test_bad_magic(ckpt_copy):
    path = ckpt_copy + ".index"
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0x01
    open(path, "wb").write(data)
    raises_conversion(read_checkpoint, ckpt_copy, match="bad table magic")


def test_block_checksum_mismatch(ckpt_copy):
    path = ckpt_copy + ".index"
    data = bytearray(open(path, "rb").read())
    data[3] ^= 0x40  # inside the first data block
    open(path, "wb").write(data)
    raises_conversion(read_checkpoint, ckpt_copy, match="checksum mismatch")


def test_empty_files(ckpt_copy):
    open(ckpt_copy + ".data-00000-of-00001", "wb").close()
    raises_conversion(read_checkpoint, ckpt_copy, match="beyond the end")
    assert list_variables(ckpt_copy)  # the index alone is fine
    open(ckpt_copy + ".index", "wb").close()
    raises_conversion(read_checkpoint, ckpt_copy, match="shorter than the 48-byte")


def test_truncated_shard(ckpt_copy):
    path = ckpt_copy + ".data-00000-of-00001"
    reader = BundleReader(ckpt_copy)
    last = max(reader.variables.values(), key=lambda i: i.offset + i.size)
    os.truncate(path, last.offset + last.size - 1)
    msg = raises_conversion(read_checkpoint, ckpt_copy, match="data-00000-of-00001")
    assert repr(last.name) in msg and "beyond the end" in msg
    others = [n for n in reader.variables if n != last.name]
    assert set(read_checkpoint(ckpt_copy, others)) == set(others)


def test_missing_shard(ckpt_copy):
    os.remove(ckpt_copy + ".data-00000-of-00001")
    assert list_variables(ckpt_copy)
    raises_conversion(read_checkpoint, ckpt_copy, match="model.ckpt.data-00000-of-00001")


@pytest.mark.parametrize("name", [f"{BLOCK}/weights", "names", "global_step", "scalar_str"])
def test_flipped_tensor_byte_is_a_crc_error(ckpt_copy, name):
    info = BundleReader(ckpt_copy).variables[name]
    path = ckpt_copy + ".data-00000-of-00001"
    data = bytearray(open(path, "rb").read())
    data[info.offset + info.size - 1] ^= 0x10
    open(path, "wb").write(data)
    msg = raises_conversion(read_checkpoint, ckpt_copy, match=repr(name))
    assert "mismatch" in msg and "data-00000-of-00001" in msg
    others = [n for n in BundleReader(ckpt_copy).variables if n != name]
    assert set(read_checkpoint(ckpt_copy, others)) == set(others)


@pytest.mark.parametrize("changes, match", [
    (dict(offset=10**9), "beyond the end"),
    (dict(size=2**62), "does not match shape"),
    (dict(offset=2**63 - 8), "overflows"),
    (dict(shape=(2**40, 2**40)), "does not match shape"),
    (dict(dtype=99), "unknown dtype"),
    (dict(dtype=21), "variant"),
    (dict(shard=5), "shard id 5 out of range"),
    (dict(crc=12345), "crc32c mismatch"),
    (dict(slices=True), "not supported"),
    (dict(raw=b"\x08" + b"\xff" * 11), "varint"),
    (dict(raw=b"\x22\x05ab"), "runs past the end"),
    (dict(raw=b"\x0b"), "wire type 3"),
])
def test_bad_entries(ckpt_copy, changes, match):
    name = f"{BLOCK}/BatchNorm/moving_mean"
    replace_entry(ckpt_copy, name, **changes)
    if "raw" in changes or changes.get("dtype") in (99, 21):
        msg = raises_conversion(list_variables, ckpt_copy, match=match)
    else:
        msg = raises_conversion(read_checkpoint, ckpt_copy, match=match)
    assert repr(name) in msg and "model.ckpt" in msg


def test_string_entry_bounds(tmp_path):
    prefix = str(tmp_path / "s")
    write_bundle(prefix, {"s": np.array([b"ab", b"c"], dtype=object)})
    replace_entry(prefix, "s", shape=(2**40,))
    raises_conversion(read_checkpoint, prefix, match="too small")
    write_bundle(prefix, {"s": np.array([b"ab", b"c"], dtype=object)})
    info = BundleReader(prefix).variables["s"]
    replace_entry(prefix, "s", size=info.size - 1)
    raises_conversion(read_checkpoint, prefix, match="run past the stored size")
    write_bundle(prefix, {"s": np.array([b"ab", b"c"], dtype=object)})
    with open(prefix + ".data-00000-of-00001", "r+b") as f:
        f.write(b"\x05")  # first length: 2 -> 5
    raises_conversion(read_checkpoint, prefix, match="length checksum mismatch")


def test_header_problems(tmp_path):
    prefix = str(tmp_path / "h")
    write_bundle(prefix, {"x": np.ones(2, np.float32)})
    rewrite_index(prefix, lambda pairs: pairs[1:])
    raises_conversion(list_variables, prefix, match="no header entry")
    write_bundle(prefix, {"x": np.ones(2, np.float32)})
    rewrite_index(prefix, lambda pairs: [(b"", encode_header(1, min_consumer=7))] + pairs[1:])
    raises_conversion(list_variables, prefix, match="newer reader")
    write_bundle(prefix, {"x": np.ones(2, np.float32)})
    rewrite_index(prefix, lambda pairs: pairs + [(b"\xff\xfe", b"")])
    raises_conversion(list_variables, prefix, match="not valid UTF-8")


# ---------------------------------------------------------------------------------------------
# Property tests: a mutated index gives results or ConversionError, nothing else.
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def fuzz_base(main_ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    src = main_ckpt
    shutil.copy(src + ".data-00000-of-00001", d / "m.data-00000-of-00001")
    index = open(src + ".index", "rb").read()
    return str(d / "m"), index, table_block_handles(index)


def _read_or_error(prefix: str, index: bytes) -> None:
    with open(prefix + ".index", "wb") as f:
        f.write(index)
    try:
        listed = list_variables(prefix)
        read = read_checkpoint(prefix)
        assert list(listed) == list(read)
    except ConversionError as e:
        msg = str(e)
        assert "internal decoding error" not in msg, msg
        assert os.path.basename(prefix) + ".index" in msg or ".data-" in msg, msg


FUZZ = settings(max_examples=70, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.data())
def test_fuzz_mutated_index(fuzz_base, data):
    prefix, index, _ = fuzz_base
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(index) - 1), st.integers(0, 255)),
                               min_size=1, max_size=6))
    mutated = bytearray(index)
    for pos, byte in edits:
        mutated[pos] = byte
    _read_or_error(prefix, bytes(mutated))


@FUZZ
@given(st.data())
def test_fuzz_truncated_index(fuzz_base, data):
    prefix, index, _ = fuzz_base
    _read_or_error(prefix, index[:data.draw(st.integers(0, len(index) - 1))])


@FUZZ
@given(st.data())
def test_fuzz_mutated_block_with_valid_crc(fuzz_base, data):
    """Mutate inside one block and fix its crc, so the block and entry decoding get exercised."""
    prefix, index, handles = fuzz_base
    _, off, size = data.draw(st.sampled_from(handles))
    edits = data.draw(st.lists(st.tuples(st.integers(off, off + size - 1), st.integers(0, 255)),
                               min_size=1, max_size=4))
    mutated = bytearray(index)
    for pos, byte in edits:
        mutated[pos] = byte
    crc = crc32c(bytes(mutated[off:off + size + 1]))
    mutated[off + size + 1:off + size + 5] = struct.pack("<I", mask_crc(crc))
    assert unmask_crc(mask_crc(crc)) == crc
    _read_or_error(prefix, bytes(mutated))


def test_index_footer_is_where_expected(fuzz_base):
    _, index, handles = fuzz_base
    assert struct.unpack("<Q", index[-8:])[0] == TABLE_MAGIC
    assert all(off + size + 5 <= len(index) - FOOTER_SIZE for _, off, size in handles)
