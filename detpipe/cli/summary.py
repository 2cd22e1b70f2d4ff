"""`python -m detpipe summary`: parameters and GFLOPs of the model params.yaml describes (or of a
weights file), at the input size, per part (backbone, neck, head) and in total."""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detpipe summary", description=__doc__)
    p.add_argument("--params", default="params.yaml", help="params file whose `model` section to build")
    p.add_argument("--weights", help="a detpipe weights file (models/best.pt) instead of params.yaml")
    p.add_argument("--imgsz", type=int, help="input size (default: model.imgsz or the trained size)")
    args = p.parse_args(argv)
    from ..model import build_model, describe, model_summary
    if args.weights:
        from ..training import load_detector
        model, state = load_detector(args.weights)
        imgsz = args.imgsz or int(state["imgsz"])
    else:
        from ..params import load_params_or_exit
        from ..training import model_config
        params = load_params_or_exit(args.params)
        model, imgsz = build_model(model_config(params)), args.imgsz or params.model.imgsz
    if imgsz % 32:
        p.error(f"--imgsz must be a multiple of 32, got {imgsz}")
    print(describe(model.config, model_summary(model, imgsz)))
    for part in ("backbone", "neck", "head"):
        n = sum(q.numel() for q in getattr(model, part).parameters())
        print(f"  {part:<9} {n / 1e6:6.2f} M parameters")
    return 0
