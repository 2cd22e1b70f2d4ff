"""`detpipe COMMAND ...` (or `python -m detpipe COMMAND ...`): the user-facing commands beside the
pipeline stages. Training and the test mAP are pipeline stages (`dvc repro`), not commands."""
from __future__ import annotations

import difflib
import importlib
import sys

from . import __version__

# Each command is a module with `main(argv: list[str]) -> int`; imported lazily so that
# `detpipe evaluate` does not pay for torch.
COMMANDS = {
    "evaluate": ("detpipe.cli.evaluate", "score detections of any tool against ground truth (VOC and COCO mAP)"),
    "compare": ("detpipe.cli.compare", "the workspace and `dvc exp run` experiments: headline metrics and the params that differ"),
    "check-data": ("detpipe.cli.check_data", "validate a VOC/COCO/YOLO dataset without running the pipeline"),
    "predict": ("detpipe.cli.predict", "detect objects in images, folders, globs, list files, videos or a camera"),
    "fps": ("detpipe.cli.fps", "time a model: ms per image per part, images/s at batch 1, 8, 32"),
    "export": ("detpipe.cli.export", "export a model to ONNX and check it against PyTorch"),
    "summary": ("detpipe.cli.summary", "parameters and GFLOPs of the model at its input size"),
    "import-weights": ("detpipe.cli.import_weights", "convert a YOLOv8/YOLO11 state dict from Ultralytics for model.pretrained"),
}

_TRAIN = "training is a pipeline stage: run `dvc repro` (or `snakemake --cores 1`); `dvc exp run -S lr=1e-4` tries a change"
_SCORE = ("`dvc repro` computes the test mAP (reports/map/metrics.json); "
          "`detpipe evaluate --gt DIR --det DIR` scores detections, e.g. those of `detpipe predict --save-txt`")
# What users of `yolo` and other detection tools type, and what to run here instead.
INSTEAD = {
    "train": _TRAIN, "fit": _TRAIN, "finetune": _TRAIN,
    "resume": "rerun `dvc repro` (or the `dvc exp run` / `snakemake` command): an interrupted run resumes by itself",
    "val": _SCORE, "validate": _SCORE, "eval": _SCORE, "test": _SCORE, "map": _SCORE,
    "detect": "`detpipe predict SOURCE`", "infer": "`detpipe predict SOURCE`",
    "benchmark": "`detpipe fps` times the model", "speed": "`detpipe fps` times the model",
    "info": "`detpipe summary`", "check": "`detpipe check-data`", "tune": "queue experiments with "
    "`dvc exp run --queue -S lr=...` and `dvc queue start` (README, Experiments)",
}


def usage() -> str:
    lines = ["usage: detpipe COMMAND [options]   (or: python -m detpipe COMMAND [options])",
             "       detpipe --version", "", "commands:"]
    lines += [f"  {name:<12} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Training and the test mAP are pipeline stages: `dvc repro`. `detpipe COMMAND -h` shows a "
              "command's options."]
    return "\n".join(lines)


def unknown(command: str) -> str:
    """One line saying what to run instead of a command detpipe does not have."""
    key = command.lower().lstrip("-")
    if key in INSTEAD:
        return f"detpipe: there is no `{command}` command; {INSTEAD[key]}"
    near = difflib.get_close_matches(key, list(COMMANDS) + list(INSTEAD), n=1, cutoff=0.6)
    if near and near[0] in COMMANDS:
        return f"detpipe: unknown command `{command}`; did you mean `detpipe {near[0]}`?"
    if near:
        return f"detpipe: unknown command `{command}`; {INSTEAD[near[0]]}"
    return f"detpipe: unknown command `{command}`; commands: {', '.join(COMMANDS)} (`detpipe --help`)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("--version", "-V", "version"):
        print(f"detpipe {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(unknown(argv[0]), file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
