"""Write the bytes of ``torch.save(dict_of_tensors)`` without importing torch.

The converter must not import torch (``import torch`` alone costs about 1 s of
its 1.5 s budget), and writing the format ourselves also makes the output
independent of whichever torch is installed.  ``torch_save_bytes`` reproduces,
byte for byte, what torch ``CHECKED_WITH_TORCH`` (2.13.0, the version it was checked against;
tests/test_torch_zip.py compares it with the installed torch's ``torch.save`` when that is this
release, and says why it skips otherwise) writes for ``torch.save(d, io.BytesIO())``
with default arguments, where ``d`` is a plain ``dict[str, Tensor]`` of
contiguous CPU tensors that each own their storage.  The format has three
parts; each was checked against real torch.save output:

* ``data.pkl``: pickle protocol 2 as CPython's C ``Pickler`` writes it for
  torch's ``PyTorchPickler`` (memo numbering, batching and int opcodes
  included), each tensor reduced to ``torch._utils._rebuild_tensor_v2``.
* A zip archive as PyTorchStreamWriter (caffe2/serialize/inline_container.cc,
  on top of miniz) writes it: stored records under ``archive/``, data aligned
  to 64 bytes via an ``FB`` padding extra field, sizes in data descriptors,
  and zip64 end records.
* ``.data/serialization_id``: derived from libstdc++'s string hash and the
  iteration order of a ``std::unordered_set`` (see ``_serialization_id``).

Known limits: records of 4 GiB or more and archives of more than 65535 records
(which miniz would write in zip64 form) are refused.  A key equal to "storage"
or "cpu" is written as a new string; torch.save instead refers back to its
own constant when the key is the same interned string object.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

import numpy as np

__all__ = ["torch_save_bytes", "CHECKED_WITH_TORCH"]

CHECKED_WITH_TORCH = "2.13.0"  # the torch release whose torch.save these bytes were checked against

# numpy dtype (little-endian) -> torch legacy storage class name.
_STORAGE = {
    np.dtype(t).newbyteorder("<"): name
    for t, name in [
        (np.float32, "FloatStorage"),
        (np.float64, "DoubleStorage"),
        (np.float16, "HalfStorage"),
        (np.int64, "LongStorage"),
        (np.int32, "IntStorage"),
        (np.int16, "ShortStorage"),
        (np.int8, "CharStorage"),
        (np.uint8, "ByteStorage"),
        (np.bool_, "BoolStorage"),
    ]
}


# --------------------------------------------------------------------------
# data.pkl
# --------------------------------------------------------------------------
_TUPLE_N = {1: b"\x85", 2: b"\x86", 3: b"\x87"}  # TUPLE1..3; longer: MARK ... TUPLE


def _binunicode(s: str) -> bytes:
    b = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(b)) + b


class _Pickle:
    """Emits pickle protocol 2 opcodes, numbering the memo as the C Pickler does."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo: dict[tuple, int] = {}  # shared objects -> memo index
        self.n_memo = 0

    def put(self) -> None:  # memoise the object just written
        i = self.n_memo
        self.n_memo += 1
        self.out += b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i)

    def shared(self, key: tuple, op: bytes) -> None:
        """Write an object the pickler memoises once (a class, or a str torch
        passes as the same object each time); later uses are memo GETs."""
        i = self.memo.get(key)
        if i is None:
            self.out += op
            self.memo[key] = self.n_memo
            self.put()
        else:
            self.out += b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)

    def global_(self, module: str, name: str) -> None:
        self.shared(("global", module, name), b"c%s\n%s\n" % (module.encode(), name.encode()))

    def str_(self, s: str) -> None:  # a new str object: BINUNICODE, then memoised
        self.out += _binunicode(s)
        self.put()

    def const_str(self, s: str) -> None:
        self.shared(("str", s), _binunicode(s))

    def int_(self, v: int) -> None:
        if v < 0x100:
            self.out += b"K" + bytes([v])
        elif v < 0x10000:
            self.out += b"M" + struct.pack("<H", v)
        elif v < 0x80000000:
            self.out += b"J" + struct.pack("<i", v)
        else:  # LONG1: minimal little-endian two's complement
            b = v.to_bytes((v.bit_length() >> 3) + 1, "little", signed=True)
            self.out += b"\x8a" + bytes([len(b)]) + b

    def int_tuple(self, items: tuple[int, ...]) -> None:
        if not items:
            self.out += b")"  # EMPTY_TUPLE, never memoised
            return
        if len(items) > 3:
            self.out += b"("  # MARK
        for x in items:
            self.int_(x)
        self.out += _TUPLE_N.get(len(items), b"t")
        self.put()

    def tensor(self, storage_key: str, storage: str, numel: int, shape, stride) -> None:
        # Tensor.__reduce_ex__ -> (_rebuild_tensor_v2,
        #   (storage, offset, size, stride, requires_grad, OrderedDict()));
        # the storage becomes a persistent id
        #   ('storage', torch.<X>Storage, key, 'cpu', numel).
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += b"(("  # MARK args, MARK persistent id
        self.const_str("storage")
        self.global_("torch", storage)
        self.str_(storage_key)
        self.const_str("cpu")
        self.int_(numel)
        self.out += b"t"
        self.put()
        self.out += b"Q"  # BINPERSID
        self.int_(0)  # storage_offset
        self.int_tuple(shape)
        self.int_tuple(stride)
        self.out += b"\x89"  # NEWFALSE: requires_grad
        self.global_("collections", "OrderedDict")
        self.out += b")R"  # OrderedDict(): EMPTY_TUPLE REDUCE
        self.put()
        self.out += b"t"  # TUPLE (6 items)
        self.put()
        self.out += b"R"  # REDUCE
        self.put()


