"""Stages train_frozen and train_unfrozen: train the detector with the backbone frozen, then unfrozen.

Each epoch ends with a full checkpoint in <ckpt-dir>/train_<phase>/<fingerprint>/last.pt; rerunning
the same command after an interruption resumes there. The declared outputs are rewritten in full
on every run.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch

# The library beside this script, not whatever copy is installed: a queued `dvc exp run`
# runs from a snapshot of the repo and must train with that snapshot's code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.train import accel  # noqa: E402
from detpipe import atomic  # noqa: E402
from detpipe.model import checkpoint as ckpt  # noqa: E402
from detpipe.train import distributed as ddp  # noqa: E402
from detpipe.train.runlock import RunBusyError  # noqa: E402
from detpipe.data.images import ImageCheckError  # noqa: E402
from detpipe.artifacts.error import ArtifactError  # noqa: E402
from detpipe.artifacts.pretrained_record import PretrainedRecord  # noqa: E402
from detpipe.artifacts.train_recipe import TrainRecipe  # noqa: E402
from detpipe.recipe import Choice, resolve  # noqa: E402
from detpipe.data.annotations import read_lines  # noqa: E402
from detpipe.params import ParamsError, print_error  # noqa: E402
from detpipe.data.splits import empty_split_problem  # noqa: E402
from detpipe.pipeline.view import load_stage_params  # noqa: E402
from detpipe.train.phase import export_weights, phase_of, resolve_recipe, train_phase  # noqa: E402

# What a training phase reads: its recipe, the validation that picks the best epoch (NMS and the
# mAP's lowest confidence decide which epoch becomes best.pt) and the pixel limit its loaders apply.
# dvc.yaml and the Snakefile take this list (detpipe/pipeline/table.py), and load_stage_params
# refuses any other key.
PARAMS = ("lr", "seed", "model", "train", "data.classes", "data.max_image_pixels", "predict.nms_iou",
          "predict.max_det", "map.confidence")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--phase", choices=["frozen", "unfrozen"], required=True)
    p.add_argument("--params", required=True)
    p.add_argument("--train", required=True, help="training split (annotation lines)")
    p.add_argument("--val", required=True, help="validation split (annotation lines)")
    p.add_argument("--train-images", help="content hashes of the training images (split stage); part of the run's identity")
    p.add_argument("--val-images", help="content hashes of the validation images")
    p.add_argument("--pretrained", help="record of the starting weights' content (pretrained stage)")
    p.add_argument("--init", help="weights to start from (the frozen phase's output)")
    p.add_argument("--out", required=True, help="weights written at the end: frozen.pt, or best.pt (best val mAP50)")
    p.add_argument("--last", help="also write the last epoch's weights here")
    p.add_argument("--metrics", required=True, help="per-epoch TSV")
    p.add_argument("--recipe", help="JSON of the settings resolved from the inputs (auto), with their reasons")
    # DETPIPE_CKPT_DIR (an absolute path) lets queued `dvc exp run`s, which run in temp copies of
    # the repo, keep checkpoints where a rerun of an interrupted experiment finds them.
    p.add_argument("--ckpt-dir", default=os.path.expanduser(os.environ.get("DETPIPE_CKPT_DIR") or ".ckpt"),
                   help="where per-epoch checkpoints live (outside all outputs); default $DETPIPE_CKPT_DIR or .ckpt")
    return p.parse_args()


def _sigterm(signum, frame):
    # Treat `kill` like Ctrl-C so the same message is printed and the exit code is non-zero.
    raise KeyboardInterrupt


def export(state: dict, args: argparse.Namespace) -> None:
    """The declared weights files: frozen.pt (last epoch) or best.pt, and last.pt where asked."""
    ckpt.save_atomic(export_weights(state, "last" if args.phase == "frozen" else "best"), args.out)
    if args.last:
        ckpt.save_atomic(export_weights(state, "last"), args.last)
    if args.recipe:
        TrainRecipe(choices=[Choice(**c) for c in state["recipe"]]).write(args.recipe)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _sigterm)
    start = time.time()
    params = load_stage_params(args.params, PARAMS, f"train_{args.phase}")
    train, val = read_lines(args.train), read_lines(args.val)
    problem = empty_split_problem({"train": train, "val": val}, None, args.params)
    if problem:  # before torchrun: one message, not one per rank
        return print_error(f"{args.train if not train else args.val}: {problem}")
    try:
        params, choices = resolve_recipe(params, train)
    except ImageCheckError as exc:  # model.imgsz auto reads the train images' sizes
        return print_error(exc)
    if args.pretrained:  # its bytes are part of the run's identity; its layout must be the pretrained stage's
        try:
            PretrainedRecord.read(args.pretrained)
        except ArtifactError as exc:
            return print_error(exc)
    if params.train.nproc > 1 and not ddp.launched():
        ddp.relaunch(params.train.nproc, sys.argv)  # the same command line, under torchrun
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not main_rank:  # DDP: rank 0 reports; the others stay quiet (errors still reach stderr; the
        sys.stdout = open(os.devnull, "w")  # engine draws no progress bar on them)
    # The run's identity: the split files, the images' content, the starting weights.
    extra = [args.train_images, args.val_images, args.pretrained]
    inputs = [args.train, args.val] + [f for f in extra if f] + ([args.init] if args.init else [])
    print(f"== train_{args.phase}: {len(train)} train / {len(val)} val images", flush=True)
    for choice in choices:
        if args.phase == "frozen" and choice.key == "train.freeze_epochs" and choice.value == 0:
            print(f"frozen phase: 0 epochs — {choice.reason}", flush=True)
        else:
            print(f"recipe: {choice.line()}", flush=True)
    try:
        state = train_phase(params, args.phase, train, val, inputs, args.ckpt_dir, args.metrics, args.init,
                            recipe=choices)
    except KeyboardInterrupt:
        if main_rank:  # DDP: one message, not one per rank
            print(f"\ntrain_{args.phase} interrupted: the last completed epoch is saved under {args.ckpt_dir}/; "
                  "rerun the same command to resume from there.", file=sys.stderr, flush=True)
        return 130
    except (ParamsError, FloatingPointError, ImageCheckError) as exc:  # a setting this machine cannot run, a
        # diverged loss, an image above data.max_image_pixels or unreadable. DDP: every rank stops alike; one message
        return print_error(exc) if main_rank else 1
    except torch.OutOfMemoryError:
        phase = phase_of(params, args.phase)
        key = "freeze_batch_size" if args.phase == "frozen" else "unfreeze_batch_size"
        print(accel.oom_message(f"train_{args.phase}", phase.batch_size, params.train.nproc, key,
                                params.train.amp), file=sys.stderr, flush=True)
        return 1
    except (RunBusyError, atomic.WriteError, ckpt.CheckpointError) as exc:  # busy run, disk full, a refused
        return print_error(exc)  # init or pretrained file (hash, pickle, another backbone)
    ddp.cleanup()
    if not main_rank:  # rank 0 alone writes the declared outputs
        return 0
    try:
        export(state, args)
    except atomic.WriteError as exc:
        return print_error(f"{exc}; kept: every trained epoch in {args.ckpt_dir}/ (rerun the same command after "
                           "freeing space: it trains nothing and writes the outputs again)")
    best, stop = state["best"], state.get("stopped_early")
    # The choices made while training too (a train.time budget fits the unfrozen epoch count).
    phase = phase_of(resolve(params, tuple(Choice(**c) for c in state["recipe"])), args.phase)
    early = stop is not None and stop < phase.first_epoch + phase.epochs - 1
    print(f"== train_{args.phase} done in {time.time() - start:.0f} s: best val mAP50 {best['val_map50']:.3f} "
          f"at epoch {best['epoch']}" + (f" (stopped early after epoch {stop}, train.patience "
                                         f"{params.train.patience})" if early else "")
          + f"; wrote {args.out}" + (f" and {args.last}" if args.last else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
