"""`python -m detpipe evaluate` and the map stage: files written, numbers, error messages."""
from __future__ import annotations

import json
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
    cmd = [sys.executable, str(ROOT / "stages" / "evaluate.py"), "--params", str(params), "--split", str(split),
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
