"""Read the LevelDB-format table that a TensorFlow V2 checkpoint uses as its `.index` file.

TensorFlow keeps its own copy of LevelDB's immutable table ("SSTable") format in
`tensorflow/core/lib/io/`: no filter blocks, an empty metaindex block, bytewise key order. Layout:

    [data block 0][trailer] ... [data block N][trailer] [metaindex block][trailer]
    [index block][trailer] [footer: 48 bytes]

- footer: BlockHandle(metaindex), BlockHandle(index), zero padding up to 40 bytes, then the
  fixed64 magic 0xdb4775248b80fb57 (little-endian). A BlockHandle is two varint64s (offset, size).
- trailer (5 bytes) after every block: one compression-type byte (0 = none, 1 = snappy) and the
  masked crc32c of the block contents followed by that type byte.
- block: entries, then `num_restarts` fixed32 restart offsets, then fixed32 `num_restarts`.
  Each entry is varint32 shared, varint32 non_shared, varint32 value_length, the non-shared key
  suffix, the value. Keys are prefix-compressed against the previous key (`shared` bytes).
- index block: one entry per data block, its value the data block's BlockHandle.

Every malformation raises `TableFormatError` (a plain message, no file name); the caller adds the
file name. Nothing here allocates more than a small multiple of the input's size.
"""
from __future__ import annotations

import struct

import crc32c as _crc32c

__all__ = [
    "TableFormatError",
    "FOOTER_SIZE",
    "BLOCK_TRAILER_SIZE",
    "TABLE_MAGIC",
    "mask_crc",
    "unmask_crc",
    "read_varint",
    "read_table",
    "table_block_handles",
    "snappy_decompress",
]

FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
TABLE_MAGIC = 0xDB4775248B80FB57
NO_COMPRESSION = 0
SNAPPY_COMPRESSION = 1

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1


class TableFormatError(Exception):
    """The bytes are not a well-formed table (or tensor-bundle record)."""


