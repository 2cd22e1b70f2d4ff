"""`python -m detpipe evaluate` and the map stage: files written, numbers, error messages."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detpipe.cli.evaluate import main
from detpipe.metrics import voc_map

ROOT = Path(__file__).resolve().parent.parent


def write_txt_case(tmp: Path) -> tuple[Path, Path]:
    gt, det = tmp / "gt", tmp / "det"
    gt.mkdir()
    det.mkdir()
    (gt / "a.txt").write_text("cat 0 0 10 10\ndog 20 20 40 40\ndog 50 50 60 60 difficult\n")
    (det / "a.txt").write_text("cat 0.9 0 0 10 10\ndog 0.8 20 20 40 40\ndog 0.7 50 50 60 60\ncat 0.3 0 0 10 10\n")
    (gt / "b.txt").write_text("cat 5 5 25 25\n")
    (det / "b.txt").write_text("")
    return gt, det


def test_txt_dirs_reports_and_table(tmp_path, capsys):
    gt, det = write_txt_case(tmp_path)
    out = tmp_path / "out"
    assert main(["--gt", str(gt), "--det", str(det), "--out", str(out), "--confidence", "0.5", "--plots"]) == 0
    printed = capsys.readouterr().out
    assert "cat" in printed and "mean" in printed and "AP50" in printed
    m = json.loads((out / "metrics.json").read_text())
    # cat: 2 objects, one found first (0.9), a duplicate FP later -> AP 0.5; dog: 1.0
    assert m["voc"]["per_class"] == {"cat": 0.5, "dog": 1.0}
    assert m["map50"] == 0.75 and m["min_overlap"] == 0.5
    assert m["at_confidence"]["precision"] == 1.0 and m["at_confidence"]["recall"] == pytest.approx(2 / 3, abs=1e-6)
    for name in ("pr/cat.csv", "pr/dog.csv", "pr/pr_curves.png", "prf_confidence.png", "prf_confidence.csv",
                 "confusion_matrix.png", "confusion_matrix.csv", "info.json"):
        assert (out / name).stat().st_size > 0, name
    header = (out / "pr" / "cat.csv").read_text().splitlines()[0]
    assert header == "recall,precision,confidence"
    info = json.loads((out / "info.json").read_text())
    assert info["counts"]["images"] == 2 and info["seconds"] >= 0 and "map50" in info["conventions"]
    assert "seconds" not in m
    assert main(["--gt", str(gt), "--det", str(det), "--out", str(tmp_path / "np")]) == 0
    assert not list((tmp_path / "np").rglob("*.png")), "figures are drawn on demand only (--plots)"
    assert (tmp_path / "np" / "pr" / "cat.csv").read_bytes() == (out / "pr" / "cat.csv").read_bytes()


def test_voc07_and_min_overlap_flags(tmp_path):
    gt, det = write_txt_case(tmp_path)
    out = tmp_path / "o"
    assert main(["--gt", str(gt), "--det", str(det), "--out", str(out), "--voc07", "--min-overlap", "0.3"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["voc07"] is True and m["min_overlap"] == 0.3


@pytest.mark.parametrize("gt_text, det_text, message", [
    ("cat 0 0 10\n", "", "gt/a.txt:1: expected 'class x1 y1 x2 y2 [difficult]'"),
    ("cat 0 0 10 10\n", "cat 0.5 0 0 10\n", "det/a.txt:1: expected 'class score x1 y1 x2 y2'"),
    ("cat 0 0 10 10\n", "\ncat high 0 0 10 10\n", "det/a.txt:2: score 'high' is not a number"),
    ("cat 0 0 10 x\n", "", "gt/a.txt:1: coordinate 'x' is not a number"),
    ("cat 10 0 0 10\n", "", "gt/a.txt:1: box"),
])
def test_malformed_lines_name_file_and_line(tmp_path, capsys, gt_text, det_text, message):
    (tmp_path / "gt").mkdir()
    (tmp_path / "det").mkdir()
    (tmp_path / "gt" / "a.txt").write_text(gt_text)
    (tmp_path / "det" / "a.txt").write_text(det_text)
    assert main(["--gt", str(tmp_path / "gt"), "--det", str(tmp_path / "det"), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err.replace("\\", "/")


def test_missing_pair_is_an_error(tmp_path, capsys):
    gt, det = write_txt_case(tmp_path)
    (det / "b.txt").unlink()
    assert main(["--gt", str(gt), "--det", str(det), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "b.txt: missing" in err
    (det / "b.txt").write_text("")
    (det / "c.txt").write_text("")
    assert main(["--gt", str(gt), "--det", str(det), "--out", str(tmp_path / "o")]) == 2
    assert "gt/c.txt: missing" in capsys.readouterr().err.replace("\\", "/")


def test_bad_flag_combination(tmp_path):
    with pytest.raises(SystemExit):
        main(["--gt", "x", "--coco-det", "y", "--out", str(tmp_path)])


def test_coco_json_input_matches_list_api(tmp_path, capsys):
    from detpipe.metrics import coco_eval
    from detpipe.metrics.io import to_coco_json
    rng = np.random.default_rng(3)
    gts, dets = [], []
    for _ in range(6):
        g = np.round(np.c_[rng.uniform(0, 100, (4, 2)), rng.uniform(100, 200, (4, 2))])
        gts.append({"boxes": g, "labels": rng.integers(0, 2, 4), "difficult": np.zeros(4, bool)})
        dets.append({"boxes": g + rng.normal(0, 5, g.shape), "labels": gts[-1]["labels"], "scores": rng.random(4)})
    gt_json, res = to_coco_json(gts, dets, ["a", "b"])
    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    (tmp_path / "det.json").write_text(json.dumps(res))
    out = tmp_path / "out"
    assert main(["--coco-gt", str(tmp_path / "gt.json"), "--coco-det", str(tmp_path / "det.json"), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["map50_95"] == pytest.approx(coco_eval(gts, dets, 2).stats[0], abs=1e-6)
    assert m["map50"] == pytest.approx(voc_map(gts, dets, 2).map, abs=1e-6)
    (tmp_path / "bad.json").write_text('[{"image_id": 99, "category_id": 1, "bbox": [0,0,1,1], "score": 1}]')
    assert main(["--coco-gt", str(tmp_path / "gt.json"), "--coco-det", str(tmp_path / "bad.json"), "--out", str(out)]) == 2
    assert "bad.json: entry [0]: image_id 99" in capsys.readouterr().err


def test_map_stage(tmp_path):
    split = tmp_path / "test.txt"
    split.write_text("data/img one.jpg 0,0,10,10,0 20,20,40,40,1\n"
                     "data/img2.jpg 5,5,25,25,0 50,50,60,60,1,1\n"
                     "data/empty.jpg\n")
    csv_path = tmp_path / "test.csv"
    csv_path.write_text("image,class,score,x1,y1,x2,y2\n"
                        "data/img one.jpg,circle,0.9,0,0,10,10\n"
                        "data/img one.jpg,square,0.6,20,20,40,40\n"
                        "data/img2.jpg,square,0.9,50,50,60,60\n")
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  classes: [circle, square]\nmap:\n  min_overlap: 0.5\n  voc07: false\n"
                      "predict:\n  confidence: 0.5\n")
    out = tmp_path / "map"
    cmd = [sys.executable, str(ROOT / "stages" / "map.py"), "--params", str(params), "--split", str(split),
           "--detections", str(csv_path), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["voc"]["per_class"] == {"circle": 0.5, "square": 1.0}  # circle in img2 missed
    assert (out / "pr" / "circle.csv").exists() and (out / "confusion_matrix.png").exists()
    csv_path.write_text("image,class,score,x1,y1,x2,y2\ndata/other.jpg,circle,0.9,0,0,10,10\n")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "test.csv:2: image 'data/other.jpg' is not in the split" in done.stderr
    csv_path.write_text("image,class,score,x1,y1,x2,y2\ndata/img2.jpg,hexagon,0.9,0,0,10,10\n")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "unknown class 'hexagon'" in done.stderr


def test_thresholded_detections_warn_with_the_lowest_score_and_the_fix(tmp_path, capsys):
    gt, det = write_txt_case(tmp_path)
    (det / "a.txt").write_text("cat 0.9 0 0 10 10\ndog 0.8 20 20 40 40\ndog 0.7 50 50 60 60\n")
    assert main(["--gt", str(gt), "--det", str(det), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "warning: detections look thresholded: the lowest of 3 scores is 0.7" in err
    assert "predict --save-txt --conf 0.001" in err
    info = json.loads((tmp_path / "o" / "info.json").read_text())
    assert any("thresholded" in w for w in info["warnings"])
    (det / "a.txt").write_text("cat 0.9 0 0 10 10\ndog 0.002 20 20 40 40\n")
    assert main(["--gt", str(gt), "--det", str(det), "--out", str(tmp_path / "o")]) == 0
    assert "thresholded" not in capsys.readouterr().err


def test_map_confidence_constant_follows_params():
    from detpipe.metrics.validate import MAP_CONFIDENCE
    from detpipe.params import MapParams
    assert MAP_CONFIDENCE == MapParams().confidence


def test_case_mismatch_is_warned_not_silently_dropped(tmp_path, capsys):
    """Issue #16: `Cat` detections against `cat` ground truth gave mAP 0.5 without a word."""
    gt, det = tmp_path / "gt", tmp_path / "det"
    gt.mkdir(), det.mkdir()
    (gt / "a.txt").write_text("\ufeffcat 0 0 10 10\ndog 20 20 40 40\n", encoding="utf-8")  # BOM too
    (det / "a.txt").write_text("Cat 0.9 0 0 10 10\ndog 0.8 20 20 40 40\ndog 0.001 0 0 5 5\n")
    assert main(["--gt", str(gt), "--det", str(det), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr()
    assert "did you mean 'cat'?" in out.err and "'\\ufeffcat'" not in out.out + out.err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["voc"]["per_class"] == {"cat": 0.0, "dog": 1.0}


def _coco_files(tmp_path, gt_anns, results, bom=False):
    gt = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1, "name": "cat"}],
          "annotations": gt_anns}
    enc = "utf-8-sig" if bom else "utf-8"
    (tmp_path / "gt.json").write_text(json.dumps(gt), encoding=enc)
    (tmp_path / "det.json").write_text(json.dumps(results), encoding=enc)
    return ["--coco-gt", str(tmp_path / "gt.json"), "--coco-det", str(tmp_path / "det.json"),
            "--out", str(tmp_path / "o")]


