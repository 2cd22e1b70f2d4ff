"""Generate one of the realdata datasets (VOC layout) under <out>/VOCdevkit/VOC2007.

Worlds (scripts/realworlds/), none of which the defaults were tuned on:

    aerial    many objects under 16 px from above: car, truck, boat, plane (300 images)
    photo     photo-like shaded solids: ball, can, cone, box, ring (300 images)
    solids    the photo world's pictures with other classes: pyramid, capsule, egg, puck (1200
              images), the source of a pretrained start for the other two

The measured datasets are exactly

    python scripts/make_realdata.py --world aerial --out data_realdata/aerial --n 300 --seed 0
    python scripts/make_realdata.py --world photo --out data_realdata/photo --n 300 --seed 0
    python scripts/make_realdata.py --world solids --out data_realdata/solids --n 1200 --seed 1

(bench/realdata.py runs these itself); rerunning a command rewrites the same bytes with the same
numpy, Pillow and OpenCV versions, whatever --workers. It prints the counts and the box sizes
(median longer side, in the image and letterboxed to 320 px, the share under 16 px, the COCO
small/medium/large mix). Then set data.root to the printed folder and data.classes to the printed
class list.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a file (python scripts/make_realdata.py), the repo root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.cpus import usable_cpus  # noqa: E402
from scripts.realworlds import WORLDS  # noqa: E402
from scripts.realworlds.common import generate  # noqa: E402
from scripts.synth import print_written  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=sorted(WORLDS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder that gets VOCdevkit/VOC2007")
    parser.add_argument("--n", type=int, default=300, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(usable_cpus(), 4),
                        help="processes (the bytes do not depend on it; default: CPUs, at most 4)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n is {args.n}; give at least 1 image")
    if args.workers < 1:
        parser.error(f"--workers is {args.workers}; give at least 1")
    world = WORLDS[args.world]
    counts = generate(world, args.out, args.n, args.seed, args.workers)
    print_written(args.out, counts, world.classes, world.description)
    return 0


if __name__ == "__main__":
    sys.exit(main())
