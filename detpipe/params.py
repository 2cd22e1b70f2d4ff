"""Typed, frozen views of params.yaml.

Every section loads into a frozen dataclass. Unknown keys are rejected with a message that
names the key and the allowed ones, and numbers are coerced because `dvc exp run -S lr=3e-5`
writes `3e-05`, which YAML reads as a string.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """A params.yaml value or key is wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class DataParams:
    root: str = "data/VOCdevkit/VOC2007"
    classes: tuple[str, ...] = ()
    source: str = "voc"                 # voc | coco
    classes_file: str = ""              # one class name per line; used when classes is empty
    ignore_classes: tuple[str, ...] = ()  # names present in the labels but deliberately dropped (counted)
    coco_json: str = ""                 # source: coco — the instances JSON
    images: str = ""                    # image folder; default <root>/JPEGImages (voc), <root>/images (coco)
    workers: int = 0                    # annotate processes; 0 = automatic (parallel for many files)
    verify_images: bool = True          # decode every image to catch truncated files
    skip_bad_files: bool = False        # true: per-file errors become counted skips, not a failure


@dataclass(frozen=True)
class SplitParams:
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    use_imagesets: bool = False         # true: take <data.root>/ImageSets/Main/{train,val,test}.txt
    max_shift: float = 0.25             # flag a split whose class or box-size mix differs by more (total variation)


@dataclass(frozen=True)
class ModelParams:
    backbone: str = "cspdarknet"        # cspdarknet (YOLOv8's, scaled by `scale`) or a torchvision classifier
    scale: str = "n"                    # n | s | m | l: YOLOv8's width/depth multipliers
    neck_channels: int = 0              # 0 = 256 x the scale's width
    pretrained: str = "none"
    imgsz: int = 256


@dataclass(frozen=True)
class TrainParams:
    device: str = "auto"
    freeze_epochs: int = 3
    unfreeze_epochs: int = 12
    freeze_batch_size: int = 16
    unfreeze_batch_size: int = 16
    nominal_batch_size: int = 16
    freeze_lr_scale: float = 1.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    lr_milestones: tuple[float, ...] = (0.7, 0.9)  # lr_schedule step: fractions of the phase where the LR drops
    lr_gamma: float = 0.1               # lr_schedule step: factor at each milestone (floored at min_lr_ratio)
    ema_decay: float = 0.99
    grad_clip: float = 10.0
    box_gain: float = 7.5
    cls_gain: float = 0.5
    iou_target: bool = False
    num_workers: int = 0
    cache_images: bool = False
    threads: int = 0
    hflip: float = 0.5
    scale_jitter: float = 0.15
    translate: float = 0.05
    hsv_h: float = 0.015
    hsv_s: float = 0.25
    hsv_v: float = 0.15
    mosaic: float = 0.0
    mosaic_fraction: float = 0.7
    mixup: float = 0.0                  # probability of blending a sample with another (only in mosaic's epochs)
    grayscale: float = 0.25             # probability of training on a tile turned grey (0 when colour tells classes apart)
    label_smoothing: float = 0.0        # eps: foreground class targets t -> t * (1 - eps) + eps / 2
    focal_loss: bool = False            # quality focal loss instead of plain BCE for the classes
    focal_gamma: float = 1.5
    focal_alpha: float = 0.25           # < 0: no alpha balancing
    patience: int = 0                   # early stop a phase after this many epochs without a val mAP50 gain; 0 = off
    amp: bool = True                    # autocast: amp_dtype on CUDA, bfloat16 on CPUs that have it natively
    amp_dtype: str = "float16"          # CUDA: float16 (with GradScaler) | bfloat16 (Ampere+)
    compile: bool = False               # torch.compile the model (CUDA speed-up after a compile wait)
    nproc: int = 1                      # > 1: DDP under torchrun, this many processes (GPUs) on the node
    sync_bn: bool = False               # DDP: SyncBatchNorm across ranks (CUDA only)
    keep_checkpoints: int = 3


@dataclass(frozen=True)
class PredictParams:
    confidence: float = 0.5
    nms_iou: float = 0.45
    max_det: int = 100
    batch_size: int = 8
    samples: int = 8


@dataclass(frozen=True)
class MapParams:
    confidence: float = 0.001
    min_overlap: float = 0.5
    voc07: bool = False


