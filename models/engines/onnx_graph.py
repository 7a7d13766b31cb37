"""The folded InceptionResNetV1 (a FusedInceptionResNetV1 from fused.py) written as an ONNX graph, in
memory, for the onnxruntime engine (onnxruntime_engine.py).

The graph is the backbone and the bottleneck: input (N, 3, H, W) float32 -> prelogits (N, E). Every
node comes from one module of the fused model, weights as they are there (BatchNorm and the residual
scales already folded, float32): FusedConv -> Conv (+ Add of the block input) (+ Relu), MaxPool2d ->
MaxPool, a block's branches -> Concat, the head -> GlobalAveragePool, Flatten, Gemm. So the graph
computes what the eager fused model computes; onnxruntime then applies its own fusions and layouts.
No torch.onnx: writing the ~250 nodes directly takes ~0.3 s (the torch exporter ~9 s).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .fused import FusedConv, FusedInceptionResNetV1, FusedMixed
from .onnxruntime_engine import INPUT, OUTPUT

__all__ = ["prelogits_onnx", "ONNX_OPSET"]

ONNX_OPSET = 17


class _Graph:
    """Nodes and initializers in the order they are added; every value gets a fresh name."""

    def __init__(self):
        import onnx  # the `onnxruntime` extra; checked by the caller (cpu_caps.onnxruntime)

        self.onnx = onnx
        self.nodes, self.weights, self._count = [], [], 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def constant(self, array: np.ndarray) -> str:
        name = self._name("w")
        self.weights.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self._name(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], **attrs))
        return out


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(t) for t in v]


def _conv(g: _Graph, conv: FusedConv, x: str, add: str | None = None) -> str:
    weight = conv.weight.detach().float().contiguous().cpu().numpy()   # OIHW, whatever the memory format
    ph, pw = conv.padding
    y = g.node("Conv", [x, g.constant(weight), g.constant(conv.bias.detach().float().cpu().numpy())],
               kernel_shape=list(weight.shape[2:]), strides=list(conv.stride), pads=[ph, pw, ph, pw])
    if add is not None:          # a residual block's up conv: x + (scale-folded conv), then ReLU
        y = g.node("Add", [y, add])
    return g.node("Relu", [y]) if conv.relu else y


def _maxpool(g: _Graph, pool: nn.MaxPool2d, x: str) -> str:
    if _pair(pool.padding) != [0, 0] or _pair(pool.dilation) != [1, 1] or pool.ceil_mode:
        raise ValueError(f"unexpected pooling {pool}: only VALID max pooling is written to ONNX")
    return g.node("MaxPool", [x], kernel_shape=_pair(pool.kernel_size), strides=_pair(pool.stride))


def _module(g: _Graph, m: nn.Module, x: str) -> str:
    if isinstance(m, FusedConv):
        return _conv(g, m, x)
    if isinstance(m, nn.MaxPool2d):
        return _maxpool(g, m, x)
    if isinstance(m, nn.Identity):
        return x
    if isinstance(m, nn.Sequential):
        for child in m:
            x = _module(g, child, x)
        return x
    if isinstance(m, FusedMixed):      # Mixed_5b.. / Block35, Block17, Block8: branches, concat, up conv
        if m.head is not None:
            raise ValueError("a fused model with merged 1x1 heads (merge_1x1=True) is not written to ONNX")
        outs = [_module(g, path, x) for path in m.paths]
        y = outs[0] if len(outs) == 1 else g.node("Concat", outs, axis=1)
        return y if m.up is None else _conv(g, m.up, y, add=x)
    raise TypeError(f"no ONNX form for {type(m).__name__} in a fused InceptionResNetV1")


def prelogits_onnx(fused: FusedInceptionResNetV1) -> bytes:
    """The serialized ONNX model of `fused`'s prelogits (float32 weights, dynamic N, H, W)."""
    if fused.dtype != torch.float32:
        raise ValueError(f"only a float32 fused model is written to ONNX, not {fused.dtype}")
    g = _Graph()
    x = _module(g, fused.conv_in, INPUT)        # Conv2d_1a_3x3
    x = _module(g, fused.stem, x)               # Conv2d_2a_3x3 .. Conv2d_4b_3x3
    x = _module(g, fused.blocks, x)             # Repeat, Mixed_6a, Repeat_1, Mixed_7a, Repeat_2, Block8
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])])          # AvgPool_1a_8x8
    bottleneck = fused.bottleneck               # Bottleneck (+ its BatchNorm, folded)
    g.nodes.append(g.onnx.helper.make_node(
        "Gemm", [x, g.constant(bottleneck.weight.detach().float().cpu().numpy()),
                 g.constant(bottleneck.bias.detach().float().cpu().numpy())], [OUTPUT], transB=1))
    h = g.onnx.helper
    f32 = g.onnx.TensorProto.FLOAT
    graph = h.make_graph(g.nodes, "inception_resnet_v1_prelogits",
                         [h.make_tensor_value_info(INPUT, f32, ["N", 3, "H", "W"])],
                         [h.make_tensor_value_info(OUTPUT, f32, ["N", bottleneck.out_features])], g.weights)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", ONNX_OPSET)], producer_name="facenet_tf2pt")
    return model.SerializeToString()
