"""`detpipe export [--weights models/best.pt] --format onnx [--dynamic]`: a deployable model.

Exports --weights (default models/best.pt) to models/best.onnx (or --out), checks it with onnx.checker and runs it with onnxruntime
beside PyTorch on sample images, printing the largest differences. NMS is not in the graph: the
model outputs class logits and xyxy boxes in input pixels for every anchor, and `detpipe
predict/fps --weights model.onnx` decode them with the same Python NMS as the PyTorch model.
Without --dynamic the input is fixed at [1, 3, S, S]; with it, batch and image size are free.
Needs the optional packages onnx and onnxruntime.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.images import DEFAULT_LIMIT
from ..infer.sources import SourceError, open_source
from .common import CliError, add_weights_arg, prog, resolve_weights


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("export"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weights_arg(p, "a detpipe checkpoint (.pt)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (onnx)")
    p.add_argument("--out", help="output file (default: the weights path with .onnx)")
    p.add_argument("--imgsz", type=int, help="input size (default: the size the model was trained at)")
    p.add_argument("--dynamic", action="store_true", help="free batch size and image size")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--source", help="images to check parity on (default: 8 synthetic 640x480 images)")
    p.add_argument("--tolerance", type=float, default=1e-2,
                   help="largest allowed difference in box pixels and logits (default 0.01)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.weights = resolve_weights(args.weights)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..infer.predictor import sample_images
    from ..infer.onnx_export import export_onnx, parity
    from ..infer.onnx_graph import require_onnx
    require_onnx()
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(".onnx")
    if out.resolve() == Path(args.weights).resolve():
        print(f"error: --out {out} is the weights file", file=sys.stderr)
        return 2
    if not Path(args.weights).is_file() or Path(args.weights).suffix.lower() == ".onnx":
        print(f"error: {args.weights}: give an existing detpipe checkpoint (.pt) to export", file=sys.stderr)
        return 2
    try:
        path = export_onnx(args.weights, out, args.imgsz, args.dynamic, args.opset)
    except RuntimeError as exc:  # CheckpointError: not a detpipe weights file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shape = "[batch, 3, height, width] (dynamic)" if args.dynamic else "[1, 3, S, S] (fixed)"
    print(f"exported {args.weights} -> {path} ({path.stat().st_size / 1e6:.1f} MB), input {shape}, "
          "outputs cls logits + xyxy boxes; NMS not in the graph (done in Python); onnx.checker: ok")
    if args.source:
        try:
            images = [f.rgb for f in open_source(args.source, max_frames=8, pixel_limit=DEFAULT_LIMIT)][:8]
        except SourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        images = sample_images(8)
    r = parity(args.weights, path, images)
    print(f"onnxruntime vs PyTorch on {len(images)} images: max abs diff logits {r['cls']:.2e}, "
          f"boxes {r['boxes']:.2e} px; after NMS {r['torch_detections']} vs {r['onnx_detections']} boxes, "
          f"max diff {r['final_boxes']:.2e} px, scores {r['final_scores']:.2e}")
    ok = (r["cls"] <= args.tolerance and r["boxes"] <= args.tolerance
          and r["torch_detections"] == r["onnx_detections"] and not r["label_mismatches"])
    if not ok:
        print(f"error: the ONNX model differs from PyTorch by more than {args.tolerance}", file=sys.stderr)
        return 1
    print(f"parity: ok (tolerance {args.tolerance}); use it with: detpipe predict SOURCE --weights {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
