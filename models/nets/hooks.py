"""The two services a net asks of the rest of the package, filled in by the packages that provide
them (models/__init__.py wires them on import): `fuse` from models/engines, `resolve_pretrained`
from models/hub. The nets import neither, so there is no import cycle between the architecture,
its fast engines and the weights hub. Torch-free."""
from __future__ import annotations

from typing import Any, Callable

_fuse: Callable[..., Any] | None = None
_resolve_pretrained: Callable[..., Any] | None = None


def provide(*, fuse: Callable[..., Any] | None = None, resolve_pretrained: Callable[..., Any] | None = None) -> None:
    """Register the engine builder and/or the pretrained-weights resolver."""
    global _fuse, _resolve_pretrained
    if fuse is not None:
        _fuse = fuse
    if resolve_pretrained is not None:
        _resolve_pretrained = resolve_pretrained


def _missing(what: str, package: str) -> RuntimeError:
    return RuntimeError(f"{what} is provided by facenet_tf2pt.models.{package}, which was not loaded; "
                        f"import facenet_tf2pt.models first")


def fuse(model, **options):
    """model.fuse(...): the inference engine registered by models/engines."""
    if _fuse is None:
        raise _missing("InceptionResNetV1.fuse()", "engines")
    return _fuse(model, **options)


def resolve_pretrained(pretrained, embedding_size: int, num_classes: int | None):
    """InceptionResNetV1(pretrained=...): (state_dict, embedding_size, num_classes) from models/hub."""
    if _resolve_pretrained is None:
        raise _missing("InceptionResNetV1(pretrained=...)", "hub")
    return _resolve_pretrained(pretrained, embedding_size, num_classes)
