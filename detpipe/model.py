"""A YOLO-family one-stage detector: backbone + PAN neck + decoupled anchor-free head.

The backbone is YOLOv8's CSPDarknet (scaled n/s/m/l) or a torchvision classifier; it is one
freezable unit. The head predicts, for every anchor point of strides 8, 16 and 32, class logits
and left/top/right/bottom distances (as in YOLOv8, without DFL).
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from .boxes import distances_to_boxes
from .layers import C2f, conv_bn, cspdarknet

STRIDES = (8, 16, 32)
# Width and depth multipliers of YOLOv8's n/s/m/l models: they scale CSPDarknet's channels and
# block repeats, and the neck (width of 256 x width channels, depth of 3 x depth blocks).
SCALES = {"n": (0.25, 0.33), "s": (0.5, 0.33), "m": (0.75, 0.67), "l": (1.0, 1.0)}
# ImageNet statistics: torchvision backbones (and their pretrained weights) expect them.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
# torchvision classifier families _stages can cut at strides 8, 16 and 32, by how it cuts them.
_RESNETS = ("resnet", "resnext", "wide_resnet")
_SHUFFLENETS = ("shufflenet",)
_REGNETS = ("regnet",)
_SEQUENTIAL = ("mobilenet_v3", "efficientnet", "mobilenet_v2")
TORCHVISION_FAMILIES = _RESNETS + _SHUFFLENETS + _REGNETS + _SEQUENTIAL


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    num_classes: int
    backbone: str = "cspdarknet"
    neck_channels: int = 0   # 0: 256 x the scale's width (n 64, s 128, m 192, l 256)
    scale: str = "n"         # n | s | m | l

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"model.scale: {self.scale!r} is not one of {', '.join(SCALES)}")

    @property
    def width(self) -> float:
        return SCALES[self.scale][0]

    @property
    def depth(self) -> float:
        return SCALES[self.scale][1]

    @property
    def neck_width(self) -> int:
        return self.neck_channels or int(256 * self.width)

    def to_dict(self) -> dict:
        return asdict(self)


def _stages(name: str, pretrained: bool, width: float = 0.25, depth: float = 0.33
            ) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """Split the backbone into stem and the stages ending at strides 8, 16, 32."""
    if name == "cspdarknet":
        if pretrained:
            raise ValueError("model.pretrained: imagenet needs a torchvision backbone (e.g. resnet18); "
                             "cspdarknet has no ImageNet weights — use none or a detpipe checkpoint path")
        return cspdarknet(width, depth)
    weights = "DEFAULT" if pretrained else None
    net = torchvision.models.get_model(name, weights=weights)
    if name.startswith(_RESNETS):
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        return stem, net.layer2, net.layer3, net.layer4
    if name.startswith(_SHUFFLENETS):
        return nn.Sequential(net.conv1, net.maxpool), net.stage2, net.stage3, net.stage4
    if name.startswith(_REGNETS):
        t = net.trunk_output
        return nn.Sequential(net.stem, t.block1), t.block2, t.block3, t.block4
    if name.startswith(_SEQUENTIAL):
        feats = net.features
        a, b, c = _stride_cuts(feats)
        return feats[:a], feats[a:b], feats[b:c], feats[c:]
    raise ValueError(f"model.backbone: {name!r} is not supported; use cspdarknet or a resnet*, shufflenet_v2_*, "
                     "regnet_*, mobilenet_v2/v3_* or efficientnet_* model of torchvision")


def backbone_names() -> tuple[str, ...]:
    """Every model.backbone _stages builds (params.yaml is validated against this)."""
    return ("cspdarknet",) + _torchvision_backbones()


def imagenet_backbones() -> tuple[str, ...]:
    """The backbones `model.pretrained: imagenet` can start from: those torchvision ships weights for."""
    return tuple(n for n in _torchvision_backbones() if len(torchvision.models.get_model_weights(n)))


def _torchvision_backbones() -> tuple[str, ...]:
    """torchvision's classifiers of the families _stages knows how to cut."""
    models = torchvision.models.list_models(module=torchvision.models)
    return tuple(n for n in models if n.startswith(TORCHVISION_FAMILIES))


@contextmanager
def _probing(module: nn.Module) -> Iterator[None]:
    """Run a shape probe through `module` without changing it: eval mode (a BatchNorm in training
    mode moves its running statistics toward the probe's blank image, which would corrupt
    pretrained ones) and no autograd; the previous mode is restored after."""
    modes = {m: m.training for m in module.modules()}
    nn.Module.train(module, False)
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _stride_cuts(features: nn.Sequential) -> list[int]:
    """End indices of the layers at strides 4, 8 and 16 of a sequential feature extractor."""
    x, strides = torch.zeros(1, 3, 64, 64), []
    with _probing(features):
        for layer in features:
            x = layer(x)
            strides.append(64 // x.shape[-1])
    return [max(i for i, s in enumerate(strides) if s <= limit) + 1 for limit in (4, 8, 16)]


class Backbone(nn.Module):
    """Backbone returning C3, C4, C5 (strides 8, 16, 32)."""

    def __init__(self, name: str, pretrained: bool = False, width: float = 0.25, depth: float = 0.33) -> None:
        super().__init__()
        self.stem, self.c3, self.c4, self.c5 = _stages(name, pretrained, width, depth)
        self.frozen = False
        with _probing(self):
            outs = self.forward(torch.zeros(1, 3, 64, 64))
        self.channels = [o.shape[1] for o in outs]

    def forward(self, x: Tensor) -> list[Tensor]:
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        return [c3, c4, self.c5(c4)]

    def freeze(self, frozen: bool = True) -> None:
        """Stop gradients and BatchNorm statistics updates in the whole backbone."""
        self.frozen = frozen
        for p in self.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode and not self.frozen)
        self.training = mode
        return self


