"""The embedding pipeline behind ``facenet embed / compare / evaluate-lfw``.

Two modes:

- crops (default): images are already face crops; each is resized to ``image_size`` (160),
  standardized as the model expects, and embedded. Decoding and resizing run in the DataLoader
  workers.
- detect: raw photos; the DataLoader workers decode, MTCNN (``models.detection.mtcnn``) crops the face on
  the main process, batched over equal-sized photos; a photo with no face is skipped with the
  reason "no face detected".

Standardization ('fixed' or 'prewhiten') comes from the model's registry entry with
``--pretrained`` (or a ``--weights`` file named as a registry entry's converted file), and
defaults to 'fixed' for any other weights file (the 2018 models); ``--standardization`` overrides.
"""
from __future__ import annotations

import inspect
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..common.atomic_io import atomic_write_bytes
from .datasets import MAX_PIXELS, NO_FACE, FaceDataset, crops_transform, make_loader
from ..hub.builder import ModelLoadError, model_from_state_dict  # noqa: F401 (re-exported)
from ..nets.inception_resnet_v1 import InceptionResNetV1
from ..common.paths import check_output
from .preprocessing import STANDARDIZATIONS, standardize, unfixed

DEFAULT_STANDARDIZATION = "fixed"


@dataclass
class LoadedModel:
    model: InceptionResNetV1
    standardization: str
    name: str                   # weights file path or registry name
    embedding_size: int


def load_model(weights=None, pretrained: str | None = None, device=None,
               standardization: str | None = None) -> LoadedModel:
    """Load from a weights file (.pt / .safetensors) or a registry name; pick the standardization."""
    if (weights is None) == (pretrained is None):
        raise ModelLoadError("give exactly one of a weights file (--weights FILE) or a registry name (--pretrained NAME)")
    if standardization is not None and standardization not in STANDARDIZATIONS:
        raise ModelLoadError(f"unknown standardization {standardization!r}; expected one of {STANDARDIZATIONS}")
    if weights is not None:
        from ..hub.serialization import load_state_dict_file

        try:
            sd = load_state_dict_file(weights)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise ModelLoadError(str(e)) from e
        model = model_from_state_dict(sd, source=str(weights))
        entry = _registry_entry_for_file(weights)
        expected = getattr(entry, "preprocessing", None) or DEFAULT_STANDARDIZATION
        if entry is not None and standardization is not None and standardization != expected:
            print(f"warning: {weights} is named as {entry.id}, which expects '{expected}' standardization; "
                  f"using '{standardization}' as asked", file=sys.stderr)
        std = standardization or expected
        name = str(weights)
    else:
        from ..hub.pretrained import resolve_inception_weights

        try:
            entry, sd = resolve_inception_weights(pretrained)
        except (KeyError, ValueError, OSError, NotImplementedError) as e:
            msg = str(e.args[0] if e.args else e)
            raise ModelLoadError(msg if str(pretrained) in msg else f"--pretrained {pretrained}: {msg}") from e
        model = model_from_state_dict(sd, source=f"pretrained {pretrained!r}")
        expected = getattr(entry, "preprocessing", None) or DEFAULT_STANDARDIZATION
        if standardization is not None and standardization != expected:
            print(f"warning: {pretrained} expects '{expected}' standardization; using '{standardization}' "
                  f"as asked", file=sys.stderr)
        std = standardization or expected
        name = str(getattr(entry, "name", pretrained))
    if device is not None:
        model.to(device)
    return LoadedModel(model=model, standardization=std, name=name, embedding_size=model.embedding_size)


def _registry_entry_for_file(path):
    """The registry entry a converted file's name follows (e.g. ``20170512-110547-ms-celeb-1m.pt``),
    so a bare ``--weights`` file of a 2017 model still gets 'prewhiten'; None when unknown."""
    try:
        from ..hub.pretrained import default_registry

        return default_registry().for_file(Path(path))
    except Exception:   # no registry in this installation, or an older one: fall back to the default
        return None


