"""A detector from params (for training) or from a detpipe weights file (for inference)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..params import Params
from . import checkpoint as ckpt
from .detector import Detector, ModelConfig


def model_config(params: Params) -> ModelConfig:
    return ModelConfig(len(params.data.classes), params.model.backbone, params.model.neck_channels,
                       params.model.scale, params.model.neck, params.model.p2)


def load_detector(path: str | Path, device: torch.device | str = "cpu") -> tuple[Detector, dict]:
    """Rebuild a detector from a detpipe weights file, preferring the EMA weights."""
    state = ckpt.load(path)
    if "model_config" not in state:
        raise ckpt.CheckpointError(f"{path}: not a detpipe weights file (no model_config); "
                                   "use models/best.pt or models/last.pt from a training stage")
    model = Detector(ModelConfig(**state["model_config"]))
    try:
        model.load_state_dict(state.get("ema") or state["model"])
    except RuntimeError as exc:  # e.g. a file from a detpipe version with another neck layout
        raise ckpt.CheckpointError(f"{path}: its weights do not fit the network this detpipe version builds "
                                   f"for {state['model_config']} ({str(exc).splitlines()[0]}); retrain, or start "
                                   "from it with model.pretrained: <path>, which loads the matching layers") from None
    return model.to(device).eval(), state
