"""The index page from a fabricated reports/ tree, and the rendered figures (PNG, non-trivial)."""
from __future__ import annotations

import importlib.util
from dataclasses import fields
import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from detpipe.reports.prediction_grid import draw_detections, draw_prediction_grid, match
from detpipe.artifacts.history import write_history
from detpipe.artifacts.metrics import Counts, Headline, MapInfo, MapMetrics
from detpipe.artifacts.overfit_verdict import VERDICTS
from detpipe.reports.index import write_index
from detpipe.artifacts.annotate_report import AnnotateReport
from detpipe.artifacts.predict_summary import PredictSummary
from detpipe.artifacts.split_report import ObjectScale, SplitReport, SplitStats
from detpipe.artifacts.train_recipe import TrainRecipe
from detpipe.recipe import Choice
from detpipe.metrics import voc_map
from detpipe.pipeline.table import stage
from detpipe.reports.index import Inputs, build_index, rel
from detpipe.reports.split_check import compare_splits



def _stage(name: str):
    """Load stages/<name>.py under a private module name (stage scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "stages" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_stage_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


overfit_stage = _stage("overfit")
report_stage = _stage("report")

CLASSES = [f"class{i:02d}" for i in range(20)]
PNG = b"\x89PNG\r\n\x1a\n"


def _png(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 100, 50)).save(path)


def _json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")


def run_overfit_stage(root: Path) -> None:
    """The overfit stage on the fabricated reports under `root`, as the stage table wires it."""
    r = root / "reports"
    assert overfit_stage.main([
        "--params", str(root / "params.yaml"), "--frozen", str(r / "train/frozen.tsv"),
        "--unfrozen", str(r / "train/unfrozen.tsv"), "--split-report", str(r / "data/split.json"),
        "--map-metrics", str(r / "map/metrics.json"), "--recipe", str(r / "train/recipe.json"),
        "--out-md", str(r / "overfitting.md"), "--out-json", str(r / "overfitting.json"),
        "--out-png", str(r / "overfitting.png")]) == 0


def fabricate(root: Path) -> Path:
    """A reports/ tree shaped like the stages write it (annotate, split, train, overfit, map, predict)."""
    r = root / "reports"
    AnnotateReport.model_validate({
        "source": {"type": "voc"}, "classes": CLASSES,
        "images": {"in": 210, "kept": 200, "skipped": {"missing_image": 10}, "without_objects": 5},
        "objects": {"in": 620, "kept": 600, "skipped": {"unknown_class": 20}},
        "per_class": {c: {"objects": 30, "images": 20, "difficult": 1} for c in CLASSES},
        "images_without_objects": [f"img{i}.jpg" for i in range(5)], "image_modes": {"RGB": 200},
        "warning_counts": {"converted_mode": 2},
        "warnings": [{"file": "a.jpg", "kind": "converted_mode", "message": "a.jpg: mode L converted to RGB."}] * 2,
        "errors": []}).write(r / "data/annotate.json")
    per = lambda k: {c: 3 * k for c in CLASSES}  # noqa: E731
    splits = {n: SplitStats(images=20 * k, objects=60 * k, images_without_objects=0, difficult=0,
                            class_objects=per(k), class_images=per(k),
                            box_sizes={"small": 10 * k, "medium": 30 * k, "large": 20 * k},
                            object_scale=ObjectScale(objects=60 * k, median=0.1, small_objects=10 * k, median_small=0.02))
              for n, k in (("train", 7), ("val", 2), ("test", 1))}
    SplitReport(method="hashed", seed=0, fractions={"train": 0.7, "val": 0.2, "test": 0.1}, splits=splits,
                comparison=compare_splits(splits, 0.25), flagged=[], warnings=[]).write(r / "data/split.json")
    _png(r / "data/split.png")
    e = np.arange(1, 16, dtype=float)
    loss = 1 + 3 * np.exp(-e / 2)
    maps = 0.8 * (1 - np.exp(-e / 2))
    h = pd.DataFrame({"epoch": e.astype(int), "phase": ["frozen"] * 3 + ["unfrozen"] * 12, "train_loss": loss,
                      "val_loss": loss * 1.05, "val_map50": maps, "val_map50_95": maps * 0.6, "val_precision": 0.8,
                      "val_recall": 0.7, "lr": 0.01, "seconds": 10.0, "val_seconds": 1.0, "images_per_s": 50.0,
                      "mosaic": e <= 10, "train_box_loss": loss / 2, "train_cls_loss": loss / 4,
                      "val_box_loss": loss / 2, "val_cls_loss": loss / 4})
    (r / "train").mkdir(parents=True)
    write_history(r / "train/frozen.tsv", h.iloc[:3].to_dict("records"))
    write_history(r / "train/unfrozen.tsv", h.iloc[3:].to_dict("records"))
    TrainRecipe(choices=[
        Choice(key="train.freeze_epochs", setting=3, value=3, reason="set in params.yaml"),
        Choice(key="model.imgsz", setting="auto", value=448, reason="the median train object's shorter side is 12.0 "
               "px at 320; 448 brings it to 16.8 px >= 16 px")]).write(r / "train/recipe.json")
    stats = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    MapMetrics.from_dict({
        "map50": 0.8123, "min_overlap": 0.5, "voc07": False, "map50_95": 0.5432,
        "voc": {"per_class": {c: 0.8 for c in CLASSES[:-1]} | {CLASSES[-1]: None}},
        "coco": {**{k: (-1.0 if k == "APs" else 0.5) for k in stats},
                 "per_class": {c: 0.54 for c in CLASSES}},
        "sizes": {"small": {"area": [0.0, 1024.0], "ground_truth": 0, "found50": 0, "ap50": None},
                  "medium": {"area": [1024.0, 9216.0], "ground_truth": 14, "found50": 12, "ap50": 0.71},
                  "large": {"area": [9216.0, 1e10], "ground_truth": 10, "found50": 10, "ap50": 0.9}},
        "at_confidence": {"confidence": 0.5, "precision": 0.9, "recall": 0.7, "f1": 0.79},
        "best_f1": {"confidence": 0.31, "precision": 0.85, "recall": 0.8, "f1": 0.82}}).write(r / "map/metrics.json")
    (root / "params.yaml").write_text("data:\n  classes: [a]\n")
    run_overfit_stage(root)
    MapInfo(conventions={}, counts=Counts(images=20, images_without_detections=0, ground_truth={c: 6 for c in CLASSES},
                                          difficult=0, detections={c: 9 for c in CLASSES}),
            per_class_ap50_coco={c: 0.8 for c in CLASSES}, at_confidence_per_class={}, warnings=[],
            seconds_voc=1.0, seconds_coco=1.0, seconds=2.0).write(r / "map/info.json")
    for c in CLASSES:
        _png(r / "map/pr" / f"{c}.png")
    _png(r / "map/prf_confidence.png")
    _png(r / "map/confusion_matrix.png")
    _png(r / "predictions/grid.jpg".replace(".jpg", ".png"))
    for i in range(3):
        _png(r / f"predictions/{i:04d}_img.jpg")
    PredictSummary(images=20, detections=50, confidence_for_csv=0.001, confidence_for_samples=0.25, samples=3,
                   ms_per_image=20.0, device="cpu", seconds=4.0).write(r / "predict.json")
    return r


def inputs(r: Path, **moved: Path) -> Inputs:
    """Every input where the stage table puts it (relative to the reports folder `r`), or `moved`."""
    table = dict(stage("report").args)
    return Inputs(**{flag[2:].replace("-", "_"): moved.get(flag[2:].replace("-", "_"), r.parent / path)
                     for flag, path in table.items() if flag not in OUTPUTS})


OUTPUTS = ("--out", "--headline")  # the report stage's two outputs; every other flag is an input


def argv(i: Inputs, out: Path, headline: Path | None = None) -> list[str]:
    """The stage's command line; the headline metrics go beside the page unless given."""
    return ["--out", str(out), "--headline", str(headline or Path(out).parent / "metrics.json")] + [a for k, v in vars(i).items() for a in ("--" + k.replace("_", "-"), str(v))]


