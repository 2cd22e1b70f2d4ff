"""Generate a synthetic VOC detection dataset (detpipe.synth) under <out>/VOCdevkit/VOC2007.

The committed demo dataset in data/ was produced by exactly

    python scripts/make_demo_data.py --out data --n 300 --seed 0 --style shapes

(the defaults), and rerunning that command rewrites the same bytes. The held-out dataset of the
generalisation check comes from another style, seed and size range, e.g.

    python scripts/make_demo_data.py --out data_alt --n 300 --seed 1 --style alt --min-size 192 --max-size 448

then set data.root to data_alt/VOCdevkit/VOC2007 and data.classes to the printed class list.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a file (python scripts/make_demo_data.py), the repo root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.synth import STYLES, generate, print_written  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data"), help="folder that gets VOCdevkit/VOC2007")
    parser.add_argument("--n", type=int, default=300, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", choices=sorted(STYLES), default="shapes")
    parser.add_argument("--min-size", type=int, default=160, help="smallest image side in pixels")
    parser.add_argument("--max-size", type=int, default=400, help="largest image side in pixels")
    args = parser.parse_args(argv)
    counts = generate(args.out, args.n, args.seed, args.style, args.min_size, args.max_size)
    print_written(args.out, counts, counts["classes"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
