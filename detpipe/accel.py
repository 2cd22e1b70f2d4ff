"""CUDA niceties: autocast dtype, channels_last, optional torch.compile, and a helpful OOM message.

All of them are off on the CPU, so CPU runs (and CI) compute exactly what they always did.
"""
from __future__ import annotations

import torch
from torch import nn

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_dtype(train, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (train.amp_dtype) on CUDA with train.amp; None = full precision."""
    name = getattr(train, "amp_dtype", "float16")
    if name not in AMP_DTYPES:
        raise ValueError(f"train.amp_dtype: {name!r} is not one of {', '.join(AMP_DTYPES)}")
    if device.type != "cuda" or not train.amp:
        return None
    return AMP_DTYPES[name]


def grad_scaler(train, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for float16 autocast (bfloat16 has float32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(train, device) == torch.float16)


def channels_last(device: torch.device) -> bool:
    """NHWC memory layout: faster convolutions with tensor cores, CUDA only."""
    return device.type == "cuda"


def maybe_compile(net: nn.Module, enabled: bool) -> nn.Module:
    """torch.compile(net) behind train.compile (off by default: minutes of compile time, CUDA gains)."""
    return torch.compile(net) if enabled else net


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
