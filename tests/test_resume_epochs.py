"""Raising the epoch count continues a finished run when the LR schedule allows it, else starts fresh."""
import pytest
import torch

from detpipe.model import checkpoint as ckpt
from detpipe.train import phase as training
from detpipe.params import Params, from_dict
from tests.conftest import tiny_params


def _params(**train) -> Params:
    # mosaic_fraction 1: mosaic (if any) in every epoch, so augmentation does not depend on the epoch count.
    return from_dict(Params, tiny_params("unused", **{"mosaic_fraction": 1.0, **train}))


def _run(params, records, root, monkeypatch=None, phase="frozen", init=None):
    """train_phase on the tiny records; with monkeypatch, returns (state, epochs trained)."""
    trained = []
    if monkeypatch is not None:
        real = training.train_one_epoch
        monkeypatch.setattr(training, "train_one_epoch", lambda *a, **k: trained.append(1) or real(*a, **k))
    inputs = [init] if init else []
    state = training.train_phase(params, phase, records[:16], records[16:], inputs, root / "ckpt",
                                 root / f"{phase}.tsv", init)
    return state, len(trained)


def _assert_same_weights(a: dict, b: dict):
    for key in ("model", "ema", "best_model", "best_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    assert [r["epoch"] for r in a["history"]] == [r["epoch"] for r in b["history"]]


def test_constant_schedule_continues_when_epochs_rise(tiny_records, tmp_path, monkeypatch, capsys):
    straight, _ = _run(_params(freeze_epochs=3, lr_schedule="constant"), tiny_records, tmp_path / "straight")
    _run(_params(freeze_epochs=2, lr_schedule="constant"), tiny_records, tmp_path / "grow")
    capsys.readouterr()
    grown, trained = _run(_params(freeze_epochs=3, lr_schedule="constant"), tiny_records, tmp_path / "grow",
                          monkeypatch)
    out = capsys.readouterr().out
    assert trained == 1, "only the added epoch is trained"
    assert "continuing the 2-epoch run" in out and "resuming train_frozen from epoch 3" in out
    assert "starting fresh" not in out
    _assert_same_weights(grown, straight)
    assert [r["epoch"] for r in grown["history"]] == [1, 2, 3]
    # The 2-epoch run's own checkpoint is untouched (the new run replaced its hard link, not the file).
    runs = sorted((tmp_path / "grow" / "ckpt" / "train_frozen").iterdir())
    assert len(runs) == 2 and sorted(ckpt.load(r / "last.pt")["epoch"] for r in runs) == [2, 3]


@pytest.mark.parametrize("schedule, mosaic_fraction, why", [
    ("cosine", 1.0, "lr_schedule cosine depends on the epoch count"),
    ("linear", 1.0, "lr_schedule linear depends on the epoch count"),
    ("constant", 0.5, "mosaic_fraction 0.5 ends the mosaic epochs at a fraction of all epochs")])
def test_epoch_dependent_run_starts_fresh_and_says_why(tiny_records, tmp_path, monkeypatch, capsys, schedule,
                                                      mosaic_fraction, why):
    params = dict(lr_schedule=schedule, mosaic_fraction=mosaic_fraction)
    _run(_params(freeze_epochs=1, **params), tiny_records, tmp_path)
    capsys.readouterr()
    _, trained = _run(_params(freeze_epochs=2, **params), tiny_records, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert trained == 2 and "starting fresh" in out and "resuming" not in out
    assert why in out


def test_fewer_epochs_than_done_starts_fresh(tiny_records, tmp_path, monkeypatch, capsys):
    _run(_params(freeze_epochs=2, lr_schedule="constant"), tiny_records, tmp_path)
    capsys.readouterr()
    _, trained = _run(_params(freeze_epochs=1, lr_schedule="constant"), tiny_records, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert trained == 1 and "starting fresh" in out and "already past epoch 1" in out


def test_other_phase_settings_do_not_restart_a_phase(tiny_records, tmp_path, monkeypatch, capsys):
    # DVC reruns train_frozen when any train.* param changes; unfreeze_epochs does not change its result.
    first, _ = _run(_params(freeze_epochs=1, unfreeze_epochs=1), tiny_records, tmp_path)
    again, trained = _run(_params(freeze_epochs=1, unfreeze_epochs=5), tiny_records, tmp_path, monkeypatch)
    assert trained == 0 and "resuming train_frozen" in capsys.readouterr().out
    _assert_same_weights(first, again)
    assert again["params"]["train"]["unfreeze_epochs"] == 5, "outputs carry the params of this run"


def test_unfrozen_phase_continues_from_a_rewritten_init(tiny_records, tmp_path, monkeypatch, capsys):
    """The unfrozen phase's init (frozen.pt) is identified by its weights, not its bytes."""
    frozen, _ = _run(_params(freeze_epochs=1, unfreeze_epochs=1), tiny_records, tmp_path)
    init = tmp_path / "frozen.pt"
    ckpt.save_atomic(training.export_weights(frozen, "last"), init)
    straight, _ = _run(_params(freeze_epochs=1, unfreeze_epochs=2, lr_schedule="constant"), tiny_records,
                       tmp_path / "straight", phase="unfrozen", init=init)
    _run(_params(freeze_epochs=1, unfreeze_epochs=1, lr_schedule="constant"), tiny_records, tmp_path,
         phase="unfrozen", init=init)
    # The frozen stage reruns (train.* changed) and rewrites frozen.pt: same tensors, other metadata.
    ckpt.save_atomic({**training.export_weights(frozen, "last"), "params": {"rewritten": True}}, init)
    capsys.readouterr()
    grown, trained = _run(_params(freeze_epochs=1, unfreeze_epochs=2, lr_schedule="constant"), tiny_records,
                          tmp_path, monkeypatch, phase="unfrozen", init=init)
    assert trained == 1 and "resuming train_unfrozen from epoch 3" in capsys.readouterr().out
    _assert_same_weights(grown, straight)


def test_changed_init_weights_change_the_fingerprint(tiny_records, tmp_path):
    params = _params()
    phase = training.phase_of(params, "unfrozen")
    state, _ = _run(_params(freeze_epochs=1), tiny_records, tmp_path)
    path = tmp_path / "w.pt"
    ckpt.save_atomic(training.export_weights(state, "last"), path)
    fp = training.run_fingerprint(params, phase, [path])
    ckpt.save_atomic({**training.export_weights(state, "last"), "history": []}, path)
    assert training.run_fingerprint(params, phase, [path]) == fp
    changed = training.export_weights(state, "last")
    changed["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in changed["model"].items()}
    ckpt.save_atomic(changed, path)
    assert training.run_fingerprint(params, phase, [path]) != fp
