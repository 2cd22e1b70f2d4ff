"""The README recipe `detpipe predict SPLIT --save-txt` then `detpipe evaluate` reproduces the
pipeline's map stage (predict stage -> map stage) on the same images, with a small trained model."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from detpipe.model import checkpoint as ckpt
from detpipe.train import phase as training
from detpipe.data.annotations import write_lines
from detpipe.cli import evaluate as evaluate_cli
from detpipe.cli import predict as predict_cli
from detpipe.params import Params, from_dict
from tests.conftest import REPO, tiny_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# 40 epochs on all 24 tiny images (~16 s on one thread): mAP50 ~0.35 on them, with scores on both
# sides of the default --conf, so a thresholded txt would score lower.
RECIPE = dict(freeze_epochs=0, unfreeze_epochs=40, mosaic=0, grayscale=0)


@pytest.fixture(scope="module")
def trained(tiny_records, tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("trained")
    raw = tiny_params("unused", **RECIPE)
    raw["lr"] = 0.03
    state = training.train_phase(from_dict(Params, raw), "unfrozen", tiny_records, tiny_records[16:], [],
                                 tmp / "ckpt", tmp / "h.tsv")
    ckpt.save_atomic(training.export_weights(state, "best"), tmp / "best.pt")
    return tmp / "best.pt", raw


def pipeline_map(weights: Path, raw: dict, split: Path, tmp: Path, monkeypatch) -> dict:
    """The predict stage then the map stage, as dvc.yaml runs them."""
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(sys, "argv", ["predict.py", "--params", str(tmp / "params.yaml"), "--weights", str(weights),
                                      "--split", str(split), "--out", str(tmp / "det.csv"), "--samples-dir",
                                      str(tmp / "samples"), "--summary", str(tmp / "predict.json")])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "stages" / "predict.py"), run_name="__main__")
    assert done.value.code == 0
    stage = runpy.run_path(str(REPO / "stages" / "map.py"))
    assert stage["main"](["--params", str(tmp / "params.yaml"), "--split", str(split), "--detections",
                          str(tmp / "det.csv"), "--out", str(tmp / "map")]) == 0
    return json.loads((tmp / "map" / "metrics.json").read_text())


def recipe_map(weights: Path, split: Path, out: Path, *extra: str) -> dict:
    """The README's commands: predict the split file with --save-txt, evaluate labels/ against gt/."""
    assert predict_cli.main([str(split), "--weights", str(weights), "--save-txt", "--no-save", "--out", str(out),
                             *extra]) == 0
    assert evaluate_cli.main(["--gt", str(out / "gt"), "--det", str(out / "labels"), "--out", str(out / "map")]) == 0
    return json.loads((out / "map" / "metrics.json").read_text())


def test_readme_recipe_reproduces_the_map_stage(trained, tiny_records, tmp_path, monkeypatch, capsys):
    weights, raw = trained
    split = tmp_path / "test.txt"
    write_lines(split, tiny_records)
    pipeline = pipeline_map(weights, raw, split, tmp_path, monkeypatch)
    recipe = recipe_map(weights, split, tmp_path / "run")
    assert pipeline["map50"] > 0.2, "the model should have learnt something"
    assert recipe["map50"] == pytest.approx(pipeline["map50"], abs=0.005)
    assert recipe["map50_95"] == pytest.approx(pipeline["map50_95"], abs=0.005)
    assert len(list((tmp_path / "run" / "gt").glob("*.txt"))) == len(tiny_records)
    # what the README recipe gave before: labels only down to --conf (0.5) lose the PR curve's tail
    thresholded = recipe_map(weights, split, tmp_path / "run05", "--txt-conf", "0.5")
    assert thresholded["map50"] < pipeline["map50"] - 0.05
    capsys.readouterr()


def test_gt_lines_round_trip_the_split(tiny_records, tmp_path):
    """gt/*.txt holds each split line's boxes and difficult flags exactly, in the evaluate format."""
    from detpipe.cli.predict import truth_lines
    names = ["circle", "square", "triangle", "star"]
    for r in tiny_records:
        rows = [line.split() for line in truth_lines(r, names).splitlines()]
        assert [names.index(row[0]) for row in rows] == r.labels.tolist()
        assert [[float(v) for v in row[1:5]] for row in rows] == r.boxes.tolist()
        assert [len(row) == 6 and row[5] == "difficult" for row in rows] == r.difficult.tolist()
    assert any(r.difficult.any() for r in tiny_records)
