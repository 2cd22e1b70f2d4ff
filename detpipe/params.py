"""Typed, frozen, validated views of params.yaml.

Every section is a frozen pydantic model, validated once when the file is loaded: ranges and
choices are declared on the fields (`Field` constraints, `Literal`), and a wrong value becomes
one line naming the file, the dotted key, the value and what is allowed, e.g.
`params.yaml: train.unfreeze_epochs is -1; allowed: a whole number >= 0`. Numbers and booleans
written as strings are coerced because `dvc exp run -S lr=3e-5` writes `3e-05`, which YAML reads
as a string. The code defaults are params.yaml's values (tests/test_params.py compares them).
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import Self  # typing.Self from Python 3.11

from .catalog import (COCO_DETECTORS, PUBLISHED_KINDS, TORCHVISION_FAMILIES, YOLO_FAMILIES, backbone_names,
                      pretrained_choices)


class ParamsError(ValueError):
    """A params.yaml value or key is wrong; the message (one line) says which and what is allowed."""


# The choices of the enumerated settings: each list lives here once (tests check the code that
# consumes them accepts every entry). A new dataset reader adds its name to DataSource.
DataSource = Literal["voc", "coco", "yolo"]            # dataset_check.CHECKERS
Scale = Literal["n", "s", "m", "l"]                      # catalog.SCALES
Neck = Literal["pan", "yolov8", "yolo11"]                # catalog.NECKS
InferBackend = Literal["auto", "torch", "onnxruntime"]   # infer.onnx_cache.resolve_backend
Optimizer = Literal["adamw", "sgd"]                      # engine.build_optimizer
LrSchedule = Literal["cosine", "linear", "step", "constant"]  # engine.lr_lambda
AmpDtype = Literal["float16", "bfloat16"]                # accel.AMP_DTYPES

Probability = Annotated[float, Field(ge=0, le=1)]        # also any other fraction of 0 to 1
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]                      # 0 often means "off" or "automatic"
AtLeastOne = Annotated[int, Field(ge=1)]
Auto = Literal["auto"]                                   # resolved from the run's inputs by detpipe.recipe
Names = tuple[str, ...]
FRACTION_SUM_TOLERANCE = 1e-3                            # 0.333 x 3 is close enough to 1


def _bad(allowed: str, key: str | tuple[str, ...] | None = None, value: Any = None) -> PydanticCustomError:
    """A validator's error in the one-line format; `key` (relative to the section the validator
    belongs to) and `value` are for model validators, whose error has no field of its own."""
    ctx: dict[str, Any] = {"allowed": allowed}
    if key is not None:
        ctx.update(key=key, value=value)
    return PydanticCustomError("detpipe", "{allowed}", ctx)


class Section(BaseModel):
    """A params.yaml section: frozen, keyword-built, unknown keys refused, values checked once."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _yaml_forms(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML shapes pydantic would misread: `yes` for a number would become 1; a single name
        (`dvc exp run -S data.ignore_classes=cat`) stands for a list of one."""
        field = cls.model_fields[info.field_name]
        if isinstance(value, bool) and any(t in (int, float) for t in _bare_types(field.annotation)):
            raise _bad(_allowed(field.annotation, field.metadata))
        if isinstance(value, str) and get_origin(field.annotation) is tuple:
            return (value,)
        return value

    def replace(self, **changes: Any) -> Self:
        """A validated copy with `changes` applied (pydantic's model_copy would not validate)."""
        return from_dict(type(self), {**dict(self), **changes}, where=None)


class DataParams(Section):
    root: str = "data/VOCdevkit/VOC2007"
    classes: Names = ()                 # no default: the dataset's own names (or classes_file)
    source: DataSource = "voc"          # voc | coco | yolo
    classes_file: str = ""              # one class name per line; used when classes is empty
    ignore_classes: Names = ()          # names present in the labels but deliberately dropped (counted)
    coco_json: str = ""                 # source: coco — the instances JSON
    images: str = ""                    # image folder; default <root>/JPEGImages (voc), <root>/images (coco)
    workers: Count = 0                  # annotate processes; 0 = automatic (parallel for many files)
    verify_images: bool = True          # decode every image to catch truncated files
    skip_bad_files: bool = False        # true: per-file errors become counted skips, not a failure
    # Images above this many pixels are refused from their header, before decoding (detpipe.data.images):
    # 1 MPx (below any camera's photo) to 1 GPx (3 GB decoded as 8-bit RGB).
    max_image_pixels: Annotated[int, Field(ge=1_000_000, le=1_000_000_000)] = 100_000_000

    @field_validator("classes")
    @classmethod
    def _distinct_names(cls, names: Names) -> Names:
        if any(not n.strip() for n in names) or len(set(names)) != len(names):
            raise _bad("a list of distinct, non-empty class names")
        return names


class SplitParams(Section):
    # Every split must get images: an empty val split would make best.pt the first epoch's weights.
    train: Annotated[float, Field(gt=0, le=1)] = 0.7
    val: Annotated[float, Field(gt=0, le=1)] = 0.15
    test: Annotated[float, Field(gt=0, le=1)] = 0.15
    use_imagesets: bool = False         # true: take <data.root>/ImageSets/Main/{train,val,test}.txt
    max_shift: Probability = 0.25       # flag a split whose class or box-size mix differs by more (total variation)

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitParams":
        total = self.train + self.val + self.test
        if abs(total - 1) > FRACTION_SUM_TOLERANCE:
            raise _bad("fractions that sum to 1", key=("train", "val", "test"), value=round(total, 6))
        return self


class ModelParams(Section):
    backbone: str = "cspdarknet"        # cspdarknet (YOLOv8's, scaled by `scale`) or a torchvision classifier
    scale: Scale = "n"                  # YOLOv8's width/depth multipliers
    neck: Neck = "pan"                  # pan | yolov8 | yolo11 (Ultralytics' neck and head widths)
    neck_channels: Count = 0            # pan: 0 = 256 x the scale's width
    p2: bool = False                    # true: a 4th detection level at stride 4 for tiny objects (YOLOv8-p2)
    pretrained: str = "none"            # none | imagenet | coco | path of a detpipe checkpoint
    # the head's largest stride is 32; auto: from the train split's box sizes (detpipe.recipe)
    imgsz: Annotated[int, Field(gt=0, multiple_of=32)] | Auto = 320

    @field_validator("backbone")
    @classmethod
    def _buildable(cls, name: str) -> str:
        names = backbone_names()
        if name not in names:
            near = difflib.get_close_matches(name, names, n=3)
            raise _bad("cspdarknet, yolov8, yolo11 or a torchvision " + ", ".join(f"{f}*" for f in TORCHVISION_FAMILIES)
                       + " classifier" + (f" (closest: {', '.join(near)})" if near else ""))
        return name

    @model_validator(mode="after")
    def _pretrained_fits(self) -> "ModelParams":
        p, choices = self.pretrained, pretrained_choices(self.backbone)
        if p in PUBLISHED_KINDS and p not in choices:
            label, example = {"imagenet": ("ImageNet", "resnet18"), "coco": ("COCO", " or ".join(COCO_DETECTORS))}[p]
            own = " (Ultralytics weights: python -m detpipe import-weights)" if self.backbone in YOLO_FAMILIES else ""
            raise _bad(f"{', '.join(choices)} or the path of a detpipe checkpoint with backbone {self.backbone}, which "
                       f"has no {label} weights{own} (for them pick a torchvision backbone, e.g. backbone: {example})",
                       key="pretrained", value=p)
        if p not in ("none", "", *PUBLISHED_KINDS) and not Path(p).is_file():
            raise _bad("none, imagenet, coco (torchvision backbones) or the path of an existing detpipe checkpoint; "
                       f"there is no file {p}", key="pretrained", value=p)
        if self.neck != "pan" and self.neck_channels:
            raise _bad(f"0: neck {self.neck} takes its widths from model.scale", key="neck_channels",
                       value=self.neck_channels)
        return self


class TrainParams(Section):
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                                 description="auto, cpu, cuda or cuda:<index>")] = "auto"
    freeze_epochs: Count | Auto = "auto"  # auto: 3 from pretrained weights, 0 from scratch (detpipe.recipe)
    unfreeze_epochs: Count = 80
    # hours for both phases; > 0: the unfrozen epoch count is fitted to it after the first unfrozen
    # epoch (detpipe.recipe.fit_to_budget) and unfreeze_epochs is ignored; 0 = off
    time: Annotated[float, Field(ge=0, le=10000)] = 0.0
    freeze_batch_size: AtLeastOne = 16
    unfreeze_batch_size: AtLeastOne = 8
    nominal_batch_size: AtLeastOne = 16  # lr is given for this batch; the LR in use scales linearly
    freeze_lr_scale: Positive = 1.0     # the frozen phase trains at lr x this
    optimizer: Optimizer = "adamw"
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9  # SGD momentum, AdamW beta1
    weight_decay: NonNegative = 0.05
    lr_schedule: LrSchedule = "cosine"
    warmup_epochs: NonNegative = 1.0
    min_lr_ratio: Probability = 0.05
    lr_milestones: tuple[Probability, ...] = (0.7, 0.9)  # lr_schedule step: fractions of the phase where the LR drops
    lr_gamma: Annotated[float, Field(gt=0, le=1)] = 0.1  # lr_schedule step: factor at each milestone
    ema_decay: Probability = 0.99
    grad_clip: Positive = 10.0          # max gradient norm
    mosaic: Probability = 0.5
    mosaic_fraction: Probability = 0.7
    mixup: Probability = 0.0            # probability of blending a sample with another (only in mosaic's epochs)
    hflip: Probability = 0.5
    scale_jitter: Annotated[float, Field(ge=0, lt=1)] = 0.15  # zoom in [1 - s, 1 + s]: below 1 keeps it positive
    translate: Probability = 0.05
    hsv_h: Probability = 0.015
    hsv_s: Probability = 0.25
    hsv_v: Probability = 0.15
    grayscale: Probability = 0.25       # probability of training on a tile turned grey (0 when colour tells classes apart)
    box_gain: NonNegative = 7.5
    cls_gain: NonNegative = 0.5
    iou_target: bool = False
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0  # eps: targets t -> t * (1 - eps) + eps / 2
    focal_loss: bool = False            # quality focal loss instead of plain BCE for the classes
    focal_gamma: NonNegative = 1.5      # below 0 |target - p| ** gamma would weigh the easy examples most
    focal_alpha: Annotated[float, Field(le=1)] = 0.25  # < 0: no balancing; above 1 negatives' weight turns negative
    patience: Count = 0                 # early stop a phase after this many epochs without a val mAP50 gain; 0 = off
    amp: bool = True                    # autocast: amp_dtype on CUDA, bfloat16 on CPUs that have it natively
    amp_dtype: AmpDtype = "float16"     # CUDA: float16 (with GradScaler) | bfloat16 (Ampere+)
    compile: bool = False               # torch.compile the model (CUDA speed-up after a compile wait)
    cache_images: bool = True
    num_workers: Count = 0
    threads: Count = 0                  # torch CPU threads; 0 = usable CPUs not busy elsewhere (cpus.training_threads)
    nproc: AtLeastOne = 1               # > 1: DDP under torchrun, this many processes (GPUs) on the node
    sync_bn: bool = False               # DDP: SyncBatchNorm across ranks (CUDA only)
    deterministic: bool = False         # CUDA: fixed cuDNN algorithms and deterministic kernels (slower); off = cudnn.benchmark
    keep_checkpoints: AtLeastOne = 3

    @model_validator(mode="after")
    def _batches_split_over_ranks(self) -> "TrainParams":
        for key in ("freeze_batch_size", "unfreeze_batch_size"):
            if getattr(self, key) % self.nproc:
                raise _bad(f"a multiple of train.nproc ({self.nproc}): each process takes an equal share",
                           key=key, value=getattr(self, key))
        return self


