"""TF -> PyTorch conversion of Sandberg's FaceNet models. TensorFlow is imported lazily."""
__version__ = "0.1.0"
