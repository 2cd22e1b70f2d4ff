"""`data.source: yolo`: YOLO txt datasets read through the same checks and counts as VOC, giving the
same annotation lines as the VOC copy of the same data."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from PIL import Image

from detpipe.data.annotations import format_line, parse_line
from detpipe.data.dataset_check import CHECKERS, check_dataset
from detpipe.params import DataParams, DataSource
from scripts.synth import generate
from detpipe.data.voc import RawObject, parse_voc
from detpipe.data.yolo import label_path, to_pixels
from tests.vocgen import CLASSES, write_image

REPO = Path(__file__).resolve().parents[1]


def voc_to_yolo(voc_root: Path, out: Path, layout: str = "ultralytics") -> None:
    """The usual VOC -> YOLO conversion (labelImg's and Roboflow's: no -1 pixel shift), with 6
    decimals; alternate images go to train and val. Difficult objects become ordinary lines: YOLO
    txt has no difficult flag."""
    for k, xml in enumerate(sorted((voc_root / "Annotations").glob("*.xml"))):
        raw = parse_voc(xml)
        image = voc_root / "JPEGImages" / raw.filename
        width, height = Image.open(image).size
        split = ("train", "val")[k % 2]
        images, labels = ((out / "images" / split, out / "labels" / split) if layout == "ultralytics"
                          else (out / split / "images", out / split / "labels"))
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, images / raw.filename)
        lines = [f"{CLASSES.index(o.name)} {(o.box[0] + o.box[2]) / 2 / width:.6f} {(o.box[1] + o.box[3]) / 2 / height:.6f} "
                 f"{(o.box[2] - o.box[0]) / width:.6f} {(o.box[3] - o.box[1]) / height:.6f}\n" for o in raw.objects]
        (labels / f"{xml.stem}.txt").write_text("".join(lines))


def strip_difficult(line: str) -> str:
    """An annotation line without difficult flags (YOLO txt cannot carry them)."""
    return " ".join(tok[:-2] if tok.count(",") == 5 else tok for tok in line.split())


@pytest.fixture(scope="module")
def voc_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, n_images=16, seed=5, style="shapes", min_size=64, max_size=320)
    return out / "VOCdevkit" / "VOC2007"


@pytest.mark.parametrize("layout", ["ultralytics", "roboflow"])
def test_yolo_copy_gives_the_voc_lines(voc_dataset, tmp_path, layout):
    voc = check_dataset(DataParams(root=str(voc_dataset), classes=CLASSES), base=tmp_path, workers=1)
    voc_to_yolo(voc_dataset, tmp_path / "yolo", layout)
    yolo = check_dataset(DataParams(root=str(tmp_path / "yolo"), classes=CLASSES, source="yolo"), base=tmp_path,
                         workers=1)
    assert not voc.errors and not yolo.errors
    want = {Path(r.path).name: strip_difficult(format_line(r)).split(" ", 1)[1:] for r in voc.records}
    got = {Path(r.path).name: format_line(r).split(" ", 1)[1:] for r in yolo.records}
    assert got == want and sum(len(r) for r in yolo.records) > 40
    assert yolo.report.to_json()["images"] == voc.report.to_json()["images"]
    assert yolo.report.to_json()["objects"]["kept"] == voc.report.to_json()["objects"]["kept"]
    assert {c: v["objects"] for c, v in yolo.report.to_json()["per_class"].items()} == \
        {c: v["objects"] for c, v in voc.report.to_json()["per_class"].items()}
    assert yolo.report.to_json()["source"]["type"] == "yolo" and yolo.report.to_json()["warning_counts"] == voc.report.to_json()["warning_counts"]


def test_pixel_rule_reads_back_integer_voc_boxes_up_to_6666_px():
    """The module docstring's rule: (cx -/+ w/2)·W rounded to 1/100 px; 6-decimal labels of integer
    boxes come back as those integers on images up to 6666 px a side."""
    rng = np.random.default_rng(0)
    for _ in range(20000):
        w, h = (int(v) for v in rng.integers(1, 6667, 2))
        x1, x2 = sorted(rng.integers(0, w + 1, 2))
        y1, y2 = sorted(rng.integers(0, h + 1, 2))
        cx, cy, bw, bh = (float(f"{v:.6f}") for v in ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h))
        box = to_pixels(RawObject("c", (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)), w, h).box
        assert box == (x1, y1, x2, y2), (w, h, x1, y1, x2, y2, box)
    fractional = to_pixels(RawObject("c", (0.123456, 0.5, 0.654321, 1.0)), 1000, 100).box
    assert fractional == (123.46, 50.0, 654.32, 100.0)
    assert str(to_pixels(RawObject("c", (-1e-9, 0.0, 1.0, 1.0)), 640, 480).box[0]) == "0.0"  # no -0.0


def test_label_path_rule():
    assert label_path("images/train/a.jpg") == "labels/train/a.txt"
    assert label_path("train/images/sub/a.PNG") == "train/labels/sub/a.txt"
    assert label_path("images/x/images/a.jpg") == "images/x/labels/a.txt"  # the last images/ folder
    assert label_path("photos/a.jpg") is None


def test_one_checker_per_data_source():
    assert set(CHECKERS) == set(get_args(DataSource))


def make_yolo(root: Path, items: dict[str, dict], names_file: str | None = None) -> Path:
    """items: image stem -> dict(lines=[...] or None (no label file), size=(w, h), image=True)."""
    for stem, spec in items.items():
        if spec.get("image", True):
            write_image(root / "images" / f"{stem}.jpg", spec.get("size", (100, 50)), exif=spec.get("exif"))
        if spec.get("lines") is not None:
            (root / "labels").mkdir(parents=True, exist_ok=True)
            (root / "labels" / f"{stem}.txt").write_text("".join(ln + "\n" for ln in spec["lines"]))
    if names_file:
        (root / names_file[0]).write_text(names_file[1])
    return root


def run(root: Path, tmp_path: Path, **data):
    return check_dataset(DataParams(root=str(root), classes=data.pop("classes", CLASSES), source="yolo", **data),
                         base=tmp_path, workers=1)


def kinds(res) -> dict[str, int]:
    return res.report.to_json()["warning_counts"]


def test_bad_lines_boxes_and_files_are_counted(tmp_path):
    root = make_yolo(tmp_path / "y", {
        "good": {"lines": ["0 0.5 0.5 0.2 0.2", "3 0.1 0.1 0.1 0.1"]},
        "bad": {"lines": ["x 0.5 0.5 0.2 0.2", "1 0.5 0.5 0.2", "1 0.5 nan 0.2 0.2", "-1 0.5 0.5 0.1 0.1",
                          "2 0.5 0.5 0.2 0.2"]},
        "out": {"lines": ["1 1.5 0.5 0.2 0.2", "1 0.95 0.5 0.2 0.2", "2 0.5 0.5 0 0.2"]},
        "poly": {"lines": ["2 0.1 0.2 0.5 0.1 0.3 0.4"]},
        "background": {"lines": None},
        "empty": {"lines": []},
        "orphan": {"lines": ["0 0.5 0.5 0.1 0.1"], "image": False},
    })
    (root / "images" / "notes.txt").write_text("not an image")
    write_image(tmp_path / "y" / "stray.jpg")
    res = run(root, tmp_path, skip_bad_files=True)
    lines = {Path(r.path).name: format_line(r).split(" ", 1)[1:] for r in res.records}
    assert lines["good.jpg"] == ["40,20,60,30,0 5,2.5,15,7.5,3"]  # fractional pixels: no float warning
    assert lines["poly.jpg"] == ["10,5,50,20,2"]           # a polygon's bounding box
    assert lines["out.jpg"] == ["85,20,100,30,1"]          # clipped; the one outside and the zero-width dropped
    assert lines["bad.jpg"] == ["40,20,60,30,2"]
    assert lines["background.jpg"] == lines["empty.jpg"] == [] and "float_coordinates" not in kinds(res)
    assert res.report.to_json()["objects"]["skipped"] == {"bad_box": 4, "degenerate_box": 1, "image_skipped:missing_image": 1,
                                                "outside_image": 1}
    assert {k: kinds(res)[k] for k in ("bad_box", "clipped", "no_label_file", "outside_images_folder")} == \
        {"bad_box": 4, "clipped": 1, "no_label_file": 1, "outside_images_folder": 1}
    assert res.report.to_json()["images"]["skipped"] == {"missing_image": 1}
    orphan = next(w for w in res.report.to_json()["warnings"] if w["kind"] == "missing_image")
    assert "labels/orphan.txt" in orphan["message"] and "images/orphan.*" in orphan["message"]
    bad = [w["message"] for w in res.report.to_json()["warnings"] if w["kind"] == "bad_box"]
    assert any("bad.txt:1" in m and "'x'" in m for m in bad) and any("bad.txt:3" in m for m in bad)
    strict = run(root, tmp_path)
    assert [e.kind for e in strict.errors] == ["missing_image"]


def test_class_index_beyond_the_names_is_an_error_with_a_hint(tmp_path):
    root = make_yolo(tmp_path / "y", {"a": {"lines": ["0 0.5 0.5 0.2 0.2", "7 0.5 0.5 0.2 0.2"]}})
    res = run(root, tmp_path)
    [err] = [e for e in res.errors if e.kind == "unknown_class"]
    assert "'<class index 7>'" in err.message and "past the 4 names (0..3)" in err.message
    assert res.report.to_json()["objects"]["skipped"] == {"unknown_class": 1}


@pytest.mark.parametrize("names_file", [("data.yaml", "path: .\nnames:\n  0: star\n  1: circle\n"),
                                        ("data.yaml", "names: [star, circle]\n"), ("classes.txt", "star\ncircle\n")])
def test_names_come_from_the_dataset_names_file(tmp_path, names_file):
    root = make_yolo(tmp_path / "y", {"a": {"lines": ["0 0.5 0.5 0.2 0.2", "1 0.2 0.2 0.2 0.2"]}}, names_file)
    res = run(root, tmp_path)
    assert not res.errors
    assert format_line(res.records[0]).split(" ", 1)[1] == "40,20,60,30,3 10,5,30,15,0"  # star = 3, circle = 0
    assert res.report.to_json()["source"]["class_names_from"].endswith(names_file[0])


def test_exif_rotated_image_boxes_are_fractions_of_the_displayed_frame(tmp_path):
    root = make_yolo(tmp_path / "y", {"r": {"lines": ["0 0.25 0.5 0.5 0.2"], "size": (100, 50), "exif": 6}})
    res = run(root, tmp_path)
    assert not res.errors
    assert format_line(res.records[0]).split(" ", 1)[1] == "0,40,25,60,0"  # displayed 50x100


def test_annotate_stage_and_check_data_read_yolo(tmp_path):
    root = make_yolo(tmp_path / "ds", {"a": {"lines": ["0 0.5 0.5 0.2 0.2"]}, "b": {"lines": ["1 0.5 0.5 0.2 0.2"]},
                                        "c": {"lines": ["2 0.5 0.5 0.2 0.2"]}, "d": {"lines": ["3 0.5 0.5 0.2 0.2"]},
                                        "e": {"lines": None}})
    params = (REPO / "params.yaml").read_text(encoding="utf-8")
    params = params.replace("data/VOCdevkit/VOC2007", "ds").replace("source: voc ", "source: yolo")
    (tmp_path / "params.yaml").write_text(params, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "annotate.py"), "--params", "params.yaml", "--out",
                           "data/annotations.txt", "--images", "data/images.sha256", "--report",
                           "reports/annotate.json"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning [no_label_file]: ds/images/e.jpg: no label file" in proc.stdout
    lines = (tmp_path / "data/annotations.txt").read_text().splitlines()
    assert lines == ["ds/images/a.jpg 40,20,60,30,0", "ds/images/b.jpg 40,20,60,30,1", "ds/images/c.jpg 40,20,60,30,2",
                     "ds/images/d.jpg 40,20,60,30,3", "ds/images/e.jpg"]
    assert json.loads((tmp_path / "reports/annotate.json").read_text())["source"]["type"] == "yolo"
    check = subprocess.run([sys.executable, "-m", "detpipe", "check-data", "--root", str(root), "--source", "yolo",
                            "--classes", ",".join(CLASSES)], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0 and "OK" in check.stdout, check.stderr