def test_the_stage_takes_exactly_the_tables_inputs():
    flags = [flag for flag, _ in stage("report").args if flag not in OUTPUTS]
    assert flags == ["--" + f.name.replace("_", "-") for f in fields(Inputs)]


def links(md: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", md) + re.findall(r'src="([^"]+)"', md)


def test_index_from_full_tree(tmp_path: Path):
    r = fabricate(tmp_path)
    out = r / "index.md"
    assert report_stage.main(argv(inputs(r), out)) == 0
    md = out.read_text(encoding="utf-8")
    headline = Headline.read(r / "metrics.json")
    assert headline == Headline(map50=0.8123, map50_95=0.5432, precision=0.9, recall=0.7, f1=0.79,
                                best_val_map50=round(0.8 * (1 - np.exp(-15 / 2)), 6), verdict=headline.verdict)
    assert headline.verdict in VERDICTS and headline.verdict.capitalize() in md
    for heading in ("## Dataset", "## Split check", "## Training", "## Is the model overfitting?",
                    "## mAP on the test split", "## Precision-recall curves", "## Confusion matrix",
                    "## Sample predictions", "## How long each stage took"):
        assert heading in md, heading
    assert "_Missing" not in md
    assert "0.812" in md and "0.543" in md and "Still improving" in md  # best val mAP50 at the last epoch
    assert "n/a (no such objects)" in md                     # COCO -1 shown as not applicable
    assert "- model.imgsz: 448 (auto) — the median train object's shorter side is 12.0 px at 320" in md
    assert md.count("| class19 |") >= 2                      # 20 classes in dataset and mAP tables
    # every link and image is relative and resolves from the index's folder
    targets = links(md)
    assert len(targets) >= 30
    for t in targets:
        assert not t.startswith("/") and "://" not in t, t
        assert (out.parent / unquote(t)).exists(), t
    # times: annotate 1.5 + split 0.25 + train 150 + predict 4 + map 2 + overfit
    assert re.search(r"\| train_unfrozen \| 2 min 00 s \|", md)
    assert "| predict | 4.0 s |" in md


def test_first_page_has_ap_by_object_size_with_na(tmp_path: Path):
    """AP by size with its ground truth on the first page (n/a, never 0 or -1, for a size without
    objects), where the sizes are measured, what the model sees of them, and the size table."""
    r = fabricate(tmp_path)
    md = build_index(inputs(r), r / "index.md")
    first = md[:md.index("## Dataset")]
    assert ("| COCO AP@[.5:.95] by object size (test) | small n/a (0 objects) · medium 0.500 (14 objects) · "
            "large 0.500 (10 objects) |") in first
    assert "measured on the original image" in first
    # fabricate's split: median train object 0.1 and small one 0.02 of the longer side; params.yaml says
    # imgsz 320 but training resolved 448 (its recipe.json), and the sizes are at what the model saw
    assert "`model.imgsz` 448 (what the model sees), the median train object, √(w·h), is 44.8 px" in first
    assert "and the median small one 9.0 px" in first
    assert "| small | 0–1024 | 0 | n/a | n/a | n/a |" in md
    assert "| medium | 1024–9216 | 14 | 12 | 0.710 | 0.500 |" in md
    assert "-1" not in md.split("## mAP on the test split")[1].split("Per class")[0]


def test_index_with_nothing_there_says_what_is_missing(tmp_path: Path):
    r = tmp_path / "reports"
    r.mkdir()
    md = build_index(inputs(r), r / "index.md")
    assert md.count("_Missing") >= 10
    for what in ("annotate", "split", "train_frozen", "map", "predict", "overfit"):
        assert f"`{what}` stage" in md, what


def test_index_survives_malformed_metrics_and_histories(tmp_path: Path):
    r = fabricate(tmp_path)
    (r / "map/metrics.json").write_text("[1, 2")
    (r / "train/frozen.tsv").write_text("")
    (r / "train/unfrozen.tsv").write_text("epoch\tphase\n")
    write_index(inputs(r), r / "index.md")
    md = (r / "index.md").read_text()
    assert "## Dataset" in md
    # The contracts' one-line reasons, not a crash and not a guess
    assert "_Unreadable: mAP metrics" in md and "not JSON" in md
    assert "_Unreadable: frozen-phase history" in md and "empty file" in md
    assert "unfrozen-phase history" in md and "missing column 'train_loss'" in md


@pytest.mark.parametrize("name", ["data/annotate.json", "data/split.json", "overfitting.json", "predict.json"])
def test_an_input_of_another_layout_fails_the_stage_in_one_line(tmp_path: Path, capsys, name):
    r = fabricate(tmp_path)
    (r / name).write_text('{"images": "many", "splits": [], "seconds": 1}')
    assert report_stage.main(argv(inputs(r), r / "index.md")) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and name in err and "rerun the" in err and not (r / "index.md").exists()


def test_explicit_input_paths_and_links_from_another_folder(tmp_path: Path):
    r = fabricate(tmp_path)
    moved = tmp_path / "elsewhere" / "my metrics.json"
    moved.parent.mkdir()
    (r / "map/metrics.json").rename(moved)
    out = tmp_path / "site" / "index.md"
    assert report_stage.main(argv(inputs(r, metrics=moved), out, tmp_path / "metrics.json")) == 0
    assert Headline.read(tmp_path / "metrics.json").map50 == 0.8123
    md = out.read_text()
    assert "../elsewhere/my%20metrics.json" in md and "0.812" in md
    for t in links(md):
        assert (out.parent / unquote(t)).exists(), t


def test_rel_escapes_spaces(tmp_path: Path):
    assert rel(tmp_path / "a b" / "c.png", tmp_path) == "a%20b/c.png"


# --------------------------------------------------------------------------- prediction figures

def _scene(rng, n_gt: int, h=240, w=320):
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    xy = rng.random((n_gt, 2)) * [w * 0.6, h * 0.6]
    gb = np.c_[xy, xy + 30 + rng.random((n_gt, 2)) * 60]
    gl = rng.integers(0, 20, n_gt)
    return img, gb, gl


def test_match_tp_fp_miss():
    gb = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)
    gl = np.array([0, 1, 2])
    pb = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 31], [50, 50, 60, 60]], float)
    pl = np.array([0, 0, 1, 3])         # duplicate of class 0, correct class 1, wrong class for the 3rd
    ps = np.array([0.9, 0.8, 0.7, 0.6])
    tp, found = match(gb, gl, pb, pl, ps)
    assert tp.tolist() == [True, False, True, False]
    assert found.tolist() == [True, True, False]
    tp, found = match(np.zeros((0, 4)), np.zeros(0, int), pb, pl, ps)
    assert not tp.any() and len(found) == 0
    tp, found = match(gb, gl, np.zeros((0, 4)), np.zeros(0, int), np.zeros(0))
    assert len(tp) == 0 and not found.any()