def mask_crc(crc: int) -> int:
    """LevelDB/TensorFlow crc masking: rotate right by 15 bits and add a constant."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask_crc(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


def crc32c(data, crc: int = 0) -> int:
    return _crc32c.crc32c(data, crc)


def read_varint(buf, pos: int, end: int, max_bytes: int = 10) -> tuple[int, int]:
    """Decode a base-128 varint from buf[pos:end]; return (value, new position).

    `max_bytes` is 5 for varint32 and 10 for varint64. A varint32 whose value does not fit in 32
    bits is rejected; a varint64's value is truncated to 64 bits, as protobuf does.
    """
    result = 0
    shift = 0
    for _ in range(max_bytes):
        if pos >= end:
            raise TableFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if max_bytes <= 5:
                if result > _U32:
                    raise TableFormatError("varint32 out of range")
                return result, pos
            return result & _U64, pos
        shift += 7
    raise TableFormatError(f"varint longer than {max_bytes} bytes")


def snappy_decompress(src: bytes) -> bytes:
    """Decompress a raw snappy block (not the framed format).

    Output grows only as elements are decoded (a copy element yields at most 64 bytes), so a
    corrupt declared length cannot make this allocate more than ~32x the input size.
    """
    end = len(src)
    expected, pos = read_varint(src, 0, end, 5)
    out = bytearray()
    while pos < end:
        tag = src[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                nbytes = length - 59
                if pos + nbytes > end:
                    raise TableFormatError("snappy: truncated literal length")
                length = int.from_bytes(src[pos:pos + nbytes], "little")
                pos += nbytes
            length += 1
            if length > end - pos:
                raise TableFormatError("snappy: literal runs past the end of the block")
            out += src[pos:pos + length]
            pos += length
        else:  # copy
            if kind == 1:
                if pos >= end:
                    raise TableFormatError("snappy: truncated copy")
                length = 4 + ((tag >> 2) & 7)
                offset = ((tag >> 5) << 8) | src[pos]
                pos += 1
            else:
                nbytes = 2 if kind == 2 else 4
                if pos + nbytes > end:
                    raise TableFormatError("snappy: truncated copy")
                length = 1 + (tag >> 2)
                offset = int.from_bytes(src[pos:pos + nbytes], "little")
                pos += nbytes
            if offset == 0 or offset > len(out):
                raise TableFormatError("snappy: copy offset out of range")
            start = len(out) - offset
            if offset >= length:
                out += out[start:start + length]
            else:  # overlapping copy: the pattern repeats
                pattern = bytes(out[start:])
                out += (pattern * (length // offset + 1))[:length]
        if len(out) > expected:
            raise TableFormatError("snappy: output longer than its declared length")
    if len(out) != expected:
        raise TableFormatError("snappy: output shorter than its declared length")
    return bytes(out)


def _decode_handle(buf, pos: int, end: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos, end, 10)
    size, pos = read_varint(buf, pos, end, 10)
    return offset, size, pos


def _read_footer(data: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    n = len(data)
    if n < FOOTER_SIZE:
        raise TableFormatError(
            f"file is {n} bytes, shorter than the {FOOTER_SIZE}-byte table footer "
            "(empty or truncated?)")
    base = n - FOOTER_SIZE
    (magic,) = struct.unpack_from("<Q", data, base + 40)
    if magic != TABLE_MAGIC:
        raise TableFormatError(
            f"bad table magic number 0x{magic:016x} (expected 0x{TABLE_MAGIC:016x}): "
            "not a TensorFlow V2 checkpoint index, or truncated")
    meta_off, meta_size, pos = _decode_handle(data, base, base + 40)
    index_off, index_size, _ = _decode_handle(data, pos, base + 40)
    return (meta_off, meta_size), (index_off, index_size)


def _read_block(data: bytes, offset: int, size: int, what: str, limit: int) -> bytes:
    """Return the (decompressed) contents of the block at `offset`, checking its crc."""
    if offset > limit or size > limit - offset or BLOCK_TRAILER_SIZE > limit - offset - size:
        raise TableFormatError(
            f"{what} (offset {offset}, size {size}) extends past the end of the table "
            f"({limit} bytes before the footer): truncated file?")
    end = offset + size
    ctype = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    actual = crc32c(memoryview(data)[offset:end + 1])
    if unmask_crc(stored) != actual:
        raise TableFormatError(f"{what} at offset {offset}: block checksum mismatch")
    contents = data[offset:end]
    if ctype == NO_COMPRESSION:
        return contents
    if ctype == SNAPPY_COMPRESSION:
        return snappy_decompress(contents)
    raise TableFormatError(
        f"{what} at offset {offset}: unsupported block compression type {ctype} "
        "(only 0 = none and 1 = snappy are known)")


def _parse_block(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    n = len(block)
    if n < 4:
        raise TableFormatError(f"{what}: {n} bytes, too short for a block")
    (num_restarts,) = struct.unpack_from("<I", block, n - 4)
    if num_restarts > (n - 4) // 4:
        raise TableFormatError(f"{what}: bad restart count {num_restarts}")
    limit = n - 4 - 4 * num_restarts
    if limit > 0 and num_restarts == 0:
        raise TableFormatError(f"{what}: entries but no restart points")
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = read_varint(block, pos, limit, 5)
        non_shared, pos = read_varint(block, pos, limit, 5)
        value_len, pos = read_varint(block, pos, limit, 5)
        if shared > len(key):
            raise TableFormatError(f"{what}: entry shares {shared} bytes of a {len(key)}-byte key")
        if non_shared > limit - pos or value_len > limit - pos - non_shared:
            raise TableFormatError(f"{what}: entry runs past the end of the block")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def table_block_handles(data: bytes) -> list[tuple[str, int, int]]:
    """(kind, offset, size) of the index block and every data block, for tools and tests."""
    _, (index_off, index_size) = _read_footer(data)
    limit = len(data) - FOOTER_SIZE
    handles = [("index", index_off, index_size)]
    for _, value in _parse_block(_read_block(data, index_off, index_size, "index block", limit),
                                 "index block"):
        off, size, _ = _decode_handle(value, 0, len(value))
        handles.append(("data", off, size))
    return handles


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of the table in `data`, in key order.

    Checks the footer magic, every block's crc32c, the bounds of every handle, and that keys are
    strictly increasing, as TensorFlow's table builder writes them.
    """
    _, (index_off, index_size) = _read_footer(data)
    limit = len(data) - FOOTER_SIZE
    index = _parse_block(_read_block(data, index_off, index_size, "index block", limit),
                         "index block")
    out: list[tuple[bytes, bytes]] = []
    last_key: bytes | None = None
    for i, (_, value) in enumerate(index):
        off, size, _ = _decode_handle(value, 0, len(value))
        what = f"data block {i}"
        for key, val in _parse_block(_read_block(data, off, size, what, limit), what):
            if last_key is not None and key <= last_key:
                raise TableFormatError(f"{what}: keys out of order ({key!r} after {last_key!r})")
            last_key = key
            out.append((key, val))
    return out