@dataclass(frozen=True)
class OverfitParams:
    patience: int = 3
    gap_ratio: float = 0.25
    min_improvement: float = 0.01
    mismatch_ratio: float = 1.5
    small_dataset: int = 500
    low_map: float = 0.5
    min_loss_drop: float = 0.3


@dataclass(frozen=True)
class Params:
    lr: float = 0.01
    seed: int = 0
    data: DataParams = field(default_factory=DataParams)
    split: SplitParams = field(default_factory=SplitParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    predict: PredictParams = field(default_factory=PredictParams)
    map: MapParams = field(default_factory=MapParams)
    overfit: OverfitParams = field(default_factory=OverfitParams)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise ParamsError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ParamsError(f"{where}: expected a whole number, got {value!r}") from None
        if isinstance(value, bool) or number != int(number):
            raise ParamsError(f"{where}: expected a whole number, got {value!r}")
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ParamsError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ParamsError(f"{where}: expected text, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported params type {tp!r} at {where}")


def from_dict(cls: type, raw: Any, where: str = "params.yaml") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and coercing values."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ParamsError(
            f"{where}: unknown key {unknown[0]!r}"
            + (f" (and {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else "")
            + f"; allowed keys: {', '.join(allowed)}"
        )
    values = {k: _coerce(v, hints[k], f"{where}: {k}" if where == "params.yaml" else f"{where}.{k}")
              for k, v in raw.items()}
    return cls(**values)


def load_params(path: str | Path) -> Params:
    """Load and validate the whole params file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    params = from_dict(Params, raw, str(path))
    if not params.data.classes and params.data.classes_file:
        classes = read_classes_file(params.data.classes_file)
        params = dataclasses.replace(params, data=dataclasses.replace(params.data, classes=classes))
    if not params.data.classes:
        raise ParamsError(f"{path}: data.classes is empty; list your class names, e.g. classes: [cat, dog]"
                          ", or name a file of them in data.classes_file")
    if params.data.source not in ("voc", "coco"):
        raise ParamsError(f"{path}: data.source is {params.data.source!r}; allowed: voc, coco")
    check_train_recipe(params.train, str(path))
    return params


def check_train_recipe(t: TrainParams, where: str = "params.yaml") -> None:
    """Refuse recipe values outside their meaning (a probability above 1, a negative patience).

    Only mixup, grayscale, label_smoothing, the focal-loss settings and patience are checked here; a wrong
    value of the others fails where it is used.
    """
    if not 0.0 <= t.mixup <= 1.0:
        raise ParamsError(f"{where}: train.mixup is {t.mixup:g}; it is a probability, 0 to 1 (0 = off)")
    if not 0.0 <= t.grayscale <= 1.0:
        raise ParamsError(f"{where}: train.grayscale is {t.grayscale:g}; it is a probability, 0 to 1 (0 = off)")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise ParamsError(f"{where}: train.label_smoothing is {t.label_smoothing:g}; use 0 (off) up to below 1, "
                          "typically 0.1 or less")
    # Below 0 the modulating factor |target - p| ** gamma would weigh the easy examples most.
    if t.focal_gamma < 0:
        raise ParamsError(f"{where}: train.focal_gamma is {t.focal_gamma:g}; use 0 or more (1.5 and 2 are usual)")
    # Above 1 the negatives' weight 1 - alpha turns negative and the loss would reward wrong scores.
    if t.focal_alpha > 1:
        raise ParamsError(f"{where}: train.focal_alpha is {t.focal_alpha:g}; use 0 to 1 (0.25 is usual) "
                          "or a negative number for no balancing")
    if t.patience < 0:
        raise ParamsError(f"{where}: train.patience is {t.patience}; use 0 (off) or a number of epochs")


def read_classes_file(path: str | Path) -> tuple[str, ...]:
    """Class names, one per line (blank lines and `#` comments ignored), as in voc_classes.txt."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise ParamsError(f"data.classes_file {str(path)!r}: cannot read ({exc.strerror})") from None
    names = tuple(ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#"))
    if len(set(names)) != len(names):
        raise ParamsError(f"data.classes_file {str(path)!r}: a class name is listed twice")
    return names


def to_dict(obj: Any) -> dict:
    """Plain-dict form (tuples as lists) for checkpoints, fingerprints and reports."""
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(obj))
