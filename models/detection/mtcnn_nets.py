"""The three MTCNN networks (P-, R- and O-Net) in PyTorch.

Attribute names, and so state_dict keys, are facenet-pytorch 2.6.0's, so weights load both ways
with ``strict=True``. The networks take images in the usual NCHW orientation, values already
normalized to ``(x - 127.5) / 128``. The Caffe height/width swap of the original weights is
folded into the converted conv kernels; the only trace left in the forward pass is that R-Net and
O-Net flatten their last feature map in (W, H, C) order before the first dense layer, which is
the order the converted dense weights expect.

Pooling: the original uses TensorFlow ``SAME`` max pools (and two ``VALID`` ones). For every
size these nets see, ``ceil_mode=True`` without padding gives the same windows.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    # (N, C, H, W) -> (N, W, H, C) -> (N, W*H*C): the order of the Caffe/TF dense weights
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class CeilMaxPool2d(nn.Module):
    """``nn.MaxPool2d(kernel, stride, ceil_mode=True)`` (no padding) as a running maximum of strided
    slices, rows then columns. A maximum involves no rounding, so the result is identical; on the
    P-Net's large channels-last maps it is several times faster than ATen's pooling, which also
    computes the argmax indices (on R-Net's and O-Net's many small maps it is slower: not used). Windows are PyTorch's: ``ceil((size - kernel) / stride) + 1`` of them,
    less one if the last would start past the input; the ragged edge is padded with -inf."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def _windows(self, size: int) -> int:
        out = -(-(size - self.kernel) // self.stride) + 1
        return out - 1 if (out - 1) * self.stride >= size else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel, self.stride
        oh, ow = self._windows(x.shape[2]), self._windows(x.shape[3])
        need_h, need_w = (oh - 1) * s + k, (ow - 1) * s + k
        if need_h > x.shape[2] or need_w > x.shape[3]:
            x = F.pad(x, (0, max(0, need_w - x.shape[3]), 0, max(0, need_h - x.shape[2])), value=float("-inf"))
        rows = x[:, :, 0: (oh - 1) * s + 1: s]
        for i in range(1, k):
            rows = torch.maximum(rows, x[:, :, i: i + (oh - 1) * s + 1: s])
        out = rows[..., 0: (ow - 1) * s + 1: s]
        for j in range(1, k):
            out = torch.maximum(out, rows[..., j: j + (ow - 1) * s + 1: s])
        return out

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel}, stride={self.stride}, ceil_mode=True"


class _PaddedFirstLayers:
    """For the inference path (no gradients wanted): conv1, prelu1 and conv2's weights with conv1's
    output channels padded by zeros to a count ATen's channels-last kernels vectorize
    (``padded_channels``).

    Why: ATen's PReLU on channels-last maps takes a scalar path unless the channel count suits
    its vectors, 35x slower per element at 10 channels than at 16 (556 vs 16 us on P-Net maps),
    which made P-Net's prelu1 slower than its conv1; at R-Net's 28 channels conv1, PReLU and the
    pool are all slower than at 32 (2.85 vs 2.23 ms on 234 crops). The extra channels are 0 after
    conv1 (zero weights and bias), PReLU and pooling, and conv2 weights them 0: the same function,
    outputs identical (tests/test_mtcnn_detect.py). Built from the parameters' current values,
    cached by their version, so loading weights refreshes them."""

    padded_channels: int

    def _first_layers_padded(self) -> tuple[torch.Tensor, ...]:
        params = (self.conv1.weight, self.conv1.bias, self.prelu1.weight, self.conv2.weight)
        key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in params)
        cached = self.__dict__.get("_padded_cache")
        if cached is None or cached[0] != key:
            w1, b1, a1, w2 = (t.detach() for t in params)
            extra = self.padded_channels - w1.shape[0]
            padded = (torch.cat([w1, w1.new_zeros(extra, *w1.shape[1:])]), torch.cat([b1, b1.new_zeros(extra)]),
                      torch.cat([a1, a1.new_zeros(extra)]),
                      torch.cat([w2, w2.new_zeros(w2.shape[0], extra, *w2.shape[2:])], 1))
            cached = self.__dict__["_padded_cache"] = (key, padded)
        return cached[1]

    def _wants_grad(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """prelu1(conv1(x)): the plain layers when gradients are wanted (differentiable), else
        the padded weights."""
        if self._wants_grad():
            return self.prelu1(self.conv1(x))
        w1, b1, a1, _ = self._first_layers_padded()
        return F.prelu(F.conv2d(x, w1, b1), a1)

    def _conv2(self, x: torch.Tensor) -> torch.Tensor:
        """conv2 on pooled ``_stem`` maps (padded channels included at inference)."""
        if self._wants_grad():
            return self.conv2(x)
        return F.conv2d(x, self._first_layers_padded()[3], self.conv2.bias)


class PNet(_PaddedFirstLayers, nn.Module):
    """Proposal network: fully convolutional, a 12x12 window with stride 2.

    ``forward(x) -> (reg, prob)`` with ``reg`` (N, 4, H', W') the box offsets (x1, y1, x2, y2) in
    units of the window size and ``prob`` (N, 2, H', W') the softmax over (background, face).
    """

    padded_channels = 16

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = CeilMaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tail(self.stem(x))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass up to pool1: prelu1(conv1(x)). ``tail(stem(x))`` is ``forward(x)``;
        between them a caller may fix the maps' edges before pooling (several pyramid levels
        packed into one input: models/detection/detect.py)."""
        return self._stem(x)

    def tail(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass from pool1 on: (reg, prob) of ``stem``'s maps."""
        x = self.prelu2(self._conv2(self.pool1(x)))
        x = self.prelu3(self.conv3(x))
        prob = F.softmax(self.conv4_1(x), dim=1)
        reg = self.conv4_2(x)
        return reg, prob


class RNet(_PaddedFirstLayers, nn.Module):
    """Refinement network on 24x24 crops. ``forward(x) -> (reg (N, 4), prob (N, 2))``."""

    padded_channels = 32

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool2(self.prelu2(self._conv2(self.pool1(self._stem(x)))))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_whc(x)))
        prob = F.softmax(self.dense5_1(x), dim=1)
        reg = self.dense5_2(x)
        return reg, prob


class ONet(nn.Module):
    """Output network on 48x48 crops.

    ``forward(x) -> (reg (N, 4), landmarks (N, 10), prob (N, 2))``; landmarks are five x's then
    five y's, as fractions of the crop's width and height.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_whc(x)))
        prob = F.softmax(self.dense6_1(x), dim=1)
        reg = self.dense6_2(x)
        landmarks = self.dense6_3(x)
        return reg, landmarks, prob


NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}
