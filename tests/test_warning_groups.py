"""Warnings grouped by kind with counts and first files, the important ones first, and class-name
typos with a nearest-name suggestion (check-data and the annotate stage)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from detpipe.data.dataset_check import check_dataset
from detpipe.params import DataParams
from detpipe.artifacts.annotate_report import AnnotateReport
from detpipe.data.warning_groups import INFORMATIONAL, format_warnings, nearest_name, ordered_groups
from tests.vocgen import CLASSES, make_voc

REPO = Path(__file__).resolve().parents[1]


def test_nearest_name():
    assert nearest_name("cirlce", CLASSES) == "circle"
    assert nearest_name("Circle ", CLASSES) == "circle"          # case and spaces first
    assert nearest_name("squares", CLASSES) == "square"
    assert nearest_name("dog", CLASSES) is None
    assert nearest_name("circle", CLASSES) is None               # itself is not a suggestion


def grey_dataset(root: Path, typo_in: str) -> Path:
    """26 grayscale images (harmless conversions) plus one box partly outside its image; the
    class name 'circle' misspelt in the labels or in data.classes."""
    label = "cirlce" if typo_in == "labels" else "circle"
    items = {f"g{i:02d}": {"mode": "L", "objects": [(CLASSES[1 + i % 3], (4, 4, 30, 30))]} for i in range(26)}
    items["c"] = {"objects": [(label, (5, 5, 30, 30))]}
    items["edge"] = {"objects": [("square", (-5, 4, 30, 30))]}
    return make_voc(root, items)


def test_check_data_puts_errors_and_the_never_seen_class_first(tmp_path):
    root = grey_dataset(tmp_path / "v", typo_in="params")
    classes = ["cirlce", "square", "triangle", "star"]
    proc = subprocess.run([sys.executable, "-m", "detpipe", "check-data", "--root", str(root), "--classes",
                           ",".join(classes), "--report", str(tmp_path / "r.json")], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert "'circle': 1 object(s)" in proc.stderr and "did you mean 'cirlce'?" in proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("28 warning(s) of 3 kind(s)")
    assert out[1].startswith("warning [class_without_objects]: class 'cirlce' has no kept objects")
    assert "The labels use 'circle' (1 object(s), not kept): did you mean 'circle'?" in out[1]
    assert out[2].startswith("warning [clipped]: ")
    assert out[3].startswith("warning [converted_mode] x26: ") and "mode L converted to RGB" in out[3]
    assert out[4].startswith("    also ") and out[4].endswith("… and 22 more")
    assert len(out) == 6 and out[5].startswith("check-data: images in 28")


def test_typo_in_the_labels_gets_a_suggestion(tmp_path):
    res = check_dataset(DataParams(root=str(grey_dataset(tmp_path / "v", typo_in="labels")), classes=CLASSES),
                        base=tmp_path, workers=1)
    [err] = res.errors
    assert "'cirlce': 1 object(s) in 1 file(s): v/Annotations/c.xml" in err.message
    assert "did you mean 'circle'?" in err.message


def test_ignored_name_is_suggested_for_an_empty_class(tmp_path):
    root = grey_dataset(tmp_path / "v", typo_in="params")
    res = check_dataset(DataParams(root=str(root), classes=("cirlce", "square", "triangle", "star"),
                                   ignore_classes=("circle",)), base=tmp_path, workers=1)
    assert not res.errors
    [never] = [w for w in res.report.to_json()["warnings"] if w["kind"] == "class_without_objects"]
    assert "did you mean 'circle'?" in never["message"]


def test_informational_kinds_are_kinds_the_checks_emit():
    code = "".join((REPO / "detpipe" / "data" / f).read_text() for f in ("checks.py", "dataset_check.py", "yolo.py"))
    assert all(f'"{kind}"' in code for kind in INFORMATIONAL)


def test_order_is_derived_from_the_skip_counts():
    warnings = ([{"kind": "converted_mode", "file": f"f{i}", "message": f"f{i}: mode L"} for i in range(5)]
                + [{"kind": "new_kind_that_drops", "file": "x", "message": "x: dropped"}]
                + [{"kind": "class_without_objects", "file": "(dataset)", "message": f"class {c!r}"} for c in "ab"])
    report = _report(warnings, objects_skipped={"new_kind_that_drops": 1})
    kinds = [k for k, _ in ordered_groups(report.warnings, {"new_kind_that_drops"})]
    assert kinds == ["class_without_objects", "new_kind_that_drops", "converted_mode"]
    lines = format_warnings(report, show=2)
    assert lines[1:3] == ["warning [class_without_objects] x2: class 'a'", "warning [class_without_objects] x2: class 'b'"]
    assert lines[-1] == "    also f1, f2 … and 2 more"
    assert format_warnings(_report([])) == []


def _report(warnings: list[dict], objects_skipped: dict | None = None) -> AnnotateReport:
    counts = {"in": 1, "kept": 1, "skipped": {}}
    return AnnotateReport.model_validate({
        "source": {"type": "voc"}, "classes": [], "images": {**counts, "without_objects": 0},
        "objects": {**counts, "skipped": objects_skipped or {}}, "per_class": {}, "images_without_objects": [],
        "image_modes": {}, "warning_counts": {}, "warnings": warnings, "errors": []})


def test_annotate_stage_prints_the_groups(tmp_path):
    root = grey_dataset(tmp_path / "data" / "v", typo_in="none")
    params = (REPO / "params.yaml").read_text(encoding="utf-8").replace("data/VOCdevkit/VOC2007", "data/v")
    (tmp_path / "params.yaml").write_text(params, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "annotate.py"), "--params", "params.yaml", "--out",
                           "a.txt", "--images", "a.sha256", "--report", "r.json"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert root.is_dir() and out[0] == "annotate: 27 warning(s) of 2 kind(s), most important first (all in the JSON report):"
    assert out[1].startswith("annotate: warning [clipped]") and out[2].startswith("annotate: warning [converted_mode] x26")
    assert out[-1].startswith("annotate: images in 28, kept 28")