class Detector:
    """MTCNN wrapped to return raw (3, S, S) float crops in [0, 255], or None where no face.

    Built against facenet-pytorch's interface: ``MTCNN(image_size, margin, post_process, device)``,
    ``mtcnn(list_of_images)`` → one tensor or None per image. Equal-sized photos are detected as
    one batch; others one group per size.
    """

    def __init__(self, image_size: int = 160, margin: int = 14, device=None, mtcnn=None,
                 selection_method: str | None = None):
        if mtcnn is None:
            try:
                from ..detection.mtcnn import MTCNN
            except ImportError as e:
                raise ModelLoadError(f"--detect needs MTCNN (models/detection/mtcnn.py): {e}") from e
            kwargs = dict(image_size=image_size, margin=margin, device=device)
            params = inspect.signature(MTCNN).parameters
            if "post_process" in params:
                kwargs["post_process"] = False
            if "keep_all" in params:
                kwargs["keep_all"] = False
            if selection_method is not None and "selection_method" in params:
                kwargs["selection_method"] = selection_method
            try:
                mtcnn = MTCNN(**kwargs)
            except (FileNotFoundError, ValueError) as e:
                raise ModelLoadError(f"--detect: cannot build MTCNN ({e})") from e
            self.raw = "post_process" in params
        else:
            self.raw = not getattr(mtcnn, "post_process", False)
        self.mtcnn = mtcnn

    def __call__(self, images: Sequence) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(getattr(im, "size", None) or np.shape(im)), []).append(i)
        for idx in groups.values():
            batch = [images[i] for i in idx]
            faces = self.mtcnn(batch) if len(batch) > 1 else [self.mtcnn(batch[0])]
            for i, f in zip(idx, faces):
                if f is None:
                    continue
                f = f.detach().to("cpu", torch.float32)
                if f.ndim == 4:      # keep_all-style output: take the first (best) face
                    if len(f) == 0:
                        continue
                    f = f[0]
                out[i] = f if self.raw else unfixed(f)
        return out


@dataclass
class EmbedResult:
    paths: list[str]
    labels: list[str]
    embeddings: np.ndarray                                   # float32 (N, D)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    root: str | None = None
    meta: dict = field(default_factory=dict)

    def save(self, path) -> None:
        """Write an ``.npz`` (no pickles) atomically: see ``load_embeddings``."""
        path = check_output(path, (".npz",))
        root = self.root
        rel = [_rel(p, root) for p in self.paths]
        classes = sorted(set(self.labels))
        ids = {c: i for i, c in enumerate(classes)}
        arrays = dict(
            paths=np.array(rel, dtype=np.str_),
            labels=np.array(self.labels, dtype=np.str_),
            label_ids=np.array([ids[x] for x in self.labels], dtype=np.int64),
            classes=np.array(classes, dtype=np.str_),
            embeddings=np.asarray(self.embeddings, dtype=np.float32).reshape(len(self.paths), -1),
            skipped_paths=np.array([_rel(p, root) for p, _ in self.skipped], dtype=np.str_),
            skipped_reasons=np.array([r for _, r in self.skipped], dtype=np.str_),
            root=np.array(root or "", dtype=np.str_),
            meta=np.array(json.dumps(self.meta, sort_keys=True), dtype=np.str_),
        )
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())   # unique temp name: concurrent saves cannot mix


