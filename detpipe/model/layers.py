"""YOLO building blocks: Conv-BN-SiLU, the C2f bottleneck stack (YOLOv8), SPPF pooling, and YOLO11's
C3k2 / C2PSA blocks, each computing what Ultralytics' module of the same role computes."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


def conv_bn(c_in: int, c_out: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv-BN-SiLU, the YOLO building block (Conv-BN alone with act=False)."""
    layers = [nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.SiLU(inplace=True)) if act else nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """Two 3x3 convs (c -> hidden -> c) with an optional residual connection."""

    def __init__(self, c: int, shortcut: bool = True, hidden: int | None = None) -> None:
        super().__init__()
        h = hidden or c
        self.conv = nn.Sequential(conv_bn(c, h), conv_bn(h, c))
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """YOLOv8's cross-stage-partial block: split, `n` blocks on one half, concatenate all.

    `e` is the hidden share of c_out; `block(c)` makes one inner block (default: a bottleneck).
    """

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True, e: float = 0.5,
                 block: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        self.half = int(c_out * e)
        self.split = conv_bn(c_in, 2 * self.half, 1)
        make = block or (lambda c: Bottleneck(c, shortcut))
        self.blocks = nn.ModuleList(make(self.half) for _ in range(n))
        self.merge = conv_bn((2 + n) * self.half, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        ys = list(halves(self.split, x))
        for block in self.blocks:
            ys.append(block(ys[-1]))
        return self.merge(torch.cat(ys, 1))


class C3(nn.Module):
    """CSP block with two 1x1 branches, `n` bottlenecks on one (YOLO11's C3k): merge(blocks(a), b)."""

    def __init__(self, c_in: int, c_out: int, n: int = 2, shortcut: bool = True) -> None:
        super().__init__()
        h = c_out // 2
        self.split = conv_bn(c_in, h, 1)
        self.skip = conv_bn(c_in, h, 1)
        self.merge = conv_bn(2 * h, c_out, 1)
        self.blocks = nn.Sequential(*(Bottleneck(h, shortcut) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.merge(torch.cat([self.blocks(self.split(x)), self.skip(x)], 1))


def c3k2(c_in: int, c_out: int, n: int, c3k: bool, e: float = 0.5, shortcut: bool = True) -> C2f:
    """YOLO11's C3k2: a C2f whose blocks are C3 blocks (c3k) or bottlenecks of half width."""
    block = (lambda c: C3(c, c, 2, shortcut)) if c3k else (lambda c: Bottleneck(c, shortcut, hidden=c // 2))
    return C2f(c_in, c_out, n, shortcut, e, block)


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


class Attention(nn.Module):
    """Multi-head self-attention over all positions of a feature map, plus a depthwise 3x3 positional
    term on the values (YOLO11's). Keys and queries are half as wide as the values."""

    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, c // heads
        self.key_dim = self.head_dim // 2
        self.qkv = conv_bn(c, c + 2 * self.key_dim * heads, 1, act=False)
        self.proj = conv_bn(c, c, 1, act=False)
        self.pe = conv_bn(c, c, 3, groups=c, act=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, self.heads, 2 * self.key_dim + self.head_dim, h * w).split(
            [self.key_dim, self.key_dim, self.head_dim], 2)
        attn = ((q * self.key_dim ** -0.5).transpose(-2, -1) @ k).softmax(-1)
        y = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(y)


class PSABlock(nn.Module):
    """Attention then a 1x1 feed-forward pair, each with a residual connection."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.attn = Attention(c, max(c // 64, 1))
        self.ffn = nn.Sequential(conv_bn(c, 2 * c, 1), conv_bn(2 * c, c, 1, act=False))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.ffn(x)


class C2PSA(nn.Module):
    """YOLO11's C2PSA: attention blocks on half of the channels, the other half passed through."""

    def __init__(self, c: int, n: int = 1) -> None:
        super().__init__()
        self.half = c // 2
        self.split = conv_bn(c, 2 * self.half, 1)
        self.merge = conv_bn(2 * self.half, c, 1)
        self.blocks = nn.Sequential(*(PSABlock(self.half) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        a, b = halves(self.split, x)
        return self.merge(torch.cat([a, self.blocks(b)], 1))


def halves(split: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The two channel halves of `split(x)` (a conv_bn, or the HalfConvs it becomes for export)."""
    y = split(x)
    return y if isinstance(y, tuple) else y.chunk(2, 1)


class HalfConvs(nn.Module):
    """A folded 1x1 conv(-SiLU) as two convs of half its outputs each, returning the two halves: the
    same numbers as slicing the whole output, but an exported graph without channel slices.
    onnxruntime's fast CPU layout (channels in blocks of 16) cannot slice channels, so every slice made
    it convert the tensor out of that layout and its consumers back in (conversions into it in the
    default architecture's optimised graph: 18 with the slices, 0 without, tests/test_backends.py;
    the cost: bench/bench_infer_paths.py's ort-chunk row)."""

    def __init__(self, split: nn.Sequential) -> None:
        super().__init__()
        conv = split[0]
        folded = not any(isinstance(m, nn.BatchNorm2d) for m in split)
        if not (isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.bias is not None and folded):
            raise ValueError("HalfConvs takes a conv_bn whose BatchNorm is folded (fuse_conv_bn)")
        half = conv.out_channels // 2
        self.a, self.b = (nn.Sequential(_conv_rows(conv, rows), *split[1:])
                          for rows in (slice(0, half), slice(half, None)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.a(x), self.b(x)


def _conv_rows(conv: nn.Conv2d, rows: slice) -> nn.Conv2d:
    """A copy of `conv` (with a bias) computing only the output channels `rows`."""
    weight, bias = conv.weight.detach()[rows], conv.bias.detach()[rows]
    out = nn.Conv2d(conv.in_channels, weight.shape[0], conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=True)
    out.weight.data.copy_(weight)
    out.bias.data.copy_(bias)
    return out


def separate_halves(model: nn.Module) -> nn.Module:
    """`model` (BatchNorm folded, changed in place) with every C2f / C2PSA split conv as HalfConvs."""
    for m in list(model.modules()):
        if isinstance(m, (C2f, C2PSA)) and not isinstance(m.split, HalfConvs):
            m.split = HalfConvs(m.split)
    return model


def scaled_channels(width: float, max_channels: int = 1024) -> list[int]:
    """The five CSPDarknet widths (64 .. 1024 at width 1) scaled, capped at max_channels, multiples of 8."""
    return [max(8, int(round(min(ch, max_channels) * width / 8)) * 8) for ch in (64, 128, 256, 512, 1024)]


def cspdarknet(width: float, depth: float, max_channels: int = 1024
               ) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """YOLOv8's CSPDarknet scaled by width and depth: stem (stride 4) and stages at strides 8, 16, 32.

    Plain dense 3x3 convolutions: on CPU they train faster per FLOP than the depthwise
    convolutions of ShuffleNet or MobileNet, whose backward pass is poorly vectorised.
    """
    c = scaled_channels(width, max_channels)
    n = [max(1, round(k * depth)) for k in (3, 6, 6, 3)]
    stem = nn.Sequential(conv_bn(3, c[0], 3, 2), conv_bn(c[0], c[1], 3, 2), C2f(c[1], c[1], n[0]))
    c3 = nn.Sequential(conv_bn(c[1], c[2], 3, 2), C2f(c[2], c[2], n[1]))
    c4 = nn.Sequential(conv_bn(c[2], c[3], 3, 2), C2f(c[3], c[3], n[2]))
    c5 = nn.Sequential(conv_bn(c[3], c[4], 3, 2), C2f(c[4], c[4], n[3]), SPPF(c[4]))
    return stem, c3, c4, c5


def yolo11_backbone(width: float, depth: float, max_channels: int, c3k: bool
                    ) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """YOLO11's backbone (yolo11.yaml): C3k2 stages, SPPF and C2PSA attention at stride 32.

    c3k: every C3k2 uses C3 blocks (Ultralytics does so for its m, l and x scales).
    """
    c = scaled_channels(width, max_channels)
    n = max(1, round(2 * depth))
    stem = nn.Sequential(conv_bn(3, c[0], 3, 2), conv_bn(c[0], c[1], 3, 2), c3k2(c[1], c[2], n, c3k, 0.25))
    c3 = nn.Sequential(conv_bn(c[2], c[2], 3, 2), c3k2(c[2], c[3], n, c3k, 0.25))
    c4 = nn.Sequential(conv_bn(c[3], c[3], 3, 2), c3k2(c[3], c[3], n, True))
    c5 = nn.Sequential(conv_bn(c[3], c[4], 3, 2), c3k2(c[4], c[4], n, True), SPPF(c[4]), C2PSA(c[4], n))
    return stem, c3, c4, c5


def ultralytics_batchnorm(module: nn.Module) -> nn.Module:
    """Give every BatchNorm the eps and momentum Ultralytics trains with (1e-3, 0.03)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    return module
