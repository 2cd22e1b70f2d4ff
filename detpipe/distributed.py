"""DDP helpers: launch under torchrun, rank queries, sharded batches, reductions.

The global batch of EpochBatchSampler (its order a function of (seed, epoch) only) is cut into
`world` contiguous slices, so rank r of an N-process run sees exactly the images of the global
batch a single process would see, with the same per-(seed, epoch, index) augmentation. Gradients
are averaged over ranks by DDP. Without torchrun every helper is a no-op and world is 1.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from .data import DetectionDataset, EpochBatchSampler, collate


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, TSVs and models."""
        return self.rank == 0


def launched() -> bool:
    """True inside a torchrun worker (it sets WORLD_SIZE, RANK and LOCAL_RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The command that reruns this script under torchrun with `nproc` processes on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            *argv]


def relaunch(nproc: int, argv: list[str]) -> None:
    """Replace this process by torchrun running the same script and arguments (never returns).

    exec keeps the process id, so a Ctrl-C or `kill` from DVC/Snakemake reaches torchrun, which
    stops every rank and exits non-zero.
    """
    cmd = torchrun_command(nproc, argv)
    print(f"train: nproc {nproc} > 1, relaunching under torchrun: {' '.join(cmd)}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


def init(device_type: str) -> DistInfo:
    """Join the process group torchrun set up (nccl on CUDA, gloo on CPU); world 1 without torchrun."""
    if not launched() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"train.nproc asks for more processes than the {torch.cuda.device_count()} "
                               "visible GPUs; lower train.nproc or check CUDA_VISIBLE_DEVICES")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def start(device: torch.device, train, batch_size: int, stage: str) -> DistInfo:
    """init() for a training phase: checks the global batch divides, shares the CPU threads, says so."""
    info = init(device.type)
    if info.world == 1:
        return info
    key = "freeze_batch_size" if stage.endswith("frozen") and not stage.endswith("unfrozen") else "unfreeze_batch_size"
    per = per_rank_batch(batch_size, info.world, key)
    if not train.threads:  # torch would give every rank all the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // (int(os.environ.get("LOCAL_WORLD_SIZE", info.world)))))
    if info.main:
        print(f"{stage}: DDP over {info.world} processes ({dist.get_backend()}), global batch {batch_size} "
              f"= {info.world} x {per} per rank", flush=True)
    return info


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank (a picklable object)."""
    if info.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def per_rank_batch(global_batch: int, world: int, what: str = "batch size") -> int:
    """The batch each rank trains on; the global batch must divide evenly."""
    if global_batch % world:
        raise ValueError(f"train.{what} {global_batch} is the global batch and must divide by "
                         f"train.nproc {world}; use a multiple of {world}")
    return global_batch // world


class DistributedEpochSampler(Sampler[list[tuple[int, int]]]):
    """Rank `rank`'s slice of each global batch of EpochBatchSampler.

    Slices are contiguous and as even as the batch allows; a short last batch may leave a rank
    fewer images (never none: training requires at least `world` images per batch).
    """

    def __init__(self, base: EpochBatchSampler, rank: int, world: int) -> None:
        self.base, self.rank, self.world = base, rank, world

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.base:
            n = len(batch)
            if n < self.world:
                raise ValueError(f"a batch of {n} images cannot feed {self.world} processes; "
                                 "use more training images or a smaller train.nproc")
            yield batch[self.rank * n // self.world:(self.rank + 1) * n // self.world]

    def __len__(self) -> int:
        return len(self.base)


def train_loader(dataset: DetectionDataset, batch_size: int, epoch: int, num_workers: int,
                 drop_last: bool, info: DistInfo) -> DataLoader:
    """This rank's loader for one epoch: the global batches of `batch_size`, sliced per rank."""
    sampler: Sampler = EpochBatchSampler(len(dataset), batch_size, dataset.seed, epoch, True, drop_last)
    if info.world > 1:
        sampler = DistributedEpochSampler(sampler, info.rank, info.world)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      persistent_workers=False)


def wrap_model(model: nn.Module, device: torch.device, info: DistInfo, sync_bn: bool) -> nn.Module:
    """The module to train: DDP around `model` when world > 1 (SyncBatchNorm on CUDA if asked).

    `model` itself stays unwrapped for EMA, evaluation and checkpoints (same parameters).
    """
    if info.world == 1:
        return model
    if sync_bn:
        if device.type == "cuda":
            # Replaces BatchNorm children in place (same Parameter and buffer objects).
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif info.main:
            print("train.sync_bn: SyncBatchNorm needs CUDA; on CPU each rank keeps its own "
                  "BatchNorm statistics (DDP broadcasts rank 0's buffers every step)", flush=True)
    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def reduce_epoch_stats(stats: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Image-weighted mean losses and total images over all ranks (train_one_epoch's result)."""
    if info.world == 1:
        return stats
    keys = ("loss", "box", "cls")
    n = float(stats["images"])
    t = torch.tensor([stats[k] * n for k in keys] + [n, float(stats["seconds"])], dtype=torch.float64)
    seconds = t[-1].clone()
    dist.all_reduce(t)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    images = float(t[len(keys)])
    out = {k: float(t[i]) / max(1.0, images) for i, k in enumerate(keys)}
    return {**stats, **out, "images": int(images), "seconds": float(seconds)}