def _rel(p: str, root: str | None) -> str:
    """``p`` relative to ``root`` (POSIX separators) when it lies under it, else unchanged."""
    if not root:
        return str(p)
    try:
        return Path(os.path.abspath(p)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return str(p)


def load_embeddings(path) -> EmbedResult:
    """Read a ``facenet embed`` .npz back (paths joined to ``root``)."""
    with np.load(path, allow_pickle=False) as z:
        root = str(z["root"]) or None
        paths = [str(Path(root) / p) if root else str(p) for p in z["paths"]]
        return EmbedResult(paths=paths, labels=[str(x) for x in z["labels"]], embeddings=z["embeddings"],
                           skipped=list(zip(map(str, z["skipped_paths"]), map(str, z["skipped_reasons"]))),
                           root=root, meta=json.loads(str(z["meta"])))


ENGINES = ("fused", "plain", "graph", "onnxruntime")


def _isa_class() -> str:
    from ..engines.cpu_caps import current

    return current().isa_class


class Embedder:
    """Embeds folders, path lists or in-memory crops with one model.

    ``detect=True`` crops faces with MTCNN (``margin`` in crop pixels; ``selection_method`` picks
    the face when there are several, MTCNN's default: the largest); ``detector`` replaces MTCNN
    with any callable taking a list of RGB PIL images and returning a (3, S, S) [0, 255] crop or
    None for each. ``flip=True`` appends the embedding of the horizontally flipped crop (2*D values per image,
    as Sandberg's ``--use_flipped_images``).
    ``engine``: 'fused' (default) runs ``model.fuse()`` -- BatchNorm folded, the same embeddings as the
    plain model to ~1e-6, its engine chosen for this CPU and ``batch_size`` by models/engines/engine_rules.py
    (onnxruntime where it is installed and measured fastest, else oneDNN Graph for small batches and the
    eager fused model for large ones); 'plain' runs the model as given; 'graph' runs
    ``model.fuse(impl='graph')`` (CPU: oneDNN Graph, compiled once for the batch shape, ~3-7 s);
    'onnxruntime' runs ``model.fuse(impl='onnxruntime')`` (CPU, the ``onnxruntime`` extra). With oneDNN Graph
    short batches are padded to the batch size (one compile).
    ``engine_decision`` (also in ``meta()``) says which engine runs and why.
    """

    def __init__(self, model: InceptionResNetV1, standardization: str = DEFAULT_STANDARDIZATION, device=None,
                 batch_size: int = 64, num_workers: int = 0, image_size: int = 160, detect: bool = False,
                 detector: Callable | None = None, margin: int = 14, selection_method: str | None = None,
                 flip: bool = False, engine: str = "fused",
                 progress: bool = False, max_pixels: int | None = MAX_PIXELS):
        if standardization not in STANDARDIZATIONS:
            raise ValueError(f"unknown standardization {standardization!r}; expected one of {STANDARDIZATIONS}")
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        if engine != "plain":   # fused on the target device (oneDNN on CPU, ATen convs on CUDA)
            self.model = self.model.fuse(impl=engine if engine in ("graph", "onnxruntime") else "auto")
            self.engine_decision = self.model.decision_for(batch_size).as_dict()
        else:
            self.engine_decision = dict(engine="plain", reason="engine 'plain' given: the model as converted",
                                        isa_class=_isa_class(), batch_size=batch_size)
        self.engine = engine
        self.standardization = standardization
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.detect = detect or detector is not None
        self.margin = margin
        self.selection_method = selection_method
        self.flip = flip
        self.progress = progress
        self.max_pixels = max_pixels
        self._detector = detector

    @property
    def detector(self):
        if self._detector is None:
            self._detector = Detector(self.image_size, self.margin, device=self.device,
                                      selection_method=self.selection_method)
        return self._detector

    @torch.inference_mode()
    def embed_tensor(self, x: torch.Tensor) -> np.ndarray:
        """(N, 3, S, S) standardized crops → float32 (N, D) (or (N, 2D) with flip)."""
        if len(x) == 0:
            d = self.model.embedding_size * (2 if self.flip else 1)
            return np.zeros((0, d), np.float32)
        x = x.to(self.device, non_blocking=True)
        emb = self._run(x)
        if self.flip:
            emb = torch.cat([emb, self._run(torch.flip(x, dims=[-1]))], dim=1)
        return emb.float().cpu().numpy()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if self.engine_decision["engine"] == "graph" and n < self.batch_size:
            # a short (last) batch is padded to the batch size: one compiled shape, not a new
            # compile of several seconds; images are independent, so the padding can't change them
            x = torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))])
        return self.model(x)[:n]

    def embed_crops(self, images: Sequence) -> np.ndarray:
        """In-memory RGB crops (PIL images or HWC uint8 arrays) → embeddings, in order."""
        from PIL import Image

        t = crops_transform(self.image_size, self.standardization)
        xs = [t(im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, np.uint8))) for im in images]
        out = [self.embed_tensor(torch.stack(xs[i:i + self.batch_size])) for i in range(0, len(xs), self.batch_size)]
        return np.concatenate(out) if out else self.embed_tensor(torch.empty(0))

    def dataset(self, root_or_paths, labels=None, strict: bool = False) -> FaceDataset:
        transform = None if self.detect else crops_transform(self.image_size, self.standardization)
        return FaceDataset(root_or_paths, transform=transform, labels=labels, strict=strict,
                           max_pixels=self.max_pixels)

    def embed_dataset(self, ds: FaceDataset, desc: str = "embed") -> EmbedResult:
        from tqdm import tqdm

        loader = make_loader(ds, batch_size=self.batch_size, num_workers=self.num_workers, device=self.device)
        paths: list[str] = []
        labels: list[str] = []
        chunks: list[np.ndarray] = []
        with tqdm(total=len(ds), unit="img", desc=desc, disable=not self.progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for batch in loader:
                bpaths = list(batch.paths)
                blabels = [ds.classes[i] for i in batch.labels.tolist()]
                if self.detect:
                    faces = self.detector(batch.images)
                    keep = [i for i, f in enumerate(faces) if f is not None]
                    ds.record_failures([(bpaths[i], NO_FACE) for i, f in enumerate(faces) if f is None])
                    x = (standardize(torch.stack([faces[i] for i in keep]), self.standardization)
                         if keep else torch.empty(0))
                    bpaths = [bpaths[i] for i in keep]
                    blabels = [blabels[i] for i in keep]
                else:
                    x = batch.images
                chunks.append(self.embed_tensor(x))
                paths += bpaths
                labels += blabels
                bar.update(len(batch) + len(batch.failed))
        emb = np.concatenate(chunks) if chunks else self.embed_tensor(torch.empty(0))
        return EmbedResult(paths=paths, labels=labels, embeddings=emb, skipped=list(ds.skipped),
                           root=os.path.abspath(ds.root) if ds.root else None, meta=self.meta())

    def embed_dir(self, root, strict: bool = False) -> EmbedResult:
        return self.embed_dataset(self.dataset(root, strict=strict))

    def embed_paths(self, paths: Sequence, labels=None, strict: bool = False) -> EmbedResult:
        return self.embed_dataset(self.dataset(list(paths), labels=labels, strict=strict))

    def meta(self) -> dict:
        return dict(standardization=self.standardization, engine=self.engine, engine_decision=self.engine_decision,
                    image_size=self.image_size,
                    detect=self.detect, margin=self.margin if self.detect else None, flip=self.flip,
                    embedding_size=self.model.embedding_size * (2 if self.flip else 1))
