#!/usr/bin/env bash
# GPU smoke test of detpipe's CUDA paths (no network, tiny synthetic data, about 5-10 min on one
# GPU). One PASS / FAIL / SKIP line per check; exit 1 if a check failed. Without a CUDA GPU every
# check is a SKIP and the exit code is 0. The checks are in scripts/gpu_smoke.py.
#
#   scripts/gpu_smoke.sh [--workdir DIR] [--only name,name] [--list]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" scripts/gpu_smoke.py "$@"
