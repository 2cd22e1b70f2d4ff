"""`detpipe summary`: parameters and GFLOPs of a model at its input size, per part (backbone, neck,
head) and in total. The model is --weights, else models/best.pt when it exists, else the one
params.yaml describes (--params forces that)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import DEFAULT_WEIGHTS, CliError, prog, resolve_weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog("summary"), description=__doc__)
    p.add_argument("--params", help="params file whose `model` section to build (default params.yaml, "
                   f"when --weights is not given and {DEFAULT_WEIGHTS} does not exist)")
    p.add_argument("--weights", help=f"a detpipe weights file (default {DEFAULT_WEIGHTS} when it exists)")
    p.add_argument("--imgsz", type=int, help="input size (default: model.imgsz or the trained size)")
    args = p.parse_args(argv)
    use_weights = args.weights is not None or (args.params is None and DEFAULT_WEIGHTS.is_file())
    try:
        weights = resolve_weights(args.weights) if use_weights else None
        params_file = args.params or "params.yaml"
        if weights is None and not Path(params_file).is_file():
            raise CliError(f"--params {params_file}: no such file, and no --weights or {DEFAULT_WEIGHTS}; "
                           "run from the project folder or pass --params/--weights")
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..model.detector import build_model, describe, model_summary
    from ..params import load_params_or_exit
    from ..model.load import load_detector, model_config
    from ..recipe import AUTO, IMGSZ_FLOOR
    if weights:
        try:
            model, state = load_detector(weights)
        except RuntimeError as exc:  # CheckpointError: not a detpipe weights file
            print(f"error: {exc}", file=sys.stderr)
            return 2
        imgsz = args.imgsz or int(state["imgsz"])
    else:
        params = load_params_or_exit(params_file)
        model, imgsz = build_model(model_config(params)), args.imgsz or params.model.imgsz
        if imgsz == AUTO:  # resolved from the train split when training starts
            imgsz = IMGSZ_FLOOR
            print(f"model.imgsz is auto: sized at {imgsz}, the smallest size training can pick (the trained "
                  "weights hold the size it picked)")
    if imgsz % 32:
        p.error(f"--imgsz must be a multiple of 32, got {imgsz}")
    print(f"{weights or params_file}:")
    print(describe(model.config, model_summary(model, imgsz)))
    for part in ("backbone", "neck", "head"):
        n = sum(q.numel() for q in getattr(model, part).parameters())
        print(f"  {part:<9} {n / 1e6:6.2f} M parameters")
    return 0
