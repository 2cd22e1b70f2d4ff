"""Run under torchrun with 2 processes: one DDP step's gradient and one epoch's weights vs one
process on the global batches, and sharded validation vs one process.

Prints on rank 0:
- `ddp_vs_full <relative L2>`: BatchNorm runs on its running statistics (eval mode), so the only
  thing DDP could change is how the global batch is split, sharded and normalised: the loss
  divides by the targets of the whole global batch (all-reduced), so the averaged gradient equals
  the single-process gradient of the global batch up to float rounding.
- `val_loss_sums <max abs diff>` and `val_dets_equal <0|1>`: every rank evaluates its share of
  the val batches and the shares are gathered; one process evaluating the same batches alone
  must get the same loss totals and the same detections.
- `weights_vs_full <max abs diff>` and `weights_moved <max abs change>`: a whole epoch of the real
  training loop (engine.train_one_epoch: DDP, AdamW, grad clipping, EMA) on 2 ranks against one
  process on the same global batches, BatchNorm on its running statistics (as in a frozen
  backbone): the weights must agree to float rounding.

DETPIPE_DDP_FAULT injects a bug into the DDP code paths training uses, in every rank, to show the
checks catch it: `wrong_shard` (every rank trains on rank 0's slice of each global batch),
`no_grad_allreduce` (the model is not wrapped in DDP: each rank steps on its own gradient),
`no_norm_allreduce` (each rank's loss divides by its own targets, not the global batch's).
"""
import copy
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from detpipe.train import accel, collectives
from detpipe.train import distributed as ddp
from detpipe.train import loss as loss_module
from detpipe.data.annotations import read_lines
from detpipe.data.dataset import Augment, DetectionDataset
from detpipe.train.engine import ModelEMA, build_optimizer, evaluate_batches, train_one_epoch
from detpipe.train.loss import LossWeights, detection_loss
from detpipe.model.detector import build_model
from detpipe.params import load_params
from detpipe.train.phase import model_config

CPU = torch.device("cpu")


def grad(model, images, targets, weights) -> torch.Tensor:
    loss, _ = detection_loss({k: v.float() for k, v in model(images).items()}, targets, weights)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def sharded_validation(model, val: DetectionDataset, p, weights, info):
    """(loss totals, detections in dataset order) of `val`, evaluated as train_phase does under `info`."""
    loader = ddp.val_loader(val, p.train.freeze_batch_size, 0, info, CPU)
    sums, dets = evaluate_batches(model, loader, CPU, p.model.imgsz, p.map.confidence, p.predict.nms_iou,
                                  p.predict.max_det, weights=weights)
    return ddp.gather_evaluation(sums, dets, info)


def inject(fault: str) -> None:
    """Break one DDP code path of training in this process (see the module docstring)."""
    if fault == "wrong_shard":
        def first_slice(self):
            for batch in self.base:
                yield batch[:len(batch) // self.world]
        ddp.DistributedEpochSampler.__iter__ = first_slice
    elif fault == "no_grad_allreduce":
        ddp.wrap_model = lambda model, device, info, sync_bn: model
    elif fault == "no_norm_allreduce":
        loss_module.collectives = SimpleNamespace(world_size=collectives.world_size, all_reduce=lambda t: t)
    elif fault:
        raise SystemExit(f"unknown DETPIPE_DDP_FAULT {fault!r}")


def running_stats_bn(model: nn.Module) -> nn.Module:
    """BatchNorm normalises with its running statistics even in train mode, as in a frozen backbone:
    per-rank batch statistics (no SyncBatchNorm on the CPU) are then the one thing DDP cannot match."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(lambda module, args: setattr(module, "training", False))
    return model


def train_epoch(model: nn.Module, data: DetectionDataset, p, weights, info) -> nn.Module:
    """Epoch 1 of the frozen phase through the real loop, as train_phase runs it under `info`."""
    t = p.train
    running_stats_bn(model)
    net = ddp.wrap_model(model, CPU, info, False)
    optimizer = build_optimizer(model, t.optimizer, p.lr, t.momentum, t.weight_decay)
    loader = ddp.train_loader(data, t.freeze_batch_size, 0, True, info, CPU)
    ddp.set_epoch(loader, 1)
    train_one_epoch(net, loader, optimizer, LambdaLR(optimizer, lambda step: 1.0), ModelEMA(model, t.ema_decay),
                    CPU, accel.grad_scaler(t, CPU), t.grad_clip, "check", weights, ema_source=model)
    return model


def max_abs_diff(a: nn.Module, b: nn.Module) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a.state_dict().values(), b.state_dict().values())
               if x.dtype.is_floating_point)


def main(params_path: str, train_path: str) -> None:
    torch.set_num_threads(1)
    fault = os.environ.get("DETPIPE_DDP_FAULT", "")
    inject(fault)
    info = ddp.init("cpu")
    p = load_params(params_path)
    t = p.train
    records = read_lines(train_path)
    data = DetectionDataset(records, p.model.imgsz, p.seed, Augment.from_train_params(t))
    val = DetectionDataset(records, p.model.imgsz)
    weights = LossWeights.from_train_params(t)
    torch.manual_seed(p.seed)
    model = build_model(model_config(p), "none")
    model.backbone.freeze(True)
    start = copy.deepcopy(model)
    net = ddp.wrap_model(model, CPU, info, False)
    net.eval()
    loader = ddp.train_loader(data, t.freeze_batch_size, 0, True, info, CPU)
    ddp.set_epoch(loader, 1)
    images, targets, _, _ = next(iter(loader))
    g = grad(net, images, targets, weights)
    val_sums, val_dets = sharded_validation(start, val, p, weights, info)
    trained = train_epoch(copy.deepcopy(start), data, p, weights, info)
    ddp.cleanup()  # the references below are plain single-process runs
    if info.main:
        single = ddp.DistInfo()
        full_loader = ddp.train_loader(data, t.freeze_batch_size, 0, True, single, CPU)
        ddp.set_epoch(full_loader, 1)
        full_images, full_targets, _, _ = next(iter(full_loader))
        full = grad(copy.deepcopy(start).eval(), full_images, full_targets, weights)
        print(f"ddp_vs_full {float((g - full).norm() / full.norm())}")
        reference = train_epoch(copy.deepcopy(start), data, p, weights, single)
        print(f"weights_vs_full {max_abs_diff(trained, reference)}")
        print(f"weights_moved {max_abs_diff(reference, start)}")
        # One process evaluating the batches the ranks evaluated (batches of the per-rank size).
        ref_loader = ddp.val_loader(val, t.freeze_batch_size // info.world, 0, single, CPU)
        ref_sums, ref = evaluate_batches(start, ref_loader, CPU, p.model.imgsz, p.map.confidence,
                                         p.predict.nms_iou, p.predict.max_det, weights=weights)
        ref_dets = [ref[i] for i in sorted(ref)]
        print(f"val_loss_sums {float((val_sums - ref_sums).abs().max())}")
        same = len(ref_dets) == len(val_dets) == len(val) and all(
            all(np.array_equal(a[k], b[k]) for k in ("boxes", "scores", "labels")) for a, b in zip(ref_dets, val_dets))
        print(f"val_dets_equal {int(same)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
