"""Weights: the registry of known models (`registry.py`, data in checkpoints/registry.json), finding,
downloading and checking weight files (`pretrained.py`), safe loading (`serialization.py`) and the
builders that put a model and its weights together (`builder.py`). Importing this package does not
import torch."""


def resolve_pretrained(pretrained, embedding_size: int, num_classes: int | None):
    """InceptionResNetV1(pretrained=...)'s weights (models/hub/builder.py `resolve_pretrained`)."""
    from .builder import resolve_pretrained as resolve

    return resolve(pretrained, embedding_size, num_classes)
