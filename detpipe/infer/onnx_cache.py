"""The CPU's default inference backend: the PyTorch network exported once to ONNX and run by
onnxruntime, which is about twice as fast as eager PyTorch for these small convolutions
(bench/bench_infer_paths.py) and gives the same boxes to well under 1e-3 px (tests/test_backends.py).

The exported graph is cached under $DETPIPE_CACHE (default $XDG_CACHE_HOME/detpipe or
~/.cache/detpipe), in `onnx/<key>.onnx`. The key hashes everything the graph is a function of:
the weights (every tensor of the state dict), the model config, class names, input size, torch's
version and the source of the code that builds and exports the network. A cache file is written
atomically and read only from a folder that this user owns and no one else can write; otherwise
the graph is exported for this process only (one line says so). The KEEP most recently used
graphs are kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Sequence, get_args

import torch
from torch import nn

from ..atomic import write_atomic
from ..params import InferBackend
from ..pipeline.closure import code_closure
from .backends import OnnxBackend
from .onnx_graph import export_model

BACKENDS = get_args(InferBackend)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
KEEP = 16  # graphs kept in the cache (the most recently used; each is the size of its weights)
_noted: set[str] = set()


def cache_dir() -> Path:
    root = os.environ.get("DETPIPE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "detpipe"
    return Path(root) / "onnx"


def onnxruntime_missing() -> str | None:
    """Why the onnxruntime backend cannot run here (a missing package), or None."""
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def resolve_backend(backend: str, device: torch.device, dtype: str = "float32") -> str:
    """`auto` -> onnxruntime on the CPU in float32 when onnx and onnxruntime are installed (one
    line on stderr when not), torch otherwise (CUDA, float16/bfloat16); names are checked."""
    if backend not in BACKENDS:
        raise ValueError(f"predict.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if device.type != "cpu" or dtype != "float32":
        return "torch"
    missing = onnxruntime_missing()
    if missing:
        if missing not in _noted:
            _noted.add(missing)
            print(f"note: {missing} is not installed, so inference runs on PyTorch; `pip install onnx onnxruntime` "
                  "makes CPU inference about twice as fast", file=sys.stderr)
        return "torch"
    return "onnxruntime"


def graph_key(model: nn.Module, class_names: Sequence[str], imgsz: int) -> str:
    """sha256 of what the exported graph depends on (see the module docstring)."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    h.update(json.dumps({"config": config.to_dict() if config is not None else None, "classes": list(class_names),
                         "imgsz": imgsz, "torch": torch.__version__}, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for rel in code_closure(Path(__file__).resolve().relative_to(_PACKAGE_ROOT), _PACKAGE_ROOT):
        h.update(rel.encode() + (_PACKAGE_ROOT / rel).read_bytes())
    return h.hexdigest()


def private(path: Path) -> bool:
    """True when `path` belongs to this user and nobody else may write it (always on Windows)."""
    if os.name != "posix":
        return True
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def private_cache() -> Path | None:
    """The cache folder, created if need be, or None (one line on stderr) when others may write it."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if private(folder) and private(folder.parent):
            return folder
    except OSError:
        pass
    if str(folder) not in _noted:
        _noted.add(str(folder))
        print(f"note: {folder} is not a folder only you can write, so the ONNX graph is exported for this run "
              "only; set DETPIPE_CACHE or `chmod go-w` it to cache the graph", file=sys.stderr)
    return None


def export_graph(model: nn.Module, class_names: Sequence[str], imgsz: int, path: Path) -> Path:
    """Export `model` at `imgsz` (any batch size) atomically to `path` (mode 0600: a mkstemp file)."""
    with tempfile.TemporaryDirectory(prefix="detpipe-export-") as tmp:
        data = export_model(model, class_names, imgsz, Path(tmp) / "model.onnx", dynamic="batch",
                            source="detpipe inference cache").read_bytes()
    write_atomic(path, lambda fh: fh.write(data))
    return path


def cached_graph(model: nn.Module, class_names: Sequence[str], imgsz: int, folder: Path) -> Path:
    """The ONNX file of `model` at `imgsz` in `folder`, exported on first use (or when the file
    there could have been written by someone else)."""
    path = folder / f"{graph_key(model, class_names, imgsz)}.onnx"
    if path.is_file() and private(path):
        os.utime(path)  # recently used: kept by prune()
        return path
    export_graph(model, class_names, imgsz, path)
    prune(folder, KEEP)
    return path


def prune(folder: Path, keep: int) -> None:
    """Delete all but the `keep` most recently used graphs (every training run makes a new one)."""
    graphs = sorted(folder.glob("*.onnx"), key=lambda f: f.stat().st_mtime if f.exists() else 0, reverse=True)
    for old in graphs[keep:]:
        old.unlink(missing_ok=True)


def onnxruntime_backend(model: nn.Module, class_names: Sequence[str], imgsz: int) -> OnnxBackend:
    folder = private_cache()
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="detpipe-onnx-") as tmp:  # the session keeps the graph in memory
            return OnnxBackend(export_graph(model, class_names, imgsz, Path(tmp) / "model.onnx"), torch.device("cpu"))
    return OnnxBackend(cached_graph(model, class_names, imgsz, folder), torch.device("cpu"))
