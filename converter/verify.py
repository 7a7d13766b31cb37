"""Run the TF graph and the converted PyTorch model on the same batch; report how far apart they are.

The report has the figures a reviewer checks: the L2 norm of the embedding difference over the
batch, max abs difference, min cosine similarity, and the max abs difference at every Sandberg
end point. A float64 column runs the PyTorch model in float64 on the same batch: when TF and
PyTorch float32 are about equally far from it, the gap is float32 rounding, not a mapping error.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..models.hub.builder import ModelLoadError
from ..models.hub.builder import model_from_state_dict as build_model
from ..models.nets.inception_resnet_v1 import InceptionResNetV1
from ..models.hub.serialization import load_state_dict_file

from .errors import ConversionError

DEFAULT_ATOL = 1e-5


@dataclass
class LayerDiff:
    name: str
    shape: list[int]                    # NCHW (or N, C)
    max_abs: float                      # |TF - PyTorch float32|
    max_abs_tf: float                   # max |TF| (scale of the activation)
    tf_vs_f64: float | None = None      # |TF - PyTorch float64|
    pt_vs_f64: float | None = None      # |PyTorch float32 - PyTorch float64|


@dataclass
class ParityReport:
    source: str
    weights: str
    tf_graph: str
    batch: int
    seed: int
    image_size: int
    atol: float
    l2: float                            # ||E_tf - E_pt||_F over the batch
    max_abs: float
    min_cosine: float
    layers: list[LayerDiff]
    l2_tf_vs_f64: float | None = None    # ||E_tf - E_f64||_F: TF's own float32 error
    l2_pt_vs_f64: float | None = None    # ||E_pt - E_f64||_F: PyTorch's own float32 error
    absent_end_points: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    images: str | None = None            # --images: the batch is real faces (see face_batch.py)
    image_files: list[str] = field(default_factory=list)
    standardization: str = "fixed"
    per_image_l2: list[float] = field(default_factory=list)   # with --images: ||e_tf - e_pt|| per face

    @property
    def passed(self) -> bool:
        return self.max_abs <= self.atol

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def format_table(self) -> str:
        lines = [f"TF graph : {self.tf_graph}",
                 f"weights  : {self.weights}",
                 f"batch    : {self.batch} x {self.image_size}x{self.image_size}, "
                 + (f"face crops of {self.images} ({self.standardization})" if self.images
                    else f"random, seed {self.seed}"),
                 f"{'end point':<18}{'shape':<20}{'max|TF-PT|':>12}{'max|TF|':>11}"
                 f"{'|TF-f64|':>11}{'|PT-f64|':>11}"]
        for layer in self.layers:
            shape = "x".join(map(str, layer.shape))
            lines.append(f"{layer.name:<18}{shape:<20}{layer.max_abs:>12.3e}{layer.max_abs_tf:>11.3e}"
                         f"{_fmt(layer.tf_vs_f64):>11}{_fmt(layer.pt_vs_f64):>11}")
        for name in self.absent_end_points:
            lines.append(f"{name:<18}(not in this TF graph)")
        lines.append(f"embeddings: L2 {self.l2:.3e}  max abs {self.max_abs:.3e}  "
                     f"min cosine {self.min_cosine:.9f}  -> {'PASS' if self.passed else 'FAIL'} "
                     f"(atol {self.atol:g})")
        if self.per_image_l2:
            lines.append(f"per face: L2 max {max(self.per_image_l2):.3e}, "
                         f"median {float(np.median(self.per_image_l2)):.3e}")
        if self.l2_tf_vs_f64 is not None:
            lines.append(f"float32 rounding alone: L2 TF-f64 {self.l2_tf_vs_f64:.3e}, "
                         f"PT-f64 {self.l2_pt_vs_f64:.3e}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def write(self, path) -> None:
        from ..models.common.paths import check_output

        from .writer import atomic_write_bytes

        atomic_write_bytes(check_output(path, (".json",)), self.to_json().encode())


def _fmt(x):
    return "-" if x is None else f"{x:.3e}"


def make_batch(batch: int, seed: int, image_size: int = 160) -> np.ndarray:
    """Seeded random images, standardized as the 2018 models expect: (uint8 - 127.5) / 128, NHWC."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
    return ((pixels.astype(np.float32) - 127.5) / 128.0).astype(np.float32)


def model_from_state_dict(state_dict: dict, source: str = "<state_dict>") -> InceptionResNetV1:
    try:
        return build_model(state_dict, source)
    except ModelLoadError as e:
        raise ConversionError(str(e)) from e


