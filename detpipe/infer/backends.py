"""What runs the network for inference: PyTorch (any device) or onnxruntime (an exported graph)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..cpus import calling_thread_on, thread_placement, usable_cpus
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


class OnnxBackend:
    """An exported model run by onnxruntime; outputs are raw (NMS runs in Python, as for PyTorch).

    onnxruntime takes host (numpy) arrays whatever its execution provider, so `device`, where
    inputs go, is always the CPU, and a batch handed over from another device is copied back.
    It runs on torch's thread count at construction (capped at detpipe.cpus.usable_cpus); `spin`
    (default: with 2+ threads) and `pin` place those threads (below; bench/bench_ort_affinity.py
    compares the four settings).
    """

    def __init__(self, path: str | Path, device: torch.device, spin: bool | None = None, pin: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise SystemExit(f"error: {path}: {ONNX_HINT}") from None
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        # torch's count, but no more than the CPUs this process may use: torch's default counts the
        # affinity mask, not a container's CPU quota, and spinning threads beyond the quota only wait.
        options.intra_op_num_threads = threads = min(torch.get_num_threads(), usable_cpus())
        # With 2+ threads the worker threads spin between operators within a run, as a graph of ~200
        # small operators otherwise pays a thread wake-up on each (batch 1, median of three: 6.6 vs
        # 7.6 ms back to back, 7.4 vs 9.2 with runs 20 ms apart; bench/results/bench_ort_affinity.txt),
        # and sit pinned one per CPU (see thread_placement). They stop spinning when the run returns (force_spinning_stop), so they
        # never starve the PyTorch or image decoding that runs next in this process. Within a run they
        # take the cores asked for, as any 2-thread run does: on a machine shared with busy processes,
        # ask for fewer (OMP_NUM_THREADS, `fps --threads`).
        spin = threads > 1 if spin is None else spin
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        placement = thread_placement(threads) if pin else None
        if placement:
            options.add_session_config_entry("session.intra_op_thread_affinities", placement[1])
        self.caller_cpus = placement[0] if placement else None
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
        with calling_thread_on(self.caller_cpus):  # off the pinned workers' CPUs (thread_placement)
            cls, boxes = self.session.run(["cls", "boxes"], {self.input_name: host})
        return {"cls": torch.from_numpy(cls), "boxes": torch.from_numpy(boxes)}

    def sync(self) -> None:
        pass  # onnxruntime's run() returns when the outputs are ready


def leave_cpu_to(backend: TorchBackend | OnnxBackend) -> None:
    """When onnxruntime runs the network: torch down to one thread, for what it still does in this
    process (letterbox, decoding, NMS: small). torch's idle OpenMP workers spin for milliseconds
    after each parallel op, on the cores onnxruntime's threads need: on the code before this (a57244e),
    `detpipe fps --threads 2` ran the forward pass at batch 1 in 7.7-8.8 ms, in 6.3-8.0 with
    GOMP_SPINCOUNT=0 (their spinning off; three runs each). Setting torch's threads per batch and back is no cure (each change
    starts a new pool of torch threads, which spin too), so the commands that predict call this once,
    after the backend took its thread count from torch; a library caller decides for its own process."""
    if isinstance(backend, OnnxBackend) and torch.get_num_threads() > 1:
        torch.set_num_threads(1)
