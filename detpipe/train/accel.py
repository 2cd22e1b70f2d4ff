"""Speed switches: autocast dtype, channels_last, cuDNN autotuning, optional torch.compile, and a
helpful OOM message.

On the CPU, train.amp means bfloat16 autocast, and only where the CPU computes bfloat16 natively
(AVX512-BF16 or AMX): there it trains about 1.6x faster; emulated bfloat16 would be slower than
float32, so other CPUs keep float32. channels_last is used on CUDA, and on the CPU for models
without grouped (depthwise) convolutions, whose CPU kernels are slower in that layout.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..model.device import channels_last  # noqa: F401  (still read here by tests/test_distributed.py)
from ..params import ParamsError

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def cpu_has_bf16() -> bool:
    """True when oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN or without this probe
        return False


def amp_dtype(train, device: torch.device) -> torch.dtype | None:
    """The autocast dtype with train.amp: train.amp_dtype on CUDA, bfloat16 on a CPU that has it;
    None = full precision."""
    name = getattr(train, "amp_dtype", "float16")
    if name not in AMP_DTYPES:
        raise ValueError(f"train.amp_dtype: {name!r} is not one of {', '.join(AMP_DTYPES)}")
    if not train.amp:
        return None
    if device.type == "cuda":
        if name == "bfloat16":
            check_cuda_bf16(device)
        return AMP_DTYPES[name]
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def check_cuda_bf16(device: torch.device) -> None:
    """Refuse train.amp_dtype bfloat16 on a GPU without native bfloat16 (before Ampere, compute
    capability 8.0): torch emulates it there, slower than float16 and for no gain in range."""
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        name = torch.cuda.get_device_name(device)
        raise ParamsError(f"train.amp_dtype: bfloat16 needs a GPU with native bfloat16 (compute capability 8.0, "
                          f"Ampere, or newer); {name} has {major}.{minor}: use amp_dtype: float16")


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """cuDNN autotuning on CUDA unless train.deterministic asks for repeatable results.

    cudnn.benchmark times the convolution algorithms for each input shape once and keeps the
    fastest; which one wins can differ between runs, so results differ in the last bits.
    deterministic: fixed algorithms and torch's deterministic kernels (warning where an operation
    has none), and the cuBLAS workspace setting they need. The CPU is deterministic either way.
    """
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def grad_scaler(train, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for float16 autocast (bfloat16 has float32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(train, device) == torch.float16)


def maybe_compile(net: nn.Module, enabled: bool) -> nn.Module:
    """torch.compile(net) behind train.compile (off by default: minutes of compile time, CUDA gains).

    Recompilations are logged with their reason (a new batch shape, e.g. the last batch of an
    epoch): each one costs the compile time again.
    """
    if not enabled:
        return net
    torch._logging.set_logs(recompiles=True)
    return torch.compile(net)


def oom_message(stage: str, batch_size: int, nproc: int, batch_key: str, amp: bool) -> str:
    """What to do after a CUDA out-of-memory error in a training stage."""
    per_rank = f" ({batch_size // max(1, nproc)} per GPU over {nproc} processes)" if nproc > 1 else ""
    tips = [f"lower train.{batch_key} (now {batch_size}, e.g. {max(nproc, batch_size // 2)})"]
    if not amp:
        tips.append("set train.amp: true")
    tips.append("or lower model.imgsz")
    hint = (" The unfrozen phase is the classic OOM point: with the backbone training it needs "
            "several times the frozen phase's memory." if stage == "train_unfrozen" else "")
    return (f"error: CUDA out of memory in {stage} at batch size {batch_size}{per_rank}: "
            f"{', '.join(tips)}; then rerun the same command (completed epochs are kept).{hint}")
