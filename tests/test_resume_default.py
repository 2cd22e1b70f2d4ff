"""kill -9 mid-epoch and resume, on the DEFAULT model and recipe, ends bitwise equal to an uninterrupted run.

The shortened default config: params.yaml as shipped (CSPDarknet n, channels_last, bf16 autocast
where the CPU has it, mosaic, EMA, AdamW, warm-up and cosine schedule), with only the size of the
run cut down: 8 train / 4 val images at 64 px, batch 4, 2 + 2 epochs, one thread. The stage script
runs in a child that is SIGKILLed after an optimizer step in the middle of an epoch (so the
in-memory weights are ahead of the last checkpoint), in the frozen and in the unfrozen phase; the
same command then resumes. The uninterrupted reference runs in this process.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from detpipe.train import accel
from detpipe.model import checkpoint as ckpt
from detpipe.train import phase as training
from detpipe.data.annotations import read_lines, write_lines
from detpipe.params import load_params
from tests.conftest import CLASSES, REPO

EPOCHS, BATCH, TRAIN, VAL = 2, 4, 8, 4
STEPS = TRAIN // BATCH  # optimizer steps per epoch
# The real stage script, with the optimizer's `kill_at`-th step followed by a marker and a long sleep.
CHILD = """
import runpy, sys, time, torch
kill_at, calls = int(sys.argv.pop(1)), []
real = torch.optim.AdamW.step
def step(self, *a, **k):
    out = real(self, *a, **k)
    calls.append(1)
    if len(calls) == kill_at:
        print("mid-epoch", flush=True)
        time.sleep(300)
    return out
torch.optim.AdamW.step = step
sys.argv[0] = "stages/train.py"
runpy.run_path("stages/train.py", run_name="__main__")
"""


def _project(tmp: Path, records) -> Path:
    tmp.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["classes"] = list(CLASSES)
    params["model"]["imgsz"] = 64
    params["train"].update(freeze_epochs=EPOCHS, unfreeze_epochs=EPOCHS, freeze_batch_size=BATCH,
                           unfreeze_batch_size=BATCH, threads=1)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    write_lines(tmp / "train.txt", records[:TRAIN])
    write_lines(tmp / "val.txt", records[TRAIN:TRAIN + VAL])
    return tmp


def _stage_cmd(tmp: Path, phase: str) -> list[str]:
    out = {"frozen": ["--out", str(tmp / "frozen.pt")],
           "unfrozen": ["--init", str(tmp / "frozen.pt"), "--out", str(tmp / "best.pt"), "--last", str(tmp / "last.pt")]}
    return ["--phase", phase, "--params", str(tmp / "params.yaml"), "--train", str(tmp / "train.txt"), "--val",
            str(tmp / "val.txt"), *out[phase], "--metrics", str(tmp / f"{phase}.tsv"), "--ckpt-dir", str(tmp / "ckpt")]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}


def _kill_mid_epoch(tmp: Path, phase: str, kill_at: int) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(kill_at), *_stage_cmd(tmp, phase)], cwd=REPO,
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    log = []
    for line in child.stdout:
        log.append(line)
        if line.strip() == "mid-epoch":
            break
    else:
        raise AssertionError(f"the child exited ({child.wait()}) before step {kill_at}:\n{''.join(log)[-3000:]}")
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL


def _rerun(tmp: Path, phase: str) -> str:
    proc = subprocess.run([sys.executable, "stages/train.py", *_stage_cmd(tmp, phase)], cwd=REPO, env=_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _reference(tmp: Path) -> dict[str, dict]:
    """The uninterrupted run, through the same library calls the stage makes."""
    params = load_params(tmp / "params.yaml")
    train, val = read_lines(tmp / "train.txt"), read_lines(tmp / "val.txt")
    inputs = [str(tmp / "train.txt"), str(tmp / "val.txt")]
    frozen = training.train_phase(params, "frozen", train, val, inputs, tmp / "ckpt", tmp / "frozen.tsv")
    ckpt.save_atomic(training.export_weights(frozen, "last"), tmp / "frozen.pt")
    unfrozen = training.train_phase(params, "unfrozen", train, val, inputs + [str(tmp / "frozen.pt")], tmp / "ckpt",
                                    tmp / "unfrozen.tsv", tmp / "frozen.pt")
    return {"frozen.pt": training.export_weights(frozen, "last"), "best.pt": training.export_weights(unfrozen, "best"),
            "last.pt": training.export_weights(unfrozen, "last")}


def test_default_model_kill_9_mid_epoch_resumes_bitwise(tiny_records, tmp_path):
    want = _reference(_project(tmp_path / "reference", tiny_records))
    tmp = _project(tmp_path / "killed", tiny_records)

    _kill_mid_epoch(tmp, "frozen", kill_at=STEPS + 1)  # one step into epoch 2 of 2
    assert "resuming train_frozen from epoch 2" in _rerun(tmp, "frozen")
    _kill_mid_epoch(tmp, "unfrozen", kill_at=STEPS + 1)  # one step into epoch 4 (the unfrozen phase's 2nd)
    assert "resuming train_unfrozen from epoch 4" in _rerun(tmp, "unfrozen")

    for name, reference in want.items():
        got = ckpt.load(tmp / name)
        for key in ("model", "ema"):
            assert got[key].keys() == reference[key].keys()
            for tensor in reference[key]:
                assert torch.equal(got[key][tensor], reference[key][tensor].cpu()), f"{name}:{key}.{tensor}"
        assert got["best"] == reference["best"] and got["epoch"] == reference["epoch"] == EPOCHS

    # It was the default recipe: CSPDarknet n, channels_last weights, bf16 autocast where the CPU has it.
    last = ckpt.load(next((tmp / "ckpt" / "train_unfrozen").glob("*/last.pt")))
    assert (last["model_config"]["backbone"], last["model_config"]["scale"]) == ("cspdarknet", "n")
    assert last["env"]["autocast"] == ("bfloat16" if accel.cpu_has_bf16() else "none")
    convs = [t for t in last["model"].values() if t.dim() == 4 and t.shape[1] > 1 and t.shape[2] > 1]
    assert convs and all(t.is_contiguous(memory_format=torch.channels_last) for t in convs)
    assert last["params"]["train"]["mosaic"] > 0 and last["params"]["train"]["optimizer"] == "adamw"
    assert last["params"]["train"]["lr_schedule"] == "cosine" and last["ema_updates"] == 2 * EPOCHS * STEPS
