"""The training loop as plain functions, in the style of torchvision's detection references."""
from __future__ import annotations

import copy
import math
import time
from typing import Callable, Iterable

import torch.distributed as dist

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..data.annotations import Record
from ..boxes import letterbox_params
from ..data.dataset import DetectionDataset, make_loader
from ..data.images import DEFAULT_LIMIT, PixelLimit
from ..infer.decode import detections_per_image
from .loss import LossWeights, detection_loss

# Accumulated per step on the device, read once per epoch: [loss, box, cls] x images and the
# images of steps with a finite loss, then the count of steps whose loss was not finite.
STAT_FIELDS = ("loss", "box", "cls", "counted", "nonfinite")


class ModelEMA:
    """Exponential moving average of weights and buffers, with YOLOv5's warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float, tau: float = 100.0, updates: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema = d * ema + (1 - d) * model for floating-point tensors; others are copied.

        One foreach call per operation over all tensors (two kernel launches per step on CUDA,
        not two per tensor); elementwise it is exactly `ema.mul_(d).add_(v, alpha=1 - d)`.
        """
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        ema_f, src_f, ema_o, src_o = [], [], [], []
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_f.append(ema_v)
                src_f.append(v.detach())
            else:
                ema_o.append(ema_v)
                src_o.append(v)
        torch._foreach_mul_(ema_f, d)
        torch._foreach_add_(ema_f, src_f, alpha=1 - d)
        if ema_o:
            torch._foreach_copy_(ema_o, src_o)


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float,
                    fused: bool = False) -> torch.optim.Optimizer:
    """SGD (nesterov) or AdamW; no weight decay on BatchNorm weights and biases.

    fused (CUDA): one kernel for the whole update, and a GradScaler hands it its inf check as a
    tensor instead of reading it back to the host every step. The CPU keeps torch's default
    implementation (so CPU results stay what they were).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    impl = {"fused": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, **impl)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), **impl)
    raise ValueError(f"train.optimizer: {name!r} is not one of sgd, adamw")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore a checkpoint's optimizer state, keeping this run's implementation (fused or not).

    A state saved on the CPU says fused False, one saved on CUDA fused True; loaded as it is, it
    would switch the implementation, and a GradScaler then hands a fused-only inf check to the
    unfused update, which refuses it. The state tensors ("step" included) follow the flag.
    """
    impl = {k: optimizer.param_groups[0].get(k) for k in ("fused", "foreach", "capturable")}
    groups = [{**g, **impl} for g in state["param_groups"]]
    optimizer.load_state_dict({**state, "param_groups": groups})


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str, min_ratio: float,
              milestones: tuple[float, ...] = (0.7, 0.9), gamma: float = 0.1,
              hold_steps: int = 0) -> Callable[[int], float]:
    """Linear warm-up, then a decay of the base LR (per step) to `min_ratio`: cosine, linear, or
    step (x `gamma` at each milestone, a fraction of the steps after warm-up); or constant.

    hold_steps: the decay starts no earlier than this step (the base LR until then), so the factors
    of the steps before max(warmup_steps, hold_steps) + 1 do not depend on total_steps (a
    train.time budget fits the total after the first epoch)."""
    if schedule not in ("cosine", "linear", "step", "constant"):
        raise ValueError(f"train.lr_schedule: {schedule!r} is not one of cosine, linear, step, constant")
    start = max(warmup_steps, hold_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - start) / max(1, total_steps - start)) if step >= start else 0.0
        if schedule == "cosine":
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if schedule == "linear":
            return 1 - (1 - min_ratio) * t
        if schedule == "step":
            return max(min_ratio, gamma ** sum(t >= m for m in milestones))
        return 1.0
    return factor


def progress(iterable: Iterable, **kwargs) -> tqdm:
    """A tqdm bar, drawn only by DDP rank 0 (TQDM_DISABLE set after tqdm's import has no effect)."""
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        kwargs["disable"] = True
    return tqdm(iterable, dynamic_ncols=True, mininterval=1.0, **kwargs)


