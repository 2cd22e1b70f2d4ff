"""Convert a YOLOv8 / YOLO11 state dict saved with Ultralytics into a detpipe checkpoint.

Ultralytics is never imported: the input is the plain state dict a user saved in their own
Ultralytics install (`torch.save(YOLO("yolov8n.pt").model.state_dict(), "yolov8n-state.pt")`),
read with weights_only=True. detpipe's `yolov8` / `yolo11` backbone and neck are Ultralytics'
layers under other names; the name map is derived by walking detpipe's modules with, per block
class, the names Ultralytics gives the same sub-layers. The head's hidden layers are imported too;
its output layers are not (Ultralytics predicts 16 DFL bins per box side where detpipe predicts one
distance, and the class logits are the source's classes).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import checkpoint as ckpt
from .layers import C2PSA, C3, SPPF, Bottleneck, C2f, scaled_channels
from ..catalog import SCALES, YOLO_FAMILIES, YOLO_SCALES
from .detector import Detector, ModelConfig, yolo_head_widths

# Ultralytics' sub-layer names for each detpipe block (detpipe path -> Ultralytics path).
_NAMES: dict[type, dict[str, str]] = {
    Bottleneck: {"conv.0": "cv1", "conv.1": "cv2"},
    C2f: {"split": "cv1", "merge": "cv2", "blocks": "m"},
    C3: {"split": "cv1", "skip": "cv2", "merge": "cv3", "blocks": "m"},
    SPPF: {"reduce": "cv1", "merge": "cv2"},
    C2PSA: {"split": "cv1", "merge": "cv2", "blocks": "m"},
}
# The neck's layers as offsets after the backbone's in yolov8.yaml / yolo11.yaml (the Upsample and
# Concat layers in between hold no weights).
_NECK_LAYERS = {"top_down.0": 2, "top_down.1": 5, "down.0": 6, "bottom_up.0": 8, "down.1": 9, "bottom_up.1": 11}
_HEAD_LAYER = 12
_HEAD_BRANCHES = {"reg": "cv2", "cls": "cv3"}
HOW_TO_SAVE = ('in your Ultralytics environment: python -c "import torch; from ultralytics import YOLO; '
               "torch.save(YOLO('yolov8n.pt').model.float().state_dict(), 'yolov8n-state.pt')\"")


class ConversionError(ckpt.CheckpointError):
    """The file cannot be converted; the one-line message says why and what to do."""


def _is_conv_bn(m: nn.Module) -> bool:
    return (isinstance(m, nn.Sequential) and len(m) >= 2
            and isinstance(m[0], nn.Conv2d) and isinstance(m[1], nn.BatchNorm2d))


def _walk(module: nn.Module, ours: str, theirs: str, out: dict[str, str]) -> None:
    for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
        out[ours + name] = theirs + name
    names = {"0": "conv", "1": "bn"} if _is_conv_bn(module) else _NAMES.get(type(module))
    if names is None:  # containers (ModuleList, Sequential, PSABlock, Attention) keep their children's names
        names = {n: n for n, _ in module.named_children()}
    for path, their_path in names.items():
        _walk(module.get_submodule(path), f"{ours}{path}.", f"{theirs}{their_path}.", out)


def key_map(model: Detector) -> dict[str, str]:
    """detpipe key -> Ultralytics key for every tensor of a `yolov8`/`yolo11` model that has a
    counterpart of the same role: backbone, neck and the head's hidden layers."""
    out: dict[str, str] = {}
    layers = _backbone_layers(model)
    for i, (path, layer) in enumerate(layers):
        _walk(layer, f"backbone.{path}.", f"model.{i}.", out)
    for path, offset in _NECK_LAYERS.items():
        _walk(model.neck.get_submodule(path), f"neck.{path}.", f"model.{len(layers) + offset}.", out)
    for ours, theirs in _HEAD_BRANCHES.items():
        for level, branch in enumerate(getattr(model.head, ours)):
            for j, hidden in enumerate(branch[:-1]):  # not the output layer
                _walk(hidden, f"head.{ours}.{level}.{j}.", f"{_head_prefix(model)}{theirs}.{level}.{j}.", out)
    return out


def _backbone_layers(model: Detector) -> list[tuple[str, nn.Module]]:
    """The backbone's layers with their detpipe paths, in Ultralytics' order (its model.0, model.1, ...)."""
    return [(f"{stage}.{i}", m) for stage in ("stem", "c3", "c4", "c5")
            for i, m in enumerate(getattr(model.backbone, stage))]


