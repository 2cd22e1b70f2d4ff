"""The `detpipe` command: console script, --version, hints for commands it does not have, help texts
that say `detpipe`, fps medians, and the browser-playable video writer."""
from __future__ import annotations

import importlib
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import detpipe
from detpipe.infer import video
from detpipe.__main__ import COMMANDS, INSTEAD, main, unknown
from detpipe.infer.predictor import time_parts

REPO = Path(__file__).resolve().parents[1]


def test_console_script_and_version(capsys):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    target = project["project"]["scripts"]["detpipe"]
    module, func = target.split(":")
    assert getattr(importlib.import_module(module), func) is main
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "detpipe.__version__"}
    assert main(["--version"]) == 0 and capsys.readouterr().out == f"detpipe {detpipe.__version__}\n"
    proc = subprocess.run([sys.executable, "-m", "detpipe", "--version"], cwd=REPO, capture_output=True, text=True)
    assert proc.stdout.strip() == f"detpipe {detpipe.__version__}"


@pytest.mark.parametrize("command, needle", [("train", "dvc repro"), ("val", "detpipe evaluate"),
                                             ("eval", "detpipe evaluate"), ("detect", "detpipe predict"),
                                             ("predcit", "did you mean `detpipe predict`?"),
                                             ("check", "detpipe check-data"), ("xyzzy", "commands: evaluate")])
def test_unknown_commands_say_what_to_run(command, needle, capsys):
    assert main([command, "--whatever"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_hints_never_shadow_a_command():
    assert not set(INSTEAD) & set(COMMANDS)
    assert all("`" in unknown(name) for name in INSTEAD)


def test_every_help_text_says_detpipe():
    for name, (module, _) in COMMANDS.items():
        if name == "evaluate":
            continue  # detpipe/cli/evaluate.py belongs to the evaluate work; see the report
        proc = subprocess.run([sys.executable, "-m", "detpipe", name, "--help"], cwd=REPO, capture_output=True,
                              text=True)
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: detpipe {name}"), (name, proc.stdout[:80])
        assert "python -m detpipe" not in proc.stdout, name


class SlowFirstPredictor:
    """Stands in for a Predictor: the forward pass of the first timed batch takes 50 ms, the others 5 ms."""

    def __init__(self) -> None:
        self.device, self.class_names, self.calls = "cpu", ["a"], 0
        self.backend = SimpleNamespace(sync=lambda: None, device="cpu")

    def preprocess(self, images):
        return SimpleNamespace(to=lambda device: None), [None] * len(images)

    def forward(self, batch):
        self.calls += 1
        time.sleep(0.05 if self.calls == 2 else 0.005)  # call 1 is the warm-up
        return None

    def postprocess(self, out, lbs):
        return [{"scores": np.zeros(0)} for _ in lbs]


def test_fps_reports_the_median_after_warm_up():
    r = time_parts(SlowFirstPredictor(), [np.zeros((4, 4, 3), np.uint8)], batch_size=1, runs=5, warmup=1, draw=False)
    assert 4.5 < r["forward"] < 15          # the median: the slow batch does not count
    assert r["slowest"] > 45 and r["fastest"] < 15
    assert r["images_per_s"] == pytest.approx(1000 / r["total"], rel=0.05)


def test_video_writer_probes_for_real_h264(tmp_path, monkeypatch):
    """Only a probe file that reads back as H.264 counts; otherwise mp4v with a note."""
    monkeypatch.setattr(video, "read_fourcc", lambda path: "FMP4")  # OpenCV accepted avc1 but wrote MPEG-4
    assert video.probe_h264(tmp_path, (64, 48), 10.0) is None
    monkeypatch.setattr(video, "read_fourcc", lambda path: "avc1")
    assert video.probe_h264(tmp_path, (64, 48), 10.0) == "avc1"
    assert not list(tmp_path.iterdir())  # probe files removed
    writer, code, note = video.open_video_writer(tmp_path / "clip.mp4", 10.0, (65, 48))
    writer.release()
    assert code == "mp4v" and "odd frame size" in note and "ffmpeg -i" in note


def test_video_writer_on_this_machine(tmp_path, capfd):
    writer, code, note = video.open_video_writer(tmp_path / "clip.mp4", 10.0, (64, 48))
    for k in range(3):
        writer.write(np.full((48, 64, 3), 80 * k, np.uint8))
    writer.release()
    written = video.read_fourcc(tmp_path / "clip.mp4").lower()
    assert (code, note is None) in (("avc1", True), ("H264", True), ("mp4v", False))
    assert written in video.H264_TAGS if note is None else written == "fmp4"
    assert "h264_v4l2m2m" not in capfd.readouterr().err  # FFmpeg's probe failures are not shown
