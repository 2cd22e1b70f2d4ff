"""The realdata generators (scripts/realworlds) and the bench runner's params (bench/realdata.py),
without training: same bytes for any worker count, boxes inside the image and on the object
(checked against the same picture rendered without the labelled objects), detpipe accepts the
files, and each configuration's params.yaml is written, validated or skipped as it says."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from detpipe.cli import check_data
from detpipe.params import ParamsError, load_params
from scripts.realworlds import WORLDS, aerial, common, photo
from scripts.realworlds.common import generate

REPO = Path(__file__).resolve().parents[1]
DIFF = 8            # grey levels: a pixel the object changed
MIN_ON_OBJECT = 0.3  # share of a box's pixels the object changed (measured: at least 0.33 over 2,400 boxes)


def _bench():
    spec = importlib.util.spec_from_file_location("realdata_bench", REPO / "bench" / "realdata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(root: Path) -> dict[str, bytes]:
    voc = root / "VOCdevkit" / "VOC2007"
    return {p.relative_to(voc).as_posix(): p.read_bytes() for p in sorted(voc.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_same_bytes_for_any_worker_count_and_earlier_images_stable(world, tmp_path):
    a = generate(WORLDS[world], tmp_path / "a", 3, seed=7, workers=1)
    b = generate(WORLDS[world], tmp_path / "b", 3, seed=7, workers=2)
    generate(WORLDS[world], tmp_path / "c", 2, seed=7)
    assert a == b
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(fa) == 6 and fa == fb
    assert fc == {k: v for k, v in fa.items() if not k.endswith(("000003.jpg", "000003.xml"))}
    boxes = a["boxes"]
    if a["objects"]:
        assert boxes["median_side_px"] > 0 and 0 <= boxes["share_side_under_16px"] <= 1
        assert sum(boxes["coco_small_medium_large"]) == pytest.approx(1, abs=2e-3)


def _without_objects(real):
    """composite() that returns the same objects but paints only the unlabelled layers."""
    def bare(canvas, layers, min_visible, occluder=None):
        objects = real(canvas.copy(), layers, min_visible, occluder)
        real(canvas, [ly for ly in layers if ly.name is None], min_visible, occluder)
        return objects
    return bare


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_every_box_lies_inside_its_image_and_on_its_object(world, monkeypatch):
    """The renderers draw noise from the same stream with or without the objects, so the difference
    of the two pictures is the objects (and their shadows and blur) alone."""
    checked = 0
    for i in range(4):
        img, objects, quality = WORLDS[world].render(np.random.default_rng([11, i]))
        with monkeypatch.context() as m:
            for module in (aerial, photo):
                m.setattr(module, "composite", _without_objects(common.composite))
            bare, same, _ = WORLDS[world].render(np.random.default_rng([11, i]))
        assert same == objects and 30 <= quality <= 95
        diff = np.abs(np.asarray(img, np.int16) - np.asarray(bare, np.int16))
        diff = diff.max(axis=2) if diff.ndim == 3 else diff
        width, height = img.size
        for o in objects:
            x1, y1, x2, y2 = o["box"]
            assert 1 <= x1 <= x2 <= width and 1 <= y1 <= y2 <= height, (world, i, o)
            inside = diff[y1 - 1:y2, x1 - 1:x2] > DIFF
            assert inside.mean() >= MIN_ON_OBJECT, (world, i, o, inside.mean())
            # tight: the object reaches every side of its box (within a pixel: blur fades thin wing tips)
            assert inside[:2].any() and inside[-2:].any() and inside[:, :2].any() and inside[:, -2:].any(), \
                (world, i, o)
            assert o["name"] in WORLDS[world].classes
            checked += 1
    assert checked > 0


def test_detpipe_check_data_accepts_a_generated_set(tmp_path, capsys):
    """A tiny aerial and photo set pass `detpipe check-data` with every object kept."""
    for world in ("aerial", "photo"):
        counts = generate(WORLDS[world], tmp_path / world, 2, seed=0)
        report = tmp_path / f"{world}.json"
        status = check_data.main(["--root", str(tmp_path / world / "VOCdevkit" / "VOC2007"),
                                  "--classes", ",".join(WORLDS[world].classes), "--report", str(report)])
        assert status == 0, capsys.readouterr()
        got = json.loads(report.read_text(encoding="utf-8"))
        assert got["objects"] == {"in": counts["objects"], "kept": counts["objects"], "skipped": {}}, world
        assert not got["errors"] and set(got["warning_counts"]) <= {"converted_mode"}, (world, got["warning_counts"])


def test_box_sizes_differ_from_the_demo_as_intended(tmp_path):
    aerial_counts = generate(WORLDS["aerial"], tmp_path / "a", 3, seed=0, workers=2)
    photo_counts = generate(WORLDS["photo"], tmp_path / "p", 6, seed=0, workers=2)
    assert aerial_counts["boxes"]["share_side_under_16px"] > 0.8
    assert photo_counts["boxes"]["median_side_px"] > 30
    with Image.open(tmp_path / "a" / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000001.jpg") as img:
        assert min(img.size) >= 448


# ----------------------------------------------------------------------------- the runner's params
@pytest.fixture
def bench(tmp_path, monkeypatch):
    module = _bench()
    data = tmp_path / "data_realdata"
    for name in module.DATASETS:
        (data / name / "VOCdevkit" / "VOC2007").mkdir(parents=True)
    monkeypatch.setattr(module, "DATA", data)
    monkeypatch.setattr(module, "ensure_data", lambda dataset: {})
    return module


def test_settings_pin_the_old_defaults_and_the_epoch_budget(bench, tmp_path):
    s = bench.settings("aerial", "old", None, tmp_path)
    assert s["model.imgsz"] == 320 and s["train.freeze_epochs"] == 3 and s["train.unfreeze_epochs"] == 80
    assert s["data.classes"] == ["car", "truck", "boat", "plane"]
    assert bench.settings("photo", "old", 25, tmp_path)["train.unfreeze_epochs"] == 25
    pre = bench.settings("photo", "pretrained", 25, tmp_path)["model.pretrained"]
    assert pre == str(tmp_path / "solids-pretrain" / "models" / "best.pt")
    assert bench.apply({"model": {"imgsz": 320}}, {"model.p2": True, "train.time": 1}) == \
        {"model": {"imgsz": 320, "p2": True}, "train": {"time": 1}}


def test_old_writes_a_params_file_detpipe_accepts(bench, tmp_path, monkeypatch):
    work, dotted, _ = bench.prepare("aerial", "old", 7, tmp_path / "runs")
    assert work == tmp_path / "runs" / "aerial-old"
    written = yaml.safe_load((work / "params.yaml").read_text(encoding="utf-8"))
    base = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert written["train"]["unfreeze_epochs"] == 7 and written["model"]["imgsz"] == 320
    assert written["data"]["root"] == "data_realdata/aerial/VOCdevkit/VOC2007"
    assert written["predict"] == base["predict"] and written["lr"] == base["lr"]
    assert (work / "data_realdata").resolve() == bench.DATA.resolve()
    monkeypatch.chdir(work)
    assert load_params("params.yaml").train.unfreeze_epochs == 7


@pytest.mark.parametrize("config", ["imgsz-auto", "p2", "p2-auto"])
def test_a_feature_detpipe_lacks_is_skipped_with_its_key(bench, tmp_path, config, capsys):
    """Before the feature lands: one line naming the key; after: a params file that has it."""
    changed = [k for k, v in bench.CONFIGS[config][1].items() if bench.OLD.get(k) != v]
    try:
        work, _, _ = bench.prepare("aerial", config, 5, tmp_path)
    except bench.Skip as exc:
        assert all(k in str(exc) for k in changed), str(exc)
        assert bench.run("aerial", config, 5, tmp_path, record=False) is None
        assert capsys.readouterr().out.startswith(f"skip aerial/{config}: this detpipe does not take ")
        return
    written = yaml.safe_load((work / "params.yaml").read_text(encoding="utf-8"))
    for key in changed:
        section, name = key.split(".")
        assert written[section][name] == bench.CONFIGS[config][1][key]


def test_unknown_setting_skips_but_another_bad_value_is_an_error(bench, tmp_path, monkeypatch):
    monkeypatch.setitem(bench.CONFIGS, "future", ("a knob no detpipe has", {"model.no_such_knob": 1}))
    with pytest.raises(bench.Skip, match="model.no_such_knob"):
        bench.prepare("photo", "future", None, tmp_path)
    with pytest.raises(ParamsError, match="lr"):
        bench.check({"lr": -1, "data": {"classes": ["a"]}}, {"train.unfreeze_epochs": 5}, "test")
    assert not (tmp_path / "photo-future").exists(), "a skip leaves the run folders alone"


def test_pretrained_needs_the_source_run_and_pretrain_runs_on_solids(bench, tmp_path):
    with pytest.raises(bench.Skip, match="run pretrain first|solids pretrain"):
        bench.prepare("photo", "pretrained", None, tmp_path)
    with pytest.raises(bench.Skip, match="pretrain runs on solids"):
        bench.prepare("photo", "pretrain", None, tmp_path)


def _fake_run(work: Path) -> None:
    """The files a finished run leaves that the runner reads (the stages' contracts' columns)."""
    (work / "reports" / "map").mkdir(parents=True)
    (work / "reports" / "train").mkdir(parents=True)
    coco = {"AP": 0.3, "APs": 0.1, "APm": 0.4, "APl": -1.0}
    (work / "reports" / "map" / "metrics.json").write_text(json.dumps({"map50": 0.61, "map50_95": 0.3,
                                                                         "coco": coco}))
    header = "epoch\tphase\ttrain_loss\tval_map50\tseconds\n"
    (work / "reports" / "train" / "frozen.tsv").write_text(header + "1\tfrozen\t9\t0.0\t3\n")
    (work / "reports" / "train" / "unfrozen.tsv").write_text(header + "2\tunfrozen\t5\t0.4\t3\n3\tunfrozen\t4\t0.55\t3\n")


def test_collect_and_tables(bench, tmp_path):
    _fake_run(tmp_path)
    seconds = {"annotate": 2.0, "train_frozen": 30.0, "train_unfrozen": 90.0, "map": 10.0}
    got = bench.collect(tmp_path, seconds)
    assert got["test_map50"] == 0.61 and got["best_val_map50"] == 0.55 and len(got["epochs"]) == 3
    assert got["ap_by_size"] == {"small": 0.1, "medium": 0.4, "large": -1.0}
    assert got["train_seconds"] == 120.0 and got["pipeline_seconds"] == 132.0
    result = {"dataset": "photo", "config": "old", "command": bench.command("photo", "old", 30), **got}
    text = bench.tables({"photo/old": result, "aerial/old": {**result, "dataset": "aerial"}})
    assert text.index("aerial:") < text.index("photo:")
    row = [line for line in text.splitlines() if line.startswith("| old")][1]
    assert row == ("| old | 0.610 | 0.300 | 0.100 / 0.400 / - | 0.550 | 3 | 2.0 | 2.2 | "
                   "`python bench/realdata.py run photo old --epochs 30` |")


def test_data_is_generated_once_per_generator_and_arguments(tmp_path, monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench, "DATA", tmp_path)
    monkeypatch.setitem(bench.DATASETS, "photo", ("photo", 2, 3))
    counts = bench.ensure_data("photo")
    assert counts["images"] == 2 and counts["seed"] == 3 and "median_side_px" in counts["boxes"]
    assert len(list((tmp_path / "photo" / "VOCdevkit" / "VOC2007" / "JPEGImages").glob("*.jpg"))) == 2

    def no_run(*args, **kwargs):
        raise AssertionError("regenerated an unchanged dataset")
    monkeypatch.setattr(bench.subprocess, "run", no_run)
    assert bench.ensure_data("photo") == counts
    monkeypatch.setattr(bench, "generator_hash", lambda: "another generator")
    with pytest.raises(AssertionError, match="regenerated"):
        bench.ensure_data("photo")


def test_the_package_and_stages_never_import_the_generators():
    """scripts/ is for developers: detpipe and its stages must run without it (it is not installed)."""
    files = [*(REPO / "detpipe").rglob("*.py"), *(REPO / "stages").glob("*.py")]
    offenders = [f"{path.relative_to(REPO)}:{n}" for path in files
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if re.match(r"\s*(from|import)\s+scripts\b", line)]
    assert not offenders


def test_curve_puts_recorded_runs_side_by_side(bench):
    run = lambda n, f: {"epochs": [{"epoch": e, "phase": "unfrozen", "val_map50": f(e)} for e in range(1, n + 1)]}  # noqa: E731
    results = {"photo/old": run(12, lambda e: e / 100), "photo/pretrained": run(7, lambda e: 0.5 + e / 100)}
    table = bench.curves(results, "photo", ["old", "pretrained", "p2"], every=5).splitlines()
    rows = {int(line.split("|")[1]): [c.strip() for c in line.split("|")[2:-1]] for line in table if re.match(r"\| \d", line)}
    assert sorted(rows) == [1, 2, 3, 4, 5, 7, 10, 12]      # 1-5, every 5th, and each run's last epoch
    assert rows[3] == ["0.030", "0.530"] and rows[10] == ["0.100", ""] and rows[7] == ["0.070", "0.570"]
    assert table[-1] == "(not recorded: p2)"
