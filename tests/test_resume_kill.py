"""Kill and resume: the real commands, killed mid-training, then rerun unchanged, end bitwise equal.

Each test starts `dvc repro`, `dvc exp run -S …` or `snakemake --cores 1 map` in its own process
group, waits until the training TSV shows a given epoch, sends SIGINT (Ctrl-C) or SIGKILL to the
whole group, reruns the same command and compares models/best.pt and models/last.pt tensor by
tensor with an uninterrupted `dvc repro` of the same params (one per params set, shared).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from detpipe.model import checkpoint as ckpt
from tests.test_e2e import BIN, make_repo

pytestmark = pytest.mark.timeout(900)
ENV = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "DVC_NO_ANALYTICS": "1"}


def env(repo: Path) -> dict[str, str]:
    # The stages import the repo's own copy of detpipe (the code DVC hashes), not the editable install.
    return {**ENV, "PYTHONPATH": str(repo)}


def run(cmd: list[str], repo: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=repo, env=env(repo), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc
FROZEN, UNFROZEN = 3, 3          # epochs per phase: enough to land a kill in the middle of either
FIRST_UNFROZEN = FROZEN + 1      # global number of the first unfrozen epoch


def setup_repo(tmp: Path, name: str, lr: float | None = None, **train) -> Path:
    """make_repo's tiny project with a few epochs per phase, committed."""
    repo = make_repo(tmp, name)
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(freeze_epochs=FROZEN, unfreeze_epochs=UNFROZEN, **train)
    if lr is not None:
        params["lr"] = lr
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "kill-test params"], repo)
    return repo


def _default_sigint() -> None:
    # A background job of a non-interactive shell inherits SIGINT ignored; Ctrl-C must reach the run.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cmd: list[str], repo: Path, log: Path) -> subprocess.Popen:
    """Start `cmd` in a new process group (so a kill reaches every process it spawned)."""
    with open(log, "w", encoding="utf-8") as fh:
        return subprocess.Popen(cmd, cwd=repo, env=env(repo), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_default_sigint)


def last_epoch(tsv: Path) -> int:
    """The highest epoch in a training TSV (0 if the file or its first row is not there yet)."""
    try:
        rows = tsv.read_text(encoding="utf-8").splitlines()[1:]
    except FileNotFoundError:
        return 0
    epochs = [int(r.split("\t")[0]) for r in rows if r.split("\t")[0].isdigit()]
    return max(epochs, default=0)


def kill_group_at(proc: subprocess.Popen, tsv: Path, epoch: int, sig: int, log: Path, timeout: float = 300) -> int:
    """Send `sig` to proc's whole group as soon as `tsv` shows `epoch`; wait until the group is gone."""
    deadline = time.monotonic() + timeout
    while last_epoch(tsv) < epoch:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"epoch {epoch} never showed up in {tsv}:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)
    os.killpg(proc.pid, sig)
    code = proc.wait(timeout=120)
    for _ in range(600):  # children (stage script, loader workers, tee) may outlive the leader briefly
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"process group {proc.pid} survived {signal.Signals(sig).name}")
    return code


def epochs_done(repo: Path, phase: str) -> int:
    """Completed epochs in the (single) checkpoint of a phase, as the resumed run will see them."""
    files = list((repo / ".ckpt" / f"train_{phase}").glob("*/last.pt"))
    assert len(files) == 1, files
    return int(ckpt.load(files[0])["epoch"])


def assert_dvc_skipped(log: str, stages: tuple[str, ...]) -> None:
    for stage in stages:
        assert f"Running stage '{stage}'" not in log, f"{stage} ran again"
        assert (f"Stage '{stage}' didn't change, skipping" in log
                or f"Stage '{stage}' is cached - skipping run" in log), f"{stage} not reported as skipped"


def assert_snakemake_skipped(log: str, rules: tuple[str, ...]) -> None:
    for rule in rules:
        assert f"rule {rule}:" not in log, f"{rule} ran again"


def weights(repo: Path) -> dict[str, dict]:
    return {name: ckpt.load(repo / "models" / name) for name in ("best.pt", "last.pt")}


