"""DDP helpers: launch under torchrun, rank queries, sharded batches and validation, reductions.

The global batch of EpochBatchSampler (its order a function of (seed, epoch) only) is cut into
`world` contiguous slices, so rank r of an N-process run sees exactly the images of the global
batch a single process would see, with the same per-(seed, epoch, index) augmentation. Gradients
are averaged over ranks by DDP. Validation is sharded too: every rank evaluates its share of the
val batches with rank 0's EMA and the detections are gathered, so no rank idles in a collective
while another validates. Collectives go through detpipe.collectives. Without torchrun every
helper is a no-op and world is 1.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from . import collectives
from ..cpus import threads_per_rank
from ..data.dataset import DetectionDataset, EpochBatchSampler, batch_loader
from ..params import ParamsError

# How long a rank may wait in a collective for the others. Validation is sharded, so what one
# rank does alone is short (rank 0's checkpoint write, its pruning of old run folders), except
# the first: rank 0 downloads ImageNet weights while the others wait, and ranks compiling with
# train.compile finish minutes apart. NCCL's default of 10 minutes would kill such a job; a rank
# that died is noticed by torchrun at once, whatever this timeout.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=60)


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
            raise ParamsError(f"train.nproc asks for more processes than the {torch.cuda.device_count()} "
                              "visible GPUs; lower train.nproc or check CUDA_VISIBLE_DEVICES")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """The device this rank trains on: under DDP on CUDA always cuda:LOCAL_RANK (one GPU per
    process), whatever index train.device names; say so once when one was named."""
    if info.world == 1 or device.type != "cuda":
        return device
    if device.index is not None and device.index != info.local_rank and info.main:
        print(f"train.device {device} ignored under DDP: rank r trains on cuda:r of the visible GPUs; "
              "choose the GPUs with CUDA_VISIBLE_DEVICES", flush=True)
    return torch.device("cuda", info.local_rank)


def start(device: torch.device, train, batch_size: int, stage: str) -> tuple[DistInfo, torch.device]:
    """init() for a training phase: checks the global batch divides, shares the CPU threads, says so.

    Returns the rank and the device it trains on (see rank_device).
    """
    info = init(device.type)
    if info.world == 1:
        return info, device
    key = "freeze_batch_size" if stage.endswith("frozen") and not stage.endswith("unfrozen") else "unfreeze_batch_size"
    per = per_rank_batch(batch_size, info.world, key)
    if not train.threads:  # torch would give every rank all the cores
        torch.set_num_threads(threads_per_rank(int(os.environ.get("LOCAL_WORLD_SIZE", info.world))))
    if info.main:
        print(f"{stage}: DDP over {info.world} processes ({dist.get_backend()}), global batch {batch_size} "
              f"= {info.world} x {per} per rank", flush=True)
    return info, rank_device(device, info)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        collectives.barrier()


@contextmanager
def main_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block first (writing files, downloading weights); the others run it after."""
    if not info.main:
        barrier(info)
    yield
    if info.main:
        barrier(info)


def broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's picklable `obj` on every rank (run-folder decisions, errors to raise alike)."""
    return obj if info.world == 1 else collectives.broadcast_object(obj)


def per_rank_batch(global_batch: int, world: int, what: str = "batch size") -> int:
    """The batch each rank trains on; the global batch must divide evenly."""
    if global_batch % world:
        raise ParamsError(f"train.{what} {global_batch} is the global batch and must divide by "
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

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)


def train_loader(dataset: DetectionDataset, batch_size: int, num_workers: int, drop_last: bool,
                 info: DistInfo, device: torch.device) -> DataLoader:
    """This rank's loader for a phase: the global batches of `batch_size`, sliced per rank.

    Built once per phase (its workers, and their image caches, live across epochs): call
    `set_epoch(loader, e)` before each epoch.
    """
    sampler: Sampler = EpochBatchSampler(len(dataset), batch_size, dataset.seed, 0, True, drop_last)
    if info.world > 1:
        sampler = DistributedEpochSampler(sampler, info.rank, info.world)
    return batch_loader(dataset, sampler, num_workers, device)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Make `loader` yield epoch `epoch`'s batches (it reads the epoch when iterated)."""
    loader.batch_sampler.set_epoch(epoch)


class ShardedBatchSampler(Sampler[list[int]]):
    """Rank `rank`'s share of fixed, ordered batches of `batch_size`: batches rank, rank + world, ..."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world

    def _batches(self) -> list[list[int]]:
        return [list(range(s, min(s + self.batch_size, self.n))) for s in range(0, self.n, self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.rank::self.world])

    def __len__(self) -> int:
        return len(self._batches()[self.rank::self.world])


def val_loader(dataset: DetectionDataset, batch_size: int, num_workers: int, info: DistInfo,
               device: torch.device) -> DataLoader:
    """This rank's share of the validation batches; `batch_size` is the global batch, and each
    rank evaluates batches of its per-rank share of it (the memory its training steps fit in)."""
    per_rank = max(1, batch_size // info.world)
    return batch_loader(dataset, ShardedBatchSampler(len(dataset), per_rank, info.rank, info.world),
                        num_workers, device)


def sync_buffers(module: nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics).

    Each rank's BatchNorm layers update their running statistics from its own slice of the batch,
    so the ranks' EMA copies of them drift apart; rank 0's are the ones checkpointed, and sharded
    validation must use them on every rank.
    """
    if info.world > 1:
        collectives.broadcast_(list(module.buffers()), src=0)


def gather_evaluation(sums: Tensor, dets: dict[int, dict[str, np.ndarray]], info: DistInfo
                      ) -> tuple[Tensor, list[dict[str, np.ndarray]]]:
    """Every rank's validation share put together: summed loss totals and detections in dataset order."""
    if info.world == 1:
        return sums, [dets[i] for i in sorted(dets)]
    sums = collectives.all_reduce(sums)
    merged: dict[int, dict[str, np.ndarray]] = {}
    for part in collectives.all_gather_object(dets):
        merged.update(part)
    return sums, [merged[i] for i in sorted(merged)]


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
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def reduce_epoch_stats(sums: Tensor, images: int, seconds: float, info: DistInfo) -> dict[str, float]:
    """An epoch's statistics over all ranks, read back to the host once.

    `sums` is train_one_epoch's device tensor: [loss, box, cls] x images and the images of the
    steps with a finite loss, then the steps with a non-finite one. Returns the image-weighted
    mean losses, "images" (all ranks' images), "nonfinite" steps and "seconds" (slowest rank).
    """
    vec = torch.cat([sums.double(), sums.new_tensor([float(images)], dtype=torch.float64)])
    if info.world > 1:
        vec = collectives.all_reduce(vec)
        seconds = float(collectives.all_reduce(torch.tensor([seconds], dtype=torch.float64), op="max")[0])
    loss, box, cls, counted, nonfinite, total = vec.cpu().tolist()  # the epoch's one read-back
    counted = max(1.0, counted)
    return {"loss": loss / counted, "box": box / counted, "cls": cls / counted, "images": int(total),
            "nonfinite": int(nonfinite), "seconds": seconds}
