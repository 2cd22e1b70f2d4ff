"""Resuming a phase: which checkpoint file to trust, restoring it, and what the numerics depended on.

A run folder holds last.pt (the newest epoch) and prev.pt (the one before); `save` rotates them so
that a kill at any instant leaves at least one complete file. A file that cannot be used —
unreadable, a checksum mismatch, a missing key, tensors of another shape, another run's
fingerprint or phase — is set aside as <name>.bad-<UTC time> with one line saying why, and the
next one is tried; with none left the phase starts fresh. Never fatal.

Each checkpoint also records the environment that decides the numerics (`environment`); resuming
under another one continues with a warning: the result is then equivalent, not bitwise equal.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchvision
from torch import nn

from . import accel
from .. import atomic
from ..model import checkpoint as ckpt
from .engine import load_optimizer_state

LAST, PREV = "last.pt", "prev.pt"


@dataclass
class Trainables:
    """Everything whose state a checkpoint carries besides plain values."""

    model: nn.Module
    ema: Any                      # engine.ModelEMA
    optimizer: torch.optim.Optimizer
    scheduler: Any                # torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.module.state_dict(), "ema_updates": self.ema.updates,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": {"torch": torch.get_rng_state()}}

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.module.load_state_dict(state["ema"])
        self.ema.updates = int(state["ema_updates"])
        load_optimizer_state(self.optimizer, state["optimizer"])  # keeps this run's (fused or not) kernels
        self.scheduler.load_state_dict(state["scheduler"])
        restore_scaler(self.scaler, state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])


def restore_scaler(scaler: torch.amp.GradScaler, saved: dict) -> None:
    """GradScaler state where it means something: a non-empty state into an enabled scaler.

    A CPU or bfloat16 run saves {} (its scaler is disabled); float16 on CUDA then starts from the
    scaler's initial scale instead of failing in load_state_dict. A float16 state resumed without
    float16 autocast has nothing to scale.
    """
    if saved and scaler.is_enabled():
        scaler.load_state_dict(saved)


def environment(device: torch.device, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """What decides the numerics besides params and code: device, autocast, threads, library versions."""
    # Plain str(): torch.__version__ is a str subclass that weights_only loading refuses.
    env = {"device": device.type, "autocast": str(amp_dtype).removeprefix("torch.") if amp_dtype else "none",
           "threads": torch.get_num_threads(), "torch": str(torch.__version__),
           "torchvision": str(torchvision.__version__), "numpy": str(np.__version__), "cpu_bf16": accel.cpu_has_bf16()}
    if device.type == "cuda":
        env.update(cuda=str(torch.version.cuda), cudnn=str(torch.backends.cudnn.version()),
                   gpu=str(torch.cuda.get_device_name(device)))
    return env


def environment_changes(saved: dict, now: dict) -> list[str]:
    """`key old -> new` for each entry that differs (absent on one side: `-`)."""
    return [f"{key} {saved.get(key, '-')} -> {now.get(key, '-')}" for key in sorted(set(saved) | set(now), key=str)
            if saved.get(key) != now.get(key)]


def _tensor_dicts(fresh: dict) -> list[str]:
    """The keys of `fresh` that hold state dicts (name -> tensor): model, ema and their best copies."""
    return [k for k, v in fresh.items()
            if isinstance(v, dict) and v and all(isinstance(t, torch.Tensor) for t in v.values())]


def _tensors_differ(key: str, got: dict, want: dict) -> str | None:
    if got.keys() != want.keys():
        odd = sorted(set(got) ^ set(want), key=str)
        return f"{key} has other tensors than this run's network (e.g. {', '.join(map(str, odd[:3]))})"
    for name, w in want.items():
        g = got[name]
        if not isinstance(g, torch.Tensor) or g.shape != w.shape or g.dtype != w.dtype:
            have = f"{tuple(g.shape)} {g.dtype}" if isinstance(g, torch.Tensor) else type(g).__name__
            return f"{key}.{name} is {have} where this run's network has {tuple(w.shape)} {w.dtype}"
    return None


def _optimizer_differs(saved: dict, optimizer: torch.optim.Optimizer) -> str | None:
    groups, own = saved["param_groups"], optimizer.param_groups
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in own]:
        return "its optimizer has other parameter groups than this run's"
    shapes = [p.shape for g in own for p in g["params"]]
    for i, pid in enumerate(i for g in groups for i in g["params"]):
        for name, value in saved["state"].get(pid, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != shapes[i]:
                return f"optimizer state {name} of parameter {i} is {tuple(value.shape)}, not {tuple(shapes[i])}"
    return None


def problem(state: Any, fresh: dict, optimizer: torch.optim.Optimizer, epochs: int) -> str | None:
    """Why `state` cannot resume the run whose epoch-0 state is `fresh` (None: it can)."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a checkpoint dict"
    missing = sorted(set(fresh) - set(state)) + ([] if isinstance(state.get(ckpt.CHECKSUM), str) else [ckpt.CHECKSUM])
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    for key in ("fingerprint", "phase"):
        if state[key] != fresh[key]:
            return f"its {key} is {state[key]!r}, this run's {fresh[key]!r}: it belongs to another run"
    wrong = [k for k, v in fresh.items() if v is not None and not isinstance(state[k], type(v))]
    if wrong:
        return f"{wrong[0]} is a {type(state[wrong[0]]).__name__}, not a {type(fresh[wrong[0]]).__name__}"
    if not 0 <= state["epoch"] <= epochs:
        return f"epoch {state['epoch']} is outside this phase's 0..{epochs}"
    try:
        why = next(filter(None, (_tensors_differ(k, state[k], fresh[k]) for k in _tensor_dicts(fresh))), None)
        return why or _optimizer_differs(state["optimizer"], optimizer)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        return f"malformed state ({type(exc).__name__}: {exc})"


