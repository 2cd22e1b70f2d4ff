"""scripts/gpu_smoke.sh on a machine without a GPU: it says so, skips every check and exits 0."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

# What the smoke test must cover on a GPU (issue #20); each is one check of scripts/gpu_smoke.py.
REQUIRED = ("cuda_nms", "train_fp16_frozen", "train_fp16_unfrozen", "train_bf16_both_phases",
            "checkpoint_keys_and_scaler", "resume_cpu_to_cuda", "resume_cuda_to_cpu", "kill9_and_resume",
            "predict_cuda_vs_cpu", "fps_cuda", "half_precision_inference", "onnx_on_cuda", "oom_message",
            "compile_with_recompiles_logged", "host_syncs_per_step", "repeatability", "ddp_two_gpus_sync_bn")


def _smoke(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever the machine
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_smoke.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)


def test_without_a_gpu_every_check_is_skipped_and_the_exit_code_is_0():
    names = _smoke("--list").stdout.split()
    assert set(REQUIRED) <= set(names), sorted(set(REQUIRED) - set(names))
    p = _smoke()
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("gpu_smoke: no CUDA GPU present") and "nothing was run on a GPU" in lines[0]
    assert lines[1:] == [f"SKIP {n}: no CUDA GPU" for n in names]
