"""train.time: the unfrozen epoch count fitted to a wall-clock budget from the first unfrozen epoch's
measured time, recorded in the checkpoint and the recipe, and kept on resume without measuring again."""
from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import yaml

from detpipe import recipe
from detpipe.artifacts.history import read_history
from detpipe.artifacts.train_recipe import TrainRecipe
from detpipe.data.annotations import format_line
from detpipe.data.dataset import Augment
from detpipe.model import checkpoint as ckpt
from detpipe.params import Params, from_dict
from detpipe.reports.overfit.verdict import judge
from detpipe.train import phase as training
from detpipe.train.engine import lr_lambda
from tests.conftest import tiny_params
from tests.test_overfit import BALANCED, E, history, map_metrics, split_report
from tests.test_recipe import _stage


def _params(**train) -> Params:
    return from_dict(Params, tiny_params("unused", **train))


def _epochs_that_fit(budget_s: float, epoch_s: float, frozen: int) -> int:
    """An independent loop: add unfrozen epochs while the frozen ones and they (all at epoch_s) fit."""
    n = 0
    while (frozen + n + 1) * epoch_s <= budget_s + 1e-6:
        n += 1
    return max(1, n)


@pytest.mark.parametrize("hours, epoch_s, frozen", [
    (0.25, 23.1, 3), (0.25, 23.1, 0), (1.0, 60.0, 0), (40 / 3600, 10.0, 0), (40 / 3600, 10.0, 1), (2.0, 0.7, 3)])
def test_fit_to_budget_counts_the_epochs_that_fit(hours, epoch_s, frozen):
    params = _params(time=hours, freeze_epochs=frozen, unfreeze_epochs=80)
    choice, warning = recipe.fit_to_budget(params, epoch_s)
    assert (choice.key, choice.setting) == ("train.unfreeze_epochs", 80)
    assert choice.value == _epochs_that_fit(hours * 3600, epoch_s, frozen) and warning is None
    assert f"train.time {hours:g} h" in choice.reason and f"first unfrozen epoch {epoch_s:.1f} s incl. validation" \
        in choice.reason and "train.unfreeze_epochs 80 is ignored" in choice.reason
    assert (f"{frozen} frozen epoch" in choice.reason) == (frozen > 0)
    assert recipe.resolve(params, (choice,)).train.unfreeze_epochs == choice.value


def test_the_brief_example():
    choice, _ = recipe.fit_to_budget(_params(time=0.25, freeze_epochs=3), 23.1)
    assert choice.value == math.floor((900 - 3 * 23.1) / 23.1) == 35
    assert choice.line().startswith("train.unfreeze_epochs: 35 (fitted to the budget train.time 0.25 h (900 s): "
                                    "first unfrozen epoch 23.1 s incl. validation; 3 frozen epochs counted")


@pytest.mark.parametrize("hours, frozen", [(1e-6, 0), (0.001, 0), (20 / 3600, 3)])
def test_a_budget_under_one_epoch_trains_one_and_warns(hours, frozen):
    choice, warning = recipe.fit_to_budget(_params(time=hours, freeze_epochs=frozen), 10.0)
    assert choice.value == 1 and "over the budget" in choice.reason
    assert warning is not None and "raise train.time" in warning and "\n" not in warning
    assert ("plus the frozen ones" in warning) == (frozen > 0)


def test_a_huge_budget_is_a_plain_count():
    choice, warning = recipe.fit_to_budget(_params(time=10000, freeze_epochs=0), 0.5)
    assert choice.value == 72_000_000 and isinstance(choice.value, int) and warning is None
    assert recipe.fit_to_budget(_params(time=10000, freeze_epochs=0), 0.0)[0].value > 0  # a 0 s epoch: no division


def test_code_default_is_off():
    assert Params().train.time == 0


