"""Convert a Sandberg Inception-ResNet-V1 source to a PyTorch weights file and its report."""
from __future__ import annotations

import platform
from importlib import metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from ..models.common.paths import check_run_paths

from .errors import ConversionError
from .known_hashes import check_files, known_sha256
from .loader import LoadReport, arrays_to_state_dict
from .sources import TFSource, read_variables, resolve_source
from .writer import SUFFIXES, atomic_write_files, json_bytes, serialize_state_dict, sha256_bytes, \
    sha256_file


@dataclass
class ConversionResult:
    source: TFSource
    output: Path
    sha256: str
    size: int
    load_report: LoadReport
    report: dict              # the conversion report (also written as JSON)
    report_path: Path


def _version(dist: str) -> str | None:
    """An installed distribution's version, without importing it (import torch costs ~1 s)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _reader_used(src: TFSource, reader: str) -> str:
    if src.keras_h5 is not None:
        return "h5py (Keras 2 weights; model_config read as JSON only)"
    if src.checkpoint_prefix is None:
        return "tensorflow (frozen graph)"
    return "tensorflow" if reader == "tf" else "pure-python bundle reader"


def default_report_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def convert(src_path, output, *, report_path=None, step: int | None = None,
            reader: str = "auto", progress: bool = False, strict: bool = False) -> ConversionResult:
    """Read `src_path`, map it, write `output` (.pt/.pth/.safetensors) and a JSON report.

    Source files whose name the registry knows are checked against their published sha256
    (known_hashes.py): a mismatch is a warning in the report, an error when `strict`.
    Nothing is written unless the whole conversion succeeds; both files are written atomically.
    """
    output = Path(output)
    if output.suffix not in SUFFIXES:
        raise ConversionError(f"{output}: output must end in one of {', '.join(SUFFIXES)}")
    report_path = Path(report_path) if report_path else default_report_path(output)
    src = resolve_source(src_path, step=step)
    check_run_paths(inputs=src.input_files(), outputs=[(output, SUFFIXES), (report_path, (".json",))])
    arrays = read_variables(src, reader=reader)
    label = str(src.keras_h5 or src.checkpoint_prefix or src.frozen_graph)
    state_dict, load_report = arrays_to_state_dict(arrays, label, progress=progress, names=src.names)
    files = [{"name": f.name, "sha256": sha256_file(f), "size": f.stat().st_size} for f in src.weight_files()]
    others = [f for f in (src.frozen_graph, src.meta_graph)   # hashed only when a known name (cost)
              if f is not None and f not in src.weight_files() and f.name in known_sha256()]
    known = check_files(files + [{"name": f.name, "sha256": sha256_file(f)} for f in others], strict=strict)
    data = serialize_state_dict(state_dict, output.suffix)
    digest = sha256_bytes(data)
    report = {
        "tool": {"name": "facenet-tf2pt", "version": __version__},
        "libraries": {"torch": _version("torch"), "numpy": np.__version__,
                      "python": platform.python_version()},
        "source": {
            "path": str(src_path),
            "kind": src.kind,
            "weights_from": src.weights_kind,
            "step": src.step,
            "reader": _reader_used(src, reader),
            "files": files,
            "known_hashes": known.to_dict(),
            "notes": src.notes,
        },
        "mapping": load_report.summary(),
        "output": {"file": output.name, "format": output.suffix.lstrip("."), "sha256": digest,
                   "size": len(data), "tensors": len(state_dict)},
    }
    try:
        atomic_write_files({output: data, report_path: json_bytes(report)})  # both or neither
    except OSError as e:  # disk full, read-only folder, a file where a folder should be, ...
        raise ConversionError(
            f"{e.filename or output}: cannot write {output.name} and {report_path.name} "
            f"({e.strerror or e}); nothing was replaced: any previous {output.name} is unchanged") from e
    return ConversionResult(src, output, digest, len(data), load_report, report, report_path)
