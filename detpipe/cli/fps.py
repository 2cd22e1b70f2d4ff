"""`detpipe fps`: how fast the model (--weights, default models/best.pt) is, and where the time goes.

After warm-up batches (not timed: the first calls allocate memory and pick kernels), times runs
of each batch size and prints the median milliseconds per image over those runs for each part — preprocessing (letterbox,
stack, copy to the device), model forward, decoding + NMS (mapped back to image pixels), drawing
the boxes — and images/s without and with drawing. GPU work is synchronised before every clock
read. Images are 8 synthetic 640x480 pictures unless --source gives real ones. --weights also
takes an exported .onnx (a fixed-batch export runs batch 1 at a time).
"""
from __future__ import annotations

import argparse
import sys

import torch

from ..cpus import usable_cpus
from ..data.images import DEFAULT_LIMIT
from ..infer.sources import SourceError, open_source
from ..params import PredictParams
from .common import CliError, add_backend_arg, add_weights_arg, prog, resolve_weights


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("fps"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_weights_arg(p)
    p.add_argument("--imgsz", type=int, help="input size (default: the size the model was trained at)")
    p.add_argument("--batch", default="1,8,32", help="batch sizes, comma-separated (default 1,8,32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="PyTorch weights: autocast the forward pass to this dtype (CUDA; default float32)")
    add_backend_arg(p, PredictParams().backend)
    p.add_argument("--conf", type=float, default=0.25, help="score threshold for NMS and drawing (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first (default 2)")
    p.add_argument("--images", type=int, default=64, help="images timed per batch size (default 64)")
    p.add_argument("--source", help="image, folder or glob of images to time on (default: synthetic)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: one per CPU this process may use)")
    return p


def format_row(label: str, r: dict) -> str:
    return (f"{label:<10} {r['preprocess']:>10.2f} {r['forward']:>9.2f} {r['nms']:>11.2f} {r['draw']:>8.2f} "
            f"{r['total']:>8.2f} {r['images_per_s']:>9.1f} {r['images_per_s_with_drawing']:>12.1f} "
            f"{r['fastest']:>8.2f}-{r['slowest']:.2f}")


HEADER = (f"{'batch':<10} {'preprocess':>10} {'forward':>9} {'decode+NMS':>11} {'drawing':>8} {'total':>8} "
          f"{'images/s':>9} {'w/ drawing':>12} {'total range':>14}\n"
          "(ms per image: median over the timed batches after the warm-up; range: fastest-slowest batch)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..infer.backends import leave_cpu_to
    from ..infer.predictor import Predictor, sample_images, time_parts
    torch.set_num_threads(args.threads or usable_cpus())
    try:
        args.weights = resolve_weights(args.weights)
        sizes = [int(b) for b in args.batch.split(",") if b.strip()]
        predictor = Predictor(args.weights, args.device, args.conf, args.iou, imgsz=args.imgsz, dtype=args.dtype,
                              backend=args.backend)
        threads = torch.get_num_threads()  # the network's; torch's own may drop to one beside onnxruntime
        leave_cpu_to(predictor.backend)
        images = ([f.rgb for f in open_source(args.source, pixel_limit=DEFAULT_LIMIT)][:64] if args.source
                  else sample_images(8))
    except (CliError, ValueError, SourceError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not images:
        print(f"error: {args.source}: no readable images", file=sys.stderr)
        return 2
    kind = "onnxruntime" if args.weights.lower().endswith(".onnx") else "PyTorch weights"
    print(f"{args.weights} ({kind}) on {predictor.backend.where}, imgsz {predictor.imgsz}, "
          f"{threads} CPU threads, {len(images)} {'real' if args.source else 'synthetic'} "
          f"images of {images[0].shape[1]}x{images[0].shape[0]}, conf {args.conf}, {args.warmup} warm-up batches")
    print(HEADER)
    for b in sizes:
        if predictor.batch_limit and b != predictor.batch_limit:
            print(f"{b:<10} skipped: {args.weights} takes batches of {predictor.batch_limit} (export --dynamic)")
            continue
        runs = max(1, -(-args.images // b))
        r = time_parts(predictor, images, b, runs=runs, warmup=args.warmup)
        print(format_row(str(b), r) + f"   ({r['detections_per_image']:.1f} boxes/image)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
