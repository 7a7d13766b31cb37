"""Inception-ResNet-V1 as David Sandberg builds it for FaceNet, in PyTorch.

Attribute names (and so state_dict keys) match facenet-pytorch 2.6.0's `InceptionResnetV1`,
so weight files interchange with it under `strict=True`. Comments give the TF-slim scope each
module mirrors. TF-matching behaviour is explicit: `bn_eps=1e-3` (slim's epsilon), BatchNorm
`momentum = 1 - 0.995` (slim's decay), the L2 normalisation's epsilon of 1e-10 on the squared sum.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn

from . import hooks

# Sandberg's end points in graph order (his inception_resnet_v1.py); `forward_end_points` returns them.
END_POINTS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_3a_3x3", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "Conv2d_4b_3x3", "Mixed_5a", "Mixed_6a", "Mixed_6b", "Mixed_7a",
    "Mixed_8a", "Mixed_8b", "PreLogitsFlatten", "embeddings",
)

TF_BN_EPS = 1e-3          # slim.batch_norm epsilon in Sandberg's arg scope
TF_BN_MOMENTUM = 0.005    # 1 - decay (0.995)
TF_L2_EPS = 1e-10         # tf.nn.l2_normalize(..., epsilon=1e-10): bound on the squared norm


def l2_normalize(x: torch.Tensor, eps: float = TF_L2_EPS) -> torch.Tensor:
    """TF semantics: x * rsqrt(max(sum(x**2), eps)) along dim 1."""
    return x * torch.rsqrt(torch.clamp((x * x).sum(dim=1, keepdim=True), min=eps))


class BasicConv2d(nn.Module):
    """slim.conv2d with normalizer_fn=batch_norm (scale=False) and ReLU: conv (no bias) → BN → ReLU."""

    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0,
                 bn_eps=TF_BN_EPS, bn_momentum=TF_BN_MOMENTUM):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=bn_eps, momentum=bn_momentum, affine=True)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def _same(k: int | tuple[int, int]) -> int | tuple[int, int]:
    """TF 'SAME' padding for stride-1 odd kernels is symmetric k//2 per axis."""
    return (k[0] // 2, k[1] // 2) if isinstance(k, tuple) else k // 2


class Block35(nn.Module):
    """Repeat/block35_N (35x35 at 299 px; 17x17 at 160 px), residual scale 0.17."""

    def __init__(self, scale=0.17, **bn):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(256, 32, 1, **bn)                                   # Branch_0/Conv2d_1x1
        self.branch1 = nn.Sequential(BasicConv2d(256, 32, 1, **bn),                    # Branch_1/Conv2d_0a_1x1
                                     BasicConv2d(32, 32, 3, padding=_same(3), **bn))   # Branch_1/Conv2d_0b_3x3
        self.branch2 = nn.Sequential(BasicConv2d(256, 32, 1, **bn),                    # Branch_2/Conv2d_0a_1x1
                                     BasicConv2d(32, 32, 3, padding=_same(3), **bn),   # Branch_2/Conv2d_0b_3x3
                                     BasicConv2d(32, 32, 3, padding=_same(3), **bn))   # Branch_2/Conv2d_0c_3x3
        self.conv2d = nn.Conv2d(96, 256, 1, bias=True)                                 # Conv2d_1x1 (up)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        mixed = torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Block17(nn.Module):
    """Repeat_1/block17_N, residual scale 0.10."""

    def __init__(self, scale=0.10, **bn):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(896, 128, 1, **bn)                                        # Branch_0/Conv2d_1x1
        self.branch1 = nn.Sequential(BasicConv2d(896, 128, 1, **bn),                         # Branch_1/Conv2d_0a_1x1
                                     BasicConv2d(128, 128, (1, 7), padding=_same((1, 7)), **bn),  # Conv2d_0b_1x7
                                     BasicConv2d(128, 128, (7, 1), padding=_same((7, 1)), **bn))  # Conv2d_0c_7x1
        self.conv2d = nn.Conv2d(256, 896, 1, bias=True)                                      # Conv2d_1x1 (up)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        mixed = torch.cat((self.branch0(x), self.branch1(x)), 1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Block8(nn.Module):
    """Repeat_2/block8_N (scale 0.20, ReLU) and the final Block8 (scale 1.0, no ReLU)."""

    def __init__(self, scale=0.20, no_relu=False, **bn):
        super().__init__()
        self.scale = scale
        self.no_relu = no_relu
        self.branch0 = BasicConv2d(1792, 192, 1, **bn)                                        # Branch_0/Conv2d_1x1
        self.branch1 = nn.Sequential(BasicConv2d(1792, 192, 1, **bn),                         # Branch_1/Conv2d_0a_1x1
                                     BasicConv2d(192, 192, (1, 3), padding=_same((1, 3)), **bn),  # Conv2d_0b_1x3
                                     BasicConv2d(192, 192, (3, 1), padding=_same((3, 1)), **bn))  # Conv2d_0c_3x1
        self.conv2d = nn.Conv2d(384, 1792, 1, bias=True)                                      # Conv2d_1x1 (up)
        # Identity for the last block: one attribute in both cases, so torch.jit.script compiles it
        self.relu = nn.Identity() if no_relu else nn.ReLU(inplace=False)

    def forward(self, x):
        mixed = torch.cat((self.branch0(x), self.branch1(x)), 1)
        return self.relu(x + self.scale * self.conv2d(mixed))


class Mixed_6a(nn.Module):
    """Mixed_6a: reduction_a(k=192, l=192, m=256, n=384); all stride-2 ops VALID."""

    def __init__(self, **bn):
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, stride=2, **bn)                      # Branch_0/Conv2d_1a_3x3
        self.branch1 = nn.Sequential(BasicConv2d(256, 192, 1, **bn),                 # Branch_1/Conv2d_0a_1x1
                                     BasicConv2d(192, 192, 3, padding=_same(3), **bn),  # Branch_1/Conv2d_0b_3x3
                                     BasicConv2d(192, 256, 3, stride=2, **bn))       # Branch_1/Conv2d_1a_3x3
        self.branch2 = nn.MaxPool2d(3, stride=2)                                     # Branch_2/MaxPool_1a_3x3

    def forward(self, x):
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Mixed_7a(nn.Module):
    """Mixed_7a: reduction_b."""

    def __init__(self, **bn):
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(896, 256, 1, **bn),                 # Branch_0/Conv2d_0a_1x1
                                     BasicConv2d(256, 384, 3, stride=2, **bn))       # Branch_0/Conv2d_1a_3x3
        self.branch1 = nn.Sequential(BasicConv2d(896, 256, 1, **bn),                 # Branch_1/Conv2d_0a_1x1
                                     BasicConv2d(256, 256, 3, stride=2, **bn))       # Branch_1/Conv2d_1a_3x3
        self.branch2 = nn.Sequential(BasicConv2d(896, 256, 1, **bn),                 # Branch_2/Conv2d_0a_1x1
                                     BasicConv2d(256, 256, 3, padding=_same(3), **bn),  # Branch_2/Conv2d_0b_3x3
                                     BasicConv2d(256, 256, 3, stride=2, **bn))       # Branch_2/Conv2d_1a_3x3
        self.branch3 = nn.MaxPool2d(3, stride=2)                                     # Branch_3/MaxPool_1a_3x3

    def forward(self, x):
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class InceptionResNetV1(nn.Module):
    """FaceNet's Inception-ResNet-V1.

    Input: (N, 3, H, W) float, standardized as the weights expect (160x160 for Sandberg's
    models; any H, W >= 75). Output: (N, embedding_size) L2-normalized embeddings, or logits
    over `num_classes` when `classify` is True (settable after construction).

    Constructing it does no I/O. `pretrained` is the shorthand over the builders of
    models/hub/builder.py (`get_model`, `inception_resnet_v1(weights=...)`): a registry entry
    ('vggface2', 'casia-webface', '20180402-114759', ...) or a weights file, whose sizes then fix
    `embedding_size` and `num_classes` (a conflicting explicit value raises).
    """

    FEATURES = 1792   # channels of Block8, the input of the Bottleneck

    def __init__(self, pretrained: str | os.PathLike | None = None, classify: bool = False,
                 num_classes: int | None = None, embedding_size: int = 512,
                 dropout_prob: float = 0.6, device: torch.device | str | None = None,
                 bn_eps: float = TF_BN_EPS, bn_momentum: float = TF_BN_MOMENTUM):
        super().__init__()
        weights = None
        if pretrained is not None:   # the shorthand over models/hub/builder.py: I/O only when asked for
            weights, embedding_size, num_classes = hooks.resolve_pretrained(pretrained, embedding_size, num_classes)
        if classify and num_classes is None:
            raise ValueError("classify=True needs num_classes (or a pretrained entry that has Logits)")

        self.classify = classify
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)

        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2, **bn)               # Conv2d_1a_3x3 (VALID)
        self.conv2d_2a = BasicConv2d(32, 32, 3, stride=1, **bn)              # Conv2d_2a_3x3 (VALID)
        self.conv2d_2b = BasicConv2d(32, 64, 3, stride=1, padding=1, **bn)   # Conv2d_2b_3x3 (SAME)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)                          # MaxPool_3a_3x3 (VALID)
        self.conv2d_3b = BasicConv2d(64, 80, 1, stride=1, **bn)              # Conv2d_3b_1x1
        self.conv2d_4a = BasicConv2d(80, 192, 3, stride=1, **bn)             # Conv2d_4a_3x3 (VALID)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2, **bn)            # Conv2d_4b_3x3 (VALID)
        self.repeat_1 = nn.Sequential(*[Block35(0.17, **bn) for _ in range(5)])   # Repeat/block35_1..5
        self.mixed_6a = Mixed_6a(**bn)                                            # Mixed_6a
        self.repeat_2 = nn.Sequential(*[Block17(0.10, **bn) for _ in range(10)])  # Repeat_1/block17_1..10
        self.mixed_7a = Mixed_7a(**bn)                                            # Mixed_7a
        self.repeat_3 = nn.Sequential(*[Block8(0.20, **bn) for _ in range(5)])    # Repeat_2/block8_1..5
        self.block8 = Block8(1.0, no_relu=True, **bn)                             # Block8
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)      # AvgPool_1a_8x8: VALID pool over the whole map
        self.dropout = nn.Dropout(dropout_prob)
        self.last_linear = nn.Linear(self.FEATURES, embedding_size, bias=False)            # Bottleneck/weights
        self.last_bn = nn.BatchNorm1d(embedding_size, eps=bn_eps, momentum=bn_momentum, affine=True)
        if num_classes is not None:
            self.logits = nn.Linear(embedding_size, num_classes)                  # Logits (outside the scope)

        if weights is not None:
            self.load_state_dict(weights, strict=True)
        self.eval()
        if device is not None:
            self.to(device)

    def _stages(self):
        """(end point name, module) pairs up to Mixed_8b, in graph order."""
        return (
            ("Conv2d_1a_3x3", self.conv2d_1a), ("Conv2d_2a_3x3", self.conv2d_2a),
            ("Conv2d_2b_3x3", self.conv2d_2b), ("MaxPool_3a_3x3", self.maxpool_3a),
            ("Conv2d_3b_1x1", self.conv2d_3b), ("Conv2d_4a_3x3", self.conv2d_4a),
            ("Conv2d_4b_3x3", self.conv2d_4b), ("Mixed_5a", self.repeat_1),
            ("Mixed_6a", self.mixed_6a), ("Mixed_6b", self.repeat_2),
            ("Mixed_7a", self.mixed_7a), ("Mixed_8a", self.repeat_3), ("Mixed_8b", self.block8),
        )

    def prelogits(self, x: torch.Tensor) -> torch.Tensor:
        """The Bottleneck output (after its BatchNorm), before normalization."""
        # written out (not a loop over _stages()) so that torch.jit.script compiles it
        x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(self.maxpool_3a(self.conv2d_2b(self.conv2d_2a(
            self.conv2d_1a(x)))))))
        x = self.block8(self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x))))))
        x = self.avgpool_1a(x).flatten(1)
        return self.last_bn(self.last_linear(self.dropout(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelogits(x)
        if self.classify:
            if not hasattr(self, "logits"):
                raise RuntimeError("classify=True but this model has no logits layer (num_classes=None)")
            return self.logits(x)
        return l2_normalize(x)

    def fuse(self, dtype: torch.dtype = torch.float32, **options) -> nn.Module:
        """An inference-only copy with BatchNorm folded into the convs, channels_last, prepacked
        oneDNN convs (models/engines/fused.py `fuse_inception` documents `options`). float32 in and
        out, also for bfloat16. The engine is looked up through `models.nets.hooks`, so this
        module never imports the engines."""
        return hooks.fuse(self, dtype=dtype, **options)

    @torch.no_grad()
    def forward_end_points(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Every Sandberg end point's activation (NCHW), then 'embeddings'."""
        out = OrderedDict()
        for name, module in self._stages():
            x = module(x)
            out[name] = x
        x = self.avgpool_1a(x).flatten(1)
        out["PreLogitsFlatten"] = x
        out["embeddings"] = l2_normalize(self.last_bn(self.last_linear(self.dropout(x))))
        return out


InceptionResnetV1 = InceptionResNetV1  # facenet-pytorch's spelling
