"""Counting the operations that make the host wait for a CUDA device, on any device.

`torch.cuda.set_sync_debug_mode` reports host synchronisations, but only on a GPU. This module
counts, at the dispatcher level and so on the CPU too, the ATen operations whose CUDA kernels
synchronise: reading a value back (`.item()`, `float()`, `bool()`, `if tensor:`), `nonzero` and
what is built on it (boolean-mask indexing and assignment, `masked_select`), `unique` and
`repeat_interleave` without an output size, and copies from a device tensor to the host. The
training loop's tests run a step under it and require zero; `scripts/gpu_smoke.sh` checks the
same step on a GPU with torch's own sync debug mode.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# Always a synchronisation on CUDA: the result's size or value must reach the host.
_ALWAYS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten._unique2.default, aten.unique_consecutive.default, aten.unique_dim.default}


def _bool_index(args) -> bool:
    """index/index_put with a boolean mask: the mask is turned into indices with nonzero."""
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _to_host(func, args, kwargs) -> bool:
    """A copy of a non-CPU tensor to the CPU (only visible where such tensors exist)."""
    if func is aten._to_copy.default:
        src, device = args[0], kwargs.get("device")
        return src.device.type != "cpu" and device is not None and torch.device(device).type == "cpu"
    if func is aten.copy_.default:
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    return False


def is_host_sync(func, args, kwargs) -> bool:
    """Whether this ATen call makes the host wait for the device on CUDA."""
    if func in _ALWAYS:
        return True
    if func is aten.repeat_interleave.Tensor:  # the output size, unless given, is read from the device
        return kwargs.get("output_size") is None
    if func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default):
        return _bool_index(args)
    return _to_host(func, args, kwargs)


class HostSyncCounter(TorchDispatchMode):
    """`with HostSyncCounter() as c: ...` then `c.total` and `c.ops` (a Counter by op name)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if is_host_sync(func, args, kwargs):
            self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **kwargs)
