"""Which CPU inference path is fastest: each speed-up of detpipe's Predictor alone, all alternating
batch by batch with Ultralytics YOLOv8n in one run (imgsz 320 by default).

    /tmp/yolo-venv-speed/bin/python bench/bench_infer_paths.py [--threads 1] [--images 32] [--compile]

Variants (untrained params.yaml model, the same 8 synthetic photos as bench/bench_predict.py):
  before        the path before issue #18: Pillow letterbox, PyTorch float32, channels_last
  opencv-lb     `before` with an OpenCV uint8 letterbox (cv2.resize INTER_LINEAR, no antialiasing:
                NOT the pixels the model was trained on, shown for its cost only)
  torch-lb      `before` with torch's uint8 antialiased letterbox (detpipe's letterbox now)
  nchw          torch-lb without channels_last
  bf16          torch-lb with bfloat16 autocast (this CPU has AVX512-BF16; changes the boxes)
  jit-freeze    torch-lb, torch.jit.trace + torch.jit.freeze
  jit-ofi       torch-lb, torch.jit.trace + torch.jit.optimize_for_inference
  ort-basic     torch-lb, onnxruntime with basic graph optimisations only (no spinning)
  ort           torch-lb, onnxruntime, all graph optimisations (detpipe's default CPU path: C2f's split
                conv exported as two convs, threads spinning between operators within a run at 2+)
  ort-chunk     `ort` with the split conv's output sliced in the graph (the export before this row)
  ort-nospin    `ort` with no spinning (the default before this row)
  compile       torch-lb, torch.compile (with --compile only: tens of seconds per shape; compile
                time printed)
Each row: median ms per image of preprocess, forward and decode + NMS, the latency (their sum per
batch, median) and its ratio to `before` and to YOLOv8n's; steps run 20 ms apart. All variants share
one process, so the onnxruntime rows run beside torch's --threads, whose idle workers spin against
onnxruntime's, and each row's figure depends a little on the row before it (a spinning one leaves
the cores awake): compare the paths here, and the tools with bench/bench_predict.py, which runs each
tool in its own process as its commands do. Run it alone (`/work/bin/quiet`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_predict import alternate, detpipe_batch, untrained_model, yolo_batch  # noqa: E402
from detpipe.boxes import letterbox_params  # noqa: E402
from detpipe.data.dataset import PAD_VALUE  # noqa: E402
from detpipe.infer.backends import OnnxBackend, TorchBackend  # noqa: E402
from detpipe.infer import onnx_graph  # noqa: E402
from detpipe.infer.onnx_graph import export_model  # noqa: E402
from detpipe.infer.predictor import Predictor, sample_images  # noqa: E402
from detpipe.model.detector import fuse_conv_bn  # noqa: E402

BATCHES = (1, 8)


def pillow_letterbox(rgb: np.ndarray, imgsz: int):
    """detpipe's letterbox before #18: Pillow resize, paste, array, tensor."""
    h, w = rgb.shape[:2]
    lb = letterbox_params(w, h, imgsz)
    img = Image.fromarray(np.ascontiguousarray(rgb)).resize((lb.new_width, lb.new_height), Image.BILINEAR)
    canvas = Image.new("RGB", (lb.size, lb.size), (PAD_VALUE,) * 3)
    canvas.paste(img, (lb.pad_x, lb.pad_y))
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1), lb