def load_weights(weights) -> dict:
    try:
        return load_state_dict_file(weights)
    except (FileNotFoundError, ValueError) as e:
        raise ConversionError(str(e)) from e


def pytorch_end_points(model: InceptionResNetV1, images_nhwc: np.ndarray, dtype=torch.float32):
    x = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).contiguous()
    m = model if dtype == torch.float32 else _copy_as(model, dtype)
    with torch.inference_mode():
        return {k: v.to(torch.float64).numpy() for k, v in m.forward_end_points(x.to(dtype)).items()}


def _copy_as(model, dtype):
    import copy

    return copy.deepcopy(model).to(dtype)


def compare(tf_outputs: dict, pt32: dict, pt64: dict | None) -> tuple[list[LayerDiff], dict]:
    layers = []
    for name, tf_value in tf_outputs.items():
        tf_nchw = tf_value.transpose(0, 3, 1, 2) if tf_value.ndim == 4 else tf_value
        tf_nchw = tf_nchw.astype(np.float64)
        if tf_nchw.shape != pt32[name].shape:
            raise ConversionError(f"end point {name}: TF shape {list(tf_nchw.shape)} vs PyTorch "
                                  f"{list(pt32[name].shape)}")
        layers.append(LayerDiff(
            name, list(tf_nchw.shape), float(np.abs(tf_nchw - pt32[name]).max()),
            float(np.abs(tf_nchw).max()),
            None if pt64 is None else float(np.abs(tf_nchw - pt64[name]).max()),
            None if pt64 is None else float(np.abs(pt32[name] - pt64[name]).max())))
    order = {n: i for i, n in enumerate(pt32)}
    layers.sort(key=lambda d: order[d.name])
    e_tf = tf_outputs["embeddings"].astype(np.float64)
    e_pt = pt32["embeddings"]
    cos = (e_tf * e_pt).sum(1) / (np.linalg.norm(e_tf, axis=1) * np.linalg.norm(e_pt, axis=1))
    figures = {"l2": float(np.linalg.norm(e_tf - e_pt)), "max_abs": float(np.abs(e_tf - e_pt).max()),
               "min_cosine": float(cos.min())}
    if pt64 is not None:
        figures["l2_tf_vs_f64"] = float(np.linalg.norm(e_tf - pt64["embeddings"]))
        figures["l2_pt_vs_f64"] = float(np.linalg.norm(e_pt - pt64["embeddings"]))
    return layers, figures


def verify(source, weights, *, batch: int = 5, seed: int = 0, atol: float = DEFAULT_ATOL,
           image_size: int = 160, float64: bool = True, step: int | None = None, images=None,
           standardization: str | None = None) -> ParityReport:
    """Run the TF graph of `source` and the PyTorch model with `weights` on one seeded batch, or on
    MTCNN face crops of the photos in the folder `images` (at most `batch` of them)."""
    from .sources import resolve_source
    from .tf_run import run_tf

    if batch < 1:
        raise ConversionError(f"--batch must be at least 1, got {batch}")
    src = resolve_source(source, step=step)
    model = model_from_state_dict(load_weights(weights), str(weights))
    faces = None
    if images is not None:
        from .face_batch import face_batch, standardization_for

        faces = face_batch(images, standardization or standardization_for(model.embedding_size),
                           image_size=image_size, limit=batch)
        pixels = faces.images
    else:
        pixels = make_batch(batch, seed, image_size)
    tf_run = run_tf(src, pixels)
    pt32 = pytorch_end_points(model, pixels)
    pt64 = pytorch_end_points(model, pixels, torch.float64) if float64 else None
    layers, emb = compare(tf_run.outputs, pt32, pt64)
    return ParityReport(
        source=str(source), weights=str(weights), tf_graph=tf_run.graph_used, batch=len(pixels), seed=seed,
        image_size=image_size, atol=atol, layers=layers, absent_end_points=tf_run.absent,
        notes=src.notes + tf_run.notes + ([faces.describe(images)] if faces else []),
        images=None if faces is None else str(images), image_files=[] if faces is None else faces.files,
        standardization=faces.standardization if faces else "fixed",
        per_image_l2=[] if faces is None else np.linalg.norm(
            tf_run.outputs["embeddings"].astype(np.float64) - pt32["embeddings"], axis=1).tolist(),
        versions={"tensorflow": tf_run.tf_version, "torch": torch.__version__, "numpy": np.__version__},
        **emb)
