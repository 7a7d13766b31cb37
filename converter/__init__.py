"""TF -> PyTorch conversion of Sandberg's FaceNet models. TensorFlow is imported lazily."""
from .. import __version__  # noqa: F401 (the package version, recorded in the files written)
