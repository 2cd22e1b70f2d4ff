"""A kill during a checkpoint write never leaves a corrupt checkpoint in use."""
import json
import os
import signal
import subprocess
import sys

import torch

from detpipe.model import checkpoint as ckpt
from detpipe.train import phase as training
from detpipe.data.annotations import write_lines
from detpipe.params import Params, from_dict
from tests.conftest import REPO, tiny_params

# Trains two frozen epochs; the second checkpoint write stops halfway and hangs until killed.
CHILD = """
import io, json, sys, time, torch
from detpipe.train import phase as training
from detpipe.data.annotations import read_lines
from detpipe.params import Params, from_dict
params, lines, root = from_dict(Params, json.loads(sys.argv[1])), sys.argv[2], sys.argv[3]
real_save, calls = torch.save, []
def half_save(obj, fh, *a, **k):
    calls.append(1)
    if len(calls) < 2:
        return real_save(obj, fh, *a, **k)
    buf = io.BytesIO()
    real_save(obj, buf)
    fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    fh.flush()
    print("half written", flush=True)
    time.sleep(600)
torch.save = half_save
records = read_lines(lines)
training.train_phase(params, "frozen", records[:16], records[16:], [], root + "/ckpt", root + "/h.tsv")
"""


def test_kill_during_checkpoint_write(tiny_records, tmp_path, capsys):
    raw = tiny_params("unused", freeze_epochs=2)
    params = from_dict(Params, raw)
    write_lines(tmp_path / "lines.txt", tiny_records)
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(raw), str(tmp_path / "lines.txt"),
                              str(tmp_path / "b")], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    for line in child.stdout:  # training output, then the marker
        if line.strip() == "half written":
            break
    else:
        raise AssertionError(f"the child exited ({child.wait()}) before the second checkpoint write")
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=60)

    (run_dir,) = (tmp_path / "b" / "ckpt" / "train_frozen").iterdir()
    (tmp,) = run_dir.glob(".last.pt.*.tmp")
    assert tmp.stat().st_size > 0, "the kill landed inside the write"
    assert ckpt.load(run_dir / "last.pt")["epoch"] == 1, "last.pt is still the previous, complete checkpoint"

    resumed = training.train_phase(params, "frozen", tiny_records[:16], tiny_records[16:], [],
                                   tmp_path / "b" / "ckpt", tmp_path / "b" / "h.tsv")
    assert "resuming train_frozen from epoch 2" in capsys.readouterr().out
    assert not list(run_dir.glob("*.tmp")), "the stray temp file is cleaned at the next start"
    straight = training.train_phase(params, "frozen", tiny_records[:16], tiny_records[16:], [],
                                    tmp_path / "a" / "ckpt", tmp_path / "a" / "h.tsv")
    for key in ("model", "ema", "best_model", "best_ema"):
        for name in straight[key]:
            assert torch.equal(resumed[key][name], straight[key][name]), f"{key}.{name}"