@pytest.mark.parametrize("warmup, hold", [(0, 5), (3, 5), (5, 5), (8, 5)])
def test_held_schedule_does_not_depend_on_the_count_before_the_hold_ends(warmup, hold):
    for schedule in ("cosine", "linear", "step", "constant"):
        short, long = (lr_lambda(n * hold, warmup, schedule, 0.05, (0.0, 0.7), 0.1, hold_steps=hold) for n in (1, 40))
        same = max(warmup, hold) + 1  # every step before the decay starts, and its first
        assert [short(s) for s in range(same)] == [long(s) for s in range(same)], schedule
    plain, held0 = lr_lambda(200, warmup, "cosine", 0.05), lr_lambda(200, warmup, "cosine", 0.05, hold_steps=0)
    assert [plain(s) for s in range(200)] == [held0(s) for s in range(200)], "no hold: the schedule as before"


def test_budget_mosaic_window_covers_the_first_unfrozen_epoch():
    for frozen, n, fraction in itertools.product((0, 1, 3), (1, 2, 10), (0.0, 0.3, 0.7, 1.0)):
        plain = _params(freeze_epochs=frozen, unfreeze_epochs=n, mosaic_fraction=fraction).train
        budget = _params(freeze_epochs=frozen, unfreeze_epochs=n, mosaic_fraction=fraction, time=1.0).train
        until = Augment.from_train_params(budget).mosaic_until
        assert until == (max(round((frozen + n) * fraction), frozen + 1) if fraction else 0)
        assert until == Augment.from_train_params(plain).mosaic_until or round((frozen + n) * fraction) < frozen + 1


def test_fingerprint_holds_the_budget_not_the_ignored_count():
    def fp(name, **train):
        params = _params(freeze_epochs=1, **train)
        return training.run_fingerprint(params, training.phase_of(params, name), [])
    assert fp("unfrozen", time=0.5, unfreeze_epochs=10) == fp("unfrozen", time=0.5, unfreeze_epochs=80)
    assert fp("unfrozen", time=0.5) != fp("unfrozen", time=1.0) != fp("unfrozen")
    # The frozen phase trains alike under any budget: a changed budget reruns only the unfrozen phase.
    assert fp("frozen", time=0.5, unfreeze_epochs=10) == fp("frozen", time=1.0, unfreeze_epochs=80)


REAL_EPOCH = training.train_one_epoch


class _Clock:
    """training._now: each call `step` seconds after the previous one (an epoch's start and end: it
    lasts `step` seconds)."""

    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def _run(params, records, root, monkeypatch, clock_step, kill_at=None):
    """The unfrozen phase from scratch on the tiny records with a fake clock; returns (state, epochs
    trained). kill_at: a Ctrl-C when that epoch (1-based, of this call) would start training."""
    monkeypatch.setattr(training, "_now", _Clock(clock_step))
    trained = []

    def one_epoch(*a, **k):
        if kill_at is not None and len(trained) + 1 == kill_at:
            raise KeyboardInterrupt
        trained.append(1)
        return REAL_EPOCH(*a, **k)
    monkeypatch.setattr(training, "train_one_epoch", one_epoch)
    state = training.train_phase(params, "unfrozen", records[:16], records[16:], [], root / "ckpt", root / "u.tsv")
    return state, len(trained)


