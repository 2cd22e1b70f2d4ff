"""ONNX export of a detpipe checkpoint, checked with onnx.checker and against PyTorch with onnxruntime.

The graph holds the network only, not NMS: input "images" float32 [B, 3, S, S] of 0-255 RGB
values (letterboxed with grey 114, as `Predictor.preprocess` does), outputs "cls" (class
logits [B, A, C]) and "boxes" (xyxy in input pixels [B, A, 4]). Decoding and per-class NMS run in
Python (`detpipe.infer.predictor`), the same code as for the PyTorch model, so both give the same boxes
and the graph needs no NMS operator that runtimes implement differently. Class names and the
input size travel in the model's metadata. onnx and onnxruntime are optional extras.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..model.load import load_detector
from .onnx_graph import OPSET, export_model
from .predictor import Predictor, compare


def export_onnx(weights: str | Path, out: str | Path, imgsz: int | None = None, dynamic: bool = False,
                opset: int = OPSET) -> Path:
    """Write the ONNX model; `dynamic` leaves batch size and image size free, else [1, 3, S, S]."""
    model, state = load_detector(weights, "cpu")
    return export_model(model, list(state["class_names"]), int(imgsz or state["imgsz"]), out, dynamic,
                        str(weights), opset)


def parity(weights: str | Path, onnx_path: str | Path, images: Sequence[np.ndarray], conf: float = 0.25,
           iou: float = 0.45) -> dict[str, float]:
    """Max abs differences between PyTorch and onnxruntime on `images`: raw outputs (logits,
    box pixels) and the final boxes/scores after NMS (with the number of boxes of each)."""
    onnx_p = Predictor(onnx_path, "cpu", conf, iou)
    torch_p = Predictor(weights, "cpu", conf, iou, imgsz=onnx_p.imgsz)
    result = compare(torch_p, onnx_p, images)
    result["torch_detections"], result["onnx_detections"] = result.pop("ref_detections"), result.pop("other_detections")
    return result
