"""`facenet-convert export`: a converted InceptionResNetV1 as a file that runs without this package.

    export("out/model.pt", "model.onnx")     # ONNX through torch.onnx (dynamo exporter): onnxruntime
    export("vggface2", "model.pt2")          # a torch.export program: torch.export.load
    export("out/model.pt", "model.ts")       # TorchScript (torch.jit.script): torch.jit.load, C++ too

The format comes from the output's suffix. The exported graph takes (N, 3, H, W) float32 images,
already standardized as the weights expect (the report names the standardization), with a dynamic
batch N and H = W = `image_size`; it returns the L2-normalized embeddings (the normalization is in
the graph), or with `classify=True` the logits of models that have them.

Every export is checked before it is delivered: the written file is loaded back with its own
runtime (onnxruntime, torch.export.load, torch.jit.load) and run on a seeded batch of 3 and a batch
of 1 (a batch size the export never saw, so the batch really is dynamic); the largest difference
from the PyTorch model must be within the tolerance, or the file is not written. `check_export`
runs the same comparison on an existing .onnx file against any weights (an ONNX graph is data;
a .pt2 or .ts from elsewhere is never loaded: both run code from the file). No TensorFlow here.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..models.common.atomic_io import atomic_output, sha256_file
from ..models.common.paths import check_run_paths
from ..models.nets.inception_resnet_v1 import InceptionResNetV1

from .errors import ConversionError

FORMATS = {".onnx": "onnx", ".pt2": "torch.export", ".ts": "torchscript"}
DEFAULT_ATOL = 1e-5            # on embeddings (unit vectors); logits: times their largest magnitude
PARITY_BATCHES = (3, 1)        # the export is traced at the first; the second proves the batch dynamic
ONNX_OPSET = 18                # the dynamo exporter's default in torch 2.5-2.13; onnxruntime >= 1.14 runs it


class ExportError(ConversionError):
    """Bad input for an export: unknown format, weights that cannot be loaded, a missing runtime."""


@dataclass
class BatchDiff:
    batch: int
    max_abs: float       # max |exported - PyTorch| over the batch's outputs
    max_ref: float       # max |PyTorch| (the scale the tolerance is measured against)


@dataclass
class ExportReport:
    artifact: str
    format: str
    weights: str
    output_name: str                 # 'embeddings' or 'logits'
    embedding_size: int
    num_classes: int | None
    image_size: int
    standardization: str             # what the graph's input must already be
    seed: int
    atol: float
    diffs: list[BatchDiff] = field(default_factory=list)
    size: int = 0                    # bytes of the delivered file (0: not written)
    sha256: str = ""
    seconds: float = 0.0
    versions: dict = field(default_factory=dict)

    @property
    def tolerance(self) -> float:
        """`atol` scaled by the outputs' magnitude when it exceeds 1 (logits); embeddings are unit vectors."""
        return self.atol * max([1.0] + [d.max_ref for d in self.diffs])

    @property
    def max_abs(self) -> float:
        return max((d.max_abs for d in self.diffs), default=float("nan"))

    @property
    def passed(self) -> bool:
        return bool(self.diffs) and all(np.isfinite(d.max_abs) and d.max_abs <= self.tolerance for d in self.diffs)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(passed=self.passed, tolerance=self.tolerance, max_abs=self.max_abs)
        return d

    def format_table(self) -> str:
        lines = [f"parity of {self.artifact} ({self.format}, {self.output_name}) against the PyTorch model, "
                 f"seeded batch (seed {self.seed}, {self.image_size}x{self.image_size}):"]
        lines += [f"  batch {d.batch}: max abs diff {d.max_abs:.3e}" for d in self.diffs]
        lines.append(f"  max abs diff {self.max_abs:.3e}, tolerance {self.tolerance:.1e} -> "
                     f"{'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ weights

def weights_file(weights: str | os.PathLike, *, download: bool = True, progress: bool = True) -> Path:
    """The file behind WEIGHTS: itself when it names a file, else the registry entry's converted
    file found (or downloaded) by the same lookup as `inception_resnet_v1(weights=name)`."""
    from ..models.hub.pretrained import _looks_like_path, default_registry, find_inception_file

    if _looks_like_path(weights):
        return Path(weights).expanduser()
    try:
        entry = default_registry().get(str(weights), arch="inception_resnet_v1")
    except ValueError as e:
        raise ExportError(str(e)) from None
    return find_inception_file(entry, download_missing=download, progress=progress, name_for_errors=str(weights))


def load_model(path: Path, classify: bool = False) -> tuple[InceptionResNetV1, str]:
    """(model in eval mode, its input standardization): the builder's checked, strict load."""
    from ..models.hub.builder import inception_resnet_v1
    from ..models.hub.pretrained import default_registry

    if not path.is_file():
        raise ExportError(f"{path}: no such weights file (give a converted .pt / .safetensors or a registry name)")
    try:
        model = inception_resnet_v1(weights=path, classify=classify, download=False)
    except (KeyError, ValueError) as e:      # ModelLoadError, ChecksumError, classify without logits
        msg = str(e.args[0] if e.args else e)
        raise ExportError(msg if str(path) in msg else f"{path}: {msg}") from None
    entry = default_registry().for_file(path)
    return model, (entry.preprocessing if entry is not None and entry.preprocessing else "fixed")


def export_format(output: str | os.PathLike) -> str:
    fmt = FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ExportError(f"{output}: unknown export format {Path(output).suffix or '(no suffix)'!r}; "
                          f"the output must end in {', '.join(FORMATS)}")
    return fmt


# ----------------------------------------------------------------------------------- writers

@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx logs one warning per torchvision op it cannot register (none are used here) and
    torch.export warns about its own internals; neither concerns the user."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _example(image_size: int) -> torch.Tensor:
    return torch.zeros(PARITY_BATCHES[0], 3, image_size, image_size)


def _batch_dim():
    return ({0: torch.export.Dim("batch", min=1)},)


def _write_onnx(model, path: Path, image_size: int, output_name: str, meta: dict) -> None:
    with _quiet_exporter():
        program = torch.onnx.export(model, (_example(image_size),), dynamo=True, dynamic_shapes=_batch_dim(),
                                    input_names=["images"], output_names=[output_name], opset_version=ONNX_OPSET,
                                    external_data=False, verbose=False)
    program.model.metadata_props.update(meta)
    program.save(path, external_data=False)   # one self-contained file (the model is < 2 GB): no side files


def _write_pt2(model, path: Path, image_size: int, output_name: str, meta: dict) -> None:
    with _quiet_exporter():
        program = torch.export.export(model, (_example(image_size),), dynamic_shapes=_batch_dim())
    buf = io.BytesIO()   # torch.export names a file by its .pt2 suffix; the temp file has none
    torch.export.save(program, buf, extra_files={"facenet_tf2pt.json": _json(meta)})
    path.write_bytes(buf.getvalue())


def _write_ts(model, path: Path, image_size: int, output_name: str, meta: dict) -> None:
    torch.jit.save(torch.jit.script(model), path, _extra_files={"facenet_tf2pt.json": _json(meta)})


def _json(meta: dict) -> str:
    import json

    return json.dumps(meta, sort_keys=True)


WRITERS: dict[str, Callable] = {"onnx": _write_onnx, "torch.export": _write_pt2, "torchscript": _write_ts}


def write_model(model: InceptionResNetV1, path: str | os.PathLike, fmt: str = "onnx", *,
                image_size: int = 160) -> None:
    """Write `model` (its current `classify` decides the output) in `fmt` without a parity check:
    for callers that hold a model rather than a weights file (benchmarks/bench_inference.py)."""
    name = "logits" if model.classify else "embeddings"
    WRITERS[fmt](model.eval(), Path(path), image_size, name, {"producer": "facenet-tf2pt", "output": name})


# ----------------------------------------------------------------------------------- runners

def _onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _torch_runner(module) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    return run


def _load_own_artifact(fmt: str, path: Path):
    """The .pt2 / .ts that `export` wrote a moment ago into its own fresh temp file, loaded back.
    These are the project's only calls of torch.jit.load and torch.export.load (the safety audit,
    tests/test_pickle_safety.py, allows them here alone): both run code from the file (TorchScript,
    and a pickle fallback in torch.export.load), so a file a user hands in is never given to them."""
    if fmt == "torchscript":
        return torch.jit.load(path, map_location="cpu")
    with open(path, "rb") as f:   # a file object: the temp file's name does not end in .pt2
        return torch.export.load(f).module()


RUNNERS: dict[str, Callable] = {
    "onnx": _onnx_runner,   # onnxruntime runs the graph's standard operators: nothing from the file executes
    "torch.export": lambda path: _torch_runner(_load_own_artifact("torch.export", path)),
    "torchscript": lambda path: _torch_runner(_load_own_artifact("torchscript", path)),
}


def seeded_batch(batch: int, image_size: int, seed: int) -> np.ndarray:
    """Standardized-looking input: uniform in [-1, 1] (fixed standardization's range), seeded."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, image_size, image_size, generator=g) * 2 - 1).numpy()


def compare(fmt: str, artifact: Path, model: InceptionResNetV1, image_size: int, seed: int) -> list[BatchDiff]:
    """Run the file in its own runtime and `model` in PyTorch on the seeded batches."""
    run = RUNNERS[fmt](artifact)
    diffs = []
    for k, batch in enumerate(PARITY_BATCHES):
        x = seeded_batch(batch, image_size, seed + k)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = np.asarray(run(x))
        if got.shape != want.shape:
            raise ExportError(f"{artifact}: output of shape {list(got.shape)} for a batch of {batch}, expected "
                              f"{list(want.shape)} (different weights, or not exported with a dynamic batch?)")
        diffs.append(BatchDiff(batch, float(np.abs(got.astype(np.float64) - want).max()), float(np.abs(want).max())))
    return diffs


ONNX_TOOLS = {"onnxscript": "torch.onnx's exporter", "onnxruntime": "the parity check", "onnx": "torch.onnx"}


def _versions(fmt: str, needed: tuple[str, ...]) -> dict:
    """Versions of what the format needs; ExportError naming the missing ones, before any work."""
    from importlib.metadata import PackageNotFoundError, version

    v = {"torch": torch.__version__}
    missing = []
    for name in needed:
        try:
            v[name] = version(name)
        except PackageNotFoundError:
            missing.append(f"{name} ({ONNX_TOOLS.get(name, fmt)})")
    if missing:
        from ..models.common.install import install_hint   # pyproject's [export] extra, for this installation

        raise ExportError(f"{fmt} needs {', '.join(missing)}, not installed: {install_hint('export')}")
    return v


# ------------------------------------------------------------------------------------ public

def export(weights: str | os.PathLike, output: str | os.PathLike, *, classify: bool = False,
           image_size: int = 160, seed: int = 0, atol: float = DEFAULT_ATOL, download: bool = True,
           progress: bool = True) -> ExportReport:
    """Export `weights` (a converted .pt/.safetensors or a registry name) to `output` (.onnx, .pt2
    or .ts), check parity, and deliver the file only when it passes. Returns the report (check
    `.passed`: on failure nothing is written, `.size` is 0); ExportError/PathError for bad input."""
    t0 = time.perf_counter()
    fmt = export_format(output)
    output = Path(output)
    path = weights_file(weights, download=download, progress=progress)
    check_run_paths(inputs=[path], outputs=[(output, tuple(FORMATS))])
    versions = _versions(fmt, tuple(ONNX_TOOLS) if fmt == "onnx" else ())
    model, standardization = load_model(path, classify)
    output_name = "logits" if classify else "embeddings"
    report = ExportReport(artifact=str(output), format=fmt, weights=str(weights), output_name=output_name,
                          embedding_size=model.embedding_size, num_classes=model.num_classes,
                          image_size=image_size, standardization=standardization, seed=seed, atol=atol,
                          versions=versions)
    meta = {"producer": "facenet-tf2pt", "weights": Path(path).name, "output": output_name,
            "standardization": standardization, "input": f"(N, 3, {image_size}, {image_size}) float32"}
    try:
        with atomic_output(output) as tmp:
            WRITERS[fmt](model, tmp, image_size, output_name, meta)
            report.diffs = compare(fmt, tmp, model, image_size, seed)
            if not report.passed:
                raise _Discard()   # the temp file is removed; whatever was at `output` stays
            report.size, report.sha256 = tmp.stat().st_size, sha256_file(tmp)
    except _Discard:
        pass
    report.seconds = time.perf_counter() - t0
    return report


class _Discard(Exception):
    """Leaves atomic_output's block so that it removes the temp file: parity failed."""


def check_export(artifact: str | os.PathLike, weights: str | os.PathLike, *, classify: bool = False,
                 image_size: int = 160, seed: int = 0, atol: float = DEFAULT_ATOL, download: bool = True,
                 progress: bool = True) -> ExportReport:
    """Parity of an exported .onnx file against `weights` (as `export` checks it before delivering)."""
    artifact = Path(artifact)
    fmt = export_format(artifact)
    if fmt != "onnx":
        raise ExportError(f"{artifact}: only an .onnx file is checked here; loading a .pt2 or .ts runs code from "
                          f"the file (TorchScript, pickles), which this project never does with a file it did not "
                          f"just write. `export` checks its .pt2 / .ts before delivering them")
    path = weights_file(weights, download=download, progress=progress)
    check_run_paths(inputs=[artifact, path])
    if not artifact.is_file():
        raise ExportError(f"{artifact}: no such exported file")
    versions = _versions(fmt, ("onnxruntime",))
    model, standardization = load_model(path, classify)
    report = ExportReport(artifact=str(artifact), format=fmt, weights=str(weights),
                          output_name="logits" if classify else "embeddings", embedding_size=model.embedding_size,
                          num_classes=model.num_classes, image_size=image_size, standardization=standardization,
                          seed=seed, atol=atol, size=artifact.stat().st_size, sha256=sha256_file(artifact),
                          versions=versions)
    t0 = time.perf_counter()
    try:
        report.diffs = compare(fmt, artifact, model, image_size, seed)
    except ExportError:
        raise
    except Exception as e:   # not loadable by its runtime, or a graph of another input size
        raise ExportError(f"{artifact}: cannot run it as {fmt} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
            from None
    report.seconds = time.perf_counter() - t0
    return report
