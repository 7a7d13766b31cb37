"""facenet-tf2pt: David Sandberg's TensorFlow FaceNet models (Inception-ResNet-V1, MTCNN) in PyTorch.

The repository root is this package (pyproject.toml maps it onto `facenet_tf2pt`, the way
facenet-pytorch maps its root): `facenet_tf2pt.models` (pure PyTorch), `facenet_tf2pt.converter`
(TF -> PyTorch conversion and parity checks; TensorFlow imported lazily) and
`facenet_tf2pt.checkpoints` (the registry, committed MTCNN weights, manifest and reports).

The public API is re-exported here and imported on first use, so `import facenet_tf2pt` is cheap:

    from facenet_tf2pt import InceptionResNetV1, MTCNN, get_model, fixed_image_standardization
    model = get_model("inception_resnet_v1.vggface2")   # or InceptionResNetV1(pretrained="vggface2")
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["END_POINTS", "InceptionResNetV1", "InceptionResnetV1", "MTCNN", "ModelLoadError", "__version__",
           "fixed_image_standardization", "get_model", "inception_resnet_v1", "list_models", "load_weights",
           "model_info", "prewhiten", "tune_malloc"]
_EXPORTS = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:
    from .models import (END_POINTS, MTCNN, InceptionResNetV1, InceptionResnetV1, ModelLoadError,
                         fixed_image_standardization, get_model, inception_resnet_v1, list_models, load_weights,
                         model_info, prewhiten, tune_malloc)


def __getattr__(name: str):
    if name in _EXPORTS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
