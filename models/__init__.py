"""Pure-PyTorch FaceNet models and tools. Never imports TensorFlow or `converter`.

The model classes are imported on first use (PEP 562), so that torch-free helpers such as
`models.atomic_io` can be used by the converter without paying for `import torch` (~1 s).
"""
__all__ = ["END_POINTS", "InceptionResNetV1", "InceptionResnetV1"]


def __getattr__(name: str):
    if name in __all__:
        from . import inception_resnet_v1

        return getattr(inception_resnet_v1, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
