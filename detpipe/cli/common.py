"""What the commands share: the program name in help texts, the `--weights` default and `--backend`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from ..params import InferBackend

PROG = "detpipe"
DEFAULT_WEIGHTS = Path("models/best.pt")  # where `dvc repro` puts the best model


class CliError(ValueError):
    """A command-line mistake the user can fix; the message is one line naming the flag."""


def prog(command: str) -> str:
    return f"{PROG} {command}"


def add_weights_arg(parser: argparse.ArgumentParser, what: str = "a detpipe checkpoint (.pt) or an exported .onnx") -> None:
    parser.add_argument("--weights", help=f"{what}; default {DEFAULT_WEIGHTS} when it exists (what `dvc repro` trains)")


def resolve_weights(given: str | None) -> str:
    """--weights as given, or models/best.pt when it exists; CliError naming the flag otherwise."""
    if given is None:
        if DEFAULT_WEIGHTS.is_file():
            return str(DEFAULT_WEIGHTS)
        raise CliError(f"--weights not given and {DEFAULT_WEIGHTS} does not exist here: train it with "
                       "`dvc repro`, run from the project folder, or pass --weights PATH")
    if not Path(given).is_file():
        raise CliError(f"--weights {given}: no such file (train with `dvc repro`, or give the path of a "
                       f"detpipe .pt/.onnx model)")
    return given


def add_backend_arg(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--backend", default=default, choices=get_args(InferBackend),
                        help="PyTorch weights: auto = onnxruntime on the CPU when installed (the same boxes, about "
                             "twice as fast), PyTorch on CUDA; or torch, onnxruntime (default %(default)s)")
