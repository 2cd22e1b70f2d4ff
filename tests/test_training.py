"""Training-phase invariants on a tiny dataset: resume is exact, outputs are complete."""
import csv

import pytest
import torch

from detpipe import training
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
    with open(tmp_path / "b" / "h.tsv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and set(training.TSV_COLUMNS) <= set(rows[0])


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