class PredictParams(Section):
    confidence: Probability = 0.5
    nms_iou: Probability = 0.45
    max_det: AtLeastOne = 100
    batch_size: AtLeastOne = 8
    samples: Count = 8
    backend: InferBackend = "auto"


class MapParams(Section):
    confidence: Probability = 0.001
    min_overlap: Probability = 0.5
    voc07: bool = False


class OverfitParams(Section):
    patience: AtLeastOne = 3
    gap_ratio: NonNegative = 0.25
    min_improvement: NonNegative = 0.01
    mismatch_ratio: Annotated[float, Field(ge=1)] = 1.5  # a ratio taken either way: below 1 means nothing
    small_dataset: Count = 500
    low_map: Probability = 0.5
    min_loss_drop: Probability = 0.3


class Params(Section):
    lr: Positive = 0.004
    seed: Count = 0
    data: DataParams = Field(default_factory=DataParams)
    split: SplitParams = Field(default_factory=SplitParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    predict: PredictParams = Field(default_factory=PredictParams)
    map: MapParams = Field(default_factory=MapParams)
    overfit: OverfitParams = Field(default_factory=OverfitParams)


# ---------------------------------------------------------------------------------- the one-line error

def _constraints(metadata: list) -> dict[str, Any]:
    """ge/gt/le/lt/multiple_of/pattern of a field's metadata (Annotated aliases nest a FieldInfo)."""
    found: dict[str, Any] = {}
    for m in metadata:
        if hasattr(m, "metadata"):
            found.update(_constraints(m.metadata))
        for name in ("ge", "gt", "le", "lt", "multiple_of", "pattern"):
            if getattr(m, name, None) is not None:
                found[name] = getattr(m, name)
    return found


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, UnionType)


