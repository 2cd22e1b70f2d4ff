"""A detpipe network as an ONNX graph: the one export routine behind `detpipe export` and the
onnxruntime inference backend's cache.

The graph holds the network only, not NMS: input "images" float32 [B, 3, S, S] of 0-255 RGB
values (letterboxed with grey 114, as `Predictor.preprocess` does), outputs "cls" (class
logits [B, A, C]) and "boxes" (xyxy in input pixels [B, A, 4]), the PyTorch model's up to float
rounding, with no per-run work that is not the network (`ExportNetwork`). Class names and the input
size travel in the model's metadata.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..boxes import distances_to_boxes
from ..model.detector import Detector, Head, anchor_points, fuse_conv_bn
from ..model.layers import Attention, separate_halves

OPSET = 17
ONNX_HINT = ("ONNX support needs the optional packages onnx and onnxruntime: "
             "pip install onnx onnxruntime (CUDA: onnxruntime-gpu)")


class ExportNetwork(nn.Module):
    """What the exported graph computes: `Detector.forward`'s "cls" Tensor[B, A, C] and "boxes" Tensor[B, A, 4]
    from images Tensor[B, 3, S, S] (float32, 0-255) up to float rounding, without the per-run work that is
    not the network (#18):

    - the division by the input std is folded into the weights of the convolution that the normalised
      image goes straight into (`input_conv`). A non-zero mean (ImageNet's) is still subtracted: that
      convolution pads the normalised image with zeros, i.e. the raw one with the mean, which no bias
      reproduces at the border;
    - with `fixed_size` (one image size S, any batch), the anchor points and strides are constants computed
      here, and the head's maps are flattened, the necks' upsampled and YOLO11's attention reshaped with
      sizes known now and the batch as -1: onnxruntime's graph reads no shape at run time (about 100 small
      Shape/Gather/Range/Expand ops at every run before). Without it (any image size) they stay computed.

    `model` (BatchNorm folded) is changed in place: pass a copy.
    """

    def __init__(self, model: Detector, size: int, fixed_size: bool) -> None:
        super().__init__()
        self.model = model
        conv = input_conv(model, size)
        self.folded = conv is not None
        if conv is not None:
            with torch.no_grad():
                conv.weight.div_(model.std.view(1, -1, 1, 1))
        self.register_buffer("mean", model.mean.clone() if self.folded and model.mean.any() else None)
        self.cells: list[int] | None = None  # H x W of each level when the size is fixed
        if fixed_size:
            with torch.no_grad():
                sizes = [tuple(f.shape[-2:]) for f in self.features(torch.zeros(1, 3, size, size))]
            points, strides = anchor_points(sizes, model.strides)
            self.register_buffer("points", points)
            self.register_buffer("strides", strides)
            self.cells = [h * w for h, w in sizes]
            fix_attention_size(model)

    def normalize(self, images: Tensor) -> Tensor:
        """The backbone's input: `Detector.normalize`'s less the division by std when that is folded."""
        if not self.folded:
            return self.model.normalize(images)
        return images if self.mean is None else images - self.mean

    def features(self, images: Tensor) -> list[Tensor]:
        """The neck's maps Tensor[B, C_i, H_i, W_i], finest first."""
        return self.model.neck(self.model.backbone(self.normalize(images)))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if self.cells is None:
            feats = self.features(images)
            cls, ltrb = self.model.head(feats)
            points, strides = anchor_points([f.shape[-2:] for f in feats], self.model.strides, device=images.device)
        else:
            with ConstantUpsampling():
                feats = self.features(images)
            cls, ltrb = fixed_size_head(self.model.head, feats, self.cells)
            points, strides = self.points, self.strides
        return cls, distances_to_boxes(points, ltrb * strides)


def input_conv(model: Detector, size: int) -> nn.Conv2d | None:
    """The backbone's Conv2d (groups 1) that the normalised image goes straight into, or None. A probe run at
    `size` must call it first of the backbone's layers, on that very tensor, once, and no other layer on it."""
    x = model.normalize(torch.zeros(1, 3, size, size))
    calls: list[tuple[nn.Module, Tensor | None]] = []
    leaves = [m for m in model.backbone.modules() if not any(m.children())]
    hooks = [m.register_forward_pre_hook(lambda layer, args: calls.append((layer, args[0] if args else None)))
             for m in leaves]
    try:
        with torch.no_grad():
            model.backbone(x)
    finally:
        for hook in hooks:
            hook.remove()
    first = calls[0][0] if calls else None
    if not (isinstance(first, nn.Conv2d) and first.groups == 1 and first.in_channels == x.shape[1]):
        return None
    took_x = [m for m, arg in calls if arg is x]
    return first if took_x == [first] and [m for m, _ in calls].count(first) == 1 else None


def fixed_size_head(head: Head, feats: list[Tensor], cells: list[int]) -> tuple[Tensor, Tensor]:
    """`Head.forward` with each level's map [B, C, H_i, W_i] flattened to [B, C, cells[i]] by constant sizes
    (`flatten` reads them from the map at run time): cls logits Tensor[B, A, C], ltrb Tensor[B, A, 4]."""
    def anchors_last(branches: nn.ModuleList) -> Tensor:
        maps = [b(f).reshape(-1, b[-1].out_channels, n) for b, f, n in zip(branches, feats, cells)]
        return torch.cat(maps, 2).transpose(1, 2)
    return anchors_last(head.cls), F.softplus(anchors_last(head.reg)) + 1e-3  # Head.forward's floor


class ConstantUpsampling(TorchFunctionMode):
    """Within it, nearest upsampling to exactly twice a map's size (the necks' `_upsample(x, like)`) runs with
    the factor 2 instead of the target size, which a trace reads with Shape ops at every run. Same pixels:
    output row i is input row i // 2 either way. Other calls run unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        size = kwargs.get("size")
        if func is F.interpolate and kwargs.get("mode") == "nearest" and size is not None and len(args) == 1:
            if [int(s) for s in size] == [2 * int(d) for d in args[0].shape[2:]]:  # int(): a constant when traced
                return func(args[0], scale_factor=2.0, mode="nearest")
        return func(*args, **kwargs)


class FixedSizeAttention(nn.Module):
    """`Attention` (YOLO11's) for one feature-map size: its reshapes take the batch as -1 and the other sizes
    as constants, where `Attention.forward` reads all four from its input at every run."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x: Tensor) -> Tensor:
        a = self.attn
        c, h, w = (int(d) for d in x.shape[1:])  # Python ints: constants in a trace
        q, k, v = a.qkv(x).view(-1, a.heads, 2 * a.key_dim + a.head_dim, h * w).split(
            [a.key_dim, a.key_dim, a.head_dim], 2)
        attn = ((q * a.key_dim ** -0.5).transpose(-2, -1) @ k).softmax(-1)
        y = (v @ attn.transpose(-2, -1)).view(-1, c, h, w) + a.pe(v.reshape(-1, c, h, w))
        return a.proj(y)


def fix_attention_size(model: nn.Module) -> None:
    """Every `Attention` in `model` (YOLO11's C2PSA) replaced by a FixedSizeAttention around it."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, Attention):
                setattr(parent, name, FixedSizeAttention(child))


def require_onnx():
    """Import onnx and onnxruntime, or stop with the install command."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise SystemExit(f"error: {ONNX_HINT}") from None
    return onnx, onnxruntime


def export_model(model: nn.Module, class_names: Sequence[str], size: int, out: str | Path, dynamic: bool | str = False,
                 source: str = "", opset: int = OPSET) -> Path:
    """Write `model` (on the CPU) as a checked ONNX file: batch and image size free with `dynamic`,
    else batch free only when `dynamic` is "batch", else [1, 3, size, size]."""
    onnx, _ = require_onnx()
    example = torch.full((1, 3, size, size), 114.0)
    axes = None
    if dynamic:
        image_axes = {0: "batch"} if dynamic == "batch" else {0: "batch", 2: "height", 3: "width"}
        axes = {"images": image_axes, "cls": {0: "batch"} if dynamic == "batch" else {0: "batch", 1: "anchors"},
                "boxes": {0: "batch"} if dynamic == "batch" else {0: "batch", 1: "anchors"}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of torch.export, which needs
        # onnxscript as well; it is kept because it handles this model in one second with no extra package.
        warnings.simplefilter("ignore")
        network = ExportNetwork(separate_halves(fuse_conv_bn(model.cpu().eval())), size,
                                fixed_size=not dynamic or dynamic == "batch")
        torch.onnx.export(network, (example,), str(out), dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["cls", "boxes"], dynamic_axes=axes, do_constant_folding=True)
    proto = onnx.load(str(out))
    meta = {"class_names": json.dumps(list(class_names)), "imgsz": str(size),
            "strides": json.dumps(list(model.strides)),
            "format": "images float32 [B,3,S,S] RGB 0-255 letterboxed (pad 114) -> cls logits [B,A,C], "
                      "boxes xyxy input pixels [B,A,4]; no NMS in the graph",
            "source": source}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    return out
