"""Builders: a model and its weights put together, the way torchvision's `resnet50(weights=...)`
and timm's `create_model(name, pretrained=True)` do. Constructing `InceptionResNetV1()` does no I/O;
these functions find, check and load the weights (models/hub/pretrained.py has the lookup order).

    get_model("inception_resnet_v1.vggface2")         # a registry id, name, tag or alias
    inception_resnet_v1(weights="20180402-114759")     # the same, with the model's own knobs
    inception_resnet_v1(weights="out/model.pt")        # a weights file (.pt or .safetensors)
    load_weights(model, "vggface2")                     # into a model built earlier
    list_models()                                       # every registry id

Loading is strict and checked before anything is allocated: every key and shape against the
architecture (sizes read from the file are bounded), every value finite (ModelLoadError names the
file and the key). `InceptionResNetV1(pretrained=...)` is the seed's shorthand over `resolve_pretrained`.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..nets.inception_resnet_v1 import InceptionResNetV1
from .registry import Entry, default_registry

__all__ = ["ModelLoadError", "check_state_dict_shapes", "get_model", "inception_resnet_v1", "list_models", "model_info",
           "load_weights", "model_from_state_dict", "resolve_pretrained", "state_dict_sizes"]

class ModelLoadError(ValueError):
    """A weights file that is not an InceptionResNetV1 state_dict, or does not fit one."""


MAX_EMBEDDING_SIZE = 4096      # FaceNet models are 128-d or 512-d; bounds what a file may ask for
MAX_CLASSES = 1_000_000         # MS-Celeb-1M has 100k identities


def state_dict_sizes(state_dict: dict, source: str) -> tuple[int, int | None]:
    """(embedding size, classes) read from the state_dict's shapes, within sane bounds."""
    w = state_dict.get("last_linear.weight")
    if w is None:
        raise ModelLoadError(f"{source}: not an InceptionResNetV1 state_dict (no 'last_linear.weight'; "
                             f"{len(state_dict)} keys)")
    features = InceptionResNetV1.FEATURES
    if w.ndim != 2 or w.shape[1] != features or not 1 <= w.shape[0] <= MAX_EMBEDDING_SIZE:
        raise ModelLoadError(f"{source}: last_linear.weight has shape {list(w.shape)}, expected "
                             f"[embedding_size <= {MAX_EMBEDDING_SIZE}, {features}]")
    emb = int(w.shape[0])
    logits = state_dict.get("logits.weight")
    if logits is None:
        return emb, None
    if logits.ndim != 2 or logits.shape[1] != emb or not 1 <= logits.shape[0] <= MAX_CLASSES:
        raise ModelLoadError(f"{source}: logits.weight has shape {list(logits.shape)}, expected "
                             f"[classes <= {MAX_CLASSES}, {emb}]")
    return emb, int(logits.shape[0])


def check_state_dict_shapes(state_dict: dict, source: str = "<state_dict>") -> tuple[int, int | None]:
    """Every key and shape against the architecture, before any model is allocated: the expected
    shapes come from a model built on the meta device (no memory). Returns (embedding size,
    classes); ModelLoadError lists missing, unexpected and mis-shaped keys."""
    emb, n_cls = state_dict_sizes(state_dict, source)
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in
                InceptionResNetV1(embedding_size=emb, num_classes=n_cls).state_dict().items()}
    problems = [f"missing {k}" for k in want if k not in state_dict]
    problems += [f"unexpected {k}" for k in state_dict if k not in want]
    problems += [f"{k} is {list(state_dict[k].shape)}, expected {list(shape)}" for k, shape in want.items()
                 if k in state_dict and tuple(state_dict[k].shape) != shape]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ModelLoadError(f"{source}: does not match InceptionResNetV1 ({shown})")
    return emb, n_cls


def model_from_state_dict(state_dict: dict, source: str = "<state_dict>") -> InceptionResNetV1:
    """Build an InceptionResNetV1 sized from the state_dict (embedding size, logits) and load it
    strictly; shapes and values are checked before the model is allocated."""
    from ..hub.serialization import check_tensor_values

    emb, n_cls = check_state_dict_shapes(state_dict, source)
    try:
        check_tensor_values(state_dict, source)
    except ValueError as e:
        raise ModelLoadError(str(e)) from None
    model = InceptionResNetV1(embedding_size=emb, num_classes=n_cls)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ModelLoadError(f"{source}: does not match InceptionResNetV1 ({' '.join(first[:2])[:300]})") from e
    return model.eval()