def _same_weights(a: dict, b: dict) -> None:
    for key in ("model", "ema", "best_model", "best_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"


BUDGET = _params(freeze_epochs=0, unfreeze_epochs=50, time=35 / 3600)  # 10 s epochs: 3 fit in 35 s


def test_budget_run_fits_records_and_resumes_without_measuring(tiny_records, tmp_path, monkeypatch, capsys):
    straight, trained = _run(BUDGET, tiny_records, tmp_path / "straight", monkeypatch, clock_step=10.0)
    out = capsys.readouterr().out
    assert trained == 3 and [r["epoch"] for r in straight["history"]] == [1, 2, 3]
    choice = straight["recipe"][-1]
    assert (choice["key"], choice["setting"], choice["value"]) == ("train.unfreeze_epochs", 50, 3)
    assert "first unfrozen epoch 10.0 s incl. validation" in choice["reason"]
    assert straight["params"]["train"]["unfreeze_epochs"] == 3 and straight["params"]["train"]["time"] == 35 / 3600
    assert "train.unfreeze_epochs 50 is ignored" in out and f"recipe: {recipe.Choice(**choice).line()}" in out

    # Killed when epoch 2 would start; resumed on a machine 10x faster: re-measuring would fit 35 epochs.
    root = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _run(BUDGET, tiny_records, root, monkeypatch, clock_step=10.0, kill_at=2)
    (run,) = (root / "ckpt" / "train_unfrozen").iterdir()
    first = ckpt.load(run / "last.pt")
    assert first["epoch"] == 1 and first["recipe"][-1] == choice, "the count is in the checkpoint of epoch 1"
    capsys.readouterr()
    resumed, trained = _run(BUDGET, tiny_records, root, monkeypatch, clock_step=1.0)
    out = capsys.readouterr().out
    assert "resuming train_unfrozen from epoch 2" in out and trained == 2
    assert resumed["recipe"][-1] == choice and [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    _same_weights(resumed, straight)


def test_budget_from_scratch_is_the_run_of_its_count(tiny_records, tmp_path, monkeypatch):
    """From scratch the warm-up covers the first epoch: the budget run that fits 3 epochs trains what
    train.unfreeze_epochs 3 trains."""
    budget, _ = _run(BUDGET, tiny_records, tmp_path / "budget", monkeypatch, clock_step=10.0)
    fixed, trained = _run(_params(freeze_epochs=0, unfreeze_epochs=3), tiny_records, tmp_path / "fixed", monkeypatch,
                          clock_step=10.0)
    assert trained == 3
    _same_weights(budget, fixed)
    assert [r["lr"] for r in budget["history"]] == [r["lr"] for r in fixed["history"]]
    assert [r["mosaic"] for r in budget["history"]] == [r["mosaic"] for r in fixed["history"]]


def test_patience_stops_inside_the_budget(tiny_records, tmp_path, monkeypatch):
    real = training._validate
    monkeypatch.setattr(training, "_validate", lambda *a, **k: {**real(*a, **k), "val_map50": 0.5})  # never better
    params = _params(freeze_epochs=0, unfreeze_epochs=1, time=200 / 3600, patience=1)
    state, trained = _run(params, tiny_records, tmp_path, monkeypatch, clock_step=10.0)
    assert state["recipe"][-1]["value"] == 20
    assert trained == 2 and state["stopped_early"] == 2


def test_stage_prints_and_writes_the_fitted_count(tiny_records, tmp_path):
    """A budget far under one epoch: 1 epoch whatever the machine, with the warning, in the weights,
    recipe.json and the TSV."""
    (tmp_path / "train.txt").write_text("".join(format_line(r) + "\n" for r in tiny_records[:8]), encoding="utf-8")
    (tmp_path / "val.txt").write_text("".join(format_line(r) + "\n" for r in tiny_records[16:20]), encoding="utf-8")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params("unused", freeze_epochs=0, unfreeze_epochs=9, time=1e-7)),
                      encoding="utf-8")
    proc = _stage(tmp_path, "unfrozen", params, "--recipe", "recipe.json")
    lines = proc.stdout.splitlines()
    fitted = next(line for line in lines if line.startswith("recipe: train.unfreeze_epochs: 1 (fitted to the budget "
                                                             "train.time 1e-07 h"))
    assert "train.unfreeze_epochs 9 is ignored" in fitted
    assert any(line.startswith("train_unfrozen: warning: train.time 1e-07 h") for line in lines), proc.stdout
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["params"]["train"]["unfreeze_epochs"] == 1 and best["recipe"][-1]["value"] == 1
    assert [c.record() for c in TrainRecipe.read(tmp_path / "recipe.json").choices] == best["recipe"]
    assert json.loads((tmp_path / "recipe.json").read_text())["choices"][-1]["key"] == "train.unfreeze_epochs"
    assert read_history(tmp_path / "unfrozen.tsv")["epoch"].tolist() == [1]