class PAN(nn.Module):
    """Path-aggregation neck: top-down then bottom-up fusion of C3..C5 into P3..P5 (C2f blocks)."""

    def __init__(self, in_channels: list[int], c: int, n: int = 1) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn(ci, c, 1) for ci in in_channels)
        self.top_down = nn.ModuleList(C2f(c, c, n, shortcut=False) for _ in range(2))
        self.down = nn.ModuleList(conv_bn(c, c, 3, 2) for _ in range(2))
        self.bottom_up = nn.ModuleList(C2f(c, c, n, shortcut=False) for _ in range(2))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        c3, c4, c5 = (lat(f) for lat, f in zip(self.lateral, feats))
        p4 = self.top_down[0](c4 + F.interpolate(c5, size=c4.shape[-2:], mode="nearest"))
        p3 = self.top_down[1](c3 + F.interpolate(p4, size=c3.shape[-2:], mode="nearest"))
        n4 = self.bottom_up[0](p4 + self.down[0](p3))
        n5 = self.bottom_up[1](c5 + self.down[1](n4))
        return [p3, n4, n5]


class Head(nn.Module):
    """Decoupled head per level: class logits and ltrb distances (in strides, via softplus)."""

    def __init__(self, c: int, num_classes: int, num_levels: int = 3) -> None:
        super().__init__()
        self.cls = nn.ModuleList(nn.Sequential(conv_bn(c, c), conv_bn(c, c), nn.Conv2d(c, num_classes, 1))
                                 for _ in range(num_levels))
        self.reg = nn.ModuleList(nn.Sequential(conv_bn(c, c), conv_bn(c, c), nn.Conv2d(c, 4, 1))
                                 for _ in range(num_levels))
        for branch in self.cls:  # a 1% prior keeps the many background points from swamping early training
            nn.init.constant_(branch[-1].bias, -math.log(99.0))
        for branch in self.reg:  # start near boxes 2-3 strides wide
            nn.init.constant_(branch[-1].bias, 1.0)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        cls = [b(f).flatten(2) for b, f in zip(self.cls, feats)]
        reg = [b(f).flatten(2) for b, f in zip(self.reg, feats)]
        # The floor keeps every box a little wider than zero: CIoU's aspect term is 0/0 for empty boxes.
        return torch.cat(cls, 2).transpose(1, 2), F.softplus(torch.cat(reg, 2).transpose(1, 2)) + 1e-3


def anchor_points(sizes: list[tuple[int, int]], strides=STRIDES, device=None) -> tuple[Tensor, Tensor]:
    """Cell centres Tensor[A, 2] in input pixels and their strides Tensor[A, 1]."""
    points, stride_col = [], []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        points.append((torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s)
        stride_col.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(points), torch.cat(stride_col)


class Detector(nn.Module):
    """Input Tensor[B, 3, S, S] of 0-255 RGB values (uint8 or float); output raw predictions:
    "cls" logits Tensor[B, A, C], "boxes" xyxy Tensor[B, A, 4] in input pixels,
    "points" Tensor[A, 2], "strides" Tensor[A, 1]."""

    def __init__(self, config: ModelConfig, pretrained: bool = False) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config.backbone, pretrained, config.width, config.depth)
        self.neck = PAN(self.backbone.channels, config.neck_width, max(1, round(3 * config.depth)))
        self.head = Head(config.neck_width, config.num_classes)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = (images.float() - self.mean) / self.std
        if self.backbone.frozen:
            with torch.no_grad():  # a frozen backbone needs no graph: the frozen phase runs faster
                feats = self.backbone(x)
        else:
            feats = self.backbone(x)
        feats = self.neck(feats)
        cls, ltrb = self.head(feats)
        points, strides = anchor_points([f.shape[-2:] for f in feats], device=images.device)
        boxes = distances_to_boxes(points, ltrb * strides)
        return {"cls": cls, "boxes": boxes, "points": points, "strides": strides}


def build_model(config: ModelConfig, pretrained: str = "none") -> Detector:
    """Build the detector; `pretrained` is none, imagenet (torchvision weights) or a checkpoint path."""
    model = Detector(config, pretrained=(pretrained == "imagenet"))
    if pretrained not in ("none", "imagenet", ""):
        from .checkpoint import load_matching_weights
        load_matching_weights(model, pretrained)
    return model


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode model with every Conv2d -> BatchNorm2d pair inside a Sequential folded
    into one Conv2d (same outputs up to float rounding, one pass less over each feature map)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return model


def model_summary(model: nn.Module, imgsz: int) -> dict[str, float]:
    """Parameters and GFLOPs (2 x multiply-adds, as Ultralytics counts) of one imgsz x imgsz image."""
    from torch.utils.flop_counter import FlopCounterMode
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, imgsz, imgsz, device=param.device))
    model.train(was_training)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "gflops": counter.get_total_flops() / 1e9, "imgsz": imgsz}


def describe(config: ModelConfig, summary: dict[str, float]) -> str:
    """One line such as `cspdarknet-n + PAN 64: 1.94 M parameters, 1.61 GFLOPs at 320x320`."""
    name = f"{config.backbone}-{config.scale}" if config.backbone == "cspdarknet" else config.backbone
    return (f"{name} + PAN {config.neck_width}: {summary['parameters'] / 1e6:.2f} M parameters, "
            f"{summary['gflops']:.2f} GFLOPs at {summary['imgsz']}x{summary['imgsz']}")
