"""Collectives under NCCL without a GPU: every caller goes through detpipe.train.collectives, and a
stand-in NCCL that refuses CPU tensors (as the real one does: "No backend type associated with
device type cpu") gets every tensor on the process group's device."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from detpipe.train import collectives
from detpipe.train import distributed as ddp
from detpipe.train.loss import detection_loss

PACKAGE = Path(collectives.__file__).parent
# What may be called on torch.distributed outside detpipe/train/collectives.py: set-up and queries,
# never a collective. A new collective anywhere else fails test_no_collective_bypasses_the_helpers.
QUERIES = {"is_available", "is_initialized", "get_rank", "get_world_size", "get_backend",
           "init_process_group", "destroy_process_group", "ReduceOp"}


def _dist_uses(path: Path) -> list[tuple[int, str]]:
    """(line, attribute) of every `dist.X` / `torch.distributed.X` in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for a in node.names if a.name == "torch.distributed"}
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "torch.distributed":
            uses += [(node.lineno, a.name) for a in node.names]
        if isinstance(node, ast.Attribute):
            base = ast.unparse(node.value)
            if base in aliases or base == "torch.distributed":
                uses.append((node.lineno, node.attr))
    return uses


def test_no_collective_bypasses_the_helpers():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line} dist.{name}"
                 for path in sorted(PACKAGE.rglob("*.py")) if path.name != "collectives.py"
                 for line, name in _dist_uses(path) if name not in QUERIES]
    assert not offenders, f"call collectives through detpipe.train.collectives: {offenders}"
    assert {name for _, name in _dist_uses(PACKAGE / "collectives.py")} - QUERIES  # the helpers do use them


class StandInCuda(torch.Tensor):
    """A CPU tensor that says it is on cuda:0, as a tensor moved to the GPU would."""

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", 0)


def _is_cuda(x) -> bool:
    return isinstance(x, StandInCuda)


@pytest.fixture
def nccl(monkeypatch):
    """A 2-rank NCCL group as rank 0 sees it; returns the list of collectives called."""
    calls: list[str] = []
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, (str, torch.device)) and torch.device(target).type == "cuda":
            return self.as_subclass(torch.Tensor).clone().as_subclass(StandInCuda)
        if _is_cuda(self) and isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu":
            return self.as_subclass(torch.Tensor).clone()
        return real_to(self, *args, **kwargs)

    def needs_cuda(name, tensors):
        calls.append(name)
        for t in tensors:
            if not _is_cuda(t):
                raise RuntimeError("No backend type associated with device type cpu")

    def all_reduce(t, op=dist.ReduceOp.SUM, **_):
        needs_cuda("all_reduce", [t])
        if op == dist.ReduceOp.SUM:
            t.mul_(2)  # the other rank holds the same values

    def broadcast(t, src=0, **_):
        needs_cuda("broadcast", [t])

    def all_gather_object(out, obj, **_):
        calls.append("all_gather_object")
        out[:] = [obj, obj]

    def broadcast_object_list(box, src=0, device=None, **_):
        # torch pickles the objects into a tensor on `device`: NCCL needs it on this rank's GPU
        calls.append("broadcast_object_list")
        if device is None or torch.device(device).type != "cuda":
            raise RuntimeError("No backend type associated with device type cpu")

    def barrier(device_ids=None, **_):
        calls.append("barrier")
        assert device_ids == [0]

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for name, fn in {"is_initialized": lambda: True, "get_world_size": lambda *a: 2, "get_rank": lambda *a: 0,
                     "get_backend": lambda *a: "nccl", "all_reduce": all_reduce, "broadcast": broadcast,
                     "all_gather_object": all_gather_object, "broadcast_object_list": broadcast_object_list,
                     "barrier": barrier}.items():
        monkeypatch.setattr(dist, name, fn)
    return calls


RANK0 = ddp.DistInfo(rank=0, world=2, local_rank=0)


def test_epoch_statistics_reach_nccl_on_the_gpu(nccl):
    # train_one_epoch's statistics, as they come off a CPU run (the old code all-reduced a CPU
    # float64 tensor: NCCL refused it at the end of every first epoch).
    sums = torch.tensor([6.0, 3.0, 3.0, 4.0, 0.0], dtype=torch.float64)
    tr = ddp.reduce_epoch_stats(sums, images=4, seconds=2.5, info=RANK0)
    assert tr == {"loss": 1.5, "box": 0.75, "cls": 0.75, "images": 8, "nonfinite": 0, "seconds": 2.5}
    assert nccl == ["all_reduce", "all_reduce"]


def test_validation_gather_buffers_and_barriers_reach_nccl_on_the_gpu(nccl):
    dets = {3: {"boxes": np.zeros((1, 4)), "scores": np.ones(1), "labels": np.zeros(1, int)}}
    sums, merged = ddp.gather_evaluation(torch.tensor([2.0, 1.0, 1.0, 1.0], dtype=torch.float64), dets, RANK0)
    assert sums.tolist() == [4.0, 2.0, 2.0, 2.0] and len(merged) == 1
    bn = nn.BatchNorm2d(3)
    ddp.sync_buffers(bn, RANK0)
    ddp.barrier(RANK0)
    with ddp.main_first(RANK0):
        pass
    assert nccl == ["all_reduce", "all_gather_object", "broadcast", "broadcast", "broadcast", "barrier", "barrier"]


def test_run_folder_decisions_reach_nccl_on_the_gpu(nccl):
    # Rank 0 tells the others whether the run folder is theirs to train in (or why not).
    assert ddp.broadcast("busy", RANK0) == "busy"
    assert nccl == ["broadcast_object_list"]


def test_loss_normaliser_reaches_nccl_on_the_gpu(nccl):
    # The training loss all-reduces its normaliser; its tensors are wherever the model is.
    a = 4
    out = {"cls": torch.zeros(1, a, 2, requires_grad=True),
           "boxes": torch.tensor([[[0.0, 0, 8, 8]] * a], requires_grad=True),
           "points": torch.tensor([[4.0, 4.0]] * a), "strides": torch.full((a, 1), 8.0)}
    loss, _ = detection_loss(out, torch.tensor([[[1.0, 0, 0, 8, 8]]]))
    assert torch.isfinite(loss) and nccl == ["all_reduce"]
    with torch.no_grad():  # evaluation normalises per rank: no collective
        detection_loss(out, torch.tensor([[[1.0, 0, 0, 8, 8]]]))
    assert nccl == ["all_reduce"]
