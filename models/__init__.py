"""Pure-PyTorch FaceNet models and tools. Never imports TensorFlow or `converter`."""
from .inception_resnet_v1 import END_POINTS, InceptionResNetV1, InceptionResnetV1

__all__ = ["END_POINTS", "InceptionResNetV1", "InceptionResnetV1"]
