"""What runs the network for inference: PyTorch (any device) or onnxruntime (an exported graph)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..model.detector import fuse_conv_bn
from ..model.device import channels_last
from .onnx_graph import ONNX_HINT

INFERENCE_DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Anchors whose float32 class probability reaches this are compared for their boxes: the ones that
# can become useful detections (background anchors' boxes are never used, and are the least precise).
CANDIDATE_SCORE = 0.05
# How far float16 / bfloat16 inference may be from float32: the largest class-probability
# difference, and the lowest IoU between an anchor's float32 and low-precision box over candidate
# anchors. Measured with CPU autocast (tests/test_gpu_paths.py; float16 / bfloat16): on the test's
# barely trained 96-px model 0.0025 / 0.013 and IoU 0.987 / 0.90, on the smoke test's 160-px model
# 0.0004 / 0.004 and IoU 0.998 / 0.984. bfloat16's 8-bit mantissa is coarse: prefer float16.
# scripts/gpu_smoke.sh checks these on a GPU.
LOW_PRECISION_TOLERANCE = {"float16": {"score": 0.01, "iou": 0.97}, "bfloat16": {"score": 0.05, "iou": 0.75}}


class TorchBackend:
    """A detpipe checkpoint run by PyTorch; `device` is where its inputs go.

    dtype float16 or bfloat16 autocasts the forward pass (CUDA; the CPU runs bfloat16 natively
    only on some CPUs). Boxes are decoded in float32 either way. Parity with float32 is tested in
    tests/test_inference_precision.py and, on a GPU, by scripts/gpu_smoke.sh.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: str = "float32") -> None:
        if dtype not in INFERENCE_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(INFERENCE_DTYPES)}")
        # Inference only: BatchNorm folded into the convolutions, NHWC where that layout is faster.
        self.model, self.device = fuse_conv_bn(model.eval()), device
        self.strides: tuple[int, ...] = tuple(model.strides)
        self.memory_format = torch.channels_last if channels_last(device, model) else torch.preserve_format
        self.model.to(memory_format=self.memory_format)
        self.autocast = INFERENCE_DTYPES[dtype]
        self.where = f"{device}" + (f" ({dtype})" if self.autocast is not None else "")
        self.fixed_batch: int | None = None
        self.fixed_size: int | None = None
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # letterboxed batches all have one shape

    @torch.no_grad()
    def __call__(self, batch: Tensor) -> dict[str, Tensor]:
        x = batch.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        cast = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with cast:
            out = self.model(x)
        return {"cls": out["cls"].float(), "boxes": out["boxes"].float()}

    def sync(self) -> None:
        """Wait for queued GPU work, so timings measure the work and not its launch."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def torch_side(self) -> contextlib.AbstractContextManager:
        """Where the caller's own torch work runs: as configured (the network shares torch's threads)."""
        return contextlib.nullcontext()


class OnnxBackend:
    """An exported model run by onnxruntime; outputs are raw (NMS runs in Python, as for PyTorch).

    onnxruntime takes host (numpy) arrays whatever its execution provider, so `device`, where
    inputs go, is always the CPU, and a batch handed over from another device is copied back.
    """

    def __init__(self, path: str | Path, device: torch.device, spin: bool | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise SystemExit(f"error: {path}: {ONNX_HINT}") from None
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads = torch.get_num_threads()
        # With 2+ threads the helper threads spin between operators within a run: a graph of ~200
        # small operators otherwise pays a thread wake-up on each, and at batch 1 a second thread
        # gained nothing (bench/bench_infer_paths.py's ort-nospin row). They stop spinning when the
        # run returns (force_spinning_stop), so they never starve the PyTorch or image decoding that
        # runs next in this process. Within a run they take the cores asked for, as any 2-thread run
        # does: on a machine shared with busy processes, ask for fewer (OMP_NUM_THREADS, `fps --threads`).
        spin = threads > 1 if spin is None else spin
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device = torch.device("cpu")
        self.where = f"onnxruntime {self.session.get_providers()[0]}"
        meta = self.session.get_modelmeta().custom_metadata_map
        if "class_names" not in meta:
            raise SystemExit(f"error: {path}: not exported by `python -m detpipe export` "
                             "(no class_names in its metadata)")
        self.class_names = json.loads(meta["class_names"])
        self.imgsz = int(meta["imgsz"])
        # Older exports do not record them; a fixed-size one is checked by its input shape instead.
        self.strides: tuple[int, ...] = tuple(json.loads(meta.get("strides", "[]")))
        shape = self.session.get_inputs()[0].shape
        self.input_name = self.session.get_inputs()[0].name
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.fixed_size = shape[2] if isinstance(shape[2], int) else None

    def __call__(self, batch: Tensor) -> dict[str, Tensor]:
        host = batch.detach().cpu().numpy().astype(np.float32)  # numpy's copy wakes no torch thread
        cls, boxes = self.session.run(["cls", "boxes"], {self.input_name: host})
        return {"cls": torch.from_numpy(cls), "boxes": torch.from_numpy(boxes)}

    def sync(self) -> None:
        pass  # onnxruntime's run() returns when the outputs are ready

    def torch_side(self) -> contextlib.AbstractContextManager:
        """Where the caller's own torch work (letterbox, decoding, NMS) runs: on one thread.
        onnxruntime has its own threads; torch's OpenMP workers spin for milliseconds after each
        parallel op, on the cores those threads need, and made a 2-thread forward at batch 1 ~1.6x
        slower (bench/bench_infer_paths.py's ort-torch2 row)."""
        return torch_threads(1)


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to at most `n` within the block (restored after; ~3 µs)."""
    before = torch.get_num_threads()
    if before <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