def _pickle_state_dict(entries) -> bytes:
    """entries: [(key, storage_name, numel, shape, stride)] in dict order."""
    p = _Pickle()
    p.out += b"}"  # EMPTY_DICT
    p.put()

    def item(i: int) -> None:
        key, storage, numel, shape, stride = entries[i]
        p.str_(key)
        p.tensor(str(i), storage, numel, shape, stride)

    n = len(entries)
    if n == 1:  # the C pickler special-cases one item: no MARK, SETITEM
        item(0)
        p.out += b"s"
    elif n > 1:
        # Batches of 1000 as MARK ... SETITEMS.  The C pickler's loop also
        # writes an empty batch after a full last one (n % 1000 == 0).
        for start in range(0, n + 1 if n % 1000 == 0 else n, 1000):
            p.out += b"("
            for i in range(start, min(start + 1000, n)):
                item(i)
            p.out += b"u"
    p.out += b"."  # STOP
    return bytes(p.out)


# --------------------------------------------------------------------------
# .data/serialization_id
# --------------------------------------------------------------------------
# inline_container.cc, PyTorchStreamWriter::writeSerializationId():
#   id = "%020u" % combine(std::hash<std::string>(name) for name in
#                          files_written_ (an std::unordered_set, in its
#                          iteration order))
#      + "%020u" % combine(crc32 of each data descriptor, in write order)
# ("%020u": 20 decimal digits, zero-padded), where combine folds
# c10::hash_combine(seed, v) = seed ^ (v + 0x9e3779b9 + (seed << 6) + (seed >> 2))
# (64-bit) over the values, starting from 0.  ostream_write_func() picks the crc32 out of every write
# that starts with the data-descriptor signature PK\7\8, which is also true of
# a record whose data starts with those bytes (miniz writes data in one go).
_M64 = (1 << 64) - 1


def _hash_combine(seed: int, v: int) -> int:
    return seed ^ ((v + 0x9E3779B9 + (seed << 6) + (seed >> 2)) & _M64)


def _std_hash(b: bytes) -> int:
    """libstdc++ std::hash<std::string> on 64-bit: _Hash_bytes(p, len, 0xc70f6907)."""
    mul = 0xC6A4A7935BD1E995
    n = len(b)
    h = (0xC70F6907 ^ (n * mul)) & _M64
    tail = n & ~7
    for i in range(0, tail, 8):
        d = int.from_bytes(b[i:i + 8], "little") * mul & _M64
        d = (d ^ (d >> 47)) * mul & _M64
        h = (h ^ d) * mul & _M64
    if n & 7:
        h = (h ^ int.from_bytes(b[tail:], "little")) * mul & _M64
    h = (h ^ (h >> 47)) * mul & _M64
    return h ^ (h >> 47)


# libstdc++ _Prime_rehash_policy (max load factor 1): inserting the k-th
# element into a default-constructed unordered_set rehashes to this many
# buckets (computed from libstdc++'s _M_need_rehash).
_REHASH_AT = {1: 13, 14: 29, 30: 59, 60: 127, 128: 257, 258: 541, 542: 1109,
              1110: 2357, 2358: 5087, 5088: 10273, 10274: 20753, 20754: 42043,
              42044: 85229}


def _unordered_set_order(names: list[str]) -> list[tuple[int, bytes]]:
    """Iteration order of a libstdc++ std::unordered_set<std::string> after
    inserting ``names`` in order, as (hash, name) pairs.  Its nodes form one list in which each
    bucket's nodes are adjacent; a node goes to the front of its bucket's run,
    a node for an empty bucket to the front of the list, and a rehash re-inserts
    the nodes in list order by the same rules.  So, keeping each bucket's nodes
    in insertion order and buckets in creation order, the iteration order is
    both reversed."""
    keys = [(_std_hash(s.encode()), s.encode()) for s in names]
    buckets: dict[int, list] = {}
    n_buckets = 1
    for k, node in enumerate(keys, 1):
        if k in _REHASH_AT:
            n_buckets = _REHASH_AT[k]
            old = [x for run in reversed(buckets.values()) for x in reversed(run)]
            buckets = {}
            for x in old:
                buckets.setdefault(x[0] % n_buckets, []).append(x)
        buckets.setdefault(node[0] % n_buckets, []).append(node)
    return [x for run in reversed(buckets.values()) for x in reversed(run)]