def _bare_types(annotation: Any) -> list[Any]:
    """The types a field takes, without Annotated's constraints: [int] for a Count, [int, Literal] for Count | Auto."""
    members = get_args(annotation) if _is_union(annotation) else (annotation,)
    return [get_args(m)[0] if get_origin(m) is Annotated else m for m in members]


def _allowed(annotation: Any, metadata: list, description: str | None = None, plural: bool = False) -> str:
    """What a field accepts, in words, read from its type and constraints."""
    if _is_union(annotation):  # e.g. "a whole number >= 0 or auto"
        return " or ".join(_allowed(m, metadata, description, plural) for m in get_args(annotation))
    if get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata = [*metadata, *extra]
    if get_origin(annotation) is tuple:
        return "a list of " + _allowed(get_args(annotation)[0], [], plural=True)
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return str(choices[0]) if len(choices) == 1 else "one of " + ", ".join(map(str, choices))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping of keys (" + ", ".join(annotation.model_fields) + ")"
    kinds = {bool: ("true or false", "true or false"), int: ("a whole number", "whole numbers"),
             float: ("a number", "numbers"), str: ("text", "names")}
    kind = kinds.get(annotation, (str(annotation),) * 2)[plural]
    c = _constraints(metadata)
    if "pattern" in c:
        return description or f"text matching {c['pattern']}"
    bounds = [f"{op} {c[name]:g}" for name, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if name in c]
    if "ge" in c and "le" in c:
        bounds = [f"from {c['ge']:g} to {c['le']:g}"]
    kind += "".join(f" {b}" if i == 0 else f" and {b}" for i, b in enumerate(bounds))
    if "multiple_of" in c:
        kind += f" that is a multiple of {c['multiple_of']:g}"
    return kind


