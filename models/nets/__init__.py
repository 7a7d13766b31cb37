"""Recognition nets: Sandberg's Inception-ResNet-V1 (`inception_resnet_v1.py`). Architecture only:
no weights I/O and no inference engines are imported here (see `hooks.py`)."""
