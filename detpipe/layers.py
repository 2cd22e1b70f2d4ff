"""YOLO building blocks: Conv-BN-SiLU, the C2f bottleneck stack (YOLOv8) and SPPF pooling."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_bn(c_in: int, c_out: int, k: int = 3, s: int = 1) -> nn.Sequential:
    """Conv-BN-SiLU, the YOLO building block."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.SiLU(inplace=True))


class Bottleneck(nn.Module):
    """Two 3x3 convs with an optional residual connection."""

    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv_bn(c, c), conv_bn(c, c))
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """YOLOv8's cross-stage-partial block: split, `n` bottlenecks on one half, concatenate all."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.half = c_out // 2
        self.split = conv_bn(c_in, 2 * self.half, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.half, shortcut) for _ in range(n))
        self.merge = conv_bn((2 + n) * self.half, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        ys = list(self.split(x).chunk(2, 1))
        for block in self.blocks:
            ys.append(block(ys[-1]))
        return self.merge(torch.cat(ys, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools widen the receptive field cheaply."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce = conv_bn(c, c // 2, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.merge = conv_bn(c // 2 * 4, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.reduce(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.merge(torch.cat([x, y1, y2, self.pool(y2)], 1))


def cspdarknet(width: float, depth: float) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """YOLOv8's CSPDarknet scaled by width and depth: stem (stride 4) and stages at strides 8, 16, 32.

    Plain dense 3x3 convolutions: on CPU they train faster per FLOP than the depthwise
    convolutions of ShuffleNet or MobileNet, whose backward pass is poorly vectorised.
    """
    c = [max(8, int(round(ch * width / 8)) * 8) for ch in (64, 128, 256, 512, 1024)]
    n = [max(1, round(k * depth)) for k in (3, 6, 6, 3)]
    stem = nn.Sequential(conv_bn(3, c[0], 3, 2), conv_bn(c[0], c[1], 3, 2), C2f(c[1], c[1], n[0]))
    c3 = nn.Sequential(conv_bn(c[1], c[2], 3, 2), C2f(c[2], c[2], n[1]))
    c4 = nn.Sequential(conv_bn(c[2], c[3], 3, 2), C2f(c[3], c[3], n[2]))
    c5 = nn.Sequential(conv_bn(c[3], c[4], 3, 2), C2f(c[4], c[4], n[3]), SPPF(c[4]))
    return stem, c3, c4, c5
