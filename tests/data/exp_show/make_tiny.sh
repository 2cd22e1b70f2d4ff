#!/bin/sh
# Regenerates tiny.json: real `dvc exp show --json` output of a throwaway DVC repo whose one stage
# writes a reports/metrics.json with the fields of detpipe's headline metrics (no training), with
# a baseline commit, two finished experiments, one failed and one queued experiment.
#   sh tests/data/exp_show/make_tiny.sh   (with the project's venv active; takes ~30 s)
set -eu
out=$(cd "$(dirname "$0")" && pwd)/tiny.json
tmp=$(mktemp -d)
cd "$tmp"
git init -q && dvc init -q
cat > params.yaml <<'YAML'
lr: 0.004
seed: 0
train:
  mosaic: 0.5
  epochs: 3
model:
  scale: n
YAML
cat > score.py <<'PY'
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))
if p["lr"] < 0:
    raise SystemExit("lr must be positive")
m = round(0.9 - abs(p["lr"] - 0.004) * 10 - 0.05 * p["train"]["mosaic"], 6)
os.makedirs("reports", exist_ok=True)
json.dump({"map50": m, "map50_95": round(m * 0.7, 6), "precision": 0.95, "recall": 0.73, "f1": 0.82,
           "best_val_map50": 0.9, "verdict": "good fit"}, open("reports/metrics.json", "w"))
PY
dvc stage add -q -n report -d score.py -p lr,train.mosaic,train.epochs,model.scale -O reports/metrics.json python score.py
sed -i 's/^stages:/metrics:\n- reports\/metrics.json\nstages:/' dvc.yaml
dvc repro -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm baseline
dvc exp run -q -n lr-half -S lr=0.002
dvc exp run -q -n no-mosaic -S train.mosaic=0.0
# A failed experiment is only recorded when it ran from the queue.
dvc exp run -q --queue -n broken -S lr=-1
dvc queue start -q -j 1
for _ in $(seq 60); do dvc queue status | grep -q 'broken.*Failed' && break; sleep 2; done
dvc queue stop -q || true
dvc exp run -q --queue -n later -S train.epochs=10
dvc exp show --json > "$out"
echo "wrote $out from $tmp"
