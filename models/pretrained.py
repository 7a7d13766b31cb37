"""Resolve `pretrained=` names to weights. (The registry lands with the checkpoints issue.)"""
from __future__ import annotations


def resolve_inception_weights(name: str):
    raise NotImplementedError(
        f"pretrained={name!r}: the model registry is not available yet; build the model without "
        f"pretrained= and load a converted file with models.serialization.load_state_dict_file")