def train_step(model: nn.Module, images: Tensor, targets: Tensor, optimizer: torch.optim.Optimizer, scaler,
               grad_clip: float, weights: LossWeights, autocast_dtype: torch.dtype | None) -> dict[str, Tensor]:
    """One optimisation step on a batch already on the device (images [B, 3, S, S], targets
    [B, G, 5]): forward under autocast (off when autocast_dtype is None), loss in float32, backward
    through the scaler, gradients clipped to `grad_clip`. Returns the loss parts, on the device."""
    with torch.autocast(images.device.type, dtype=autocast_dtype or torch.float16, enabled=autocast_dtype is not None):
        out = model(images)
    loss, parts = detection_loss({k: v.float() for k, v in out.items()}, targets, weights)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return parts


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    scheduler, ema: ModelEMA, device: torch.device, scaler, grad_clip: float,
                    desc: str, weights: LossWeights = LossWeights(), amp_dtype: torch.dtype | None = None,
                    channels_last: bool = False, ema_source: nn.Module | None = None
                    ) -> tuple[Tensor, int, float]:
    """One pass over `loader`; returns (device statistics, see STAT_FIELDS; images seen; seconds).

    Nothing in the loop reads a tensor back to the host, so the GPU never waits for Python: the
    statistics stay on the device until ddp.reduce_epoch_stats reads them after the epoch, and
    check_epoch_stats then stops a run whose loss was not finite. With float16's GradScaler a step
    with a non-finite loss has non-finite gradients, which the scaler skips (and then lowers the
    scale); such steps do not count in the mean losses. `model` may be a DDP or compiled wrapper;
    `ema_source` is then the plain module the EMA follows. amp_dtype None autocasts to float16
    exactly when `scaler` is enabled.
    """
    dtype = amp_dtype or torch.float16
    autocast = amp_dtype is not None or scaler.is_enabled()
    fmt = torch.channels_last if channels_last else torch.preserve_format
    model.train()
    stats = torch.zeros(len(STAT_FIELDS), dtype=torch.float64, device=device)
    n_img, start = 0, time.time()
    bar = progress(loader, desc=desc, leave=True)
    for images, targets, _, _ in bar:
        # Copied as the (pinned) loader made them, then laid out on the device: a layout change in
        # the copy would go through an unpinned host buffer, which makes the copy synchronous.
        images = images.to(device, non_blocking=True).contiguous(memory_format=fmt)
        targets = targets.to(device, non_blocking=True)
        parts = train_step(model, images, targets, optimizer, scaler, grad_clip, weights, dtype if autocast else None)
        scheduler.step()
        ema.update(ema_source if ema_source is not None else model)
        b = images.shape[0]
        n_img += b
        finite = torch.isfinite(parts["loss"])  # stays on the device, as does everything below
        weighted = torch.stack([parts["loss"], parts["box"], parts["cls"]]).double() * b
        stats[:3] += torch.where(finite, weighted, 0.0)
        stats[3] += finite.double() * b
        stats[4] += (~finite).double()
        bar.set_postfix(lr=f"{optimizer.param_groups[0]['lr']:.2g}", refresh=False)
    return stats, n_img, time.time() - start


def check_epoch_stats(tr: dict, desc: str, lr: float, scaled: bool, steps: int) -> None:
    """Stop when the loss was not finite (float32, bfloat16, or every step under float16's scaler);
    say how many steps float16's GradScaler skipped. `tr` is reduce_epoch_stats' result."""
    bad = tr["nonfinite"]
    if not bad:
        return
    if not scaled or bad >= steps:
        raise FloatingPointError(f"{desc}: the loss was not finite (nan or inf) in {bad} of {steps} steps; "
                                 f"lower lr (now {lr:.3g}) or check the data")
    print(f"{desc}: float16 GradScaler skipped {bad} of {steps} steps with a non-finite loss "
          "(it lowers the loss scale after each)", flush=True)


@torch.no_grad()
def evaluate_batches(model: nn.Module, loader: Iterable, device: torch.device, size: int, conf: float,
                     iou: float, max_det: int, with_loss: bool = True, desc: str = "val",
                     weights: LossWeights = LossWeights()) -> tuple[Tensor, dict[int, dict[str, np.ndarray]]]:
    """Loss totals and detections of the batches `loader` yields (all, or one rank's share).

    Returns (float64 Tensor[4] on the device: [loss, box, cls] x images and the images, and
    {dataset index: dict of boxes, scores, labels} with boxes mapped back to original pixels).
    """
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    dets: dict[int, dict[str, np.ndarray]] = {}
    for images, targets, indices, sizes in progress(loader, desc=desc, leave=False):
        out = model(images.to(device, non_blocking=True))
        if with_loss:
            _, parts = detection_loss(out, targets.to(device, non_blocking=True), weights)
            b = images.shape[0]
            sums[:3] += torch.stack([parts["loss"], parts["box"], parts["cls"]]).double() * b
            sums[3] += b
        lbs = [letterbox_params(w, h, size) for w, h in sizes.tolist()]
        dets.update(zip(indices.tolist(), detections_per_image(out, lbs, conf, iou, max_det)))
    return sums, dets


def mean_losses(sums: Tensor) -> dict[str, float]:
    """evaluate_batches' loss totals as per-image means."""
    loss, box, cls, n = sums.cpu().tolist()
    n = max(1.0, n)
    return {"loss": loss / n, "box": box / n, "cls": cls / n}


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, size: int, conf: float,
             iou: float, max_det: int, with_loss: bool = True, desc: str = "val",
             weights: LossWeights = LossWeights()) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
    """Loss on the loader's targets and detections mapped back to original pixels per image.

    Returns (mean losses, detections in dataset order: dicts of boxes, scores, labels).
    """
    sums, dets = evaluate_batches(model, loader, device, size, conf, iou, max_det, with_loss, desc, weights)
    return mean_losses(sums), [dets[i] for i in sorted(dets)]


def eval_loader(records: list[Record], size: int, batch_size: int, num_workers: int,
                pixel_limit: PixelLimit = DEFAULT_LIMIT):
    """A deterministic, unaugmented loader over `records`."""
    return make_loader(DetectionDataset(records, size, pixel_limit=pixel_limit), batch_size, 0, num_workers,
                       shuffle=False)
