"""Run under torchrun with 2 processes: one DDP step's gradient vs the full-batch gradient.

Prints `ddp_vs_full <relative L2>` on rank 0. BatchNorm runs on its running statistics (eval
mode), so the only thing DDP could change is how the global batch is split, sharded and
normalised: the loss divides by the targets of the whole global batch (all-reduced), so the
averaged gradient equals the single-process gradient of the global batch up to float rounding.
"""
import copy
import sys

import torch

from detpipe import distributed as ddp
from detpipe.annotations import read_lines
from detpipe.data import Augment, DetectionDataset
from detpipe.loss import LossWeights, detection_loss
from detpipe.model import build_model
from detpipe.params import load_params
from detpipe.training import model_config


def grad(model, images, targets, weights) -> torch.Tensor:
    loss, _ = detection_loss({k: v.float() for k, v in model(images).items()}, targets, weights)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def main(params_path: str, train_path: str) -> None:
    torch.set_num_threads(1)
    info = ddp.init("cpu")
    p = load_params(params_path)
    t = p.train
    data = DetectionDataset(read_lines(train_path), p.model.imgsz, p.seed, Augment.from_train_params(t))
    weights = LossWeights.from_train_params(t)
    torch.manual_seed(p.seed)
    model = build_model(model_config(p), "none")
    model.backbone.freeze(True)
    start = copy.deepcopy(model)
    net = ddp.wrap_model(model, torch.device("cpu"), info, False)
    net.eval()
    images, targets, _, _ = next(iter(ddp.train_loader(data, t.freeze_batch_size, 1, 0, True, info)))
    g = grad(net, images, targets, weights)
    ddp.cleanup()  # the reference below is a plain single-process step
    if info.main:
        full_images, full_targets, _, _ = next(iter(ddp.train_loader(data, t.freeze_batch_size, 1, 0, True, ddp.DistInfo())))
        full = grad(copy.deepcopy(start).eval(), full_images, full_targets, weights)
        print(f"ddp_vs_full {float((g - full).norm() / full.norm())}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