def latest(run_dir: Path, fresh: dict, parts: Trainables, epochs: int, name: str, main: bool = True,
           broadcast: Callable[[Any], Any] = lambda obj: obj) -> tuple[dict, Path] | None:
    """Restore the newest usable checkpoint of `run_dir` into `parts`; returns (its state, its path).

    Rank 0 (`main`) chooses, setting unusable files aside with one line each, and `broadcast`s
    its choice; the other ranks restore the same file. None (nothing restored): start fresh.
    """
    chosen = _choose(run_dir, fresh, parts, epochs, name) if main else None
    path = broadcast(str(chosen[1]) if chosen else None)
    if main or path is None:
        return chosen
    state = ckpt.load(path)
    parts.restore(state)
    return state, Path(path)


def _choose(run_dir: Path, fresh: dict, parts: Trainables, epochs: int, name: str) -> tuple[dict, Path] | None:
    files = [f for f in (run_dir / LAST, run_dir / PREV) if f.exists()]
    backup = copy.deepcopy(fresh) if files else None  # restore() may fail half-way on a bad file
    for file in files:
        try:
            state = ckpt.load(file)
            why = problem(state, fresh, parts.optimizer, epochs)
        except ckpt.CheckpointError as exc:
            why = exc.reason
        if why is None:
            try:
                parts.restore(state)
                return state, file
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                parts.restore(backup)
                why = f"it does not fit this run's training state ({atomic.os_reason(exc)})"
        try:
            print(f"{name}: set aside checkpoint {file} as {ckpt.set_aside(file).name}: {why}", flush=True)
        except OSError as exc:
            print(f"{name}: not using checkpoint {file} ({why}); it cannot be moved aside ({atomic.os_reason(exc)}): "
                  "delete it", flush=True)
    return None


def warn_environment(state: dict, now: dict, name: str) -> None:
    """One line when the checkpoint was written under another environment than this run's."""
    changes = environment_changes(state["env"], now)
    if changes:
        print(f"{name}: warning: resuming in another environment ({'; '.join(changes)}): the result is "
              "equivalent to, not bitwise equal to, an uninterrupted run", flush=True)


def save(state: dict, run_dir: Path, name: str) -> None:
    """Write last.pt (the old one becomes prev.pt); on an OS error, one line saying what is kept."""
    last = run_dir / LAST
    try:
        ckpt.save_atomic(state, last, keep_previous=run_dir / PREV)
    except atomic.WriteError as exc:
        done = state["epoch"] - 1
        kept = (f"the previous checkpoint {last} ({done} epoch{'s' * (done != 1)} of this phase done)"
                if last.exists() else "no checkpoint of this phase yet")
        raise atomic.WriteError(f"{name}: {exc}; kept: {kept}; free space and rerun the same command to "
                                "resume") from None