def _serialization_id(names: list[str], crcs: list[int]) -> bytes:
    h = 0
    for name_hash, _ in _unordered_set_order(names):
        h = _hash_combine(h, name_hash)
    c = 0
    for crc in crcs:
        c = _hash_combine(c, crc)
    return b"%020d%020d" % (h, c)


# --------------------------------------------------------------------------
# zip archive
# --------------------------------------------------------------------------
_ALIGN = 64  # torch's kFieldAlignment / _get_storage_alignment()
_DESCRIPTOR_SIG = b"PK\x07\x08"


def _zip(records: list[tuple[str, object, int]]) -> bytes:
    """records: (name, data buffer, nbytes) in write order, without the id."""
    if len(records) + 1 > 0xFFFF:
        raise ValueError(f"{len(records) + 1} zip records: more than a plain "
                         "end-of-central-directory record can count (zip64 form)")
    chunks = []
    central = []
    pos = 0
    crcs = []

    def add(name: str, data, size: int) -> None:
        nonlocal pos
        if size >= 0xFFFFFFFF:
            raise ValueError(f"record {name!r} has {size} bytes; records of "
                             "4 GiB or more (zip64) are not supported")
        full = b"archive/" + name.encode()
        # Local header: version 0, no time/date; crc and sizes follow the
        # data in a data descriptor (flag bit 3) except for empty records.
        # Flag bit 11: UTF-8 name.  The "FB" extra field pads the header so
        # the data starts at a multiple of 64.
        flags = 0x0808 if size else 0x0800
        start = pos + 30 + len(full) + 4
        pad = -start % _ALIGN
        crc = zlib.crc32(data) if size else 0
        chunks.append(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 0, flags, 0, 0, 0,
                                  0, 0, 0, len(full), 4 + pad))
        chunks.append(full + b"FB" + struct.pack("<H", pad) + b"Z" * pad)
        if size:
            chunks.append(data)
            chunks.append(struct.pack("<4sIII", _DESCRIPTOR_SIG, crc, size, size))
            if size >= 8 and bytes(memoryview(data)[:4]) == _DESCRIPTOR_SIG:
                # torch mistakes this data write for a data descriptor
                crcs.append(int.from_bytes(memoryview(data)[4:8], "little"))
            crcs.append(crc)
        central.append(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 0, 0, flags,
                                   0, 0, 0, crc, size, size, len(full), 0, 0, 0, 0, 0,
                                   pos) + full)
        pos = start + pad + size + (16 if size else 0)
        if pos >= 0xFFFFFFFF:
            raise ValueError("archive reaches 4 GiB; zip64 offsets are not supported")

    for name, data, size in records:
        add(name, data, size)
    ser_id = _serialization_id([r[0] for r in records], crcs)
    add(".data/serialization_id", ser_id, len(ser_id))

    cd = b"".join(central)
    n = len(central)
    # zip64 end of central directory record + locator (miniz writes them
    # whenever MZ_ZIP_FLAG_WRITE_ZIP64 is set), then the classic record.
    tail = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 0x031E, 0x002D, 0, 0,
                       n, n, len(cd), pos)
    tail += struct.pack("<4sIQI", b"PK\x06\x07", 0, pos + len(cd), 1)
    tail += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(cd), pos, 0)
    chunks += [cd, tail]
    return b"".join(chunks)


# --------------------------------------------------------------------------
def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    # torch's contiguous strides count size-0 dimensions as size 1
    strides = []
    s = 1
    for d in reversed(shape):
        strides.append(s)
        s *= max(d, 1)
    return tuple(reversed(strides))


def torch_save_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes torch.save(dict of tensors) writes, for C-contiguous numpy arrays, without torch.

    Entries are written in mapping order, each array as its own storage
    ('0', '1', ...), with torch's contiguous strides, as torch.save writes a
    plain dict of tensors that each own their storage.
    """
    entries = []
    records = []
    for i, (key, arr) in enumerate(arrays.items()):
        if not isinstance(key, str):
            raise TypeError(f"key {key!r} ({type(key).__name__}): tensor names must be str")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{key!r}: expected a numpy array, got {type(arr).__name__}")
        le = arr.dtype.newbyteorder("<")
        storage = _STORAGE.get(le)
        if storage is None:
            raise TypeError(f"{key!r}: dtype {arr.dtype} is not supported "
                            f"(supported: {', '.join(str(d) for d in _STORAGE)})")
        if not arr.flags.c_contiguous:
            raise ValueError(f"{key!r}: array of dtype {arr.dtype}, shape {arr.shape} "
                             "is not C-contiguous")
        arr = arr.astype(le, copy=False)  # copies only big-endian input
        entries.append((key, storage, arr.size, arr.shape, _contiguous_strides(arr.shape)))
        records.append((f"data/{i}", memoryview(arr.reshape(-1).view(np.uint8)), arr.nbytes))

    pkl = _pickle_state_dict(entries)
    return _zip([("data.pkl", pkl, len(pkl)),
                 (".format_version", b"1", 1),
                 (".storage_alignment", b"64", 2),
                 ("byteorder", b"little", 6),
                 *records,
                 ("version", b"3\n", 2)])
