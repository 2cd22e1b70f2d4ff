"""params.yaml: validated once at load, one-line errors in every entry point, code defaults = the file."""
from __future__ import annotations

import copy
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import torch
import torchvision
import yaml

from detpipe.train import accel
from detpipe.train import engine
from detpipe import catalog
from detpipe.model.detector import Backbone
from detpipe.params import (AmpDtype, DataParams, LrSchedule, Neck, Optimizer, Params, ParamsError, Scale, TrainParams,
                            from_dict, load_params, read_classes_file, to_dict)
from detpipe.catalog import pretrained_choices
from tests.conftest import REPO

RAW = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))

# (dotted key, bad value, the line load_params gives after "<file>: "); the first nine are the
# issue's examples, which passed check-data or ended in a traceback before.
BAD = [
    ("train.unfreeze_epochs", -1, "train.unfreeze_epochs is -1; allowed: a whole number >= 0"),
    ("train.freeze_batch_size", 0, "train.freeze_batch_size is 0; allowed: a whole number >= 1"),
    ("train.hflip", 1.5, "train.hflip is 1.5; allowed: a number from 0 to 1"),
    ("train.mosaic", 7, "train.mosaic is 7; allowed: a number from 0 to 1"),
    ("model.scale", "xl", "model.scale is 'xl'; allowed: one of n, s, m, l"),
    ("train.optimizer", "adam", "train.optimizer is 'adam'; allowed: one of adamw, sgd"),
    ("model.backbone", "resnet999", "model.backbone is 'resnet999'; allowed: cspdarknet, yolov8, yolo11 or a "
                                    "torchvision resnet*"),
    ("lr", "abc", "lr is 'abc'; allowed: a number > 0"),
    ("model.pretrained", "imagenet", "model.pretrained is 'imagenet'; allowed: none or the path of a detpipe "
                                     "checkpoint with backbone cspdarknet, which has no ImageNet weights"),
    ("model.pretrained", "missing.pt", "model.pretrained is 'missing.pt'; allowed: none, imagenet, coco (torchvision "
                                       "backbones) or the path of an existing detpipe checkpoint"),
    ("model.pretrained", "coco", "model.pretrained is 'coco'; allowed: none or the path of a detpipe checkpoint with "
                                 "backbone cspdarknet, which has no COCO weights (for them pick a torchvision backbone, "
                                 "e.g. backbone: resnet50 or mobilenet_v3_large)"),
    ("model.neck", "yolov5", "model.neck is 'yolov5'; allowed: one of pan, yolov8, yolo11"),
    ("model.imgsz", 300, "model.imgsz is 300; allowed: a whole number > 0 that is a multiple of 32"),
    ("split.val", 0, "split.val is 0; allowed: a number > 0 and <= 1"),
    ("split.val", 0.5, "split.train + split.val + split.test is 1.35; allowed: fractions that sum to 1"),
    ("train.lr_schedule", "cosin", "train.lr_schedule is 'cosin'; allowed: one of cosine, linear, step, constant"),
    ("train.amp_dtype", "float8", "train.amp_dtype is 'float8'; allowed: one of float16, bfloat16"),
    ("train.momentum", 1, "train.momentum is 1; allowed: a number >= 0 and < 1"),
    ("train.lr_milestones", [0.5, 1.5], "train.lr_milestones[1] is 1.5; allowed: a list of numbers from 0 to 1"),
    ("train.device", "gpu", "train.device is 'gpu'; allowed: auto, cpu, cuda or cuda:<index>"),
    ("train.amp", "maybe", "train.amp is 'maybe'; allowed: true or false"),
    ("train.patience", True, "train.patience is true; allowed: a whole number >= 0"),
    ("train.time", -1, "train.time is -1; allowed: a number from 0 to 10000"),
    ("train.time", "1h", "train.time is '1h'; allowed: a number from 0 to 10000"),
    ("train.nproc", 3, "train.freeze_batch_size is 16; allowed: a multiple of train.nproc (3)"),
    ("data.source", "yolov5", "data.source is 'yolov5'; allowed: one of voc, coco"),
    ("data.classes", ["cat", "cat"], "data.classes is ['cat', 'cat']; allowed: a list of distinct, non-empty"),
    ("train.unfreeze_epoch", 3, "train.unfreeze_epoch is not a known key (did you mean unfreeze_epochs?); "
                                "allowed keys: device, freeze_epochs, "),
    ("train.lr", 0.01, "train.lr is not a known key (it belongs at the top level); allowed keys: device, "),
    ("mosaic", 0.5, "mosaic is not a known key (it belongs in train:); allowed keys: lr, seed, data, "),
    ("predict.confidence", "1e-3x", "predict.confidence is '1e-3x'; allowed: a number from 0 to 1"),
    ("overfit.patience", 0, "overfit.patience is 0; allowed: a whole number >= 1"),
    ("train.freeze_epochs", -1, "train.freeze_epochs is -1; allowed: a whole number >= 0 or auto"),
    ("train.freeze_epochs", "Auto", "train.freeze_epochs is 'Auto'; allowed: a whole number >= 0 or auto"),
    ("train.freeze_epochs", True, "train.freeze_epochs is true; allowed: a whole number >= 0 or auto"),
    ("model.imgsz", 330, "model.imgsz is 330; allowed: a whole number > 0 that is a multiple of 32 or auto"),
]


