"""The det*.npy -> PyTorch table for MTCNN, as data.

Each row: (net, source layer, source param, source shape, PyTorch key, transform name).
The source names are those in Sandberg's det1/det2/det3.npy (Caffe layer names; TF shapes).

Transforms:
- ``caffe_conv``: the kernels came from Caffe, whose height and width are swapped relative to TF
  (Sandberg feeds the nets transposed images). Stored as [a, b, in, out] with ``a`` along the image
  width: to PyTorch's [out, in, H, W] with ``permute(3, 2, 1, 0)``.
- ``dense``: [in, out] -> [out, in]. The ``in`` axis is in (W, H, C) order for the first dense layer
  of R-Net and O-Net, which is why their forward passes flatten in that order.
- ``identity``: biases and PReLU slopes.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class Row(NamedTuple):
    net: str
    src_layer: str
    src_param: str
    src_shape: tuple[int, ...]
    pt_key: str
    transform: str


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "caffe_conv": lambda a: np.transpose(a, (3, 2, 1, 0)),
    "dense": lambda a: np.transpose(a, (1, 0)),
    "identity": lambda a: a,
}


def _conv(net, layer, pt, kh, kw, cin, cout):
    return [
        Row(net, layer, "weights", (kh, kw, cin, cout), f"{pt}.weight", "caffe_conv"),
        Row(net, layer, "biases", (cout,), f"{pt}.bias", "identity"),
    ]


def _dense(net, layer, pt, cin, cout):
    return [
        Row(net, layer, "weights", (cin, cout), f"{pt}.weight", "dense"),
        Row(net, layer, "biases", (cout,), f"{pt}.bias", "identity"),
    ]


def _prelu(net, layer, pt, c):
    return [Row(net, layer, "alpha", (c,), f"{pt}.weight", "identity")]


MTCNN_TABLE: tuple[Row, ...] = tuple(
    # P-Net, det1.npy
    _conv("pnet", "conv1", "conv1", 3, 3, 3, 10)
    + _prelu("pnet", "PReLU1", "prelu1", 10)
    + _conv("pnet", "conv2", "conv2", 3, 3, 10, 16)
    + _prelu("pnet", "PReLU2", "prelu2", 16)
    + _conv("pnet", "conv3", "conv3", 3, 3, 16, 32)
    + _prelu("pnet", "PReLU3", "prelu3", 32)
    + _conv("pnet", "conv4-1", "conv4_1", 1, 1, 32, 2)
    + _conv("pnet", "conv4-2", "conv4_2", 1, 1, 32, 4)
    # R-Net, det2.npy
    + _conv("rnet", "conv1", "conv1", 3, 3, 3, 28)
    + _prelu("rnet", "prelu1", "prelu1", 28)
    + _conv("rnet", "conv2", "conv2", 3, 3, 28, 48)
    + _prelu("rnet", "prelu2", "prelu2", 48)
    + _conv("rnet", "conv3", "conv3", 2, 2, 48, 64)
    + _prelu("rnet", "prelu3", "prelu3", 64)
    + _dense("rnet", "conv4", "dense4", 576, 128)
    + _prelu("rnet", "prelu4", "prelu4", 128)
    + _dense("rnet", "conv5-1", "dense5_1", 128, 2)
    + _dense("rnet", "conv5-2", "dense5_2", 128, 4)
    # O-Net, det3.npy
    + _conv("onet", "conv1", "conv1", 3, 3, 3, 32)
    + _prelu("onet", "prelu1", "prelu1", 32)
    + _conv("onet", "conv2", "conv2", 3, 3, 32, 64)
    + _prelu("onet", "prelu2", "prelu2", 64)
    + _conv("onet", "conv3", "conv3", 3, 3, 64, 64)
    + _prelu("onet", "prelu3", "prelu3", 64)
    + _conv("onet", "conv4", "conv4", 2, 2, 64, 128)
    + _prelu("onet", "prelu4", "prelu4", 128)
    + _dense("onet", "conv5", "dense5", 1152, 256)
    + _prelu("onet", "prelu5", "prelu5", 256)
    + _dense("onet", "conv6-1", "dense6_1", 256, 2)
    + _dense("onet", "conv6-2", "dense6_2", 256, 4)
    + _dense("onet", "conv6-3", "dense6_3", 256, 10)
)


def rows_for(net: str) -> tuple[Row, ...]:
    return tuple(r for r in MTCNN_TABLE if r.net == net)
