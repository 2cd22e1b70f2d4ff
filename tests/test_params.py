import pytest
import yaml

from detpipe.params import Params, ParamsError, TrainParams, from_dict, load_params, to_dict


def _write(tmp_path, data):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


def test_repo_params_load():
    params = load_params("params.yaml")
    assert isinstance(params, Params) and params.data.classes
    # The recipe options ship off, at the dataclass defaults (old results stay reproducible).
    for key in ("mixup", "label_smoothing", "focal_loss", "focal_gamma", "focal_alpha", "patience"):
        assert getattr(params.train, key) == getattr(TrainParams(), key), key
    assert (params.train.mixup, params.train.label_smoothing, params.train.focal_loss, params.train.patience) == (
        0.0, 0.0, False, 0)


def test_unknown_key_is_named_with_the_allowed_ones(tmp_path):
    p = _write(tmp_path, {"data": {"classes": ["a"]}, "train": {"epochz": 3}})
    with pytest.raises(ParamsError, match=r"train.*'epochz'.*allowed keys: device"):
        load_params(p)
    with pytest.raises(ParamsError, match=r"unknown key 'lr_typo'"):
        load_params(_write(tmp_path, {"lr_typo": 1, "data": {"classes": ["a"]}}))


def test_dvc_exp_string_numbers_are_coerced(tmp_path):
    p = _write(tmp_path, {"lr": "3e-05", "data": {"classes": ["a"]}, "train": {"freeze_epochs": "2", "amp": "false"}})
    params = load_params(p)
    assert params.lr == pytest.approx(3e-5) and isinstance(params.lr, float)
    assert params.train.freeze_epochs == 2 and params.train.amp is False


def test_bad_values_are_refused(tmp_path):
    with pytest.raises(ParamsError, match="whole number"):
        from_dict(TrainParams, {"freeze_epochs": 2.5})
    with pytest.raises(ParamsError, match="lr: expected a number"):
        load_params(_write(tmp_path, {"lr": "fast", "data": {"classes": ["a"]}}))
    with pytest.raises(ParamsError, match="classes is empty"):
        load_params(_write(tmp_path, {"data": {"classes": []}}))


def test_frozen_and_plain_dict():
    params = from_dict(Params, {"data": {"classes": ["a", "b"]}})
    with pytest.raises(Exception):
        params.lr = 1.0
    assert to_dict(params)["data"]["classes"] == ["a", "b"]


@pytest.mark.parametrize("key, value, message", [
    ("mixup", 1.5, "train.mixup is 1.5; it is a probability"),
    ("grayscale", -0.1, "train.grayscale is -0.1; it is a probability"),
    ("label_smoothing", 1.0, "train.label_smoothing is 1"),
    ("focal_gamma", -1, "train.focal_gamma is -1"),
    ("focal_alpha", 2, "train.focal_alpha is 2"),
    ("patience", -3, "train.patience is -3"),
])
def test_recipe_values_outside_their_meaning_are_refused(tmp_path, key, value, message):
    with pytest.raises(ParamsError, match=message):
        load_params(_write(tmp_path, {"data": {"classes": ["a"]}, "train": {key: value}}))
    ok = {"mixup": 1.0, "grayscale": 1.0, "label_smoothing": 0.1, "focal_gamma": 0, "focal_alpha": -1, "patience": 0}[key]
    assert getattr(load_params(_write(tmp_path, {"data": {"classes": ["a"]}, "train": {key: ok}})).train, key) == ok