def test_grid_matching_counts_what_the_voc_map_counts():
    # The grid's hits are the metric's true positives, image by image (one matching for both).
    rng = np.random.default_rng(4)
    for _ in range(50):
        n, k = int(rng.integers(0, 6)), int(rng.integers(0, 8))
        gt = {"boxes": _boxes(rng, n), "labels": rng.integers(0, 3, n), "difficult": np.zeros(n, bool)}
        det = {"boxes": _boxes(rng, k), "labels": rng.integers(0, 3, k), "scores": rng.random(k)}
        tp, found = match(gt["boxes"], gt["labels"], det["boxes"], det["labels"], det["scores"], 0.5)
        voc = voc_map([gt], [det], 3, 0.5)
        assert tp.sum() == found.sum() == sum(int(t.sum()) for t in voc.tp)
        for c in range(3):
            assert tp[det["labels"] == c].sum() == voc.tp[c].sum()


def _boxes(rng, n: int) -> np.ndarray:
    xy = rng.random((n, 2)) * 40
    return np.c_[xy, xy + 5 + rng.random((n, 2)) * 20]


def test_prediction_grid_png_with_20_classes(tmp_path: Path):
    rng = np.random.default_rng(0)
    items = []
    for k in range(6):
        img, gb, gl = _scene(rng, 4, h=200 + 40 * k, w=360 - 30 * k)
        pb, pl = gb[:3] + 2, gl[:3].copy()
        pl[0] = (pl[0] + 1) % 20                                # one wrong class: FP + miss
        items.append((img, (gb, gl), (pb, pl, rng.random(3))))
    items.append((np.zeros((50, 80, 3), np.uint8), (np.zeros((0, 4)), []), (np.zeros((0, 4)), [], [])))
    path = draw_prediction_grid(items, CLASSES, tmp_path / "grid.png", titles=[f"im{i}" for i in range(7)])
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 50_000
    with Image.open(path) as im:
        assert im.width > 1000 and im.height > 500
    empty = draw_prediction_grid([], CLASSES, tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG


def test_draw_detections_draws_in_class_colour():
    from detpipe.colors import class_color

    rgb = np.full((120, 160, 3), 255, np.uint8)
    out = draw_detections(rgb, np.array([[40, 40, 120, 100]]), np.array([5]), np.array([0.87]), CLASSES)
    arr = np.asarray(out)
    assert out.size == (160, 120) and arr.shape == rgb.shape
    assert (arr[100, 80] == class_color(5)).all()           # bottom edge of the box
    assert (rgb == 255).all()                                 # input untouched
    none = draw_detections(rgb, np.zeros((0, 4)), np.zeros(0, int), np.zeros(0), CLASSES)
    assert (np.asarray(none) == 255).all()


@pytest.mark.parametrize("scores", [None, np.array([0.5])])
def test_draw_detections_scores_optional(scores):
    rgb = np.zeros((20, 20, 3), np.uint8)
    assert draw_detections(rgb, [[1, 1, 19, 19]], [0], scores, ["x"]).size == (20, 20)


def test_a_frozen_phase_of_zero_epochs_is_a_row_and_the_recipe_says_why(tmp_path: Path):
    r = fabricate(tmp_path)
    write_history(r / "train/frozen.tsv", [])
    why = "model.pretrained is none, a frozen random backbone learns nothing; set train.freeze_epochs to force it"
    TrainRecipe(choices=[Choice(key="train.freeze_epochs", setting="auto", value=0, reason=why)]).write(
        r / "train/recipe.json")
    run_overfit_stage(tmp_path)  # its inputs changed, so the pipeline reruns it
    md = build_index(inputs(r), r / "index.md")
    assert "| [frozen](train/frozen.tsv) | 0 | – |" in md and "_Missing" not in md
    assert f"- train.freeze_epochs: 0 (auto) — {why}" in md
    # The overfit stage lists the choices training made (its recipe.json), with their reasons.
    assert f"## Recipe\n\n- train.freeze_epochs: 0 (auto) — {why}" in (r / "overfitting.md").read_text(encoding="utf-8")