def _check_entry_args(entry, embedding_size: int, num_classes: int | None) -> tuple[int, int | None]:
    """A pretrained entry fixes the sizes; a conflicting explicit argument is an error."""
    if embedding_size not in (512, entry.embedding_size):
        raise ValueError(f"pretrained={entry.name!r} has embedding_size={entry.embedding_size}, "
                         f"not {embedding_size}")
    if num_classes is not None and num_classes != entry.num_classes:
        raise ValueError(f"pretrained={entry.name!r} has num_classes={entry.num_classes}; "
                         f"got num_classes={num_classes}. Leave it out, or load without pretrained= "
                         f"and replace .logits to fine-tune")
    return entry.embedding_size, entry.num_classes




def resolve_pretrained(pretrained: str | os.PathLike, embedding_size: int = 512,
                       num_classes: int | None = None, *, download: bool = True,
                       progress: bool = True) -> tuple[dict, int, int | None]:
    """(state_dict, embedding_size, num_classes) for `pretrained` (a registry name or a weights
    file); an explicit size that conflicts with the weights raises ValueError."""
    from .pretrained import resolve_inception_weights

    entry, weights = resolve_inception_weights(pretrained, download=download, progress=progress)
    embedding_size, num_classes = _check_entry_args(entry, embedding_size, num_classes)
    check_state_dict_shapes(weights, str(pretrained))
    return weights, embedding_size, num_classes


def inception_resnet_v1(weights: str | os.PathLike | None = None, *, classify: bool = False,
                        num_classes: int | None = None, embedding_size: int | None = None,
                        device: torch.device | str | None = None, download: bool = True,
                        progress: bool = True, **knobs: Any) -> InceptionResNetV1:
    """InceptionResNetV1 in eval mode, with `weights` (a registry id/name/tag/alias or a .pt or
    .safetensors file) loaded strictly, or randomly initialised when `weights` is None. The sizes
    come from the weights; an explicit `embedding_size` or `num_classes` that disagrees raises.
    `knobs` are the constructor's TF-matching options (`bn_eps`, `bn_momentum`, `dropout_prob`)."""
    if weights is None:
        model = InceptionResNetV1(classify=classify, num_classes=num_classes,
                                  embedding_size=512 if embedding_size is None else embedding_size, **knobs)
    else:
        state_dict, emb, n_cls = resolve_pretrained(weights, 512 if embedding_size is None else embedding_size,
                                                    num_classes, download=download, progress=progress)
        if embedding_size is not None and embedding_size != emb:
            raise ValueError(f"weights={str(weights)!r} are {emb}-d, not embedding_size={embedding_size}")
        model = InceptionResNetV1(classify=classify, num_classes=n_cls, embedding_size=emb, **knobs)
        model.load_state_dict(state_dict, strict=True)
    model.eval()
    return model.to(device) if device is not None else model


def load_weights(model: InceptionResNetV1, weights: str | os.PathLike, *, download: bool = True,
                 progress: bool = True) -> InceptionResNetV1:
    """Load `weights` (registry name or file) into `model` strictly, after checking every key,
    shape and value; the model's sizes must match the weights'. Returns the model."""
    state_dict, emb, n_cls = resolve_pretrained(weights, download=download, progress=progress)   # sizes from the file
    if emb != model.embedding_size or n_cls != model.num_classes:
        raise ModelLoadError(f"{weights}: weights for embedding_size={emb}, num_classes={n_cls}; the model has "
                             f"embedding_size={model.embedding_size}, num_classes={model.num_classes}")
    model.load_state_dict(state_dict, strict=True)
    return model


def list_models(arch: str | None = None) -> list[str]:
    """Registry ids (`arch.tag`), optionally of one architecture ('inception_resnet_v1', 'mtcnn')."""
    return sorted(e.id for e in default_registry() if arch is None or e.arch == arch)


def model_info(name: str) -> Entry:
    """The registry entry of `name` (id, name, tag or alias): sources, sizes, LFW accuracy,
    standardization, weight files and their sha256."""
    return default_registry().get(name)


def get_model(name: str, *, device: torch.device | str | None = None, download: bool = True,
              progress: bool = True, **kwargs: Any) -> nn.Module:
    """The registered model `name` with its weights, in eval mode: an InceptionResNetV1 for an
    Inception entry (`kwargs` as `inception_resnet_v1`), an MTCNN for 'mtcnn' (`kwargs` as MTCNN's)."""
    entry = model_info(name)
    if entry.arch == "inception_resnet_v1":
        return inception_resnet_v1(entry.id, device=device, download=download, progress=progress, **kwargs)
    if entry.arch == "mtcnn":
        from ..detection.mtcnn import MTCNN

        return MTCNN(device=device, **kwargs)
    raise ValueError(f"{name!r}: registry entry of unknown architecture {entry.arch!r}")
