"""Torch-free helpers shared by every part of the package and by the converter: the output-path
rules and guarded reads (`paths.py`), atomic writers (`atomic_io.py`), the version (`version.py`)."""
