"""`python -m detpipe COMMAND ...`: the user-facing commands beside the pipeline stages."""
from __future__ import annotations

import importlib
import sys

# Each command is a module with `main(argv: list[str]) -> int`; imported lazily so that
# `python -m detpipe evaluate` does not pay for torch.
COMMANDS = {
    "evaluate": ("detpipe.cli.evaluate", "score detections of any tool against ground truth (VOC and COCO mAP)"),
    "check-data": ("detpipe.cli.check_data", "validate a VOC/COCO dataset without running the pipeline"),
    "predict": ("detpipe.cli.predict", "detect objects in images, folders, globs, videos or a camera"),
    "fps": ("detpipe.cli.fps", "time a model: ms per image per part, images/s at batch 1, 8, 32"),
    "export": ("detpipe.cli.export", "export a model to ONNX and check it against PyTorch"),
    "summary": ("detpipe.cli.summary", "parameters and GFLOPs of the model at its input size"),
    "import-weights": ("detpipe.cli.import_weights", "convert a YOLOv8/YOLO11 state dict from Ultralytics for model.pretrained"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m detpipe COMMAND [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<12} {help_text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
