"""Soak test of resume (not in CI): kill `dvc repro` at random moments, rerun, compare bit for bit.

Builds the tiny project of tests/test_e2e.py, runs one uninterrupted `dvc repro` as the reference,
then for each trial starts `dvc repro` in a fresh copy, kills its whole process group (SIGKILL or
SIGINT) at a random moment — a random time, a random epoch, or while a checkpoint is being
written (its .tmp file exists) — and reruns `dvc repro` until it succeeds. Prints how many trials
ended bitwise equal to the reference, the resume overhead (interrupted + resumed wall time minus
the uninterrupted time, per resume) and the size of .ckpt/ after a run.

    python bench/soak_resume.py [--trials 20] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_resume_kill import (FROZEN, UNFROZEN, assert_bitwise_equal, env,  # noqa: E402
                                    last_epoch, setup_repo, weights)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def tmp_files(repo: Path) -> list[Path]:
    return list((repo / ".ckpt").glob("*/*/.last.pt.*.tmp"))


def repro(repo: Path) -> tuple[subprocess.Popen, float]:
    log = open(repo / "soak.log", "a", encoding="utf-8")
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env(repo), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, time.monotonic()


def wait_group(proc: subprocess.Popen) -> None:
    proc.wait()
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def kill_when(proc: subprocess.Popen, repo: Path, moment: tuple, sig: int) -> str:
    """Wait for the moment, kill the group; returns what the kill hit."""
    kind, value = moment
    start = time.monotonic()
    writes = 0
    while proc.poll() is None:
        if kind == "time" and time.monotonic() - start >= value:
            break
        if kind == "epoch":
            tsv = repo / "reports/train" / ("frozen.tsv" if value <= FROZEN else "unfrozen.tsv")
            if last_epoch(tsv) >= value:
                break
        if kind == "write" and tmp_files(repo):  # the value-th checkpoint write is under way
            writes += 1
            if writes >= value:
                break
            while tmp_files(repo) and proc.poll() is None:
                time.sleep(0.001)
        time.sleep(0.002 if kind == "write" else 0.01)
    if proc.poll() is not None:
        return "finished before the kill"
    during_write = bool(tmp_files(repo))
    os.killpg(proc.pid, sig)
    wait_group(proc)
    return f"{signal.Signals(sig).name} at {kind}={value}" + (" (during a checkpoint write)" if during_write else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak_resume_"))

    ref_repo = setup_repo(work, "reference")
    proc, t0 = repro(ref_repo)
    if proc.wait() != 0:
        sys.exit(f"reference run failed: {ref_repo / 'soak.log'}")
    t_ref = time.monotonic() - t0
    reference = weights(ref_repo)
    ckpt_size = du(ref_repo / ".ckpt")
    print(f"reference: dvc repro in {t_ref:.1f} s; .ckpt/ after the run: {ckpt_size / 1e6:.1f} MB "
          f"in {len(list((ref_repo / '.ckpt').glob('*/*/last.pt')))} checkpoint(s)", flush=True)

    exact, overheads, resumes = 0, [], 0
    total_epochs = FROZEN + UNFROZEN
    for trial in range(1, args.trials + 1):
        repo = setup_repo(work, f"trial{trial:02d}")
        kind = ("time", "epoch", "write")[trial % 3]
        value = {"time": round(rng.uniform(2, t_ref * 0.9), 2), "epoch": rng.randint(1, total_epochs),
                 "write": rng.randint(1, total_epochs)}[kind]
        sig = rng.choice([signal.SIGKILL, signal.SIGINT])
        proc, t0 = repro(repo)
        hit = kill_when(proc, repo, (kind, value), sig)
        runs = 0
        while True:
            runs += 1
            rerun, _ = repro(repo)
            if rerun.wait() == 0 or runs >= 3:
                break
        elapsed = time.monotonic() - t0
        log = (repo / "soak.log").read_text(encoding="utf-8", errors="replace")
        resumed = [line for line in log.splitlines() if line.startswith("resuming ")]
        try:
            assert rerun.returncode == 0, f"dvc repro failed {runs} times"
            assert_bitwise_equal(weights(repo), reference)
            ok = True
            exact += 1
        except Exception as exc:  # noqa: BLE001 - report it and keep soaking
            ok, hit = False, f"{hit}; {str(exc).splitlines()[0]}"
        if "finished" not in hit:
            resumes += 1
            overheads.append(elapsed - t_ref)
        print(f"trial {trial:2d}: {hit}; {'; '.join(resumed) or 'no epoch-level resume'}; "
              f"{'exact' if ok else 'NOT EXACT'}; {elapsed:.1f} s in all", flush=True)

    print(f"\n{exact}/{args.trials} exact")
    if overheads:
        print(f"resume overhead: mean {statistics.mean(overheads):.1f} s, median {statistics.median(overheads):.1f} s, "
              f"max {max(overheads):.1f} s per resume ({resumes} resumes; interrupted + resumed wall time "
              f"minus the uninterrupted {t_ref:.1f} s)")
    print(f".ckpt/ after a run: {ckpt_size / 1e6:.1f} MB (tiny config: imgsz 96, shufflenet_v2_x0_5, neck 16)")
    print(f"work dir: {work}")
    return 0 if exact == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
