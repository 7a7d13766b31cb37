"""Pure-PyTorch FaceNet: the nets, their fast engines, detection, data and evaluation, the weights
hub and the `facenet` CLI, one subpackage each (see the README's Architecture). Never imports
TensorFlow or `facenet_tf2pt.converter`.

Importing this package wires the nets to the services they use without importing them
(models/nets/hooks.py): `model.fuse()` to models/engines, `pretrained=` to models/hub. Both are
torch-free here; the classes below are imported on first use (PEP 562), so that torch-free
helpers (models/common) load without paying for `import torch`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import engines, hub
from .nets import hooks

hooks.provide(fuse=engines.fuse, resolve_pretrained=hub.resolve_pretrained)

_EXPORTS = {
    "InceptionResNetV1": "nets.inception_resnet_v1", "InceptionResnetV1": "nets.inception_resnet_v1",
    "END_POINTS": "nets.inception_resnet_v1",
    "MTCNN": "detection.mtcnn",
    "fixed_image_standardization": "data.preprocessing", "prewhiten": "data.preprocessing",
    "get_model": "hub.builder", "inception_resnet_v1": "hub.builder", "list_models": "hub.builder",
    "load_weights": "hub.builder", "model_info": "hub.builder", "ModelLoadError": "hub.builder",
    "tune_malloc": "common.malloc",
}
__all__ = ["END_POINTS", "InceptionResNetV1", "InceptionResnetV1", "MTCNN", "ModelLoadError",
           "fixed_image_standardization", "get_model", "inception_resnet_v1", "list_models", "load_weights",
           "model_info", "prewhiten", "tune_malloc"]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:
    from .common.malloc import tune_malloc
    from .data.preprocessing import fixed_image_standardization, prewhiten
    from .detection.mtcnn import MTCNN
    from .hub.builder import (ModelLoadError, get_model, inception_resnet_v1, list_models, load_weights,
                              model_info)
    from .nets.inception_resnet_v1 import END_POINTS, InceptionResNetV1, InceptionResnetV1


def __getattr__(name: str):
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
