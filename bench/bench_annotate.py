"""Annotate throughput: generate N small VOC XMLs + tiny JPEGs in a temp dir, then time the full
check (safe parse + image resolve + decode-verify + box cleaning + accounting) serially and with a
process pool, against a reference measured in the same run: bare lxml parsing of the same files.

    python bench/bench_annotate.py            # 20,000 files
    python bench/bench_annotate.py --files 2000 --workers 2
"""
from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from lxml import etree
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.cpus import usable_cpus  # noqa: E402
from detpipe.data.dataset_check import check_voc  # noqa: E402
from detpipe.params import DataParams  # noqa: E402

CLASSES = ("circle", "square", "triangle", "star")


def tiny_jpegs(count: int = 8) -> list[bytes]:
    """A few encoded 48x40 JPEGs; the files are copies (encoding is not what is measured)."""
    out = []
    for k in range(count):
        buf = io.BytesIO()
        Image.effect_noise((48, 40), 20 + k).convert("RGB").save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def generate(root: Path, files: int, seed: int = 0) -> None:
    """Write `files` XML + image pairs under root/{Annotations,JPEGImages}."""
    rng = random.Random(seed)
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    images = tiny_jpegs()
    for i in tqdm(range(files), desc="generate", unit="file", mininterval=1.0):
        stem = f"{i:06d}"
        (root / "JPEGImages" / f"{stem}.jpg").write_bytes(images[i % len(images)])
        objs = "".join(
            f"<object><name>{rng.choice(CLASSES)}</name><difficult>0</difficult><bndbox><xmin>{x}</xmin>"
            f"<ymin>{y}</ymin><xmax>{x + 10}</xmax><ymax>{y + 8}</ymax></bndbox></object>"
            for x, y in ((rng.randint(0, 30), rng.randint(0, 25)) for _ in range(rng.randint(1, 3))))
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><folder>VOC</folder><filename>{stem}.jpg</filename><size><width>48</width>"
            f"<height>40</height><depth>3</depth></size>{objs}</annotation>")


def time_lxml(root: Path) -> float:
    """Reference: files/s of bare etree.parse over the same XMLs (no checks, no images)."""
    files = sorted((root / "Annotations").iterdir())
    start = time.perf_counter()
    for f in files:
        etree.parse(str(f))
    return len(files) / (time.perf_counter() - start)


def time_check(root: Path, workers: int, verify: bool = True) -> tuple[float, int]:
    data = DataParams(root=str(root), classes=CLASSES, verify_images=verify)
    start = time.perf_counter()
    result = check_voc(data, base=root, workers=workers)
    seconds = time.perf_counter() - start
    assert not result.errors and result.report.to_json()["images"]["kept"] == result.report.to_json()["images"]["in"]
    return result.report.to_json()["images"]["in"] / seconds, result.report.to_json()["objects"]["kept"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=usable_cpus())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="detpipe bench 基准 ") as tmp:
        root = Path(tmp) / "VOC2007"
        generate(root, args.files)
        for f in (root / "JPEGImages").iterdir():  # warm the page cache so every timing sees the same disk state
            f.read_bytes()
        ref = time_lxml(root)
        serial, objects = time_check(root, workers=1)
        parallel, _ = time_check(root, workers=args.workers)
        header, _ = time_check(root, workers=args.workers, verify=False)
    print(f"annotate bench: {args.files} XML files, {objects} objects, {usable_cpus()} usable CPUs")
    print(f"  reference bare lxml parse         {ref:9.0f} XML files/s")
    print(f"  full check, 1 process             {serial:9.0f} XML files/s  ({serial / ref:.2f} x reference)")
    print(f"  full check, {args.workers} processes           {parallel:9.0f} XML files/s  "
          f"({parallel / serial:.2f} x serial)")
    print(f"  header-only images, {args.workers} processes   {header:9.0f} XML files/s  (data.verify_images: false)")


if __name__ == "__main__":
    main()