def _show(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _field_at(model: type[BaseModel], loc: tuple) -> tuple[type[BaseModel], str | None]:
    """The model owning the field at `loc` and the field's name (None: loc names the model itself)."""
    name = None
    for part in loc:
        if not isinstance(part, str):
            break  # an index into a list: the list field describes it
        if name is not None:
            model = model.model_fields[name].annotation
        if part not in model.model_fields:
            return model, part
        name = part
    return model, name


def _error_line(error: dict, root: type[BaseModel], prefix: tuple[str, ...]) -> str:
    """One pydantic error as `key is value; allowed: ...`."""
    loc = tuple(p for p in error["loc"] if isinstance(p, str))
    key = ".".join(prefix + loc) + "".join(f"[{p}]" for p in error["loc"] if isinstance(p, int))
    ctx = error.get("ctx") or {}
    if error["type"] == "extra_forbidden":
        owner, unknown = _field_at(root, loc)
        near = difflib.get_close_matches(unknown, list(owner.model_fields), n=1)
        home = [f"in {s}:" for s, f in Params.model_fields.items() if unknown in getattr(f.annotation, "model_fields", {})]
        home += ["at the top level"] if unknown in Params.model_fields and owner is not Params else []
        hint = f" (did you mean {near[0]}?)" if near else f" (it belongs {home[0]})" if home else ""
        return f"{key} is not a known key{hint}; allowed keys: {', '.join(owner.model_fields)}"
    if error["type"] == "detpipe":
        if "key" in ctx:  # a model validator's error: the keys it names, within the section
            keys = (ctx["key"],) if isinstance(ctx["key"], str) else ctx["key"]
            key = " + ".join(".".join(prefix + loc + (k,)) for k in keys)
        return f"{key} is {_show(ctx.get('value', error['input']))}; allowed: {ctx['allowed']}"
    owner, name = _field_at(root, loc)
    field = owner.model_fields[name]
    return f"{key} is {_show(error['input'])}; allowed: {_allowed(field.annotation, field.metadata, field.description)}"


def _one_per_field(errors: list[dict], root: type[BaseModel]) -> list[dict]:
    """The errors with union members' tags dropped from their locations (pydantic reports a value
    that fits neither `int` nor `auto` once per member, at `key.constrained-int`, `key.literal['auto']`),
    the first per location kept."""
    seen, out = set(), []
    for error in errors:
        loc, model = [], root
        for part in error["loc"]:
            if isinstance(part, str) and model is None:
                continue  # a union member's tag below a field
            if isinstance(part, str) and part in model.model_fields:
                annotation = model.model_fields[part].annotation
                model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            loc.append(part)
        if tuple(loc) not in seen:
            seen.add(tuple(loc))
            out.append({**error, "loc": tuple(loc)})
    return out


def _section_name(cls: type[BaseModel]) -> tuple[str, ...]:
    names = [k for k, f in Params.model_fields.items() if f.annotation is cls]
    return tuple(names[:1])


def from_dict(cls: type[Section], raw: Any, where: str | None = "params.yaml") -> Any:
    """Build `cls` (Params or one section) from a mapping, validated; a problem is a one-line ParamsError
    naming `where` (the file), the dotted key, the value and what is allowed."""
    lead = f"{where}: " if where else ""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        key = ".".join(_section_name(cls)) or "the file"
        raise ParamsError(f"{lead}{key} is {_show(raw)}; allowed: {_allowed(cls, [])}")
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        errors = _one_per_field(exc.errors(), cls)
        prefix = _section_name(cls)
        line = _error_line(errors[0], cls, prefix)
        if len(errors) > 1:
            others = sorted({".".join(prefix + tuple(p for p in e["loc"] if isinstance(p, str))) for e in errors[1:]})
            line += f" (also wrong: {', '.join(others)})"
        raise ParamsError(lead + line) from None


def load_params(path: str | Path) -> Params:
    """Load and validate the whole params file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    params = from_dict(Params, raw, str(path))
    if not params.data.classes and params.data.classes_file:
        try:
            classes = read_classes_file(params.data.classes_file)
        except ParamsError as exc:
            raise ParamsError(f"{path}: {exc}") from None
        params = params.replace(data=params.data.replace(classes=classes))
    if not params.data.classes:
        raise ParamsError(f"{path}: data.classes is empty; allowed: a list of your class names, e.g. "
                          "classes: [cat, dog], or a file of them named in data.classes_file")
    return params


def load_params_or_exit(path: str | Path) -> Params:
    """load_params for a command-line entry point: a bad file ends the process with its one-line
    error on stderr and exit status 1, never a traceback."""
    try:
        return load_params(path)
    except ParamsError as exc:
        raise SystemExit(print_error(exc)) from None


def print_error(exc: Exception) -> int:
    """Print a command's one-line failure as `error: <message>` on stderr; returns exit status 1."""
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return 1


def read_classes_file(path: str | Path, key: str = "data.classes_file") -> tuple[str, ...]:
    """Class names, one per line (blank lines and `#` comments ignored), as in voc_classes.txt."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ParamsError(f"{key} is {str(path)!r}; allowed: a readable UTF-8 file of class names, "
                          f"one per line ({reason})") from None
    names = tuple(ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#"))
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ParamsError(f"{key} is {str(path)!r}; allowed: a file of distinct class names "
                          f"({', '.join(twice)} listed twice)")
    return names


def to_dict(obj: Section) -> dict:
    """Plain-dict form (tuples as lists) for checkpoints, fingerprints and reports."""
    return obj.model_dump(mode="json")