def test_advice_on_a_budget_names_train_time():
    params = Params().replace(train=Params().train.replace(time=0.5, freeze_epochs=3))
    v = judge(history(3.0 - 0.1 * E, 3.1 - 0.1 * E, 0.03 * E), params, split_report(), map_metrics(BALANCED))
    lever = next(lv for lv in v.levers if lv.key == "train.time")
    # 17 unfrozen epochs after 3 frozen in 0.5 h; 8 more: 0.5 h x 28 / 20
    assert "`train.time: 0.7` (now 0.5 h, which trained 17 unfrozen epochs)" in lever.advice
    assert not any("`train.unfreeze_epochs: " in a and "train.time: 0" not in a for a in v.advice), v.advice


def test_after_frozen_epochs_the_first_epoch_holds_the_lr_and_the_decay_fits_the_count(tiny_records, tmp_path,
                                                                                     monkeypatch):
    """With frozen epochs there is no warm-up in the unfrozen phase: its first epoch trains at the base LR
    (the decay cannot start before the count is known), then the cosine runs over the fitted count."""
    params = _params(freeze_epochs=1, unfreeze_epochs=50, time=45 / 3600)  # 1 frozen + 3 unfrozen 10 s epochs
    state, trained = _run(params, tiny_records, tmp_path, monkeypatch, clock_step=10.0)
    assert trained == 3 and state["recipe"][-1]["value"] == 3 and "1 frozen epoch counted" in state["recipe"][-1]["reason"]
    base, low = training.phase_of(params, "unfrozen").lr, params.train.min_lr_ratio
    # The LR each epoch ends on (that of its next step): steps per epoch s = 16 // 4, decay over 3s - s steps.
    expected = [base * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * k / 2))) for k in range(3)]
    assert [r["lr"] for r in state["history"]] == pytest.approx(expected, rel=1e-6)
    # mosaic_fraction 0.7 of 4 epochs: mosaic until global epoch 3 (epoch 2, the first unfrozen, always)
    assert [(r["epoch"], r["mosaic"]) for r in state["history"]] == [(2, True), (3, True), (4, False)]


def test_a_changed_budget_continues_where_the_count_does_not_shape_the_epochs(tiny_records, tmp_path, monkeypatch,
                                                                              capsys):
    """As a changed epoch count: with a constant LR and mosaic over all epochs the new budget continues
    the old run's checkpoint, its count fitted to the first epoch's time that checkpoint records (the
    clock now would fit 55)."""
    exact = dict(freeze_epochs=0, lr_schedule="constant", mosaic_fraction=1.0)
    _run(_params(time=35 / 3600, **exact), tiny_records, tmp_path / "grow", monkeypatch, clock_step=10.0)
    capsys.readouterr()
    grown, trained = _run(_params(time=55 / 3600, **exact), tiny_records, tmp_path / "grow", monkeypatch,
                          clock_step=1.0)
    out = capsys.readouterr().out
    assert "only the epoch count changed (3 -> 5, fitted to train.time 0.0152778 h" in out, out
    assert trained == 2 and grown["recipe"][-1]["value"] == 5 and "first unfrozen epoch 10.0 s" in \
        grown["recipe"][-1]["reason"]
    fixed, _ = _run(_params(unfreeze_epochs=5, **exact), tiny_records, tmp_path / "fixed", monkeypatch,
                    clock_step=10.0)
    _same_weights(grown, fixed)


def test_a_changed_budget_restarts_where_the_count_shapes_the_epochs(tiny_records, tmp_path, monkeypatch, capsys):
    _run(_params(freeze_epochs=0, time=25 / 3600), tiny_records, tmp_path, monkeypatch, clock_step=10.0)
    capsys.readouterr()
    state, trained = _run(_params(freeze_epochs=0, time=35 / 3600), tiny_records, tmp_path, monkeypatch,
                          clock_step=10.0)
    out = capsys.readouterr().out
    assert "not continuing the 2-epoch run of the same params" in out and "lr_schedule cosine depends" in out
    assert trained == 3 and "starting fresh" in out
