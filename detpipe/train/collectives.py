"""Every collective detpipe runs, in one place, with its tensors on the process group's device.

NCCL takes CUDA tensors only ("No backend type associated with device type cpu"); gloo takes CPU
tensors. Callers hand over tensors from wherever they are (an epoch's statistics, a loss
normaliser, EMA buffers); these helpers copy them to `group_device()` when needed and the results
back. tests/test_collectives.py checks that no other module calls torch.distributed directly and
runs the callers against a stand-in NCCL that fails on CPU tensors, as the real one does.
Without an initialised process group every helper is the identity.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def group_device() -> torch.device:
    """The device a collective's tensors must be on: this rank's GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    """`t` reduced over all ranks (sum, max or min), on t's device; `t` itself may be overwritten."""
    if world_size() == 1:
        return t
    x = t.to(group_device())
    dist.all_reduce(x, op=_OPS[op])
    return x.to(t.device)


def broadcast_(tensors: list[Tensor], src: int = 0) -> None:
    """Overwrite `tensors` on every rank with rank `src`'s values, in place."""
    if world_size() == 1:
        return
    device = group_device()
    for t in tensors:
        x = t.to(device)
        dist.broadcast(x, src=src)
        if x is not t:
            t.copy_(x)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable `obj`, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s picklable `obj` on every rank (serialised through a tensor on the group's device)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=group_device())
    return box[0]


def barrier() -> None:
    """Wait for every rank (on this rank's GPU under nccl, so NCCL does not guess one)."""
    if world_size() == 1:
        return
    device = group_device()
    dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)
