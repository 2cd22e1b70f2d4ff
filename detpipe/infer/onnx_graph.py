"""A detpipe network as an ONNX graph: the one export routine behind `detpipe export` and the
onnxruntime inference backend's cache.

The graph holds the network only, not NMS: input "images" float32 [B, 3, S, S] of 0-255 RGB
values (letterboxed with grey 114, as `Predictor.preprocess` does), outputs "cls" (class
logits [B, A, C]) and "boxes" (xyxy in input pixels [B, A, 4]). Class names and the input size
travel in the model's metadata.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from ..model.detector import fuse_conv_bn
from ..model.layers import separate_halves

OPSET = 17
ONNX_HINT = ("ONNX support needs the optional packages onnx and onnxruntime: "
             "pip install onnx onnxruntime (CUDA: onnxruntime-gpu)")


class RawOutputs(nn.Module):
    """The detector with the two outputs a runtime needs (anchor points are baked into boxes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(images)
        return out["cls"], out["boxes"]


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
        network = RawOutputs(separate_halves(fuse_conv_bn(model.cpu().eval())))
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