GOOD_GT = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}]


@pytest.mark.parametrize("gt_anns, results, message", [
    (GOOD_GT, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": float("nan")}],
     "det.json: entry [0]: score nan is not finite"),
    (GOOD_GT, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5},
               {"image_id": 1, "category_id": 1, "bbox": [0, 0, -3, 10], "score": 0.5}],
     "det.json: entry [1]: box [0, 0, -3, 10] has a negative width or height"),
    (GOOD_GT, [{"image_id": 1, "category_id": 1, "bbox": [0, float("inf"), 1, 1], "score": 0.5}],
     "det.json: entry [0]: y inf is not finite"),
    (GOOD_GT, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], "det.json: entry [0]: needs a numeric score"),
    (GOOD_GT, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}], "det.json: entry [0]: bbox must be"),
    ([{**GOOD_GT[0], "bbox": [0, 0, float("nan"), 10]}], [], "gt.json: annotations[0]: w nan is not finite"),
    ([{**GOOD_GT[0], "bbox": [0, 0, 10, -1]}], [], "gt.json: annotations[0]: box [0, 0, 10, -1] has a negative"),
])
def test_coco_inputs_get_the_txt_checks(tmp_path, capsys, gt_anns, results, message):
    assert main(_coco_files(tmp_path, gt_anns, results)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_coco_unknown_category_is_counted_and_bom_accepted(tmp_path, capsys):
    results = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
               {"image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10], "score": 0.8},
               {"image_id": 2, "category_id": 7, "bbox": [5, 0, 10, 10], "score": 0.001}]
    assert main(_coco_files(tmp_path, GOOD_GT, results, bom=True)) == 0
    err = capsys.readouterr().err
    assert "det.json: 2 result(s) with category_id 7, which is not among the ground truth's categories (1)" in err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["map50"] == 1.0


def _run_and_list_modules(args: list[str], cwd: Path) -> tuple[int, set[str]]:
    """Run `python -m detpipe ARGS` in a fresh interpreter; the top-level modules it imported."""
    code = ("import runpy, sys, json\n"
            f"sys.argv = ['detpipe'] + {args!r}\n"
            "try:\n    runpy.run_module('detpipe', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n    code = e.code or 0\nelse:\n    code = 0\n"
            "print('\\nMODULES', json.dumps([code, sorted({m.split('.')[0] for m in sys.modules})]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    line = [x for x in done.stdout.splitlines() if x.startswith("MODULES ")]
    assert line, done.stderr
    rc, modules = json.loads(line[-1][len("MODULES "):])
    return rc, set(modules)


def heavy_modules() -> set[str]:
    """Top-level modules of every requirement (requirements.txt) except numpy: derived, so a new
    dependency is covered the day it is added."""
    from importlib.metadata import packages_distributions
    norm = lambda s: s.lower().replace("_", "-")  # noqa: E731
    reqs = {norm(re.split(r"[<>=\[; ]", line.strip())[0]) for line in
            (ROOT / "requirements.txt").read_text().splitlines() if line.strip() and not line.startswith("#")}
    mods = {m for m, dists in packages_distributions().items() if any(norm(d) in reqs for d in dists)}
    assert {"torch", "matplotlib", "pandas", "cv2"} <= mods  # the derivation found the usual suspects
    return mods - {"numpy"}


def test_evaluate_imports_no_torch_and_stays_lazy(tmp_path):
    """The evaluate path imports numpy and the standard library only; --plots adds matplotlib
    (and what matplotlib itself imports), never torch."""
    gt, det = write_txt_case(tmp_path)
    rc, modules = _run_and_list_modules(["evaluate", "--gt", str(gt), "--det", str(det), "--out", "o"], tmp_path)
    assert rc == 0 and "detpipe" in modules
    assert not modules & heavy_modules(), sorted(modules & heavy_modules())
    rc, modules = _run_and_list_modules(["evaluate", "--gt", str(gt), "--det", str(det), "--out", "p",
                                         "--plots"], tmp_path)
    assert rc == 0 and "matplotlib" in modules and not {"torch", "torchvision", "cv2", "pandas"} & modules
    assert (tmp_path / "p" / "pr" / "pr_curves.png").is_file()
