"""ONNX export of a detpipe checkpoint, checked with onnx.checker and against PyTorch with onnxruntime.

The graph holds the network only, not NMS: input "images" float32 [B, 3, S, S] of 0-255 RGB
values (letterboxed with grey 114, as `Predictor.preprocess` does), outputs "cls" (class
logits [B, A, C]) and "boxes" (xyxy in input pixels [B, A, 4]). Decoding and per-class NMS run in
Python (`detpipe.infer.predictor`), the same code as for the PyTorch model, so both give the same boxes
and the graph needs no NMS operator that runtimes implement differently. Class names and the
input size travel in the model's metadata. onnx and onnxruntime are optional extras.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..model.load import load_detector
from .predictor import ONNX_HINT, Predictor, compare

OPSET = 17


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


def export_onnx(weights: str | Path, out: str | Path, imgsz: int | None = None, dynamic: bool = False,
                opset: int = OPSET) -> Path:
    """Write the ONNX model; `dynamic` leaves batch size and image size free, else [1, 3, S, S]."""
    onnx, _ = require_onnx()
    model, state = load_detector(weights, "cpu")
    size = int(imgsz or state["imgsz"])
    example = torch.full((1, 3, size, size), 114.0)
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "cls": {0: "batch", 1: "anchors"},
            "boxes": {0: "batch", 1: "anchors"}} if dynamic else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of torch.export, which needs
        # onnxscript as well; it is kept because it handles this model in one second with no extra package.
        warnings.simplefilter("ignore")
        torch.onnx.export(RawOutputs(model).eval(), (example,), str(out), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["cls", "boxes"], dynamic_axes=axes,
                          do_constant_folding=True)
    proto = onnx.load(str(out))
    meta = {"class_names": json.dumps(list(state["class_names"])), "imgsz": str(size),
            "format": "images float32 [B,3,S,S] RGB 0-255 letterboxed (pad 114) -> cls logits [B,A,C], "
                      "boxes xyxy input pixels [B,A,4]; no NMS in the graph",
            "source": str(weights)}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    return out


def parity(weights: str | Path, onnx_path: str | Path, images: Sequence[np.ndarray], conf: float = 0.25,
           iou: float = 0.45) -> dict[str, float]:
    """Max abs differences between PyTorch and onnxruntime on `images`: raw outputs (logits,
    box pixels) and the final boxes/scores after NMS (with the number of boxes of each)."""
    onnx_p = Predictor(onnx_path, "cpu", conf, iou)
    torch_p = Predictor(weights, "cpu", conf, iou, imgsz=onnx_p.imgsz)
    result = compare(torch_p, onnx_p, images)
    result["torch_detections"], result["onnx_detections"] = result.pop("ref_detections"), result.pop("other_detections")
    return result
