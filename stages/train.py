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

from detpipe import accel  # noqa: E402
from detpipe import checkpoint as ckpt  # noqa: E402
from detpipe import distributed as ddp  # noqa: E402
from detpipe.annotations import read_lines  # noqa: E402
from detpipe.params import load_params_or_exit, print_error  # noqa: E402
from detpipe.splits import empty_split_problem  # noqa: E402
from detpipe.training import export_weights, phase_of, train_phase  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--phase", choices=["frozen", "unfrozen"], required=True)
    p.add_argument("--params", required=True)
    p.add_argument("--train", required=True, help="training split (annotation lines)")
    p.add_argument("--val", required=True, help="validation split (annotation lines)")
    p.add_argument("--init", help="weights to start from (the frozen phase's output)")
    p.add_argument("--out", required=True, help="weights written at the end: frozen.pt, or best.pt (best val mAP50)")
    p.add_argument("--last", help="also write the last epoch's weights here")
    p.add_argument("--metrics", required=True, help="per-epoch TSV")
    # DETPIPE_CKPT_DIR (an absolute path) lets queued `dvc exp run`s, which run in temp copies of
    # the repo, keep checkpoints where a rerun of an interrupted experiment finds them.
    p.add_argument("--ckpt-dir", default=os.path.expanduser(os.environ.get("DETPIPE_CKPT_DIR") or ".ckpt"),
                   help="where per-epoch checkpoints live (outside all outputs); default $DETPIPE_CKPT_DIR or .ckpt")
    return p.parse_args()


def _sigterm(signum, frame):
    # Treat `kill` like Ctrl-C so the same message is printed and the exit code is non-zero.
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _sigterm)
    start = time.time()
    params = load_params_or_exit(args.params)
    train, val = read_lines(args.train), read_lines(args.val)
    problem = empty_split_problem({"train": train, "val": val}, params.split, args.params)
    if problem:  # before torchrun: one message, not one per rank
        return print_error(f"{args.train if not train else args.val}: {problem}")
    if params.train.nproc > 1 and not ddp.launched():
        ddp.relaunch(params.train.nproc, sys.argv)  # the same command line, under torchrun
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not main_rank:  # DDP: rank 0 reports; the others stay quiet (errors still reach stderr)
        sys.stdout = open(os.devnull, "w")
        os.environ["TQDM_DISABLE"] = "1"
    inputs = [args.train, args.val] + ([args.init] if args.init else [])
    print(f"== train_{args.phase}: {len(train)} train / {len(val)} val images", flush=True)
    try:
        state = train_phase(params, args.phase, train, val, inputs, args.ckpt_dir, args.metrics, args.init)
    except KeyboardInterrupt:
        if main_rank:  # DDP: one message, not one per rank
            print(f"\ntrain_{args.phase} interrupted: the last completed epoch is saved under {args.ckpt_dir}/; "
                  "rerun the same command to resume from there.", file=sys.stderr, flush=True)
        return 130
    except torch.OutOfMemoryError:
        phase = phase_of(params, args.phase)
        key = "freeze_batch_size" if args.phase == "frozen" else "unfreeze_batch_size"
        print(accel.oom_message(f"train_{args.phase}", phase.batch_size, params.train.nproc, key,
                                params.train.amp), file=sys.stderr, flush=True)
        return 1
    except ckpt.CheckpointError as exc:  # e.g. a pretrained file refused (hash, pickle, another backbone)
        return print_error(exc)
    ddp.cleanup()
    if not main_rank:  # rank 0 alone writes the declared outputs
        return 0
    if args.phase == "frozen":
        ckpt.save_atomic(export_weights(state, "last"), args.out)
    else:
        ckpt.save_atomic(export_weights(state, "best"), args.out)
    if args.last:
        ckpt.save_atomic(export_weights(state, "last"), args.last)
    best, stop = state["best"], state.get("stopped_early")
    phase = phase_of(params, args.phase)
    early = stop is not None and stop < phase.first_epoch + phase.epochs - 1
    print(f"== train_{args.phase} done in {time.time() - start:.0f} s: best val mAP50 {best['val_map50']:.3f} "
          f"at epoch {best['epoch']}" + (f" (stopped early after epoch {stop}, train.patience "
                                         f"{params.train.patience})" if early else "")
          + f"; wrote {args.out}" + (f" and {args.last}" if args.last else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
