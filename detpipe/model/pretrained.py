"""Pretrained starts, loaded safely.

`model.pretrained` is none, imagenet or coco (torchvision's published weights for the backbone) or
the path of a detpipe checkpoint (e.g. one written by `detpipe import-weights`). Every file goes
through `torch.load(weights_only=True)`; torchvision's files are found in (or downloaded by
torch.hub's own downloader to) `<torch hub dir>/checkpoints/` and must match the sha256 prefix in
their published name (`resnet18-f37072fd.pth`) every time they are read, so a planted or corrupt
file is refused before it is unpickled, and its unpickling could not run code anyway.
"""
from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from . import checkpoint as ckpt
from ..artifacts.image_manifest import file_sha256
from ..catalog import COCO_DETECTORS, PUBLISHED_KINDS, YOLO_FAMILIES, imagenet_weights, pretrained_choices
from .detector import Backbone, Detector, ModelConfig, torchvision_stages


class PretrainedError(ckpt.CheckpointError):
    """A pretrained start cannot be used; the one-line message names the file or key and the fix."""


@dataclass(frozen=True)
class Published:
    """A weights file torchvision publishes, and where the backbone's tensors are in it."""

    weights: str              # the torchvision weights enum member, e.g. ResNet18_Weights.IMAGENET1K_V1
    url: str
    prefix: str = ""          # key prefix of the backbone's tensors in the file
    net_prefix: str = ""      # key prefix of the same tensors in the torchvision classifier
    bn_eps: float | None = None  # BatchNorm eps the file was trained with, if not the classifier's

    @property
    def file_name(self) -> str:
        return os.path.basename(urlparse(self.url).path)

    @property
    def sha256_prefix(self) -> str:
        match = torch.hub.HASH_REGEX.search(self.file_name)
        return match.group(1) if match else ""

    def cache_path(self) -> Path:
        """Where torch.hub keeps it: <TORCH_HOME or ~/.cache/torch>/hub/checkpoints/<file name>."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.file_name


def _choices_hint(backbone: str) -> str:
    with_weights = {"imagenet": "e.g. resnet18, mobilenet_v3_large", "coco": ", ".join(COCO_DETECTORS)}
    alternatives = "; ".join(f"{k} works with {v}" for k, v in with_weights.items())
    import_hint = (" or a file converted from Ultralytics weights by `python -m detpipe import-weights`"
                   if backbone in YOLO_FAMILIES else "")
    return (f"for backbone {backbone} use one of {', '.join(pretrained_choices(backbone))} or the path of a "
            f"detpipe checkpoint{import_hint} ({alternatives})")


def published(backbone: str, kind: str) -> Published:
    """torchvision's `kind` (imagenet | coco) weights file for the backbone, or a PretrainedError."""
    if kind not in pretrained_choices(backbone):
        raise PretrainedError(f"model.pretrained: {kind}: torchvision has no {kind} weights for {backbone}; "
                              + _choices_hint(backbone))
    if kind == "imagenet":
        w = imagenet_weights(backbone)
        return Published(f"{type(w).__name__}.{w.name}", w.url)
    name, prefix, net_prefix, eps = COCO_DETECTORS[backbone]
    return Published(name, torchvision.models.get_weight(name).url, prefix, net_prefix, eps)


def _check_sha256(path: Path, pub: Published) -> None:
    digest = file_sha256(path)
    if not pub.sha256_prefix or not digest.startswith(pub.sha256_prefix):
        raise PretrainedError(
            f"{path}: refused: its sha256 starts {digest[:len(pub.sha256_prefix) or 8]}, but torchvision publishes "
            f"{pub.file_name} with {pub.sha256_prefix or '(no hash)'}, so it is not {pub.weights} (corrupt, "
            f"truncated or replaced); delete it and rerun to download it again, or copy the file from {pub.url} there")