def opencv_letterbox(rgb: np.ndarray, imgsz: int):
    """cv2.resize + copyMakeBorder, as Ultralytics letterboxes (no antialiasing when shrinking)."""
    h, w = rgb.shape[:2]
    lb = letterbox_params(w, h, imgsz)
    small = cv2.resize(rgb, (lb.new_width, lb.new_height), interpolation=cv2.INTER_LINEAR)
    out = cv2.copyMakeBorder(small, lb.pad_y, imgsz - lb.new_height - lb.pad_y, lb.pad_x,
                             imgsz - lb.new_width - lb.pad_x, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return torch.from_numpy(out).permute(2, 0, 1), lb


class RawOutputs(nn.Module):
    """`Detector.forward` with the two outputs a runtime needs (anchor points are baked into boxes), as
    traced here and by the export before #18 (its input normalisation and shape computations included)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(images)
        return out["cls"], out["boxes"]


class ScriptedBackend(TorchBackend):
    """TorchBackend whose network is `make(model, example)` (a traced/frozen or compiled module),
    built once per input shape; the build time of each is kept in `build_seconds`."""

    def __init__(self, model, make, label: str) -> None:
        super().__init__(model, torch.device("cpu"))
        self.make, self.where, self.built, self.build_seconds = make, label, {}, []
        self.raw = RawOutputs(self.model).eval()

    @torch.no_grad()
    def __call__(self, batch):
        x = batch.float().contiguous(memory_format=self.memory_format)
        if x.shape not in self.built:
            t0 = time.perf_counter()
            self.built[x.shape] = self.make(self.raw, x)
            self.built[x.shape](x)
            self.build_seconds.append(time.perf_counter() - t0)
        cls, boxes = self.built[x.shape](x)
        return {"cls": cls.float(), "boxes": boxes.float()}


def traced(optimize: bool):
    def make(raw, x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.trace(raw, x)
            return torch.jit.optimize_for_inference(module) if optimize else torch.jit.freeze(module.eval())
    return make


def ort_backend(model, names, imgsz: int, level: str, folder: Path, spin: bool | None = None,
                halves: bool = True) -> OnnxBackend:
    import onnxruntime as ort
    path = folder / f"model-{level}-{spin}-{halves}.onnx"
    with mock.patch.object(onnx_graph, "separate_halves", onnx_graph.separate_halves if halves else lambda m: m):
        export_model(model, names, imgsz, path, dynamic="batch")
    backend = OnnxBackend(path, torch.device("cpu"), spin)
    if level == "basic":
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        backend.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return backend


def variants(model, names, imgsz: int, folder: Path, compile_too: bool) -> dict[str, Predictor]:
    cpu = torch.device("cpu")

    def predictor(backend=None, letterbox=None, dtype="float32") -> Predictor:
        p = Predictor.from_model(model, names, imgsz, cpu, 0.25, 0.45, 100, dtype=dtype, backend="torch")
        if backend is not None:
            p.backend = backend
        if letterbox is not None:
            p.letterbox = lambda rgb: letterbox(rgb, imgsz)
        return p

    nchw = TorchBackend(model, cpu)
    nchw.memory_format = torch.contiguous_format
    nchw.model.to(memory_format=torch.contiguous_format)
    out = {"before": predictor(letterbox=pillow_letterbox), "opencv-lb": predictor(letterbox=opencv_letterbox),
           "torch-lb": predictor(), "nchw": predictor(nchw), "bf16": predictor(dtype="bfloat16"),
           "jit-freeze": predictor(ScriptedBackend(model, traced(False), "jit freeze")),
           "jit-ofi": predictor(ScriptedBackend(model, traced(True), "jit optimize_for_inference")),
           "ort-basic": predictor(ort_backend(model, names, imgsz, "basic", folder)),
           "ort": predictor(ort_backend(model, names, imgsz, "all", folder)),
           "ort-chunk": predictor(ort_backend(model, names, imgsz, "all", folder, halves=False)),
           "ort-nospin": predictor(ort_backend(model, names, imgsz, "all", folder, spin=False))}
    if compile_too:
        out["compile"] = predictor(ScriptedBackend(model, lambda raw, x: torch.compile(raw, dynamic=False), "compile"))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    p.add_argument("--images", type=int, default=32, help="images timed per batch size (default 32)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--compile", action="store_true", help="also torch.compile (slow to build)")
    p.add_argument("--params", default=str(Path(__file__).resolve().parents[1] / "params.yaml"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    model, params = untrained_model(Path(args.params))
    model = fuse_conv_bn(model)
    names = list(params.data.classes)
    images = sample_images(8)
    bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        preds = variants(model, names, args.imgsz, Path(tmp), args.compile)
        try:
            os.environ.setdefault("YOLO_OFFLINE", "1")
            from ultralytics import YOLO
            from ultralytics.utils import torch_utils
            torch_utils.NUM_THREADS = args.threads
            yolo = YOLO("yolov8n.yaml")
        except ImportError:
            yolo = None
        print(f"CPU, torch {torch.__version__}, {args.threads} thread(s), imgsz {args.imgsz}, "
              f"{args.images} images per batch size; ms per image (medians over batches), all alternating")
        print(f"\n{'variant':<11} {'batch':>5} {'preprocess':>10} {'forward':>8} {'NMS':>6} {'latency':>8} "
              f"{'/before':>8} {'/yolov8n':>9}")
        for batch in BATCHES:
            steps = {name: (lambda idx, pr=pr: detpipe_batch(pr, [images[i] for i in idx])) for name, pr in preds.items()}
            if yolo is not None:
                steps["yolov8n"] = lambda idx: yolo_batch(yolo, [bgr[i] for i in idx], args.imgsz)
            r = alternate(steps, len(images), batch, runs=max(3, args.images // batch))
            for name, v in r.items():
                vs_yolo = f"{v['latency'] / r['yolov8n']['latency']:>8.2f}x" if yolo is not None else ""
                print(f"{name:<11} {batch:>5} {v['preprocess']:>10.2f} {v['forward']:>8.2f} {v['nms']:>6.2f} "
                      f"{v['latency']:>8.2f} {v['latency'] / r['before']['latency']:>7.2f}x {vs_yolo}", flush=True)
        if args.compile:
            print(f"\ntorch.compile build seconds per shape: "
                  f"{', '.join(f'{s:.1f}' for s in preds['compile'].backend.build_seconds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