def _head_prefix(model: Detector) -> str:
    return f"model.{len(_backbone_layers(model)) + _HEAD_LAYER}."


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The Ultralytics state dict in `path`, keys as DetectionModel names them (model.0.conv.weight)."""
    if not Path(path).is_file():
        raise ConversionError(f"{path}: file not found")
    try:
        state = ckpt.load(path)
    except ckpt.CheckpointError as exc:
        raise ConversionError(f"{exc}. An Ultralytics .pt file pickles its classes and is never unpickled here: "
                           f"save its state dict first, {HOW_TO_SAVE}") from None
    if isinstance(state, dict) and isinstance(state.get("ema") or state.get("model"), dict):
        state = state.get("ema") or state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: not a state dict of tensors; {HOW_TO_SAVE}")
    while all(k.startswith("model.model.") for k in state):  # YOLO(...).state_dict() wraps DetectionModel's
        state = {k[len("model."):]: v for k, v in state.items()}
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


@dataclass
class Conversion:
    """A converted state dict and what happened to each source tensor."""

    config: ModelConfig
    state: dict[str, torch.Tensor]                       # detpipe key -> tensor
    imported: dict[str, str]                             # Ultralytics key -> detpipe key
    skipped: dict[str, str] = field(default_factory=dict)  # Ultralytics key -> reason


def _source_classes(state: dict[str, torch.Tensor]) -> int:
    for k, v in state.items():
        if re.fullmatch(r"model\.\d+\.cv3\.0\.2\.weight", k):
            return int(v.shape[0])
    raise ConversionError("no detection head (model.N.cv3.0.2.weight) in the state dict: not an Ultralytics "
                       "YOLOv8/YOLO11 detection model")


def _fits(state: dict[str, torch.Tensor], model: Detector, keys: dict[str, str]) -> bool:
    own = model.state_dict()
    return all(u in state and state[u].shape == own[d].shape for d, u in keys.items())


def convert(state: dict[str, torch.Tensor], source: str = "state dict") -> Conversion:
    """Find the family and scale whose layout fits every backbone, neck and head-hidden tensor, and
    rename those tensors; the others are listed in `skipped` with the reason."""
    nc = _source_classes(state)
    first = state.get("model.0.conv.weight")
    for family in YOLO_FAMILIES:
        for scale in SCALES:
            width, _, cap = YOLO_SCALES[family][scale]
            if first is None or first.shape[0] != scaled_channels(width, cap)[0]:
                continue  # the stem's width already rules this scale out: skip building it
            model = Detector(ModelConfig(nc, family, 0, scale, family))
            keys = key_map(model)
            if _fits(state, model, keys):
                return _conversion(state, model, keys)
    raise ConversionError(f"{source}: no detpipe layout fits it: detpipe imports Ultralytics YOLOv8 and YOLO11 "
                       f"detection models of scale {', '.join(SCALES)} (not x, YOLOv5/9/10/26 or RT-DETR)")


def _conversion(state: dict[str, torch.Tensor], model: Detector, keys: dict[str, str]) -> Conversion:
    out = Conversion(model.config, {d: state[u] for d, u in keys.items()}, {u: d for d, u in keys.items()})
    head = _head_prefix(model)
    for k in state:
        if k in out.imported:
            continue
        if ".dfl." in k:
            out.skipped[k] = "DFL bins: detpipe predicts one distance per box side"
        elif k.startswith(head) and ".cv2." in k:
            out.skipped[k] = "box output layer: 16 DFL bins per side, detpipe predicts 4 distances"
        elif k.startswith(head) and ".cv3." in k:
            out.skipped[k] = f"class output layer: the source's {model.config.num_classes} classes"
        else:
            out.skipped[k] = "not part of a detection backbone, neck or head (e.g. segmentation or pose)"
    return out


def class_branch_width(config: ModelConfig) -> int:
    """The hidden width of a YOLO head's class branch."""
    width, _, cap = YOLO_SCALES[config.neck][config.scale]
    return yolo_head_widths(scaled_channels(width, cap)[2], config.num_classes)[0]


def save(conv: Conversion, out: str | Path, source: str, sha256: str) -> None:
    """Write the conversion as a detpipe checkpoint usable as `model.pretrained: <out>`."""
    ckpt.save_atomic({"model": conv.state, "model_config": conv.config.to_dict(),
                      "imported": {"from": "ultralytics", "source": source, "sha256": sha256,
                                   "family": conv.config.backbone, "scale": conv.config.scale,
                                   "num_classes": conv.config.num_classes,
                                   "skipped": dict(sorted(conv.skipped.items()))}}, out)
