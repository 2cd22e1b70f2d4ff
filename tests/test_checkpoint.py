import errno
import io
import os
import pickle
import random

import pytest
import torch

from detpipe import atomic
from detpipe.artifacts import history
from detpipe.model import checkpoint as ckpt
from detpipe.train import runlock
from detpipe.train import phase as training


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


def _state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"model": {"a.weight": torch.randn(64, 32, generator=g), "a.bias": torch.randn(64, generator=g),
                      "bn.num_batches_tracked": torch.tensor(7)},
            "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.01, "params": [0]}]},
            "epoch": 2, "history": [{"epoch": 1, "val_map50": 0.25}], "stopped_early": None, "flag": True}


def test_checksum_changes_with_every_part_of_the_content():
    base = ckpt.checksum(_state())
    assert base == ckpt.checksum(_state()) and base.startswith("sha256:")
    assert ckpt.checksum(dict(reversed(list(_state().items())))) == base, "key order does not count"
    edits = {
        "one bit of a tensor": lambda s: s["model"]["a.weight"].view(torch.int32).__setitem__((3, 4), 1 ^ int(
            s["model"]["a.weight"].view(torch.int32)[3, 4])),
        "shape (same bytes)": lambda s: s["model"].__setitem__("a.weight", s["model"]["a.weight"].reshape(32, 64)),
        "dtype (same bytes)": lambda s: s["model"].__setitem__("a.bias", s["model"]["a.bias"].view(torch.int32)),
        "a plain value": lambda s: s.__setitem__("epoch", 3),
        "a float in a list": lambda s: s["history"][0].__setitem__("val_map50", 0.25000000000000006),
        "an int key": lambda s: s["optimizer"]["state"].__setitem__(1, s["optimizer"]["state"].pop(0)),
        "bool for int": lambda s: s.__setitem__("flag", 1),
        "None for 0": lambda s: s.__setitem__("stopped_early", 0),
        "a key": lambda s: s["model"].__setitem__("a.weight2", s["model"].pop("a.weight")),
    }
    for what, edit in edits.items():
        state = _state()
        edit(state)
        assert ckpt.checksum(state) != base, what


def test_every_flipped_bit_is_refused_or_harmless(tmp_path):
    """Any single flipped bit in the file either fails to load or loads the same content, never other weights."""
    path = tmp_path / "last.pt"
    ckpt.save_atomic(_state(), path)
    data = path.read_bytes()
    want = ckpt.checksum(_state())
    rng = random.Random(0)
    refused = 0
    for pos in sorted(rng.sample(range(len(data)), 200)):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(flipped)
        try:
            back = ckpt.load(path)
        except ckpt.CheckpointError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        assert ckpt.checksum({k: v for k, v in back.items() if k != ckpt.CHECKSUM}) == want, pos
    assert refused > 100, "most of the file is tensor data and pickle, so most flips must be caught"


@pytest.mark.parametrize("kind", ["empty", "truncated", "random bytes", "text"])
def test_unreadable_files_give_one_line(tmp_path, kind):
    path = tmp_path / "last.pt"
    ckpt.save_atomic(_state(), path)
    data = path.read_bytes()
    content = {"empty": b"", "truncated": data[: len(data) // 2], "random bytes": os.urandom(4096),
               "text": b"epoch: 3\n"}[kind]
    path.write_bytes(content)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert err.value.reason and (kind != "empty" or "empty" in err.value.reason)


def _crash_points(monkeypatch, n: int):
    """Raise _Crash at the n-th file-system step (write, fsync, link, rename) of a save."""
    calls = []

    def step(real):
        def wrapped(*a, **k):
            calls.append(real.__name__)
            if len(calls) == n:
                raise _Crash
            return real(*a, **k)
        return wrapped
    for name in ("replace", "link", "fsync"):
        monkeypatch.setattr(os, name, step(getattr(os, name)))
    monkeypatch.setattr(torch, "save", step(torch.save))
    return calls


class _Crash(BaseException):
    """A kill at this point (BaseException: nothing may catch it)."""


def test_rotation_leaves_a_good_checkpoint_at_every_step(tmp_path, monkeypatch):
    """A kill between any two steps of a rotating save leaves last.pt or prev.pt, loadable, of epoch 1 or 2."""
    n = 1
    while True:
        folder = tmp_path / str(n)
        ckpt.save_atomic({**_state(), "epoch": 1}, folder / "last.pt", keep_previous=folder / "prev.pt")
        with monkeypatch.context() as m:
            calls = _crash_points(m, n)
            try:
                ckpt.save_atomic({**_state(), "epoch": 2}, folder / "last.pt", keep_previous=folder / "prev.pt")
                finished = True
            except _Crash:
                finished = False
        epochs = {f.name: ckpt.load(f)["epoch"] for f in folder.glob("*.pt")}
        assert epochs.get("last.pt", 0) >= 1 or epochs.get("prev.pt", 0) >= 1, (n, calls, epochs)
        if finished:
            assert epochs == {"last.pt": 2, "prev.pt": 1}
            break
        n += 1
    assert n >= 5, f"only {n} steps: the crash points did not reach into the save"


def full_disk(monkeypatch, name: str, after: int = 0):
    """Writes of file `name` fail with ENOSPC, as on a full disk, after `after` that succeed."""
    real, seen = os.fdopen, []

    class Full(io.FileIO):
        def write(self, b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd, mode="r", *a, **k):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(f".{name}."):
            seen.append(fd)
            if len(seen) > after:
                return Full(fd, "wb")
        return real(fd, mode, *a, **k)
    monkeypatch.setattr(os, "fdopen", fdopen)


def test_disk_full_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_atomic({**_state(), "epoch": 1}, path)
    full_disk(monkeypatch, "last.pt")
    with pytest.raises(atomic.WriteError) as err:
        ckpt.save_atomic({**_state(), "epoch": 2}, path, keep_previous=tmp_path / "prev.pt")
    assert str(err.value) == f"cannot write {path}: No space left on device (ENOSPC)"
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert ckpt.load(path)["epoch"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_tsv_and_text_writes_are_atomic(tmp_path, monkeypatch):
    tsv = tmp_path / "frozen.tsv"
    row = {c: 1.5 for c in history.COLUMNS} | {"epoch": 1, "phase": "frozen", "mosaic": True}
    history.write_history(tsv, [row])
    before = tsv.read_text(encoding="utf-8")
    assert tuple(before.splitlines()[0].split("\t")) == history.COLUMNS and before.splitlines()[1].startswith("1\t")
    full_disk(monkeypatch, "frozen.tsv")
    with pytest.raises(atomic.WriteError, match="No space left on device"):
        history.write_history(tsv, [row | {"train_loss": 9.0}] * 2)
    assert tsv.read_text(encoding="utf-8") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frozen.tsv"]