def _download(pub: Published, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {pub.url} to {dst}", flush=True)
    try:  # torch.hub writes a .partial file, checks the hash prefix, then renames
        torch.hub.download_url_to_file(pub.url, str(dst), hash_prefix=pub.sha256_prefix,
                                       progress=sys.stderr.isatty())
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError; a hash mismatch a RuntimeError
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise PretrainedError(f"{dst}: missing, and downloading {pub.url} failed ({reason}); on a machine "
                              f"without internet, download that URL elsewhere and copy the file to {dst}") from None


def ensure_pretrained_file(backbone: str, pretrained: str) -> Path | None:
    """The verified weights file behind `model.pretrained` (None for none), downloading torchvision's
    file with torch.hub's downloader when it is missing. In DDP, rank 0 calls it first, then a
    barrier; the other ranks' calls then find the file and only check its hash."""
    if pretrained in ("none", ""):
        return None
    if pretrained in PUBLISHED_KINDS:
        pub = published(backbone, pretrained)
        path = pub.cache_path()
        if not path.is_file():
            _download(pub, path)
        _check_sha256(path, pub)
        return path
    path = Path(pretrained)
    if not path.is_file():
        raise PretrainedError(f"model.pretrained: {pretrained} does not exist; {_choices_hint(backbone)}")
    return path


def load_pretrained(model: Detector, pretrained: str) -> None:
    """Load `model.pretrained` into a freshly built detector (see the module docstring)."""
    path = ensure_pretrained_file(model.config.backbone, pretrained)
    if path is None:
        return
    if pretrained in PUBLISHED_KINDS:
        load_published(model.backbone, model.config.backbone, pretrained, path)
    else:
        load_matching(model, path)


@functools.lru_cache(maxsize=None)
def _classifier_keys(name: str) -> dict[str, str]:
    """detpipe backbone key -> key of the same tensor in torchvision's classifier `name`."""
    net = torchvision.models.get_model(name, weights=None)
    parts = nn.Module()
    parts.stem, parts.c3, parts.c4, parts.c5 = torchvision_stages(net, name)
    where = {id(t): k for k, t in net.state_dict(keep_vars=True).items()}
    return {k: where[id(t)] for k, t in parts.state_dict(keep_vars=True).items()}


def _weights_dict(path: Path) -> dict[str, torch.Tensor]:
    state = ckpt.load(path)  # weights_only=True; a pickled payload is a one-line CheckpointError
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedError(f"{path}: not a state dict of tensors")
    return state


def load_published(backbone: Backbone, name: str, kind: str, path: Path) -> list[str]:
    """Copy torchvision's `kind` weights (file `path`, already verified) into a detpipe backbone.

    Every backbone tensor must be in the file with its shape (a BatchNorm's batch counter may be
    missing: frozen BatchNorm has none). Returns the loaded keys.
    """
    pub = published(name, kind)
    state, own = _weights_dict(path), backbone.state_dict()
    loaded = {}
    for key, net_key in _classifier_keys(name).items():
        src = pub.prefix + net_key.removeprefix(pub.net_prefix)
        if src not in state and key.endswith("num_batches_tracked"):
            continue
        if src not in state or state[src].shape != own[key].shape:
            found = "missing" if src not in state else f"of shape {tuple(state[src].shape)}"
            raise PretrainedError(f"{path}: tensor {src} is {found}, {name} needs {tuple(own[key].shape)}: "
                                  f"not the {pub.weights} file; delete it and rerun to download it again")
        loaded[key] = state[src]
    if pub.bn_eps is not None:
        _fold_bn_eps(backbone, loaded, pub.bn_eps)
    backbone.load_state_dict(loaded, strict=False)
    counters = "" if len(loaded) == len(own) else " (the file has no BatchNorm batch counters)"
    print(f"pretrained {kind}: {pub.weights} ({path.name}, sha256 checked): loaded {len(loaded)}/{len(own)} "
          f"backbone tensors{counters}; neck and head start from scratch", flush=True)
    return sorted(loaded)


def _fold_bn_eps(backbone: nn.Module, state: dict[str, torch.Tensor], file_eps: float) -> None:
    """Rescale BatchNorm weights trained under another eps so that, in eval mode, this network's
    BatchNorm (its own eps) computes what the file's did: w' = w * sqrt((var + eps) / (var + file_eps))."""
    for name, m in backbone.named_modules():
        if isinstance(m, nn.BatchNorm2d) and m.eps != file_eps and f"{name}.weight" in state:
            var = state[f"{name}.running_var"].double()
            w = state[f"{name}.weight"]
            state[f"{name}.weight"] = (w.double() * ((var + m.eps) / (var + file_eps)).sqrt()).to(w.dtype)


def _part_config(config: dict | None) -> tuple[str, str, str] | None:
    """(backbone, scale where it shapes the backbone, neck) of a model_config dict."""
    if not isinstance(config, dict):
        return None
    backbone = str(config.get("backbone", ModelConfig.backbone))
    scaled = backbone == "cspdarknet" or backbone in YOLO_FAMILIES
    return backbone, str(config.get("scale", ModelConfig.scale)) if scaled else "", str(config.get("neck", "pan"))


_HEAD_LEVEL = re.compile(r"head\.(cls|reg)\.(\d+)\.(.+)")


def head_levels(keys) -> int:
    """How many detection levels the head of a state dict's keys has."""
    return len({m[2] for m in map(_HEAD_LEVEL.fullmatch, keys) if m})


def align_head_levels(state: dict[str, torch.Tensor], levels: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Renumber the head's per-level keys of a file whose model has another number of levels (with or
    without p2) so that each level lands on the level of the same stride: every model's levels end
    at the backbone's last stage and p2 adds one in front. Returns the state and the keys of levels
    this model does not have."""
    shift = levels - head_levels(state)
    if shift == 0 or not head_levels(state):
        return state, []
    out, dropped = {}, []
    for k, v in state.items():
        m = _HEAD_LEVEL.fullmatch(k)
        if m is None:
            out[k] = v
        elif int(m[2]) + shift < 0:
            dropped.append(k)
        else:
            out[f"head.{m[1]}.{int(m[2]) + shift}.{m[3]}"] = v
    return out, dropped


def load_matching(model: Detector, path: str | Path) -> tuple[list[str], list[str]]:
    """Copy every tensor of a detpipe checkpoint whose name and shape match; report loaded and skipped.

    A file that records its model_config must have this model's backbone (and scale): the same key
    names under another backbone or input scaling are not the same layer. Its neck and head load
    only when the neck is the same kind too.
    """
    state = ckpt.load(path)
    config = state.get("model_config") if isinstance(state, dict) else None
    if isinstance(state, dict) and isinstance(state.get("ema") or state.get("model"), dict):
        state = state.get("ema") or state["model"]
    if not isinstance(state, dict):
        raise PretrainedError(f"{path}: not a detpipe checkpoint or state dict")
    parts = ("backbone", "neck", "head")
    src, dst = _part_config(config), _part_config(model.config.to_dict())
    if src is not None and src[:2] != dst[:2]:
        raise PretrainedError(
            f"{path}: its backbone is {'-'.join(filter(None, src[:2]))}, this model's is {'-'.join(filter(None, dst[:2]))}; "
            f"to start from it set model.backbone: {src[0]}" + (f" and model.scale: {src[1]}" if src[1] else ""))
    if src is not None and src[2] != dst[2]:
        parts = ("backbone",)
        print(f"pretrained {path}: its neck is {src[2]}, this model's is {dst[2]}: neck and head start from scratch "
              f"(model.neck: {src[2]} would load them too)", flush=True)
    own = model.state_dict()
    theirs, ours = head_levels(state), head_levels(own)
    state, dropped = align_head_levels(state, ours)
    if "head" in parts and theirs and theirs != ours:
        print(f"pretrained {path}: its head has {theirs} levels, this model's {ours} (model.p2): each level loads "
              "into the level of the same stride; the finest level's layers that only one model has start from "
              "scratch or are skipped", flush=True)
    loaded = {k: v for k, v in state.items()
              if k.split(".")[0] in parts and k in own and own[k].shape == v.shape}
    for k in [k for k in loaded if k.endswith(".num_batches_tracked")]:  # a scalar: fits any BatchNorm
        if k.removesuffix("num_batches_tracked") + "running_var" not in loaded:
            del loaded[k]
    if not loaded:
        raise PretrainedError(f"{path}: no tensor fits this model (model_config {model.config.to_dict()}); an "
                              "Ultralytics state dict must be converted first: python -m detpipe import-weights FILE")
    skipped = sorted(set(state) - set(loaded) | set(dropped))
    model.load_state_dict(loaded, strict=False)
    counts = ", ".join(f"{p} {sum(k.startswith(p + '.') for k in loaded)}/{sum(k.startswith(p + '.') for k in own)}"
                       for p in ("backbone", "neck", "head"))
    print(f"pretrained {path}: loaded {len(loaded)}/{len(own)} tensors ({counts}), skipped {len(skipped)}"
          + (f" (e.g. {', '.join(skipped[:5])})" if skipped else "") + "; the rest start from scratch", flush=True)
    return sorted(loaded), skipped
