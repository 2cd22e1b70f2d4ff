"""An unusable checkpoint is set aside with one line and the phase resumes from the previous good epoch."""
import importlib.util
import shutil
import sys
import zipfile

import pytest
import torch
import yaml

from detpipe.train import accel
from detpipe import atomic
from detpipe.model import checkpoint as ckpt
from detpipe.train import resume
from detpipe.train import runlock
from detpipe.train import phase as training
from detpipe.data.annotations import write_lines
from detpipe.model.detector import Detector, ModelConfig
from detpipe.model.load import load_detector
from detpipe.params import Params, from_dict
from tests.conftest import REPO, tiny_params
from tests.test_checkpoint import full_disk

RAW = tiny_params("unused", freeze_epochs=2)
PARAMS = from_dict(Params, RAW)


def _train(records, root, monkeypatch=None):
    """train_phase (frozen, 2 epochs) in `root`; with monkeypatch, returns (state, epochs trained)."""
    trained = []
    if monkeypatch is not None:
        real = training.train_one_epoch
        monkeypatch.setattr(training, "train_one_epoch", lambda *a, **k: trained.append(1) or real(*a, **k))
    state = training.train_phase(PARAMS, "frozen", records[:16], records[16:], [], root / "ckpt", root / "h.tsv")
    return state, len(trained)


@pytest.fixture(scope="module")
def base(tiny_records, tmp_path_factory):
    """An uninterrupted 2-epoch run: (its folder, its final state)."""
    root = tmp_path_factory.mktemp("base")
    state, _ = _train(tiny_records, root)
    return root, state


def _copy(base, tmp_path):
    """A copy of the base run's checkpoints; returns (root, run folder)."""
    shutil.copytree(base[0] / "ckpt", tmp_path / "ckpt")
    (run,) = (tmp_path / "ckpt" / "train_frozen").iterdir()
    assert ckpt.load(run / "last.pt")["epoch"] == 2 and ckpt.load(run / "prev.pt")["epoch"] == 1
    return tmp_path, run


