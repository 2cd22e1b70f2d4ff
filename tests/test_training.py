"""Training-phase invariants on a tiny dataset: resume is exact, outputs are complete, early stop sticks."""

import pytest
import torch

from detpipe.artifacts.history import read_history
from detpipe.train import phase as training
from detpipe.params import Params, from_dict
from tests.conftest import tiny_params


def _params(root, **train) -> Params:
    return from_dict(Params, tiny_params(root, **train))


def _run(params, records, tmp, name="run", interrupt_at=None, monkeypatch=None, phase="frozen"):
    if interrupt_at is not None:
        real, calls = training.train_one_epoch, []

        def flaky(*a, **k):
            calls.append(1)
            if len(calls) == interrupt_at:
                raise KeyboardInterrupt
            return real(*a, **k)
        monkeypatch.setattr(training, "train_one_epoch", flaky)
    return training.train_phase(params, phase, records[:16], records[16:], [], tmp / name / "ckpt",
                                tmp / name / "h.tsv")


def _assert_same_weights(a: dict, b: dict):
    for key in ("model", "ema", "best_model", "best_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"


def test_interrupted_run_resumes_to_the_same_weights(tiny_records, tmp_path, monkeypatch, capsys):
    params = _params("unused", freeze_epochs=3)
    straight = _run(params, tiny_records, tmp_path, "a")
    with pytest.raises(KeyboardInterrupt):
        _run(params, tiny_records, tmp_path, "b", interrupt_at=3, monkeypatch=monkeypatch)
    monkeypatch.undo()
    resumed = _run(params, tiny_records, tmp_path, "b")
    assert "resuming train_frozen from epoch 3" in capsys.readouterr().out
    _assert_same_weights(straight, resumed)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    rows = read_history(tmp_path / "b" / "h.tsv")
    assert rows["epoch"].tolist() == [1, 2, 3]
    # The val scores are the metric library's on the val split (0..1), mosaic as the params say.
    for col in ("val_map50", "val_map50_95", "val_precision", "val_recall"):
        assert rows[col].between(0, 1).all(), col
    assert (rows["val_map50_95"] <= rows["val_map50"] + 1e-9).all()
    assert 0 < rows["val_seconds"].max() and (rows["val_seconds"] < rows["seconds"]).all()


def test_worker_count_does_not_change_the_result(tiny_records, tmp_path):
    a = _run(_params("unused", freeze_epochs=1, num_workers=0), tiny_records, tmp_path, "w0")
    b = _run(_params("unused", freeze_epochs=1, num_workers=2), tiny_records, tmp_path, "w2")
    _assert_same_weights(a, b)


def test_finished_run_rewrites_outputs_without_training(tiny_records, tmp_path, monkeypatch):
    params = _params("unused", freeze_epochs=1)
    first = _run(params, tiny_records, tmp_path, "r")
    (tmp_path / "r" / "h.tsv").unlink()
    monkeypatch.setattr(training, "train_one_epoch", lambda *a, **k: pytest.fail("trained again"))
    again = _run(params, tiny_records, tmp_path, "r")
    _assert_same_weights(first, again)
    assert (tmp_path / "r" / "h.tsv").exists()


def test_changed_param_starts_fresh(tiny_records, tmp_path, capsys):
    _run(_params("unused", freeze_epochs=1), tiny_records, tmp_path, "p")
    p2 = from_dict(Params, {**tiny_params("unused", freeze_epochs=1), "lr": 0.02})
    _run(p2, tiny_records, tmp_path, "p")
    out = capsys.readouterr().out
    assert "resuming" not in out and out.count("starting fresh") == 2
    assert len(list((tmp_path / "p" / "ckpt" / "train_frozen").iterdir())) == 2


def _scripted_map(monkeypatch, values):
    """val mAP50 per epoch as given (the stopping rule under test, not the model's skill)."""
    calls = []

    def fake(*a, **k):
        calls.append(1)
        v = values[len(calls) - 1]
        return {"val_map50": v, "val_map50_95": v / 2, "val_precision": v, "val_recall": v}
    monkeypatch.setattr(training, "val_scores", fake)


def test_patience_stops_the_phase_and_a_rerun_trains_no_more(tiny_records, tmp_path, monkeypatch, capsys):
    # Constant LR and mosaic in every epoch, so a run with more epochs continues this one (below).
    common = dict(patience=1, lr_schedule="constant", mosaic_fraction=1.0)
    _scripted_map(monkeypatch, [0.3, 0.5, 0.4, 0.9, 0.9])   # epoch 3 does not beat epoch 2: stop there
    state = _run(_params("unused", freeze_epochs=5, **common), tiny_records, tmp_path, "s")
    out = capsys.readouterr().out
    assert "early stop: no val mAP50 improvement for 1 epochs; best epoch 2" in out
    assert [r["epoch"] for r in state["history"]] == [1, 2, 3] and state["epoch"] == 3
    assert state["stopped_early"] == 3 and state["best"] == {"epoch": 2, "val_map50": 0.5}
    assert training.export_weights(state, "best")["stopped_early"] == 3
    tsv = tmp_path / "s" / "h.tsv"
    assert tsv.read_text(encoding="utf-8").count("\n") == 1 + 3

    # Rerun of the same stage: the checkpoint says it stopped, so nothing trains or validates.
    monkeypatch.setattr(training, "train_one_epoch", lambda *a, **k: pytest.fail("trained past the early stop"))
    monkeypatch.setattr(training, "val_scores", lambda *a, **k: pytest.fail("validated past the early stop"))
    tsv.unlink()
    again = _run(_params("unused", freeze_epochs=5, **common), tiny_records, tmp_path, "s")
    assert "stopped early after epoch 3" in capsys.readouterr().out
    assert [r["epoch"] for r in again["history"]] == [1, 2, 3] and again["stopped_early"] == 3
    _assert_same_weights(state, again)
    assert tsv.read_text(encoding="utf-8").count("\n") == 1 + 3

    # More epochs of the same params continue this run, which stays stopped: a fresh 8-epoch run
    # would have stopped after epoch 3 as well.
    longer = _run(_params("unused", freeze_epochs=8, **common), tiny_records, tmp_path, "s")
    out = capsys.readouterr().out
    assert "continuing the 5-epoch run" in out and "stopped early after epoch 3" in out
    assert [r["epoch"] for r in longer["history"]] == [1, 2, 3]


def test_patience_rule():
    assert not training.patience_exhausted(0, epoch=50, best_epoch=1)       # 0 = off
    assert not training.patience_exhausted(3, epoch=6, best_epoch=4)
    assert training.patience_exhausted(3, epoch=7, best_epoch=4)
    assert training.patience_exhausted(1, epoch=11, best_epoch=10)          # global epochs (unfrozen phase)


def _fp(**train) -> str:
    params = _params("unused", **train)
    return training.run_fingerprint(params, training.phase_of(params, "frozen"), [])


def test_recipe_params_are_in_the_fingerprint_only_where_they_compute_something():
    base = _fp()
    for change in ({"patience": 5}, {"mixup": 0.1}, {"label_smoothing": 0.1}, {"focal_loss": True}):
        assert _fp(**change) != base, change
    # The focal settings compute nothing while focal_loss is off, so changing them resumes.
    assert _fp(focal_gamma=2.0, focal_alpha=0.5) == base
    assert _fp(focal_loss=True, focal_gamma=2.0) != _fp(focal_loss=True)
    # Mixup shares mosaic's epochs, so with mosaic off the frozen phase's last mosaic epoch (which
    # the unfrozen epoch count moves: 2 of 4 here, or all 4) matters exactly when mixup is on.
    window = dict(freeze_epochs=4, mosaic=0.0, mosaic_fraction=0.5)
    assert _fp(unfreeze_epochs=0, **window) == _fp(unfreeze_epochs=4, **window)
    assert _fp(unfreeze_epochs=0, mixup=0.2, **window) != _fp(unfreeze_epochs=4, mixup=0.2, **window)
    why = training.epoch_count_dependence(_params("unused", mosaic=0.0, mixup=0.2, mosaic_fraction=0.5))
    assert any("ends the mixup epochs" in w for w in why)
    why = training.epoch_count_dependence(_params("unused", mosaic=0.5, mosaic_fraction=0.5))
    assert any("ends the mosaic epochs at a fraction of all epochs" in w for w in why)


def test_lr_schedules_warm_up_then_decay_to_the_floor():
    from detpipe.train.engine import lr_lambda
    for schedule in ("cosine", "linear", "step"):
        f = lr_lambda(100, 10, schedule, 0.05)
        assert [f(s) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]                 # linear warm-up
        assert f(10) == 1.0 and abs(f(100) - 0.05) < 1e-12                    # full LR, then the floor
        assert all(f(s) >= f(s + 1) for s in range(10, 100))                  # never rises after warm-up
    step = lr_lambda(100, 0, "step", 0.001, milestones=(0.5, 0.8), gamma=0.1)
    assert (step(49), step(50), step(79), step(80)) == (1.0, 0.1, 0.1, 0.1 ** 2)
    assert lr_lambda(100, 0, "constant", 0.05)(99) == 1.0
    with pytest.raises(ValueError, match="lr_schedule: 'exp' is not one of cosine, linear, step, constant"):
        lr_lambda(100, 0, "exp", 0.05)
