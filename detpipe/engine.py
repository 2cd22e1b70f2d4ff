"""The training loop as plain functions, in the style of torchvision's detection references."""
from __future__ import annotations

import copy
import math
import time
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from .annotations import Record
from .boxes import Letterbox, clip_boxes, from_letterbox, letterbox_params, multiclass_nms
from .data import DetectionDataset, make_loader
from .loss import LossWeights, detection_loss


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present (honouring CUDA_VISIBLE_DEVICES), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device: {name!r} asked for CUDA but none is available; use auto or cpu")
    return device


class ModelEMA:
    """Exponential moving average of weights and buffers, with YOLOv5's warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float, tau: float = 100.0, updates: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                ema_v.copy_(v)


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
                    ) -> torch.optim.Optimizer:
    """SGD (nesterov) or AdamW; no weight decay on BatchNorm weights and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"train.optimizer: {name!r} is not one of sgd, adamw")


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str, min_ratio: float,
              milestones: tuple[float, ...] = (0.7, 0.9), gamma: float = 0.1) -> Callable[[int], float]:
    """Linear warm-up, then a decay of the base LR (per step) to `min_ratio`: cosine, linear, or
    step (x `gamma` at each milestone, a fraction of the steps after warm-up); or constant."""
    if schedule not in ("cosine", "linear", "step", "constant"):
        raise ValueError(f"train.lr_schedule: {schedule!r} is not one of cosine, linear, step, constant")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "cosine":
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if schedule == "linear":
            return 1 - (1 - min_ratio) * t
        if schedule == "step":
            return max(min_ratio, gamma ** sum(t >= m for m in milestones))
        return 1.0
    return factor


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    scheduler, ema: ModelEMA, device: torch.device, scaler, grad_clip: float,
                    desc: str, weights: LossWeights = LossWeights(), amp_dtype: torch.dtype | None = None,
                    channels_last: bool = False, ema_source: nn.Module | None = None) -> dict[str, float]:
    """One pass over `loader`; returns mean losses, images seen and seconds.

    `model` may be a DDP or compiled wrapper; `ema_source` is then the plain module the EMA
    follows. amp_dtype None autocasts to float16 exactly when `scaler` is enabled.
    """
    dtype = amp_dtype or torch.float16
    autocast = amp_dtype is not None or scaler.is_enabled()
    fmt = torch.channels_last if channels_last else torch.preserve_format
    model.train()
    totals, n_img, start = {"loss": 0.0, "box": 0.0, "cls": 0.0}, 0, time.time()
    bar = tqdm(loader, desc=desc, leave=True, dynamic_ncols=True, mininterval=1.0)
    for images, targets, _, _ in bar:
        images, targets = images.to(device, non_blocking=True, memory_format=fmt), targets.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            out = model(images)
        loss, parts = detection_loss({k: v.float() for k, v in out.items()}, targets, weights)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: the loss became {float(loss)}; lower lr (now "
                                     f"{optimizer.param_groups[0]['lr']:.3g}) or check the data")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        ema.update(ema_source if ema_source is not None else model)
        b = images.shape[0]
        n_img += b
        totals["loss"] += parts["loss"] * b
        totals["box"] += parts["box"] * b
        totals["cls"] += parts["cls"] * b
        bar.set_postfix(loss=f"{totals['loss'] / n_img:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
    seconds = time.time() - start
    return {**{k: v / max(1, n_img) for k, v in totals.items()}, "images": n_img, "seconds": seconds}


def decode(out: dict[str, Tensor], conf: float, iou: float, max_det: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image of a batch: (boxes Tensor[K, 4] in input pixels, scores Tensor[K], labels Tensor[K])."""
    scores = out["cls"].float().sigmoid()
    return [multiclass_nms(b, s, conf, iou, max_det) for b, s in zip(out["boxes"].float(), scores)]


def detections_per_image(out: dict[str, Tensor], letterboxes: list[Letterbox], conf: float, iou: float,
                         max_det: int) -> list[dict[str, np.ndarray]]:
    """Per-class NMS, then boxes back to each image's own pixels (clipped to the image).

    One dict of boxes [K, 4] (float64), scores [K] and labels [K] per letterbox, in batch order.
    """
    dets = []
    for (boxes, scores, labels), lb in zip(decode(out, conf, iou, max_det), letterboxes):
        boxes = clip_boxes(from_letterbox(boxes.cpu().double(), lb), lb.width, lb.height)
        dets.append({"boxes": boxes.numpy(), "scores": scores.cpu().double().numpy(), "labels": labels.cpu().numpy()})
    return dets


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, size: int, conf: float,
             iou: float, max_det: int, with_loss: bool = True, desc: str = "val",
             weights: LossWeights = LossWeights()) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
    """Loss on the loader's targets and detections mapped back to original pixels per image.

    Returns (mean losses, detections in dataset order: dicts of boxes, scores, labels).
    """
    model.eval()
    totals, n_img = {"loss": 0.0, "box": 0.0, "cls": 0.0}, 0
    dets: dict[int, dict[str, np.ndarray]] = {}
    for images, targets, indices, sizes in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0):
        out = model(images.to(device))
        if with_loss:
            loss, parts = detection_loss(out, targets.to(device), weights)
            b = images.shape[0]
            n_img += b
            totals["loss"] += parts["loss"] * b
            totals["box"] += parts["box"] * b
            totals["cls"] += parts["cls"] * b
        lbs = [letterbox_params(w, h, size) for w, h in sizes.tolist()]
        dets.update(zip(indices.tolist(), detections_per_image(out, lbs, conf, iou, max_det)))
    return {k: v / max(1, n_img) for k, v in totals.items()}, [dets[i] for i in sorted(dets)]


def ground_truth(records: list[Record]) -> list[dict[str, np.ndarray]]:
    """Records as the metric functions' ground-truth dicts."""
    return [{"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult} for r in records]


def eval_loader(records: list[Record], size: int, batch_size: int, num_workers: int):
    """A deterministic, unaugmented loader over `records`."""
    return make_loader(DetectionDataset(records, size), batch_size, 0, num_workers, shuffle=False)
