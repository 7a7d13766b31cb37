"""Convert Sandberg's det1/det2/det3.npy to PyTorch, and verify the result against TensorFlow.

``convert_mtcnn(src, out)`` -> ``MtcnnConversionReport``: pnet/rnet/onet state_dicts with
facenet-pytorch 2.6.0's keys, written atomically and byte-reproducibly, plus ``manifest.json``
(sha256 and size of each file, sha256 of the sources).

``verify_mtcnn(src, weights)`` -> ``MtcnnParityReport``: the TF nets (``tf_mtcnn``) and the
PyTorch nets run on the same seeded random inputs; the max abs difference of every output.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..models.common.paths import check_run_paths
from ..models.detection.mtcnn_nets import NETS
from ..models.detection.mtcnn import default_weights_dir, load_net

from .errors import ConversionError, ParityError
from .mtcnn_mapping import TRANSFORMS, rows_for
from .npy_source import SOURCE_FILES, MtcnnSources, load_mtcnn_sources
from .writer import atomic_write_files, json_bytes, serialize_state_dict, sha256_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE_DIR = REPO_ROOT / "checkpoints" / "tf" / "mtcnn"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "facenet-tf2pt/mtcnn/1"
PARITY_ATOL = 1e-5


# ----------------------------------------------------------------------------------- conversion

def map_params(net: str, params: Mapping[str, Mapping[str, np.ndarray]], source: str = "") -> dict[str, torch.Tensor]:
    """Apply the table to one network's source arrays. Every row must find its array with the
    expected shape, and every source array must be used; otherwise ConversionError."""
    where = source or SOURCE_FILES[net]
    rows = rows_for(net)
    problems = []
    sd: dict[str, torch.Tensor] = {}
    for row in rows:
        arr = params.get(row.src_layer, {}).get(row.src_param)
        if arr is None:
            problems.append(f"missing {row.src_layer}/{row.src_param}")
            continue
        if tuple(arr.shape) != row.src_shape:
            problems.append(f"{row.src_layer}/{row.src_param} has shape {tuple(arr.shape)}, expected {row.src_shape}")
            continue
        finite = np.isfinite(arr)
        if not finite.all():
            problems.append(f"{row.src_layer}/{row.src_param}: {int(arr.size - finite.sum())} of {arr.size} "
                            "values are NaN or Inf")
            continue
        value = TRANSFORMS[row.transform](np.asarray(arr, dtype=np.float32))
        sd[row.pt_key] = torch.from_numpy(np.ascontiguousarray(value)).clone()
    used = {(r.src_layer, r.src_param) for r in rows}
    unused = sorted(f"{l}/{p}" for l, ps in params.items() for p in ps if (l, p) not in used)
    if unused:
        problems.append("unused source arrays: " + ", ".join(unused))
    if problems:
        raise ConversionError(f"{where}: not a {net} weight file: " + "; ".join(problems))
    # the table must produce exactly the module's keys and shapes
    module = NETS[net]()
    expected = module.state_dict()
    if set(expected) != set(sd) or any(expected[k].shape != sd[k].shape for k in expected):
        raise ConversionError(f"internal: the {net} table does not match models.detection.mtcnn_nets.{NETS[net].__name__}")
    module.load_state_dict(sd, strict=True)
    return sd


def state_dicts_from_sources(sources: MtcnnSources) -> dict[str, dict[str, torch.Tensor]]:
    return {net: map_params(net, sources.params[net], str(sources.paths.get(net, ""))) for net in SOURCE_FILES}


@dataclass
class MtcnnConversionReport:
    out_dir: str
    files: dict[str, dict]  # file name -> {"sha256", "size"}
    sources: dict[str, str]  # det*.npy -> sha256
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        lines = [f"wrote {len(self.files)} files to {self.out_dir}"]
        lines += [f"  {name}  {info['size']:>8} bytes  sha256 {info['sha256']}" for name, info in sorted(self.files.items())]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def convert_mtcnn(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    safetensors: bool = False,
    strict: bool = False,
) -> MtcnnConversionReport:
    """det1/det2/det3.npy in ``src_dir`` -> pnet.pt, rnet.pt, onet.pt (+ .safetensors) and
    manifest.json in ``out_dir``. A sha256 mismatch is a warning in the report, or with ``strict``
    a ConversionError. Nothing is written unless all three sources convert."""
    out = Path(out_dir)
    suffixes = [".pt"] + ([".safetensors"] if safetensors else [])
    check_run_paths(inputs=[Path(src_dir) / name for name in SOURCE_FILES.values()],
                    outputs=[out / f"{net}{s}" for net in SOURCE_FILES for s in suffixes] + [out / MANIFEST_NAME],
                    output_dirs=[out])
    sources = load_mtcnn_sources(src_dir, strict=strict)
    state_dicts = state_dicts_from_sources(sources)
    files: dict[str, dict] = {}
    blobs: dict[Path, bytes] = {}
    for net, sd in state_dicts.items():
        for suffix in suffixes:
            path = out / f"{net}{suffix}"
            data = serialize_state_dict(sd, suffix)
            blobs[path] = data
            files[path.name] = {"sha256": sha256_bytes(data), "size": len(data)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "files": files,
        "sources": dict(sorted(sources.sha256.items())),
        "keys": "facenet-pytorch 2.6.0",
    }
    blobs[out / MANIFEST_NAME] = json_bytes(manifest)
    try:
        atomic_write_files(blobs)  # all of them or none: never a new pnet beside an old onet
    except OSError as e:  # disk full, read-only folder, a file where the folder should be, ...
        raise ConversionError(f"{e.filename or out}: cannot write the MTCNN weights to {out} "
                              f"({e.strerror or e}); no file there was replaced") from e
    return MtcnnConversionReport(out_dir=str(out), files=files, sources=sources.sha256, warnings=sources.warnings)


# ----------------------------------------------------------------------------------- verification

@dataclass
class ParityRow:
    net: str
    output: str
    shape: list[int]
    max_abs: float
    ok: bool


@dataclass
class MtcnnParityReport:
    atol: float
    seed: int
    rows: list[ParityRow]
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def max_abs(self, net: str) -> float:
        return max(r.max_abs for r in self.rows if r.net == net)

    def to_dict(self) -> dict:
        return {"atol": self.atol, "seed": self.seed, "ok": self.ok,
                "rows": [asdict(r) for r in self.rows], "warnings": self.warnings}

    def to_text(self) -> str:
        lines = [f"MTCNN parity, TensorFlow vs PyTorch (seed {self.seed}, tolerance {self.atol:g})"]
        for r in self.rows:
            lines.append(f"  {r.net:5} {r.output:9} {str(tuple(r.shape)):18} max abs diff {r.max_abs:.3e}  "
                         f"{'ok' if r.ok else 'FAIL'}")
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append("PASS" if self.ok else "FAIL: outside tolerance")
        return "\n".join(lines)


OUTPUT_NAMES = {"pnet": ("reg", "prob"), "rnet": ("reg", "prob"), "onet": ("reg", "landmarks", "prob")}


def parity_inputs(seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Seeded inputs in the nets' normalized range [-1, 1]: P-Net on odd, non-square sizes (an H/W
    mix-up cannot hide), R-Net and O-Net on batches of crops."""
    rng = np.random.default_rng(seed)

    def u(*shape):
        return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)

    return {"pnet": [u(2, 3, 37, 58), u(1, 3, 12, 12)], "rnet": [u(16, 3, 24, 24)], "onet": [u(16, 3, 48, 48)]}


