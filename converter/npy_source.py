"""Read Sandberg's MTCNN weight files (det1.npy, det2.npy, det3.npy) without running arbitrary pickle.

Each file is a ``.npy`` holding a 0-d object array around a pickled
``{layer_name: {param_name: ndarray}}`` dict (written by Python 2, hence latin-1 strings). Loading
it with ``np.load(allow_pickle=True)`` would execute whatever the pickle asks for. Here the npy
header is parsed by hand and the pickle is read by a restricted unpickler that can build only
numpy arrays and dtypes (plus the containers and strings pickle makes without any global): a
pickle that names any other callable, ``os.system`` say, is refused before anything is called.
The result is then checked to be exactly dicts of strings to float arrays.
"""
from __future__ import annotations

import ast
import io
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models.common.paths import read_capped

from .errors import ConversionError
from .writer import sha256_file

# sha256 of the files in github.com/davidsandberg/facenet, src/align/
KNOWN_SHA256 = {
    "det1.npy": "3285cf7a3de2651c5784cb9e32013f5919aae95fd1ed1bc371dd9691affb39af",
    "det2.npy": "716b8b83e42476791c9096f14dbb09fefc88bf5c7ec876b1683f9acd52b3f39c",
    "det3.npy": "396ead803d85d3443307ff8f45fb6aed2536579b415a4f4d4cb8f93ea6b1476a",
}
# which file holds which network
SOURCE_FILES = {"pnet": "det1.npy", "rnet": "det2.npy", "onet": "det3.npy"}

_NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 1 << 16
_MAX_NPY_BYTES = 64 << 20


try:  # pragma: no cover - depends on the installed numpy
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

# the only globals a det*.npy pickle needs; module paths as numpy 1.x (the writer) and 2.x spell them
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ConversionError(
                f"{self._source}: refused to load: its pickle asks for {module}.{name}, and only "
                "numpy arrays, dicts and strings are admitted in an MTCNN weight file. The file is "
                "not one of Sandberg's det*.npy; it may be malicious. Nothing in it was executed."
            ) from None

    def persistent_load(self, pid):
        raise ConversionError(f"{self._source}: refused to load: the pickle uses persistent ids")


def _read_npy_header(f, source: str) -> dict:
    magic = f.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        raise ConversionError(f"{source}: not a .npy file (bad magic {magic[:6]!r})")
    version = f.read(2)
    if len(version) != 2 or version[0] not in (1, 2, 3):
        raise ConversionError(f"{source}: unsupported .npy format version {tuple(version)}")
    size_fmt = "<H" if version[0] == 1 else "<I"
    raw = f.read(struct.calcsize(size_fmt))
    if len(raw) != struct.calcsize(size_fmt):
        raise ConversionError(f"{source}: truncated .npy header")
    (hlen,) = struct.unpack(size_fmt, raw)
    if hlen > _MAX_HEADER:
        raise ConversionError(f"{source}: .npy header of {hlen} bytes is implausibly large")
    text = f.read(hlen)
    try:
        header = ast.literal_eval(text.decode("latin1"))
    except (ValueError, SyntaxError) as e:
        raise ConversionError(f"{source}: unreadable .npy header ({e})") from None
    if not isinstance(header, dict) or {"descr", "fortran_order", "shape"} - set(header):
        raise ConversionError(f"{source}: malformed .npy header {header!r}")
    return header


def _check_params(obj, source: str) -> dict[str, dict[str, np.ndarray]]:
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise ConversionError(f"{source}: expected a dict of layers, found {type(obj).__name__}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer, params in obj.items():
        if not isinstance(layer, str) or not isinstance(params, dict):
            raise ConversionError(
                f"{source}: expected {{layer name: {{param name: array}}}}, found entry "
                f"{layer!r}: {type(params).__name__}"
            )
        out[layer] = {}
        for pname, arr in params.items():
            if not isinstance(pname, str) or not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
                raise ConversionError(
                    f"{source}: {layer}/{pname!r} is a {type(arr).__name__}"
                    f"{' of ' + str(arr.dtype) if isinstance(arr, np.ndarray) else ''}; "
                    "expected a float array"
                )
            out[layer][pname] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def read_det_npy(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read one det*.npy into ``{layer: {param: float32 array}}`` without executing arbitrary pickle.

    Raises ``ConversionError`` (naming the file) for a missing, corrupt or disallowed file.
    """
    path = Path(path)
    source = str(path)
    if not os.path.lexists(path):
        raise ConversionError(f"{source}: no such file")
    data = read_capped(path, _MAX_NPY_BYTES, "det*.npy weight file")   # Sandberg's are 0.03-1.6 MB
    f = io.BytesIO(data)
    header = _read_npy_header(f, source)
    if header["descr"] not in ("|O", "O"):
        # a plain numeric .npy: no pickle involved, but not an MTCNN weight file either
        raise ConversionError(
            f"{source}: holds a plain {header['descr']} array of shape {header['shape']}, "
            "not a pickled dict of layers"
        )
    try:
        obj = _RestrictedUnpickler(f, source).load()
    except ConversionError:
        raise
    except Exception as e:  # truncated or corrupt pickle, bad array state, ...
        raise ConversionError(f"{source}: corrupt pickle payload ({type(e).__name__}: {e})") from None
    return _check_params(obj, source)


@dataclass
class MtcnnSources:
    """The three weight dicts plus what was learned about the files."""

    params: dict[str, dict[str, dict[str, np.ndarray]]]  # net -> layer -> param -> array
    sha256: dict[str, str]  # file name -> actual sha256
    warnings: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)  # net -> the file its weights came from


def check_sha256(path: Path, strict: bool) -> tuple[str, str | None]:
    """Return (actual sha256, warning or None); with ``strict`` a mismatch raises ConversionError."""
    actual = sha256_file(path)
    expected = KNOWN_SHA256.get(path.name)
    if expected is None or actual == expected:
        return actual, None
    msg = (
        f"{path}: sha256 {actual} differs from the known {path.name} ({expected}); "
        "these are not Sandberg's released weights"
    )
    if strict:
        raise ConversionError(msg + " (refused because of --strict)")
    return actual, msg


def load_mtcnn_sources(src_dir: str | os.PathLike, strict: bool = False) -> MtcnnSources:
    """Read det1/det2/det3.npy from ``src_dir``, checking their sha256 (warning, or error if strict)."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise ConversionError(
            f"{src_dir}: no such directory (it should hold det1.npy, det2.npy, det3.npy; "
            "`make mtcnn-weights` fetches them into checkpoints/tf/mtcnn)"
        )
    params, hashes, warnings, paths = {}, {}, [], {}
    for net, fname in SOURCE_FILES.items():
        path = src_dir / fname
        if not os.path.lexists(path):
            raise ConversionError(f"{path}: missing ({net} weights; expected det1.npy, det2.npy, det3.npy)")
        hashes[fname], warning = check_sha256(path, strict)
        if warning:
            warnings.append(warning)
        params[net] = read_det_npy(path)
        paths[net] = path
    return MtcnnSources(params=params, sha256=hashes, warnings=warnings, paths=paths)