def _with(key: str, value, raw: dict = RAW) -> dict:
    out = copy.deepcopy(raw)
    *sections, name = key.split(".")
    node = out
    for s in sections:
        node = node[s]
    node[name] = value
    return out


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


@pytest.mark.parametrize("key, value, line", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_value_is_one_line_naming_file_key_value_and_what_is_allowed(tmp_path, key, value, line):
    path = _write(tmp_path / "params.yaml", _with(key, value))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {line}"), message
    assert "\n" not in message and " (also wrong" not in message


def test_several_bad_values_are_still_one_line(tmp_path):
    raw = _with("model.scale", "xl", _with("train.hflip", 2, _with("lr", -1)))
    with pytest.raises(ParamsError) as err:
        load_params(_write(tmp_path / "p.yaml", raw))
    assert str(err.value) == f"{tmp_path / 'p.yaml'}: lr is -1; allowed: a number > 0 (also wrong: model.scale, train.hflip)"


# Each stage script and check-data, as the user runs them (the examples, the first nine of
# BAD, each through one of them, lr 'abc' through train; every entry point gets at least one: a
# subprocess costs ~3 s).
def _entry_points() -> dict[str, list[str]]:
    """Every stage that reads params, with the command line the stage table gives it (its --params
    is replaced by the test's file), and check-data."""
    from detpipe.pipeline.table import STAGES
    entries = {}
    for stage in STAGES:
        args = [part for flag, value in stage.args if flag != "--params" for part in (flag, value) if part]
        if any(flag == "--params" for flag, _ in stage.args):
            entries[stage.name] = [stage.script, *args]
    return {**entries, "check-data": ["-m", "detpipe", "check-data"]}


ENTRY_POINTS = _entry_points()
CASES = [(list(ENTRY_POINTS)[i % len(ENTRY_POINTS)], *BAD[i]) for i in range(max(9, len(ENTRY_POINTS)))]


def _run(entry: str, params: Path, cwd: Path) -> subprocess.CompletedProcess:
    first, *rest = ENTRY_POINTS[entry]
    script = str(REPO / first) if first.startswith("stages/") else first
    return subprocess.run([sys.executable, script, *rest, "--params", str(params)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("entry, key, value, line", CASES, ids=[f"{e}:{k}={v}" for e, k, v, _ in CASES])
def test_entry_points_print_the_line_and_exit_1_without_traceback(tmp_path, entry, key, value, line):
    params = _write(tmp_path / "params.yaml", _with(key, value))
    proc = _run(entry, params, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {params}: {line}"), proc.stderr
    from detpipe.pipeline.table import STAGES
    outs = [o.path for st in STAGES if st.name == entry for o in st.outs]
    assert not [o for o in outs if (tmp_path / o).exists()], "a stage with bad params wrote an output"


def test_dvc_exp_run_set_param_edits_load(tmp_path):
    """The file exactly as `dvc exp run -S ...` rewrites it (DVC's own -S implementation, dvc is pinned):
    YAML reads its `3e-05` back as a string."""
    from dvc.utils.hydra import apply_overrides
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    apply_overrides(path, ["lr=3e-5", "train.amp=false", "train.unfreeze_epochs=5", "train.lr_milestones=[0.5,0.8]",
                           "model.scale=s", "data.classes=[a,b]"])
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["lr"] == "3e-05"
    p = load_params(path)
    assert p.lr == pytest.approx(3e-5) and isinstance(p.lr, float) and p.train.amp is False
    assert (p.train.unfreeze_epochs, p.train.lr_milestones, p.model.scale, p.data.classes) == (5, (0.5, 0.8), "s",
                                                                                            ("a", "b"))
    apply_overrides(path, ["train.hflip=abc"])
    with pytest.raises(ParamsError, match=r"train.hflip is 'abc'; allowed: a number from 0 to 1$"):
        load_params(path)


def test_hand_written_strings_are_coerced(tmp_path):
    raw = RAW
    for key, value in [("lr", "3e-05"), ("train.freeze_epochs", "2"), ("train.amp", "false"),
                       ("train.cache_images", "True"), ("train.hflip", "0.25"), ("train.lr_milestones", ["0.5", 1]),
                       ("data.ignore_classes", "dog"), ("model.neck_channels", 32.0), ("predict.max_det", "50")]:
        raw = _with(key, value, raw)
    p = load_params(_write(tmp_path / "params.yaml", raw))
    assert p.lr == pytest.approx(3e-5) and isinstance(p.lr, float)
    assert p.train.freeze_epochs == 2 and p.train.amp is False and p.train.cache_images is True
    assert p.train.hflip == 0.25 and p.train.lr_milestones == (0.5, 1.0)
    assert p.data.ignore_classes == ("dog",) and p.model.neck_channels == 32 and p.predict.max_det == 50
    assert isinstance(p.data.classes, tuple)


def test_every_field_is_in_params_yaml_with_the_code_default():
    """Deleting a line of params.yaml must not change the recipe, and every knob must be visible to
    `dvc params diff`: the models' fields are exactly params.yaml's keys, with equal values."""
    defaults, listed = _flat(to_dict(Params())), _flat(RAW)
    assert sorted(set(defaults) - set(listed)) == [], "fields missing from params.yaml"
    assert sorted(set(listed) - set(defaults)) == [], "params.yaml keys the models do not have"
    loaded = _flat(to_dict(load_params(REPO / "params.yaml")))
    # data.classes has no default: they are the dataset's own names (empty = take data.classes_file).
    assert defaults.pop("data.classes") == [] and loaded.pop("data.classes")
    differ = {k: (defaults[k], loaded[k]) for k in defaults if defaults[k] != loaded[k]}
    assert differ == {}, "code default != params.yaml (default, file)"


def test_every_params_yaml_key_has_a_comment():
    text = (REPO / "params.yaml").read_text(encoding="utf-8").splitlines()
    leaves = [ln for ln in text if re.match(r"^\s*\w+:\s*\S", ln) and not ln.lstrip().startswith("#")]
    assert len(leaves) == len(_flat(RAW))
    assert [ln for ln in leaves if "#" not in ln] == []


def test_choices_are_the_ones_the_code_accepts():
    assert set(get_args(AmpDtype)) == set(accel.AMP_DTYPES)
    assert set(get_args(Scale)) == set(catalog.SCALES)
    assert get_args(Neck) == catalog.NECKS
    net = torch.nn.Linear(2, 2)
    for name in get_args(Optimizer):
        engine.build_optimizer(net, name, 0.01, 0.9, 0.0)
    for name in get_args(LrSchedule):
        assert 0 < engine.lr_lambda(10, 2, name, 0.1)(5) <= 1


def test_backbones_are_exactly_the_ones_the_model_builds():
    names = catalog.backbone_names()
    for family in catalog.TORCHVISION_FAMILIES:  # the smallest of each family: cheap, and every cut is tried
        members = [n for n in names if n.startswith(family)]
        small = min(members, key=lambda n: torchvision.models.get_model_weights(n).DEFAULT.meta["num_params"])
        assert len(Backbone(small).channels) == 3
        from_dict(Params, {"model": {"backbone": small, "pretrained": "imagenet"}})
    other = [n for n in torchvision.models.list_models(module=torchvision.models) if n not in names]
    with pytest.raises(ValueError, match="not supported"):
        Backbone(other[0])
    with pytest.raises(ParamsError, match=f"model.backbone is '{other[0]}'"):
        from_dict(Params, {"model": {"backbone": other[0]}})
    assert "cspdarknet" in names and pretrained_choices("cspdarknet") == ("none",)
    for name in catalog.YOLO_FAMILIES:
        assert name in names and len(Backbone(name).channels) == 3
    from_dict(Params, {"model": {"backbone": "resnet50", "pretrained": "coco"}})


def test_the_yolo_necks_take_no_neck_channels():
    assert from_dict(Params, {"model": {"neck": "yolo11", "backbone": "yolo11"}}).model.neck == "yolo11"
    with pytest.raises(ParamsError, match="model.neck_channels is 32; allowed: 0: neck yolov8 takes its widths"):
        from_dict(Params, {"model": {"neck": "yolov8", "neck_channels": 32}})


def test_pretrained_path_must_exist(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    assert from_dict(Params, {"model": {"pretrained": str(weights)}}).model.pretrained == str(weights)
    with pytest.raises(ParamsError, match="there is no file"):
        from_dict(Params, {"model": {"pretrained": str(tmp_path / "nope.pt")}})


def test_frozen_keyword_only_and_plain_dict():
    params = from_dict(Params, {"data": {"classes": ["a", "b"]}})
    with pytest.raises(Exception):
        params.lr = 1.0
    with pytest.raises(TypeError):
        TrainParams(3)
    assert to_dict(params)["data"]["classes"] == ["a", "b"]
    assert to_dict(params)["train"]["lr_milestones"] == [0.7, 0.9]


def test_replace_validates():
    t = TrainParams()
    assert t.replace(patience=5).patience == 5 and t.patience == 0
    with pytest.raises(ParamsError, match="train.hflip is 2; allowed: a number from 0 to 1"):
        t.replace(hflip=2)
    assert Params().replace(train=t.replace(mosaic=0.0)).train.mosaic == 0.0


def test_classes_file_and_empty_classes(tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("# comment\ncat\n\ndog\n", encoding="utf-8")
    p = load_params(_write(tmp_path / "p.yaml", {"data": {"classes": [], "classes_file": str(names)}}))
    assert p.data.classes == ("cat", "dog")
    with pytest.raises(ParamsError, match=r"p.yaml: data.classes is empty; allowed: a list of your class names"):
        load_params(_write(tmp_path / "p.yaml", {"data": {"classes": []}}))
    with pytest.raises(ParamsError, match=r"p.yaml: data.classes_file is '.*nope.txt'; allowed: a readable"):
        load_params(_write(tmp_path / "p.yaml", {"data": {"classes_file": str(tmp_path / "nope.txt")}}))
    names.write_text("cat\ncat\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="cat listed twice"):
        read_classes_file(names)


def test_file_problems_are_one_line(tmp_path):
    for text, expect in [("lr: [unclosed\n", "not valid YAML: "), ("- 1\n- 2\n", "the file is [1, 2]; allowed: a mapping"),
                         ("train: 5\n", "train is 5; allowed: a mapping of keys (device, ")]:
        path = tmp_path / "p.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ParamsError) as err:
            load_params(path)
        assert str(err.value).startswith(f"{path}: {expect}") and "\n" not in str(err.value)
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")


def test_data_section_alone_validates():
    assert DataParams(root="r", classes=("a",)).source == "voc"
    with pytest.raises(ParamsError, match=r"^data.workers is -1; allowed: a whole number >= 0$"):
        from_dict(DataParams, {"workers": -1}, where=None)



def _split_stage():
    spec = importlib.util.spec_from_file_location("_split_stage", REPO / "stages" / "split.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_empty_val_split_stops_split_and_train_before_training(tmp_path, capsys):
    params = _write(tmp_path / "params.yaml", RAW)
    one = tmp_path / "annotations.txt"
    one.write_text("img.jpg 1,1,10,10,0\n", encoding="utf-8")  # one image; its path hashes into train
    hashes = tmp_path / "images.sha256"
    hashes.write_text("0" * 64 + "  img.jpg\n", encoding="utf-8")
    code = _split_stage().main(["--params", str(params), "--annotations", str(one), "--images", str(hashes),
                                "--out-dir", str(tmp_path / "s"),
                                "--report", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "s").exists()
    assert f"{one} (1 images): the val split has no images" in err and "Fix: raise split.val in" in err
    empty = tmp_path / "val.txt"
    empty.write_text("", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "--phase", "frozen", "--params", str(params),
                           "--train", str(one), "--val", str(empty), "--out", "o.pt", "--metrics", "m.tsv"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and not (tmp_path / "o.pt").exists()
    assert proc.stderr.strip() == (f"error: {empty}: the val split has no images: the best epoch is chosen by val "
                                   f"mAP50, so best.pt would be the first epoch's weights. Fix: raise split.val in "
                                   f"{params} (or list val images in ImageSets) or add images")