def verify_mtcnn(
    src_dir: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    seed: int = 0,
    atol: float = PARITY_ATOL,
    strict: bool = False,
) -> MtcnnParityReport:
    """TF nets built from the det*.npy in ``src_dir`` vs the PyTorch nets loaded from ``weights_dir``
    (default: the committed weights). Returns the report; raising is left to ``check``."""
    src_dir = Path(src_dir) if src_dir is not None else DEFAULT_SOURCE_DIR
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    sources = load_mtcnn_sources(src_dir, strict=strict)
    from . import tf_mtcnn

    rows: list[ParityRow] = []
    for net, batches in parity_inputs(seed).items():
        try:
            module = load_net(net, weights_dir)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            raise ConversionError(f"{weights_dir}: cannot load {net} weights ({e})") from e
        worst: dict[str, tuple[float, list[int]]] = {}
        for x in batches:
            tf_outs = tf_mtcnn.run_tf_net(net, sources.params[net], x)
            with torch.no_grad():
                pt_outs = [o.numpy() for o in module(torch.from_numpy(x))]
            for name, a, b in zip(OUTPUT_NAMES[net], tf_outs, pt_outs):
                if a.shape != b.shape:
                    raise ParityError(f"{net} {name}: TF shape {a.shape} vs PyTorch {b.shape}")
                d = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                if name not in worst or d > worst[name][0]:
                    worst[name] = (d, list(b.shape))
        for name in OUTPUT_NAMES[net]:
            d, shape = worst[name]
            rows.append(ParityRow(net=net, output=name, shape=shape, max_abs=d, ok=d <= atol))
    return MtcnnParityReport(atol=atol, seed=seed, rows=rows, warnings=sources.warnings)


def check(report: MtcnnParityReport) -> MtcnnParityReport:
    """Raise ParityError when any output is outside tolerance."""
    if not report.ok:
        bad = [f"{r.net}.{r.output} ({r.max_abs:.3e})" for r in report.rows if not r.ok]
        raise ParityError(f"MTCNN outputs differ beyond {report.atol:g}: " + ", ".join(bad))
    return report
