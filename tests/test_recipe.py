"""`auto` settings: resolved once from params and the train split, printed with their reason, stored
in the weights, and the same run as the number they resolve to."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from detpipe import recipe
from detpipe.artifacts.history import read_history
from detpipe.artifacts.train_recipe import TrainRecipe
from detpipe.data.annotations import Record, format_line
from detpipe.infer.predictor import Predictor
from detpipe.params import Params, from_dict
from detpipe.train import phase as training
from tests.conftest import REPO, tiny_params

ZERO_FROZEN = ("frozen phase: 0 epochs — model.pretrained is none, a frozen random backbone learns nothing; "
               "set train.freeze_epochs to force it")


def _params(tmp_path: Path, pretrained: str = "none", **train) -> Params:
    raw = tiny_params("unused", **train)
    if pretrained != "none":
        weights = tmp_path / "start.pt"
        weights.write_bytes(b"any bytes: only the path's existence and content hash are read here")
        pretrained = str(weights)
    raw["model"]["pretrained"] = pretrained
    return from_dict(Params, raw)


@pytest.mark.parametrize("pretrained, setting, epochs", [("none", "auto", 0), ("path", "auto", 3),
                                                         ("none", 2, 2), ("path", 0, 0), ("none", 0, 0)])
def test_freeze_epochs_auto_trains_frozen_only_from_pretrained_weights(tmp_path, pretrained, setting, epochs):
    params = _params(tmp_path, pretrained, freeze_epochs=setting)
    choice = recipe.freeze_epochs(params)
    assert (choice.key, choice.setting, choice.value) == ("train.freeze_epochs", setting, epochs)
    resolved = recipe.resolve(params, (choice,))
    assert resolved.train.freeze_epochs == epochs and training.phase_of(resolved, "unfrozen").first_epoch == epochs + 1
    assert recipe.resolve(resolved, (recipe.freeze_epochs(resolved),)) == resolved, "resolving twice changes nothing"
    if setting == "auto" and pretrained == "none":
        assert ZERO_FROZEN.endswith(choice.reason)


def test_code_default_is_auto():
    assert Params().train.freeze_epochs == "auto"
    assert recipe.PRETRAINED_FREEZE_EPOCHS == 3


@pytest.mark.parametrize("pretrained, number", [("none", 0), ("path", 3)])
def test_auto_is_the_same_run_as_its_number(tmp_path, pretrained, number):
    """The fingerprint (what resumes) and the params record hold the resolved number: switching
    params.yaml between `auto` and that number resumes the finished checkpoint."""
    auto, _ = training.resolve_recipe(_params(tmp_path, pretrained, freeze_epochs="auto"), [])
    fixed, _ = training.resolve_recipe(_params(tmp_path, pretrained, freeze_epochs=number), [])
    other, _ = training.resolve_recipe(_params(tmp_path, pretrained, freeze_epochs=number + 1), [])
    for name in ("frozen", "unfrozen"):
        fp = training.run_fingerprint(auto, training.phase_of(auto, name), [])
        assert fp == training.run_fingerprint(fixed, training.phase_of(fixed, name), [])
        assert fp != training.run_fingerprint(other, training.phase_of(other, name), [])
    assert training._recorded_params(auto) == training._recorded_params(fixed)


def _stage(tmp: Path, phase: str, params: Path, *extra: str) -> subprocess.CompletedProcess:
    out = {"frozen": ["--out", "frozen.pt"], "unfrozen": ["--out", "best.pt", "--last", "last.pt"]}[phase]
    cmd = [sys.executable, str(REPO / "stages" / "train.py"), "--phase", phase, "--params", str(params),
           "--train", "train.txt", "--val", "val.txt", "--metrics", f"{phase}.tsv", "--ckpt-dir", "ckpt", *out, *extra]
    proc = subprocess.run(cmd, cwd=tmp, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_zero_frozen_epochs_from_scratch_still_hands_over(tiny_records, tmp_path):
    """pretrained none + auto: train_frozen trains nothing but writes frozen.pt and a header-only TSV,
    says why in one line, and the unfrozen phase starts at epoch 1 from the handed-over weights."""
    (tmp_path / "train.txt").write_text("".join(format_line(r) + "\n" for r in tiny_records[:12]), encoding="utf-8")
    (tmp_path / "val.txt").write_text("".join(format_line(r) + "\n" for r in tiny_records[12:16]), encoding="utf-8")
    raw = tiny_params("unused", freeze_epochs="auto")
    raw["model"]["imgsz"] = "auto"  # the shapes are big: auto keeps 320
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    frozen = _stage(tmp_path, "frozen", params)
    assert ZERO_FROZEN in frozen.stdout.splitlines(), frozen.stdout
    assert len(read_history(tmp_path / "frozen.tsv")) == 0
    state = torch.load(tmp_path / "frozen.pt", weights_only=True)
    assert state["epoch"] == 0 and state["params"]["train"]["freeze_epochs"] == 0
    assert state["recipe"][0] == {"key": "train.freeze_epochs", "setting": "auto", "value": 0,
                                  "reason": ZERO_FROZEN.split(" — ", 1)[1]}
    unfrozen = _stage(tmp_path, "unfrozen", params, "--init", "frozen.pt", "--recipe", "recipe.json")
    assert "frozen phase: 0 epochs" not in unfrozen.stdout
    assert "recipe: model.imgsz: 320 (auto) — the median train object's shorter side is" in unfrozen.stdout
    assert read_history(tmp_path / "unfrozen.tsv")["epoch"].tolist() == [1]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["params"]["train"]["freeze_epochs"] == 0 and best["recipe"] == state["recipe"]
    # One size for training, the weights record, predict and export: the resolved one.
    assert best["imgsz"] == best["params"]["model"]["imgsz"] == state["imgsz"] == 320
    assert Predictor(tmp_path / "best.pt", "cpu").imgsz == 320
    assert [c.record() for c in TrainRecipe.read(tmp_path / "recipe.json").choices] == best["recipe"]


def _split(tmp_path: Path, image_wh: tuple[int, int], box_wh: tuple[float, float], n: int = 3) -> list[Record]:
    """n images of image_wh, each with two boxes of box_wh."""
    records = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", image_wh, (90, 90, 90)).save(path)
        w, h = box_wh
        boxes = np.array([[4, 4, 4 + w, 4 + h], [20, 20, 20 + w, 20 + h]], dtype=np.float64)
        records.append(Record(str(path), boxes, np.zeros(2, np.int64), np.zeros(2, bool)))
    return records


@pytest.mark.parametrize("image_wh, box_wh, size", [
    ((640, 480), (200, 150), 320),   # big objects: the floor (75 px shorter side at 320)
    ((400, 300), (30, 15), 448),     # 12 px at 320 -> 16.8 px at 448, the smallest multiple of 32 >= 16 px
    ((300, 400), (15, 30), 448),     # portrait: the image's longer side is what letterboxing scales
    ((1280, 960), (12, 10), 640),    # tiny: 2.5 px at 320 would need 2048; capped at 640
])
def test_imgsz_auto_reads_the_train_boxes(tmp_path, image_wh, box_wh, size):
    raw = tiny_params("unused")
    raw["model"]["imgsz"] = "auto"
    params = from_dict(Params, raw)
    records = _split(tmp_path, image_wh, box_wh)
    resolved, choices = training.resolve_recipe(params, records)
    choice = choices[1]
    assert (choice.key, choice.setting, choice.value) == ("model.imgsz", "auto", size)
    assert resolved.model.imgsz == size and training.resolve_recipe(resolved, records)[0] == resolved
    # An independent loop: the median shorter side after letterboxing (longer image side -> size).
    sides = [min(box_wh) * s / max(image_wh) for s in (size, recipe.IMGSZ_FLOOR)]
    assert f"{sides[1]:.1f} px at 320" in choice.reason
    assert sides[0] >= 16 or size == recipe.IMGSZ_CAP
    assert size == recipe.IMGSZ_FLOOR or size == recipe.IMGSZ_CAP or min(box_wh) * (size - 32) / max(image_wh) < 16
    assert ("compute cap" in choice.reason) == (size == recipe.IMGSZ_CAP)


def test_imgsz_as_set_reads_no_image(tmp_path):
    records = [Record(str(tmp_path / "absent.jpg"), np.array([[0, 0, 5, 5.0]]), np.zeros(1, np.int64),
                      np.zeros(1, bool))]
    resolved, choices = training.resolve_recipe(from_dict(Params, tiny_params("unused")), records)
    assert resolved.model.imgsz == 96 and choices[1].reason == "set in params.yaml"


def test_summary_of_auto_params_sizes_at_the_floor_and_says_so(tmp_path, capsys):
    from detpipe.__main__ import main
    raw = tiny_params("unused")
    raw["model"]["imgsz"] = "auto"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["summary", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert "model.imgsz is auto: sized at 320" in out and "GFLOPs at 320x320" in out
