import os
import pickle

import pytest
import torch

from detpipe import checkpoint as ckpt
from detpipe import runlock


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_atomic_save_round_trip_and_no_temp_left(tmp_path):
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 3, "history": [{"epoch": 1, "phase": "frozen"}],
             "rng": {"torch": torch.get_rng_state()}}
    ckpt.save_atomic(state, tmp_path / "last.pt")
    back = ckpt.load(tmp_path / "last.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["history"] == state["history"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_malicious_pickle_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pt", "wb") as fh:
        pickle.dump({"model": _Boom()}, fh)
    torch.save({"x": _Boom()}, "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(ckpt.CheckpointError, match="refused to load"):
            ckpt.load(name)
    assert not (tmp_path / "pwned").exists()


def test_old_runs_pruned(tmp_path):
    stage = tmp_path / "train_frozen"
    for i, name in enumerate(["a", "b", "c", "d"]):
        (stage / name).mkdir(parents=True)
        os.utime(stage / name, (i, i))
    removed = runlock.prune(stage, keep=2, current="a")
    assert sorted(p.name for p in removed) == ["b", "c"]
    assert sorted(p.name for p in stage.iterdir()) == ["a", "d"]


def test_fingerprint_depends_on_config_and_file_contents(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("a.jpg 1,2,3,4,0\n")
    a = ckpt.fingerprint({"lr": 0.01}, [f])
    assert a == ckpt.fingerprint({"lr": 0.01}, [f])
    assert a != ckpt.fingerprint({"lr": 0.02}, [f])
    f.write_text("a.jpg 1,2,3,5,0\n")
    assert a != ckpt.fingerprint({"lr": 0.01}, [f])