def _flip_tensor_bit(path):
    """Flip one bit inside the largest tensor's bytes (torch.load does not notice; the checksum must)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    header = data[info.header_offset: info.header_offset + 30]
    start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(data)


def _other_class_count(state):
    other = Detector(ModelConfig(**{**state["model_config"], "num_classes": 7})).state_dict()
    return {**state, "model": other, "ema": other, "best_model": other, "best_ema": other}


EDITS = {  # a state edit, saved with a valid checksum: only the content is wrong
    "missing key": (lambda s: {k: v for k, v in s.items() if k != "optimizer"}, "missing key(s) optimizer"),
    "no checksum": (None, "missing key(s) checksum"),
    "other class count": (_other_class_count, "where this run's network has"),
    "another run's fingerprint": (lambda s: {**s, "fingerprint": "0123456789abcdef"}, "belongs to another run"),
    "another phase": (lambda s: {**s, "phase": "unfrozen"}, "its phase is 'unfrozen'"),
    "optimizer of another shape": (lambda s: {**s, "optimizer": {**s["optimizer"], "state": {
        0: {k: v[:1] if v.dim() else v for k, v in s["optimizer"]["state"][0].items()}}}}, "optimizer state"),
}
DAMAGE = {  # bytes of the file itself
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "unreadable"),
    "random bytes": (lambda p: p.write_bytes(torch.randint(0, 256, (5000,), dtype=torch.uint8).numpy().tobytes()),
                     "unreadable"),
    "flipped bit": (_flip_tensor_bit, "checksum mismatch"),
}


def _break(path, kind):
    if kind in DAMAGE:
        DAMAGE[kind][0](path)
        return DAMAGE[kind][1]
    edit, why = EDITS[kind]
    state = ckpt.load(path)
    if edit is None:
        torch.save({k: v for k, v in state.items() if k != ckpt.CHECKSUM}, path)
    else:
        ckpt.save_atomic(edit(state), path)
    return why


def _assert_same_weights(a, b):
    for key in ("model", "ema", "best_model", "best_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    assert [r["epoch"] for r in a["history"]] == [r["epoch"] for r in b["history"]]


@pytest.mark.parametrize("kind", [*DAMAGE, *EDITS])
def test_unusable_last_is_set_aside_and_the_previous_epoch_resumes(base, tiny_records, tmp_path, monkeypatch,
                                                                   capsys, kind):
    root, run = _copy(base, tmp_path)
    why = _break(run / "last.pt", kind)
    capsys.readouterr()
    state, trained = _train(tiny_records, root, monkeypatch)
    out = capsys.readouterr().out
    (aside,) = run.glob("last.pt.bad-*")
    lines = [line for line in out.splitlines() if "set aside" in line]
    assert len(lines) == 1 and lines[0].startswith(f"train_frozen: set aside checkpoint {run / 'last.pt'} as "
                                                   f"{aside.name}: ") and why in lines[0], lines
    assert "resuming train_frozen from epoch 2" in out and trained == 1
    _assert_same_weights(state, base[1])
    assert ckpt.load(run / "last.pt")["epoch"] == 2 and ckpt.load(run / "prev.pt")["epoch"] == 1


def test_with_both_files_unusable_the_phase_starts_fresh(base, tiny_records, tmp_path, monkeypatch, capsys):
    root, run = _copy(base, tmp_path)
    _break(run / "last.pt", "truncated")
    _break(run / "prev.pt", "another run's fingerprint")
    capsys.readouterr()
    state, trained = _train(tiny_records, root, monkeypatch)
    out = capsys.readouterr().out
    assert out.count("set aside checkpoint") == 2 and "starting fresh" in out and trained == 2
    assert sorted(p.name.split(".bad-")[0] for p in run.glob("*.bad-*")) == ["last.pt", "prev.pt"]
    _assert_same_weights(state, base[1])


def test_another_environment_resumes_with_one_warning(base, tiny_records, tmp_path, capsys):
    root, run = _copy(base, tmp_path)
    state = ckpt.load(run / "last.pt")
    ckpt.save_atomic({**state, "env": {**state["env"], "threads": 64, "torch": "2.0.0", "device": "cuda"}},
                     run / "last.pt")
    capsys.readouterr()
    _train(tiny_records, root)
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert warnings == [f"train_frozen: warning: resuming in another environment (device cuda -> cpu; threads 64 -> "
                        f"{torch.get_num_threads()}; torch 2.0.0 -> {torch.__version__}): the result is equivalent "
                        "to, not bitwise equal to, an uninterrupted run"]
    assert not list(run.glob("*.bad-*"))


def test_checkpoint_records_the_environment(base):
    env = ckpt.load(next((base[0] / "ckpt" / "train_frozen").glob("*/last.pt")))["env"]
    amp = accel.amp_dtype(PARAMS.train, torch.device("cpu"))
    assert env == resume.environment(torch.device("cpu"), amp) | {"threads": PARAMS.train.threads}
    assert env["autocast"] == ("bfloat16" if accel.cpu_has_bf16() else "none")
    assert {"device", "threads", "torch", "torchvision", "numpy", "cpu_bf16"} <= set(env)


def test_cpu_checkpoint_resumes_with_an_enabled_grad_scaler(base, tiny_records, tmp_path, monkeypatch, capsys):
    """As on CUDA with float16: the CPU run's scaler state is empty, the resuming scaler is enabled."""
    root, _ = _copy(base, tmp_path)
    monkeypatch.setattr(accel, "grad_scaler", lambda t, device: torch.amp.GradScaler("cpu", enabled=True))
    state, trained = _train(tiny_records, root, monkeypatch)
    assert trained == 0 and "resuming train_frozen from epoch 3" in capsys.readouterr().out
    _assert_same_weights(state, base[1])


