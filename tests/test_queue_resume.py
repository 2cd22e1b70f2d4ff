"""Resume where the repo is not where it was: a queued `dvc exp run` (DVC runs each in its own temp
copy of the repo), killed mid-training and queued again, continues from its last epoch; and a
whole repo moved to another path resumes its own checkpoint. Both hold because the training
fingerprint counts code by repo-relative name and content, and inputs by content."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.test_resume_kill import ENV, run, setup_repo

pytestmark = pytest.mark.timeout(900)


def _queue_env(repo: Path, ckpt_dir: Path) -> dict[str, str]:
    # Queued runs import their own snapshot's detpipe (the stage scripts put it first on sys.path).
    return {**ENV, "DETPIPE_CKPT_DIR": str(ckpt_dir)}


def _qrun(cmd: list[str], repo: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _epochs_done(ckpt_dir: Path, phase: str) -> int:
    """Epochs recorded by the newest run folder of a phase (its run.json / TSV is not needed)."""
    best = 0
    for run_json in (ckpt_dir / f"train_{phase}").glob("*/last.pt"):
        best = max(best, 1)
        try:
            import torch
            best = max(best, int(torch.load(run_json, weights_only=True, map_location="cpu")["epoch"]))
        except Exception:  # being written or rotated right now: look again
            pass
    return best


def _train_pids(phase: str, repo: Path) -> list[int]:
    """Training processes of this repo's queue (DVC runs them in temp copies under .dvc/tmp/exps)."""
    out = subprocess.run(["pgrep", "-f", f"stages/train.py --phase {phase}"], capture_output=True, text=True).stdout
    pids = []
    for pid in map(int, out.split()):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(repo)):
            pids.append(pid)
    return pids


def _start_queue(repo: Path, env: dict) -> None:
    """`dvc queue start`: its worker lives on detached, so it must not hold our output pipes open
    (subprocess.run would wait for the pipes' end, i.e. for the whole experiment)."""
    subprocess.run(["dvc", "queue", "start", "-j", "1"], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def _wait_queue_idle(repo: Path, env: dict, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _qrun(["dvc", "queue", "status"], repo, env).stdout
        if "Running" not in status and "Queued" not in status:
            return status
        time.sleep(2)
    raise AssertionError("the DVC queue did not finish in time")


def test_killed_queued_experiment_queued_again_resumes(tmp_path):
    repo = setup_repo(tmp_path, "queue")
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["unfreeze_epochs"] = 40                  # long enough to land a kill mid-phase
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "40 epochs"], repo)
    ckpt_dir = tmp_path / "ckpt"
    env = _queue_env(repo, ckpt_dir)
    _qrun(["dvc", "exp", "run", "--queue", "-S", "lr=0.002"], repo, env)
    _start_queue(repo, env)
    deadline = time.monotonic() + 600
    while True:                                             # mid-phase: 2 of 40 epochs saved
        pids = _train_pids("unfrozen", repo)
        if pids and _epochs_done(ckpt_dir, "unfrozen") >= 2:
            break
        assert time.monotonic() < deadline, "the queued run never reached the unfrozen phase"
        time.sleep(0.2)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    status = _wait_queue_idle(repo, env)
    assert "Failed" in status, status
    done = _epochs_done(ckpt_dir, "unfrozen")
    assert 2 <= done < 40

    _qrun(["dvc", "exp", "run", "--queue", "-S", "lr=0.002"], repo, env)
    _start_queue(repo, env)
    status = _wait_queue_idle(repo, env)
    assert "Success" in status, status
    logs = ""
    for line in status.splitlines()[1:]:
        task = line.split()[0] if line.split() else ""
        if task:
            logs += subprocess.run(["dvc", "queue", "logs", task], cwd=repo, env=env, capture_output=True,
                                   text=True).stdout
    assert f"resuming train_unfrozen from epoch {4 + done}" in logs, logs[-3000:]
    shown = json.loads(_qrun(["dvc", "exp", "show", "--json"], repo, env).stdout)
    assert "0.002" in json.dumps(shown)


def test_a_moved_repo_resumes_its_own_checkpoint(tmp_path):
    repo = setup_repo(tmp_path, "here")
    run(["dvc", "repro", "train_frozen"], repo)
    moved = tmp_path / "elsewhere" / "there"
    moved.parent.mkdir()
    shutil.move(str(repo), str(moved))                       # .ckpt/ moves with the repo
    (moved / "models" / "frozen.pt").unlink()                # force the stage to run again
    out = run(["dvc", "repro", "-f", "-s", "train_frozen"], moved).stdout
    assert "resuming train_frozen" in out and "3/3 epochs done" in out, out[-2000:]