def assert_bitwise_equal(got: dict[str, dict], want: dict[str, dict]) -> None:
    for name in want:
        for key in ("model", "ema"):
            a, b = got[name][key], want[name][key]
            assert a.keys() == b.keys(), f"{name}:{key} has different tensors"
            for t in b:
                assert torch.equal(a[t], b[t]), f"{name}:{key}.{t} differs from the uninterrupted run"
        assert got[name]["epoch"] == want[name]["epoch"] and got[name]["best"] == want[name]["best"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Weights of an uninterrupted `dvc repro`, one run per params set, shared by the tests."""
    cache: dict[tuple, dict] = {}

    def get(lr: float | None = None) -> dict[str, dict]:
        if lr not in cache:
            repo = setup_repo(tmp_path_factory.mktemp("reference"), "ref", lr=lr)
            run(["dvc", "repro"], repo)
            cache[lr] = weights(repo)
        return cache[lr]
    return get


def interrupt_and_rerun(tmp_path: Path, cmd: list[str], phase: str, sig: int, lr: float | None = None,
                        **train) -> tuple[Path, int, str, str]:
    """Run `cmd`, kill it one epoch into `phase`, rerun it; returns (repo, exit code, first log, rerun log)."""
    repo = setup_repo(tmp_path, "repo", lr=lr, **train)
    log = tmp_path / "interrupted.log"
    proc = start(cmd, repo, log)
    watch_epoch = 1 if phase == "frozen" else FIRST_UNFROZEN
    code = kill_group_at(proc, repo / "reports" / "train" / f"{phase}.tsv", watch_epoch, sig, log)
    first = log.read_text(encoding="utf-8")
    done = epochs_done(repo, phase)
    epochs = FROZEN if phase == "frozen" else UNFROZEN
    assert 1 <= done < epochs, f"the kill did not land inside train_{phase} ({done}/{epochs} epochs done)"
    assert code != 0, f"{' '.join(cmd)} exited 0 after {signal.Signals(sig).name}:\n{first[-3000:]}"

    proc = run(cmd, repo)  # the same command, no extra flags: must exit 0
    rerun = proc.stdout + proc.stderr  # Snakemake logs to stderr
    first_epoch = 1 if phase == "frozen" else FIRST_UNFROZEN
    assert f"resuming train_{phase} from epoch {first_epoch + done} (checkpoint" in rerun, rerun[-3000:]
    return repo, code, first, rerun


def test_dvc_repro_sigint_in_frozen_phase(tmp_path, reference):
    repo, code, first, rerun = interrupt_and_rerun(tmp_path, ["dvc", "repro"], "frozen", signal.SIGINT)
    assert "train_frozen interrupted" in first  # the stage saw Ctrl-C and exited non-zero
    assert_dvc_skipped(rerun, ("annotate", "split"))
    assert_bitwise_equal(weights(repo), reference())


def test_dvc_repro_sigkill_in_unfrozen_phase_with_two_workers(tmp_path, reference):
    # num_workers 2 here, 0 in the reference: neither the kill nor the worker count changes a bit.
    repo, code, first, rerun = interrupt_and_rerun(tmp_path, ["dvc", "repro"], "unfrozen", signal.SIGKILL,
                                                   num_workers=2)
    assert code == -signal.SIGKILL
    assert_dvc_skipped(rerun, ("annotate", "split", "train_frozen"))
    assert_bitwise_equal(weights(repo), reference())


def test_snakemake_sigkill_in_unfrozen_phase(tmp_path, reference):
    cmd = ["snakemake", "--cores", "1", "map"]
    repo, code, first, rerun = interrupt_and_rerun(tmp_path, cmd, "unfrozen", signal.SIGKILL)
    assert_snakemake_skipped(rerun, ("annotate", "split", "train_frozen"))
    assert "rule train_unfrozen:" in rerun
    assert (repo / "reports" / "map" / "metrics.json").exists()
    assert_bitwise_equal(weights(repo), reference())


def test_snakemake_sigint_in_frozen_phase(tmp_path, reference):
    cmd = ["snakemake", "--cores", "1", "map"]
    repo, code, first, rerun = interrupt_and_rerun(tmp_path, cmd, "frozen", signal.SIGINT)
    assert_snakemake_skipped(rerun, ("annotate", "split"))
    assert "rule train_frozen:" in rerun
    assert_bitwise_equal(weights(repo), reference())


def test_dvc_exp_run_sigkill_then_same_command(tmp_path, reference):
    cmd = ["dvc", "exp", "run", "-S", "lr=1e-4"]
    repo, code, first, rerun = interrupt_and_rerun(tmp_path, cmd, "unfrozen", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert_dvc_skipped(rerun, ("annotate", "split", "train_frozen"))
    # The workspace experiment ran in place: its checkpoints are in the project's .ckpt/, not in a
    # temporary DVC workspace that a later run would never see.
    assert len(list((repo / ".ckpt" / "train_unfrozen").iterdir())) == 1
    assert_bitwise_equal(weights(repo), reference(lr=1e-4))


# Loaded into every Python process through PYTHONPATH; pauses the train stage after its first optimizer step.
PAUSE = """
import os, sys
if os.environ.get("DETPIPE_TEST_PAUSED") and sys.argv[0].endswith("train.py"):
    import time, torch
    real = torch.optim.AdamW.step
    def step(self, *a, **k):
        out = real(self, *a, **k)
        open(os.environ["DETPIPE_TEST_PAUSED"], "w").close()
        time.sleep(600)
        return out
    torch.optim.AdamW.step = step
"""


def test_dvc_and_snakemake_never_train_one_run_at_once(tmp_path):
    """`dvc repro` is training; `snakemake` in the same folder reaches the same run and refuses, naming it."""
    repo = setup_repo(tmp_path, "repo")
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(PAUSE, encoding="utf-8")
    paused = tmp_path / "paused"
    with open(tmp_path / "dvc.log", "w", encoding="utf-8") as log:
        dvc = subprocess.Popen(["dvc", "repro"], cwd=repo, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True,
                               env={**env(repo), "PYTHONPATH": f"{tmp_path / 'hook'}{os.pathsep}{repo}",
                                    "DETPIPE_TEST_PAUSED": str(paused)})
    try:
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert dvc.poll() is None and time.monotonic() < deadline, (tmp_path / "dvc.log").read_text()[-3000:]
            time.sleep(0.1)
        snake = subprocess.run(["snakemake", "--cores", "1", "map"], cwd=repo, env=env(repo), capture_output=True,
                               text=True, stdin=subprocess.DEVNULL)
    finally:
        os.killpg(dvc.pid, signal.SIGKILL)
        dvc.wait()
    out = snake.stdout + snake.stderr
    errors = [line for line in out.splitlines() if line.startswith("error: train_frozen")]
    (run,) = (repo / ".ckpt" / "train_frozen").iterdir()
    assert snake.returncode != 0 and len(errors) == 1, out[-3000:]
    assert errors[0].startswith(f"error: train_frozen: {run.relative_to(repo)} is in use by pid "), errors[0]
    assert f"started by pid {dvc.pid}: " in errors[0] and "dvc repro" in errors[0], errors[0]
    assert "Traceback" not in out
