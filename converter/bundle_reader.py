"""Read TensorFlow V2 checkpoints (the "tensor bundle") without TensorFlow.

A checkpoint `<prefix>` is `<prefix>.index`, a LevelDB-format table (see `leveldb_table`), plus
data shards `<prefix>.data-%05d-of-%05d`. Table keys are variable names; the value of the empty
key is a `BundleHeaderProto`, every other value a `BundleEntryProto`:

    BundleHeaderProto { int32 num_shards = 1; Endianness endianness = 2 (LITTLE=0, BIG=1);
                        VersionDef version = 3 { producer = 1; min_consumer = 2;
                                                 repeated bad_consumers = 3 } }
    BundleEntryProto  { DataType dtype = 1; TensorShapeProto shape = 2; int32 shard_id = 3;
                        int64 offset = 4; int64 size = 5; fixed32 crc32c = 6;
                        repeated TensorSliceProto slices = 7 }
    TensorShapeProto  { repeated Dim dim = 2 { int64 size = 1; string name = 2 };
                        bool unknown_rank = 3 }

A tensor's bytes are shard[offset:offset+size], raw in the header's byte order, and `crc32c` is
the masked crc32c of those bytes. A string tensor is stored as one varint64 length per element,
a 4-byte masked crc32c of the lengths (each fed to the crc as a uint32, or as a uint64 when it does
not fit), then the bytes of every element; its entry crc covers the lengths (as fed before), the
4 stored checksum bytes, and the element bytes. Keys starting with a NUL byte hold the slices of
partitioned variables, which this reader does not support.

The protobuf fields are decoded by hand (no protobuf dependency). Every malformed input raises
`ConversionError` naming the file, and the variable when known; sizes read from the file are
checked against the file's length before anything is allocated.
"""
from __future__ import annotations

import os
import stat
import struct
import sys
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .errors import ConversionError
from ..models.common.paths import PathError, open_regular
from .leveldb_table import TableFormatError, crc32c, read_table, read_varint, unmask_crc

__all__ = ["list_variables", "read_checkpoint", "BundleReader", "VariableInfo"]

# DataType enum (tensorflow/core/framework/types.proto) -> numpy dtype, for the stored bytes.
_NUMERIC = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 8: "complex64",
    9: "int64", 10: "bool", 17: "uint16", 18: "complex128", 19: "float16", 22: "uint32",
    23: "uint64",
}
DT_STRING = 7
DT_BFLOAT16 = 14
_UNSUPPORTED = {
    11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16", 16: "quint16", 20: "resource",
    21: "variant", 24: "float8_e5m2", 25: "float8_e4m3fn", 29: "int4", 30: "uint4",
}
_MAX_DIMS = 254  # TensorShape::MaxDimensions()
_BUNDLE_VERSION = 1  # kTensorBundleVersion: the consumer version this reader implements
_NATIVE_LITTLE = sys.byteorder == "little"
_INT64_MAX = (1 << 63) - 1


class _Malformed(Exception):
    """Internal: a decoding failure; turned into ConversionError with the file (and variable)."""


def _dtype_of(enum: int) -> np.dtype:
    """numpy dtype for a DataType enum value; object for strings."""
    if enum in _NUMERIC:
        return np.dtype(_NUMERIC[enum])
    if enum == DT_STRING:
        return np.dtype(object)
    if enum == DT_BFLOAT16:
        try:
            import ml_dtypes  # shipped with TensorFlow and JAX; optional here
        except ImportError:
            raise _Malformed("dtype bfloat16 needs the ml_dtypes package to be represented "
                             "in numpy (pip install ml_dtypes)") from None
        return np.dtype(ml_dtypes.bfloat16)
    name = _UNSUPPORTED.get(enum)
    if name is not None:
        raise _Malformed(f"dtype {name} (DataType {enum}) is not supported")
    raise _Malformed(f"unknown dtype (DataType enum value {enum})")


# --- protobuf wire format ------------------------------------------------------------------------

