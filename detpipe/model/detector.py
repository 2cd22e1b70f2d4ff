"""A YOLO-family one-stage detector: backbone + PAN neck + decoupled anchor-free head.

The backbone is YOLOv8's CSPDarknet (scaled n/s/m/l), its Ultralytics-exact variants `yolov8` and
`yolo11`, or a torchvision classifier; it is one freezable unit. The neck is detpipe's PAN or
Ultralytics' YOLOv8/YOLO11 neck. The head predicts, for every anchor point of every level (the
backbone's strides 8, 16 and 32, plus its stride-4 feature with `p2`, as YOLOv8-p2 does), class
logits and left/top/right/bottom distances (as in YOLOv8, without DFL). The levels' strides are
measured on the built backbone, never listed: `Detector.strides`.
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

from ..boxes import distances_to_boxes
from ..catalog import NECKS, REGNETS, RESNETS, SCALES, SEQUENTIAL, SHUFFLENETS, YOLO_FAMILIES, YOLO_SCALES, pan_width
from .layers import C2f, c3k2, conv_bn, cspdarknet, scaled_channels, ultralytics_batchnorm, yolo11_backbone

# ImageNet statistics: torchvision backbones (and their pretrained weights) expect them.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    num_classes: int
    backbone: str = "cspdarknet"
    neck_channels: int = 0   # PAN: 0 = 256 x the scale's width (n 64, s 128, m 192, l 256)
    scale: str = "n"         # n | s | m | l
    neck: str = "pan"        # pan (detpipe's) | yolov8 | yolo11 (Ultralytics' neck and head widths)
    p2: bool = False         # a 4th level on the backbone's stride-4 feature, for tiny objects

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"model.scale: {self.scale!r} is not one of {', '.join(SCALES)}")
        if self.neck not in NECKS:
            raise ValueError(f"model.neck: {self.neck!r} is not one of {', '.join(NECKS)}")
        if self.neck != "pan" and self.neck_channels:
            raise ValueError(f"model.neck_channels applies to neck: pan only; neck: {self.neck} takes its "
                             "widths from model.scale, so set neck_channels: 0")

    @property
    def width(self) -> float:
        return SCALES[self.scale][0]

    @property
    def depth(self) -> float:
        return SCALES[self.scale][1]

    @property
    def neck_width(self) -> int:
        """The PAN neck's channels (and the head's); the YOLO necks have one width per level."""
        return pan_width(self.scale, self.neck_channels)

    def to_dict(self) -> dict:
        return asdict(self)


def _stages(name: str, scale: str = "n") -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """Split the backbone into stem and the stages ending at strides 8, 16, 32 (random weights:
    build_model loads pretrained ones after construction, through detpipe.model.pretrained)."""
    if name == "cspdarknet":
        return cspdarknet(*SCALES[scale])
    if name == "yolov8":
        return cspdarknet(*YOLO_SCALES[name][scale])
    if name == "yolo11":
        return yolo11_backbone(*YOLO_SCALES[name][scale], c3k=scale in ("m", "l"))
    return torchvision_stages(torchvision.models.get_model(name, weights=None), name)


def torchvision_stages(net: nn.Module, name: str) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """The stem and the stride 8, 16, 32 stages of a torchvision classifier `net` (its own modules)."""
    if name.startswith(RESNETS):
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        return stem, net.layer2, net.layer3, net.layer4
    if name.startswith(SHUFFLENETS):
        return nn.Sequential(net.conv1, net.maxpool), net.stage2, net.stage3, net.stage4
    if name.startswith(REGNETS):
        t = net.trunk_output
        return nn.Sequential(net.stem, t.block1), t.block2, t.block3, t.block4
    if name.startswith(SEQUENTIAL):
        feats = net.features
        a, b, c = _stride_cuts(feats)
        return feats[:a], feats[a:b], feats[b:c], feats[c:]
    raise ValueError(f"model.backbone: {name!r} is not supported; use cspdarknet, yolov8, yolo11 or a resnet*, "
                     "shufflenet_v2_*, regnet_*, mobilenet_v2/v3_* or efficientnet_* model of torchvision")


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
    """Backbone returning C3, C4, C5 (strides 8, 16, 32), preceded by the stem's C2 (stride 4) with p2.

    `channels` and `strides` (input pixels per cell) of the outputs are measured by a probe.
    """

    def __init__(self, name: str, scale: str = "n", p2: bool = False) -> None:
        super().__init__()
        self.stem, self.c3, self.c4, self.c5 = _stages(name, scale)
        self.frozen, self.p2 = False, p2
        size = 64
        with _probing(self):
            outs = self.forward(torch.zeros(1, 3, size, size))
        self.channels = [o.shape[1] for o in outs]
        self.strides = tuple(size // o.shape[-1] for o in outs)
        if p2 and self.strides[0] * 2 != self.strides[1]:
            raise ValueError(f"model.p2: backbone {name} has no stride-{self.strides[1] // 2} feature map (its stem "
                             f"ends at stride {self.strides[0]}); set model.p2: false or pick cspdarknet")

    def forward(self, x: Tensor) -> list[Tensor]:
        c2 = self.stem(x)
        c3 = self.c3(c2)
        c4 = self.c4(c3)
        return [c2, c3, c4, self.c5(c4)] if self.p2 else [c3, c4, self.c5(c4)]

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


def _upsample(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class P2Path(nn.Module):
    """The stride-4 level's layers of a neck, kept apart (neck.p2.*) so that every other layer keeps
    its name, and weights from a model without p2 load into the layers of the same role: the top-down
    block that makes P2, the stride-2 conv and the bottom-up block that make N3 from it."""

    def __init__(self, top_down: nn.Module, down: nn.Module, bottom_up: nn.Module,
                 lateral: nn.Module | None = None) -> None:
        super().__init__()
        self.top_down, self.down, self.bottom_up = top_down, down, bottom_up
        self.lateral = lateral


class PAN(nn.Module):
    """Path-aggregation neck: top-down then bottom-up fusion of C3..C5 into P3..P5 (C2f blocks); with
    p2 (in_channels starting with C2's) the top-down path goes on to P2 and the bottom-up one starts there."""

    def __init__(self, in_channels: list[int], c: int, n: int = 1, p2: bool = False) -> None:
        super().__init__()
        *low, c3, c4, c5 = in_channels
        self.lateral = nn.ModuleList(conv_bn(ci, c, 1) for ci in (c3, c4, c5))
        self.top_down = nn.ModuleList(C2f(c, c, n, shortcut=False) for _ in range(2))
        self.down = nn.ModuleList(conv_bn(c, c, 3, 2) for _ in range(2))
        self.bottom_up = nn.ModuleList(C2f(c, c, n, shortcut=False) for _ in range(2))
        self.p2 = P2Path(C2f(c, c, n, shortcut=False), conv_bn(c, c, 3, 2), C2f(c, c, n, shortcut=False),
                         lateral=conv_bn(low[0], c, 1)) if p2 else None

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        *low, c3, c4, c5 = feats
        c3, c4, c5 = (lat(f) for lat, f in zip(self.lateral, (c3, c4, c5)))
        p4 = self.top_down[0](c4 + _upsample(c5, c4))
        p3 = self.top_down[1](c3 + _upsample(p4, c3))
        fine, n3 = [], p3
        if self.p2 is not None:
            c2 = self.p2.lateral(low[0])
            fine = [self.p2.top_down(c2 + _upsample(p3, c2))]
            n3 = self.p2.bottom_up(p3 + self.p2.down(fine[0]))
        n4 = self.bottom_up[0](p4 + self.down[0](n3))
        n5 = self.bottom_up[1](c5 + self.down[1](n4))
        return [*fine, n3, n4, n5]


class YoloNeck(nn.Module):
    """Ultralytics' YOLOv8 / YOLO11 neck (yolov8.yaml, yolo11.yaml): upsample and concatenate top-down,
    stride-2 conv and concatenate bottom-up, a C2f (YOLOv8) or C3k2 (YOLO11) block after each
    concatenation; the widths are 256, 512 and 1024 scaled and capped as Ultralytics does."""

    def __init__(self, in_channels: list[int], family: str, scale: str, p2: bool = False) -> None:
        super().__init__()
        width, depth, cap = YOLO_SCALES[family][scale]
        w2, w3, w4, w5 = scaled_channels(width, cap)[1:]
        *low, c3, c4, c5 = in_channels
        if family == "yolov8":
            def block(c_in: int, c_out: int, last: bool) -> nn.Module:
                return C2f(c_in, c_out, max(1, round(3 * depth)), shortcut=False)
        else:
            def block(c_in: int, c_out: int, last: bool) -> nn.Module:
                return c3k2(c_in, c_out, max(1, round(2 * depth)), c3k=last or scale in ("m", "l"))
        self.top_down = nn.ModuleList([block(c5 + c4, w4, False), block(w4 + c3, w3, False)])
        self.down = nn.ModuleList([conv_bn(w3, w3, 3, 2), conv_bn(w4, w4, 3, 2)])
        self.bottom_up = nn.ModuleList([block(w3 + w4, w4, False), block(w4 + c5, w5, True)])
        self.channels = [w3, w4, w5]
        self.p2 = None
        if p2:  # yolov8-p2.yaml: 128 x width channels at P2
            self.p2 = P2Path(block(w3 + low[0], w2, False), conv_bn(w2, w2, 3, 2), block(w2 + w3, w3, False))
            self.channels = [w2, w3, w4, w5]

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        *low, c3, c4, c5 = feats
        p4 = self.top_down[0](torch.cat([_upsample(c5, c4), c4], 1))
        p3 = self.top_down[1](torch.cat([_upsample(p4, c3), c3], 1))
        fine, n3 = [], p3
        if self.p2 is not None:
            fine = [self.p2.top_down(torch.cat([_upsample(p3, low[0]), low[0]], 1))]
            n3 = self.p2.bottom_up(torch.cat([self.p2.down(fine[0]), p3], 1))
        n4 = self.bottom_up[0](torch.cat([self.down[0](n3), p4], 1))
        n5 = self.bottom_up[1](torch.cat([self.down[1](n4), c5], 1))
        return [*fine, n3, n4, n5]


def yolo_head_widths(c3: int, num_classes: int) -> tuple[int, int]:
    """Ultralytics' Detect widths from the first level's width (P3, or P2 with p2): class branch
    max(c3, min(classes, 100)), box branch max(16, c3 / 4, 64)."""
    return max(c3, min(num_classes, 100)), max(16, c3 // 4, 64)


def _cls_convs(c: int, width: int, depthwise: bool) -> list[nn.Module]:
    """The class branch's two hidden layers: 3x3 convs, or (YOLO11) depthwise 3x3 + 1x1 pairs."""
    if depthwise:
        return [nn.Sequential(conv_bn(c, c, 3, groups=c), conv_bn(c, width, 1)),
                nn.Sequential(conv_bn(width, width, 3, groups=width), conv_bn(width, width, 1))]
    return [conv_bn(c, width), conv_bn(width, width)]


class Head(nn.Module):
    """Decoupled head per level: class logits and ltrb distances (in strides, via softplus).

    in_channels: one per level; cls_width, reg_width: the branches' hidden widths (the PAN neck's
    width, or YOLOv8's max(c3, min(classes, 100)) and max(16, c3 / 4, 64)); depthwise: YOLO11's
    class branch.
    """

    def __init__(self, in_channels: list[int], num_classes: int, cls_width: int, reg_width: int,
                 depthwise: bool = False) -> None:
        super().__init__()
        self.cls = nn.ModuleList(nn.Sequential(*_cls_convs(c, cls_width, depthwise), nn.Conv2d(cls_width, num_classes, 1))
                                 for c in in_channels)
        self.reg = nn.ModuleList(nn.Sequential(conv_bn(c, reg_width), conv_bn(reg_width, reg_width),
                                               nn.Conv2d(reg_width, 4, 1)) for c in in_channels)
        for branch in self.cls:  # a 1% prior keeps the many background points from swamping early training
            nn.init.constant_(branch[-1].bias, -math.log(99.0))
        for branch in self.reg:  # start near boxes 2-3 strides wide
            nn.init.constant_(branch[-1].bias, 1.0)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        cls = [b(f).flatten(2) for b, f in zip(self.cls, feats)]
        reg = [b(f).flatten(2) for b, f in zip(self.reg, feats)]
        # The floor keeps every box a little wider than zero: CIoU's aspect term is 0/0 for empty boxes.
        return torch.cat(cls, 2).transpose(1, 2), F.softplus(torch.cat(reg, 2).transpose(1, 2)) + 1e-3


def anchor_points(sizes: list[tuple[int, int]], strides: tuple[int, ...], device=None) -> tuple[Tensor, Tensor]:
    """Cell centres Tensor[A, 2] in input pixels and their strides Tensor[A, 1], level by level:
    sizes[i] = (H_i, W_i) is level i's grid, strides[i] its input pixels per cell (`Detector.strides`)."""
    points, stride_col = [], []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        points.append((torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s)
        stride_col.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(points), torch.cat(stride_col)


class Detector(nn.Module):
    """Input Tensor[B, 3, S, S] of 0-255 RGB values (uint8 or float); output raw predictions:
    "cls" logits Tensor[B, A, C], "boxes" xyxy Tensor[B, A, 4] in input pixels,
    "points" Tensor[A, 2], "strides" Tensor[A, 1]. Anchors run level by level, finest first;
    `strides` holds each level's stride (the backbone's, which the neck keeps)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config.backbone, config.scale, config.p2)
        self.strides: tuple[int, ...] = self.backbone.strides
        if config.backbone in YOLO_FAMILIES:
            ultralytics_batchnorm(self.backbone)
        nc = config.num_classes
        if config.neck == "pan":
            c = config.neck_width
            self.neck = PAN(self.backbone.channels, c, max(1, round(3 * config.depth)), config.p2)
            self.head = Head([c] * len(self.strides), nc, c, c)
        else:
            self.neck = ultralytics_batchnorm(YoloNeck(self.backbone.channels, config.neck, config.scale, config.p2))
            self.head = ultralytics_batchnorm(Head(self.neck.channels, nc, *yolo_head_widths(self.neck.channels[0], nc),
                                                   depthwise=config.neck == "yolo11"))
        mean, std = input_stats(config.backbone)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255, persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """0-255 images -> the backbone's input scale."""
        return (images.float() - self.mean) / self.std

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = self.normalize(images)
        if self.backbone.frozen:
            with torch.no_grad():  # a frozen backbone needs no graph: the frozen phase runs faster
                feats = self.backbone(x)
        else:
            feats = self.backbone(x)
        feats = self.neck(feats)
        cls, ltrb = self.head(feats)
        points, strides = anchor_points([f.shape[-2:] for f in feats], self.strides, device=images.device)
        boxes = distances_to_boxes(points, ltrb * strides)
        return {"cls": cls, "boxes": boxes, "points": points, "strides": strides}


def input_stats(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of 0-1 pixel values that the backbone's inputs are normalised with:
    none for Ultralytics' layouts (they see x / 255, as in Ultralytics), ImageNet's otherwise."""
    if backbone in YOLO_FAMILIES:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return _MEAN, _STD


def build_model(config: ModelConfig, pretrained: str = "none") -> Detector:
    """Build the detector; `pretrained` is none, imagenet or coco (torchvision's weights, checked and
    loaded with weights_only=True) or the path of a detpipe checkpoint (loads the matching tensors)."""
    model = Detector(config)
    if pretrained not in ("none", ""):
        from .pretrained import load_pretrained
        load_pretrained(model, pretrained)
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
    scaled = config.backbone == "cspdarknet" or config.backbone in YOLO_FAMILIES
    name = f"{config.backbone}-{config.scale}" if scaled else config.backbone
    if config.neck == "pan":
        neck = f"PAN {config.neck_width}"
    else:
        widths = scaled_channels(*YOLO_SCALES[config.neck][config.scale][::2])[2:]
        neck = f"{config.neck} neck {'/'.join(map(str, widths))}"
    if config.p2:
        neck += " + P2"
    return (f"{name} + {neck}: {summary['parameters'] / 1e6:.2f} M parameters, "
            f"{summary['gflops']:.2f} GFLOPs at {summary['imgsz']}x{summary['imgsz']}")