def test_grad_scaler_state_is_restored_only_where_it_means_something(tmp_path):
    empty_on = torch.amp.GradScaler("cpu", enabled=True)
    with pytest.raises(RuntimeError, match="empty"):  # what resuming a CPU checkpoint with amp on CUDA hit
        empty_on.load_state_dict({})
    resume.restore_scaler(empty_on, {})
    assert empty_on.state_dict() == torch.amp.GradScaler("cpu", enabled=True).state_dict()
    used = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0 ** 10, growth_interval=3)
    used.load_state_dict({**used.state_dict(), "scale": 512.0, "_growth_tracker": 2})
    ckpt.save_atomic({"scaler": used.state_dict()}, tmp_path / "s.pt")
    again = torch.amp.GradScaler("cpu", enabled=True)
    resume.restore_scaler(again, ckpt.load(tmp_path / "s.pt")["scaler"])
    assert again.state_dict() == used.state_dict() and again.get_scale() == 512.0
    off = torch.amp.GradScaler("cpu", enabled=False)
    resume.restore_scaler(off, used.state_dict())  # a float16 state resumed without float16: nothing to scale
    assert off.state_dict() == {}


def test_disk_full_during_training_keeps_the_previous_checkpoint(base, tiny_records, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        full_disk(m, "last.pt", after=1)
        with pytest.raises(atomic.WriteError) as err:
            _train(tiny_records, tmp_path)
    (run,) = (tmp_path / "ckpt" / "train_frozen").iterdir()
    assert str(err.value) == (f"train_frozen: cannot write {run / 'last.pt'}: No space left on device (ENOSPC); kept: "
                              f"the previous checkpoint {run / 'last.pt'} (1 epoch of this phase done); free space "
                              "and rerun the same command to resume")
    assert ckpt.load(run / "last.pt")["epoch"] == 1 and not list(run.glob("*.tmp"))
    state, trained = _train(tiny_records, tmp_path, monkeypatch)
    assert trained == 1
    _assert_same_weights(state, base[1])


def _stage(tmp_path, tiny_records, monkeypatch):
    """stages/train.py (frozen) as a module with argv set; returns (module, its --out path)."""
    write_lines(tmp_path / "train.txt", tiny_records[:16])
    write_lines(tmp_path / "val.txt", tiny_records[16:])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(RAW), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("train_stage", REPO / "stages" / "train.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.setattr(stage.signal, "signal", lambda *a: None)  # keep pytest's own SIGTERM handling
    out = tmp_path / "models" / "frozen.pt"
    monkeypatch.setattr(sys, "argv", ["train.py", "--phase", "frozen", "--params", str(tmp_path / "params.yaml"),
                                      "--train", str(tmp_path / "train.txt"), "--val", str(tmp_path / "val.txt"),
                                      "--out", str(out), "--metrics", str(tmp_path / "frozen.tsv"),
                                      "--ckpt-dir", str(tmp_path / "ckpt")])
    return stage, out


def test_stage_refuses_a_run_another_process_trains(base, tiny_records, tmp_path, monkeypatch, capsys):
    stage, out = _stage(tmp_path, tiny_records, monkeypatch)
    inputs = [str(tmp_path / "train.txt"), str(tmp_path / "val.txt")]
    run = tmp_path / "ckpt" / "train_frozen" / training.run_fingerprint(PARAMS, training.phase_of(PARAMS, "frozen"),
                                                                        inputs)
    monkeypatch.setattr(runlock, "BUSY_WAIT_S", 0.2)
    with runlock.acquire(run, "the other tool"):  # another open file: flock refuses it as it would another process
        assert stage.main() == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: train_frozen: {run} is in use by pid ") and "kill " in err
    assert not out.exists() and not (run / "last.pt").exists()
    assert stage.main() == 0 and ckpt.load(out)["epoch"] == 2  # the lock is gone with its holder
    assert ckpt.load(run / "last.pt")["epoch"] == 2


def test_stage_disk_full_on_export_is_one_line_and_rerun_writes_it(base, tiny_records, tmp_path, monkeypatch,
                                                                    capsys):
    stage, out = _stage(tmp_path, tiny_records, monkeypatch)
    with monkeypatch.context() as m:
        full_disk(m, "frozen.pt")
        assert stage.main() == 1
    err = capsys.readouterr().err.strip()  # training's progress bars, then the error
    assert "Traceback" not in err and err.count("error") == 1
    assert err.splitlines()[-1] == (f"error: cannot write {out}: No space left on device (ENOSPC); kept: every trained epoch in "
                   f"{tmp_path / 'ckpt'}/ (rerun the same command after freeing space: it trains nothing and "
                   "writes the outputs again)")
    assert not out.exists() and not list(out.parent.iterdir())
    assert stage.main() == 0
    assert "resuming train_frozen from epoch 3" in capsys.readouterr().out
    _assert_same_weights({**ckpt.load(out), "best_model": {}, "best_ema": {}},
                         {**base[1], "best_model": {}, "best_ema": {}})


def test_exported_weights_are_verified_on_load(base, tmp_path):
    path = tmp_path / "best.pt"
    ckpt.save_atomic(training.export_weights(base[1], "best"), path)
    assert isinstance(ckpt.load(path)[ckpt.CHECKSUM], str)
    load_detector(path)
    _flip_tensor_bit(path)
    with pytest.raises(ckpt.CheckpointError, match="checksum mismatch.*rerun the stage that wrote it"):
        load_detector(path)


def _toy_parts(seed: int = 0) -> resume.Trainables:
    from detpipe.train.engine import ModelEMA
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    return resume.Trainables(model, ModelEMA(model, 0.9), optimizer, scheduler,
                             torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0 ** 8, growth_interval=1))


def _toy_step(parts: resume.Trainables) -> None:
    x = torch.randn(5, 6)  # from the global RNG, which the checkpoint carries
    loss = parts.model(x).square().mean()
    parts.optimizer.zero_grad()
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    parts.ema.update(parts.model)


def test_trainables_state_holds_everything_the_next_step_depends_on(tmp_path):
    """Restored into freshly built objects, a saved state continues exactly as the original does."""
    a = _toy_parts()
    for _ in range(3):
        _toy_step(a)
    ckpt.save_atomic(a.state(), tmp_path / "s.pt")
    b = _toy_parts(seed=1)  # other initial weights: all of them must come from the file
    b.restore(ckpt.load(tmp_path / "s.pt"))
    assert b.scaler.get_scale() == a.scaler.get_scale() != 2.0 ** 8
    rng = torch.get_rng_state()  # restored from the file: both steps draw the same batch
    _toy_step(a)
    torch.set_rng_state(rng)
    _toy_step(b)
    assert ckpt.checksum(a.state()) == ckpt.checksum(b.state())


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_automatic_threads_are_chosen_at_a_fresh_start_and_kept_on_resume(base, tiny_records, tmp_path, monkeypatch,
                                                                          capsys, restore_threads):
    """threads 0: the count training_threads() picks (here 1, as next to a busy process) trains the phase and
    is recorded; a resume takes the recorded count, not a new pick, so it ends bitwise where the base ran."""
    auto = from_dict(Params, {**RAW, "train": {**RAW["train"], "threads": 0}})
    monkeypatch.setattr(training, "usable_cpus", lambda: 2)
    monkeypatch.setattr(training, "training_threads", lambda: (1, "1 of 2 usable CPUs: busy"))
    root = tmp_path / "auto"
    state = training.train_phase(auto, "frozen", tiny_records[:16], tiny_records[16:], [], root / "ckpt", root / "h.tsv")
    assert "train_frozen: threads: 1 of 2 usable CPUs: busy" in capsys.readouterr().out
    assert state["env"]["threads"] == 1
    assert all(torch.equal(state["model"][k], v) for k, v in base[1]["model"].items())  # base trained on 1 thread

    (run,) = (root / "ckpt" / "train_frozen").iterdir()
    (run / "last.pt").unlink()  # interrupted after epoch 1: resumes from prev.pt

    def no_new_pick():
        raise AssertionError("a resumed phase must keep its recorded thread count")
    monkeypatch.setattr(training, "training_threads", no_new_pick)
    torch.set_num_threads(2)
    resumed = training.train_phase(auto, "frozen", tiny_records[:16], tiny_records[16:], [], root / "ckpt",
                                   root / "h.tsv")
    assert torch.get_num_threads() == 1 and "warning" not in capsys.readouterr().out
    assert all(torch.equal(resumed["model"][k], v) for k, v in base[1]["model"].items())