def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) for each field of a serialized message."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = read_varint(buf, pos, end, 10)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise _Malformed("protobuf field number 0")
        if wire == 0:
            value, pos = read_varint(buf, pos, end, 10)
        elif wire == 1:
            if end - pos < 8:
                raise _Malformed("truncated protobuf fixed64")
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = read_varint(buf, pos, end, 10)
            if n > end - pos:
                raise _Malformed("protobuf length-delimited field runs past the end")
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            if end - pos < 4:
                raise _Malformed("truncated protobuf fixed32")
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise _Malformed(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _expect(wire: int, want: int, what: str) -> None:
    if wire != want:
        raise _Malformed(f"protobuf field {what} has wire type {wire}, expected {want}")


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims: list[int] = []
    for field, wire, value in _fields(buf):
        if field == 2:
            _expect(wire, 2, "shape.dim")
            size = 0
            for f2, w2, v2 in _fields(value):
                if f2 == 1:
                    _expect(w2, 0, "shape.dim.size")
                    size = _int64(v2)
            if size < 0:
                raise _Malformed(f"invalid dimension size {size}")
            dims.append(size)
            if len(dims) > _MAX_DIMS:
                raise _Malformed(f"shape has more than {_MAX_DIMS} dimensions")
        elif field == 3:
            _expect(wire, 0, "shape.unknown_rank")
            if value:
                raise _Malformed("shape of unknown rank")
    return tuple(dims)


@dataclass(frozen=True)
class _Header:
    num_shards: int
    big_endian: bool


def _parse_header(buf: bytes) -> _Header:
    num_shards, endianness = 0, 0
    for field, wire, value in _fields(buf):
        if field == 1:
            _expect(wire, 0, "header.num_shards")
            num_shards = _int32(value)
        elif field == 2:
            _expect(wire, 0, "header.endianness")
            endianness = _int32(value)
        elif field == 3:
            _expect(wire, 2, "header.version")
            producer, min_consumer, bad = 0, 0, []
            for f2, w2, v2 in _fields(value):
                if f2 == 1 and w2 == 0:
                    producer = _int32(v2)
                elif f2 == 2 and w2 == 0:
                    min_consumer = _int32(v2)
                elif f2 == 3 and w2 == 0:
                    bad.append(_int32(v2))
                elif f2 == 3 and w2 == 2:  # packed
                    pos = 0
                    while pos < len(v2):
                        b, pos = read_varint(v2, pos, len(v2), 10)
                        bad.append(_int32(b))
            if producer < 0:
                raise _Malformed(f"checkpoint format producer version {producer} is invalid")
            if min_consumer > _BUNDLE_VERSION or _BUNDLE_VERSION in bad:
                raise _Malformed(
                    f"checkpoint format version needs a newer reader (min_consumer "
                    f"{min_consumer}, bad_consumers {bad}; this reader is version "
                    f"{_BUNDLE_VERSION})")
    if num_shards < 0:
        raise _Malformed(f"invalid num_shards {num_shards}")
    if endianness not in (0, 1):
        raise _Malformed(f"invalid endianness {endianness}")
    return _Header(num_shards, endianness == 1)


@dataclass(frozen=True)
class VariableInfo:
    """One entry of the index: where a variable's bytes are and how to read them."""
    name: str
    dtype_enum: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    masked_crc: int
    sliced: bool

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _parse_entry(name: str, buf: bytes) -> VariableInfo:
    dtype = shard = offset = size = crc = 0
    shape: tuple[int, ...] = ()
    sliced = False
    for field, wire, value in _fields(buf):
        if field == 1:
            _expect(wire, 0, "entry.dtype")
            dtype = _int32(value)
        elif field == 2:
            _expect(wire, 2, "entry.shape")
            shape = _parse_shape(value)
        elif field == 3:
            _expect(wire, 0, "entry.shard_id")
            shard = _int32(value)
        elif field == 4:
            _expect(wire, 0, "entry.offset")
            offset = _int64(value)
        elif field == 5:
            _expect(wire, 0, "entry.size")
            size = _int64(value)
        elif field == 6:
            _expect(wire, 5, "entry.crc32c")
            (crc,) = struct.unpack("<I", value)
        elif field == 7:
            _expect(wire, 2, "entry.slices")
            sliced = True
    if shard < 0 or offset < 0 or size < 0:
        raise _Malformed(f"negative shard id, offset or size ({shard}, {offset}, {size})")
    return VariableInfo(name, dtype, shape, shard, offset, size, crc, sliced)


# --- tensor decoding -----------------------------------------------------------------------------

def _decode_strings(buf: np.ndarray, info: VariableInfo,
                    big_endian: bool) -> tuple[np.ndarray, int]:
    """Decode a string tensor's stored bytes; return (object array of bytes, crc32c)."""
    n = info.num_elements
    data = buf.tobytes()
    size = len(data)
    if size == 0:
        if n:
            raise _Malformed(f"stored size 0 for {n} strings")
        return np.empty(info.shape, dtype=object), 0
    if size < n + 4:  # at least one varint byte per element, plus the 4-byte length checksum
        raise _Malformed(f"stored size {size} too small for {n} strings")
    order = ">" if big_endian else "<"
    lengths: list[int] = []
    packed = bytearray()
    pos = 0
    for _ in range(n):
        length, pos = read_varint(data, pos, size, 10)
        lengths.append(length)
        packed += struct.pack(order + ("I" if length <= 0xFFFFFFFF else "Q"), length)
    if size - pos < 4:
        raise _Malformed("string lengths run into the length checksum")
    crc = crc32c(packed)
    raw_len_crc = data[pos:pos + 4]
    (len_crc,) = struct.unpack(order + "I", raw_len_crc)
    if unmask_crc(len_crc) != crc:
        raise _Malformed("string length checksum mismatch (corrupt data)")
    crc = crc32c(raw_len_crc, crc)
    pos += 4
    total = sum(lengths)
    if total > size - pos:
        raise _Malformed(f"string bytes ({total}) run past the stored size ({size})")
    crc = crc32c(memoryview(data)[pos:pos + total], crc)
    out = np.empty(n, dtype=object)
    for i, length in enumerate(lengths):
        out[i] = data[pos:pos + length]
        pos += length
    return out.reshape(info.shape), crc


def _prefix_str(prefix) -> str:
    p = os.fspath(prefix)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if p.endswith(".index") and not os.path.exists(p + ".index") and os.path.isfile(p):
        p = p[: -len(".index")]
    return p


def _regular_file_size(f, path: str) -> int:
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise ConversionError(f"{path}: not a regular file")
    return st.st_size


class BundleReader:
    """The parsed index of one checkpoint. `variables` maps names to `VariableInfo`, in key order.

    Partitioned variables are listed (with their full shape) but cannot be read.
    """

    def __init__(self, prefix):
        self.prefix = _prefix_str(prefix)
        self.index_path = self.prefix + ".index"
        try:
            with open_regular(self.index_path, "checkpoint index") as f:
                _regular_file_size(f, self.index_path)
                data = f.read()
        except PathError as e:
            raise ConversionError(str(e)) from None
        except FileNotFoundError:
            raise ConversionError(
                f"{self.index_path}: checkpoint index not found (is {self.prefix!r} the "
                "checkpoint prefix, without .index / .data-*?)") from None
        except OSError as e:
            raise ConversionError(f"{self.index_path}: cannot read: {e}") from None
        name = None
        try:
            pairs = read_table(data)
            if not pairs or pairs[0][0] != b"":
                raise _Malformed("no header entry (the empty key) in the index")
            self.header = _parse_header(pairs[0][1])
            variables: dict[str, VariableInfo] = {}
            for key, value in pairs[1:]:
                if key[:1] == b"\x00":  # a slice of a partitioned variable
                    continue
                try:
                    name = key.decode("utf-8")
                except UnicodeDecodeError:
                    name = None
                    raise _Malformed(f"variable name {key!r} is not valid UTF-8") from None
                variables[name] = _parse_entry(name, value)
            self.variables = variables
        except (_Malformed, TableFormatError) as e:
            where = f" (variable {name!r})" if name is not None else ""
            raise ConversionError(f"{self.index_path}{where}: {e}") from None
        except (IndexError, ValueError, struct.error, OverflowError) as e:  # safety net
            raise ConversionError(
                f"{self.index_path}: internal decoding error ({type(e).__name__}: {e}); "
                "the file is probably corrupt") from None

    def shard_path(self, shard_id: int) -> str:
        return f"{self.prefix}.data-{shard_id:05d}-of-{self.header.num_shards:05d}"

    def dtype(self, name: str) -> np.dtype:
        try:
            return _dtype_of(self.variables[name].dtype_enum)
        except _Malformed as e:
            raise ConversionError(f"{self.index_path}: variable {name!r}: {e}") from None

    def list_variables(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        return {name: (self.dtype(name), info.shape) for name, info in self.variables.items()}

    def _check(self, info: VariableInfo) -> np.dtype:
        """Validate an entry against the header; return its numpy dtype."""
        if info.sliced:
            raise _Malformed("partitioned (sliced) variables are not supported by this reader; "
                             "read the checkpoint with TensorFlow instead")
        dtype = _dtype_of(info.dtype_enum)
        if info.shard_id >= self.header.num_shards:
            raise _Malformed(f"shard id {info.shard_id} out of range "
                             f"(the checkpoint has {self.header.num_shards} shards)")
        if info.dtype_enum != DT_STRING and info.size != info.num_elements * dtype.itemsize:
            raise _Malformed(f"stored size {info.size} does not match shape {list(info.shape)} "
                             f"of {dtype} ({info.num_elements * dtype.itemsize} bytes)")
        if info.offset > _INT64_MAX - info.size:
            raise _Malformed(f"offset {info.offset} + size {info.size} overflows")
        return dtype

    def read(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        if names is None:
            wanted = list(self.variables)
        else:
            if isinstance(names, str):
                names = [names]
            wanted = list(dict.fromkeys(names))
            for n in wanted:
                if n not in self.variables:
                    raise ConversionError(f"{self.index_path}: variable {n!r} not in checkpoint")
        plan: dict[int, list[tuple[VariableInfo, np.dtype]]] = {}
        for n in wanted:
            info = self.variables[n]
            try:
                dtype = self._check(info)
            except _Malformed as e:
                raise ConversionError(f"{self.index_path}: variable {n!r}: {e}") from None
            plan.setdefault(info.shard_id, []).append((info, dtype))
        result: dict[str, np.ndarray] = {}
        for shard_id in sorted(plan):
            self._read_shard(shard_id, sorted(plan[shard_id], key=lambda p: p[0].offset), result)
        return {n: result[n] for n in wanted}

    def _read_shard(self, shard_id: int, items, result: dict) -> None:
        path = self.shard_path(shard_id)
        try:
            f = open_regular(path, "data shard", buffering=0)
        except PathError as e:
            raise ConversionError(str(e)) from None
        except FileNotFoundError:
            raise ConversionError(f"{path}: data shard {shard_id} of {self.header.num_shards} "
                                  f"not found (needed by variable {items[0][0].name!r})") from None
        except OSError as e:
            raise ConversionError(f"{path}: cannot open data shard: {e}") from None
        with f:
            file_size = _regular_file_size(f, path)
            for info, dtype in items:
                try:
                    result[info.name] = self._read_tensor(f, file_size, info, dtype)
                except (_Malformed, TableFormatError) as e:
                    raise ConversionError(f"{path}: variable {info.name!r}: {e}") from None
                except OSError as e:
                    raise ConversionError(f"{path}: variable {info.name!r}: read failed: {e}") \
                        from None
                except (IndexError, ValueError, struct.error, OverflowError) as e:  # safety net
                    raise ConversionError(
                        f"{path}: variable {info.name!r}: internal decoding error "
                        f"({type(e).__name__}: {e}); the file is probably corrupt") from None

    def _read_tensor(self, f, file_size: int, info: VariableInfo, dtype: np.dtype) -> np.ndarray:
        if info.offset > file_size or info.size > file_size - info.offset:
            raise _Malformed(f"bytes [{info.offset}, {info.offset + info.size}) lie beyond the "
                             f"end of the {file_size}-byte shard (truncated file?)")
        buf = np.empty(info.size, dtype=np.uint8)
        view = memoryview(buf)
        f.seek(info.offset)
        got = 0
        while got < info.size:
            n = f.readinto(view[got:])
            if not n:
                raise _Malformed(f"unexpected end of file at byte {info.offset + got}")
            got += n
        big = self.header.big_endian
        if info.dtype_enum == DT_STRING:
            arr, crc = _decode_strings(buf, info, big)
        else:
            crc = crc32c(buf)
            arr = buf.view(dtype).reshape(info.shape)
            if big == _NATIVE_LITTLE and dtype.itemsize > 1:
                arr.byteswap(inplace=True)
        if crc != unmask_crc(info.masked_crc):
            raise _Malformed(f"crc32c mismatch: stored {unmask_crc(info.masked_crc):#010x}, "
                             f"computed {crc:#010x} (corrupt data)")
        return arr


def list_variables(prefix) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """{name: (numpy dtype, shape)} of every variable in the checkpoint `prefix`, in key order.

    Reads only the `.index` file. Strings are listed as dtype object.
    """
    return BundleReader(prefix).list_variables()


def read_checkpoint(prefix, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Read all variables (or the given `names`; one str is one name) of the checkpoint `prefix`
    as numpy arrays, keyed in key order (or in the order of `names`).

    Each tensor's crc32c is checked. Scalars come back as 0-d arrays, strings as object arrays of
    `bytes`. Raises ConversionError for any missing, malformed or unsupported input.
    """
    return BundleReader(prefix).read(names)
