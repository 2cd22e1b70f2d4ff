"""One training phase (frozen or unfrozen backbone) with per-epoch checkpoints and exact resume."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import accel
from .. import atomic
from ..model import checkpoint as ckpt
from . import distributed as ddp
from . import resume
from . import runlock
from ..data.annotations import Record, ground_truths
from ..data.dataset import Augment, DetectionDataset
from ..data.images import PixelLimit, check_headers
from ..data.object_sizes import relative_short_sides
from ..cpus import training_threads, usable_cpus
from .engine import (ModelEMA, build_optimizer, check_epoch_stats, evaluate_batches, lr_lambda, mean_losses,
                     train_one_epoch)
from ..metrics import voc_map
from ..metrics.epoch import val_scores
from .loss import LossWeights
from ..model.detector import Backbone, Detector, ModelConfig, build_model, describe, model_summary
from ..model.device import channels_last, select_device
from ..model.load import model_config
from ..artifacts.history import EpochRow, write_history
from ..artifacts.image_manifest import file_sha256
from ..params import Params
from .. import recipe as recipes
from ..pipeline.closure import code_closure
from ..pipeline.table import script_params
from ..pipeline.view import ParamsView, as_dict

# Settings that change how fast a run goes but not what it computes: a change resumes.
# (deterministic changes only CUDA's choice of kernels, never what the run means; the pixel limit
# only refuses images, and every image of the splits passed it in annotate.)
_NOT_IN_FINGERPRINT = ("train.device", "train.deterministic", "train.num_workers", "train.threads",
                       "train.keep_checkpoints", "train.cache_images", "data.max_image_pixels")
# The other phase's settings do not change this phase's weights (epoch counts reach the
# augmentation only through mosaic_until, which the fingerprint holds as derived; a train.time
# budget reaches the frozen phase only there too).
_OTHER_PHASE = {"frozen": ("unfreeze_epochs", "unfreeze_batch_size", "time"),
                "unfrozen": ("freeze_batch_size", "freeze_lr_scale")}
_EPOCHS = {"frozen": "freeze_epochs", "unfrozen": "unfreeze_epochs"}
_ROOT = Path(__file__).resolve().parents[2]
# The code that determines the weights is what the train stage runs: its script's import closure
# (the same list dvc.yaml's train deps are generated from), hashed by repo-relative name and content.
_SCRIPT = "stages/train.py" if (_ROOT / "stages/train.py").is_file() else "detpipe/train/phase.py"
RUN_INFO = "run.json"  # beside last.pt: the run's lineage and epoch count
# The epoch bound a budget phase resumes under before its checkpoint says how many it fitted.
_ANY_EPOCHS = 10**12


@dataclass
class Phase:
    """What differs between the two training stages."""

    name: str          # "frozen" or "unfrozen"
    epochs: int
    first_epoch: int   # global number of this phase's first epoch (1-based)
    batch_size: int
    lr: float


def resolve_recipe(params: Params, train_records: list[Record]) -> tuple[Params, tuple[recipes.Choice, ...]]:
    """The params a training run uses, every `auto` resolved (detpipe.recipe) from the params and the
    train split, and the choices made. Resolved params resolve to themselves, so either may come in."""
    freeze = recipes.freeze_epochs(params)
    sides, stride = None, 0
    if params.model.imgsz == recipes.AUTO:
        sides = relative_short_sides(train_records, PixelLimit(params.data.max_image_pixels))
        m = params.model  # the finest level's stride, measured as the model measures it (4 with p2)
        stride = min(Backbone(m.backbone, m.scale, m.p2).strides)
    choices = (freeze, recipes.imgsz(params, sides, stride))
    return recipes.resolve(params, choices), choices


def phase_of(params: Params, name: str) -> Phase:
    t = params.train
    if name == "frozen":
        bs, epochs, first, scale = t.freeze_batch_size, t.freeze_epochs, 1, t.freeze_lr_scale
    elif name == "unfrozen":
        bs, epochs, first, scale = t.unfreeze_batch_size, t.unfreeze_epochs, t.freeze_epochs + 1, 1.0
    else:
        raise ValueError(f"phase must be frozen or unfrozen, not {name!r}")
    # Linear scaling rule: lr is given for nominal_batch_size images per step.
    return Phase(name, epochs, first, bs, params.lr * scale * bs / t.nominal_batch_size)


def run_fingerprint(params: Params, phase: Phase, inputs: list[str | Path], with_epochs: bool = True) -> str:
    """Hash of everything that determines the phase's weights: the params the stage reads, the
    input files' contents, the starting weights and the training code.

    Params are those the train stage declares (a stage passes its ParamsView; a plain Params counts
    whole), less the settings that change speed, not results. A weights file among the inputs (the
    frozen phase's output) counts by its tensors, not its bytes, so rewriting the same weights with
    other metadata still resumes. Nothing depends on where the repo is: code counts by repo-relative
    name and content, inputs by content in their order, so a moved clone or a queued `dvc exp run`
    (in a temp copy) resumes its own checkpoint. with_epochs=False leaves out this phase's epoch
    count (and what derives from it): the run's lineage, shared by runs that differ only in how many
    epochs they train, or the budget they fit them to. On a train.time budget (`on_budget`) the count
    is the run's to find, not an input: train.time counts instead, train.unfreeze_epochs (ignored) does not.
    """
    config = as_dict(_train_view(params))
    skip = set(_OTHER_PHASE[phase.name])
    if not params.train.focal_loss:  # the focal settings compute nothing while it is off
        skip |= {"focal_gamma", "focal_alpha"}
    if params.train.lr_schedule != "step":  # nor do the milestones of another schedule
        skip |= {"lr_milestones", "lr_gamma"}
    augment = asdict(Augment.from_train_params(params.train))
    # What counts is which of this phase's epochs are <= mosaic_until, not the raw number; with
    # mosaic and mixup (which shares mosaic's epochs) off it does not count at all.
    last = phase.first_epoch + phase.epochs - 1
    augment["mosaic_until"] = min(max(augment["mosaic_until"], phase.first_epoch - 1), last)
    if augment["mosaic"] == 0 and augment["mixup"] == 0:
        augment.pop("mosaic_until")
    if not with_epochs or on_budget(params, phase):
        skip.add(_EPOCHS[phase.name])
        augment.pop("mosaic_until", None)
    if not with_epochs:
        skip.add("time")
    config = _without_speed_settings(config)
    config["train"] = {k: v for k, v in config["train"].items() if k not in skip}
    pretrained = params.model.pretrained
    start = [] if phase.name != "frozen" or pretrained in ("", "none", "imagenet", "coco") else [pretrained]
    weights = [f for f in inputs if _is_weights_file(f)]
    h = hashlib.sha256(json.dumps({"phase": phase.name, "params": config, "augment": augment,
                                   "weights": [_weights_digest(f) for f in weights],
                                   "pretrained": [file_sha256(f) for f in start]}, sort_keys=True).encode())
    for f in inputs:
        if f not in weights:
            h.update(file_sha256(f).encode())
    for name in code_closure(_SCRIPT, _ROOT):
        h.update(f"{name}:{file_sha256(_ROOT / name)}".encode())
    return h.hexdigest()[:16]


def on_budget(params, phase: Phase) -> bool:
    """Whether `phase` fits its epoch count to train.time (the unfrozen phase, train.time > 0)."""
    return phase.name == "unfrozen" and params.train.time > 0


def _train_view(params):
    """The params a train stage reads (stages/train.py's PARAMS), also when handed a whole Params
    (tests, benches), so the fingerprint is the same however train_phase is called."""
    if isinstance(params, ParamsView) or _SCRIPT != "stages/train.py":
        return params
    return ParamsView(params, script_params(str(_ROOT / _SCRIPT)), "train")


def _is_weights_file(path: str | Path) -> bool:
    return str(path).endswith(".pt")


def _weights_digest(path: str | Path) -> str:
    """Hash of the tensors (and EMA update count) a phase starts from; metadata does not count."""
    state = ckpt.load(path)
    h = hashlib.sha256(str(state.get("ema_updates", 0)).encode())
    for key in ("model", "ema"):
        for name, tensor in sorted((state.get(key) or {}).items()):
            tensor = tensor.detach().cpu().contiguous().reshape(-1)
            h.update(f"{key}.{name}:{tensor.dtype}:{tensor.numel()}".encode())
            h.update(tensor.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def epoch_count_dependence(params: Params, this_phase: bool = True) -> list[str]:
    """Why the epochs already trained would differ after a change of epoch count (empty: they would not).

    this_phase: the phase's own epoch count changed (else only the other phase's).
    """
    t, why = params.train, []
    if this_phase and t.lr_schedule != "constant" and t.min_lr_ratio != 1.0:
        why.append(f"lr_schedule {t.lr_schedule} depends on the epoch count (it sets the LR at every step)")
    windowed = " and ".join(name for name, p in (("mosaic", t.mosaic), ("mixup", t.mixup)) if p > 0)
    if windowed and 0 < t.mosaic_fraction < 1:
        why.append(f"mosaic_fraction {t.mosaic_fraction} ends the {windowed} epochs at a fraction of all epochs, "
                   "so augmentation depends on the epoch counts (mosaic and mixup 0, or mosaic_fraction 0 or 1, "
                   "does not)")
    return why


def patience_exhausted(patience: int, epoch: int, best_epoch: int) -> bool:
    """Early stopping as Ultralytics: `patience` epochs after the best val mAP50 without beating it.

    Epochs are global; patience 0 never stops. Ultralytics' default is 100 (detpipe's is 0, off).
    A val mAP50 of 0 from the first epoch on counts as no improvement, so from-scratch runs that
    need a few epochs to detect anything want a patience above that.
    """
    return patience > 0 and epoch - best_epoch >= patience


def _write_run_info(run_dir: Path, lineage: str, epochs: int | None) -> None:
    """epochs None: a budget run's count before it is fitted (no other run continues from it until then)."""
    atomic.write_text(run_dir / RUN_INFO, json.dumps({"lineage": lineage, "epochs": epochs}))


def _record_fitted_epochs(run_dir: Path, epochs: int) -> None:
    """A budget run's fitted count into its run.json, for the runs of its lineage that may continue it."""
    try:
        lineage = json.loads((run_dir / RUN_INFO).read_text(encoding="utf-8"))["lineage"]
    except (OSError, ValueError, TypeError, KeyError):
        return  # no lineage to record it under: no other run continues this one
    _write_run_info(run_dir, lineage, epochs)


def _same_lineage(run_dir: Path, lineage: str) -> list[tuple[float, Path, int]]:
    """(mtime, folder, epochs) of the other runs of `lineage` beside `run_dir` that have a last.pt."""
    others = []
    for other in run_dir.parent.iterdir():
        if other == run_dir or other.name.startswith(".") or not (other / resume.LAST).is_file():
            continue  # dot folders are being pruned
        try:
            info = json.loads((other / RUN_INFO).read_text(encoding="utf-8"))
            if info.get("lineage") == lineage:
                others.append((other.stat().st_mtime, other, int(info["epochs"])))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # no or a damaged run.json: not a candidate
    return others


def _continue_other_epoch_count(params: Params, phase: Phase, run_dir: Path, lineage: str, fp: str) -> None:
    """Start from the checkpoint of a run that differed only in its epoch count, where that is exact.

    The checkpoint is copied into `run_dir` as this run's (its fingerprint is this run's; the
    other run's file stays as it was); otherwise say why this run starts fresh.
    """
    name, others = f"train_{phase.name}", _same_lineage(run_dir, lineage)
    if not others:
        return
    budget = on_budget(params, phase)

    def planned(state: dict) -> int:
        """The epochs this run trains from `state`: on a budget, fitted to the first epoch's time it records."""
        if not budget:
            return phase.epochs
        rows = state.get("history") or []
        return recipes.fit_to_budget(params, float(rows[0]["seconds"]))[0].value if rows else -1

    _, newest, n = max(others)
    reasons = epoch_count_dependence(params, this_phase=budget or n != phase.epochs)
    if reasons:
        print(f"{name}: not continuing the {n}-epoch run of the same params ({newest}): {'; '.join(reasons)}. "
              "A changed epoch count continues only with lr_schedule constant and mosaic off or over all epochs",
              flush=True)
        return
    states = {}
    for _, other, _ in others:
        try:
            states[other] = ckpt.load(other / resume.LAST)
        except ckpt.CheckpointError as exc:
            print(f"{name}: not continuing from {other / resume.LAST}: {exc.reason}", flush=True)
    done = {o: s.get("epoch") for o, s in states.items() if isinstance(s, dict) and isinstance(s.get("epoch"), int)}
    usable = [(done[o], o, n) for _, o, n in others if o in done and done[o] <= planned(states[o])]
    if not usable:
        if done:
            past = (f"the count train.time {params.train.time:g} h fits from its first epoch's time" if budget
                    else f"epoch {phase.first_epoch + phase.epochs - 1}")
            print(f"{name}: not continuing the {n}-epoch run of the same params ({newest}): its checkpoint "
                  f"is already past {past}", flush=True)
        return
    _, source, n = max(usable)
    ckpt.save_atomic({**states[source], "fingerprint": fp}, run_dir / resume.LAST)
    now = (f"{planned(states[source])}, fitted to train.time {params.train.time:g} h from its first epoch's time"
           if budget else phase.epochs)
    print(f"{name}: only the epoch count changed ({n} -> {now}) and the LR schedule and "
          f"augmentation do not depend on it: continuing the {n}-epoch run ({source})", flush=True)


def _snapshot(module: torch.nn.Module) -> dict:
    """A copy of the state dict (state_dict() alone returns live tensors that training keeps changing)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _recorded_params(params) -> dict:
    """The params stored with the weights: those that made them. The speed settings are left out, so
    a rerun that only changed `threads` or `device` (and so resumed with nothing to train) exports
    byte-identical weights and nothing downstream reruns."""
    return _without_speed_settings(as_dict(params))


def _recorded_recipe(recipe: tuple[recipes.Choice, ...]) -> list[dict]:
    """The resolved settings with their reasons, as stored with the weights (the report shows them)."""
    return [c.record() for c in recipe]


def _without_speed_settings(config: dict) -> dict:
    return {section: {k: v for k, v in values.items() if f"{section}.{k}" not in _NOT_IN_FINGERPRINT}
            if isinstance(values, dict) else values for section, values in config.items()}


def _state(parts: resume.Trainables, epoch, history, best, params, fp, phase, env, recipe,
           stopped_early=None) -> dict:
    # stopped_early: the global epoch after which patience ended the phase (None: it did not), so a
    # rerun, or a run continuing this one with more epochs, does not train past the stop.
    return {**parts.state(), "epoch": epoch, "history": history, "best": best, "stopped_early": stopped_early,
            "params": _recorded_params(params), "recipe": _recorded_recipe(recipe),
            "model_config": parts.model.config.to_dict(),
            "class_names": list(params.data.classes), "imgsz": params.model.imgsz, "fingerprint": fp,
            "phase": phase.name, "env": env}


@contextlib.contextmanager
def _hold_run_dir(params: Params, phase: Phase, inputs: list[str | Path], run_dir: Path, fp: str, info):
    """Rank 0 locks the run folder (one training process per run) and readies it; the others wait."""
    name = f"train_{phase.name}"
    if not info.main:
        error = ddp.broadcast(None, info)
        if error:
            raise runlock.RunBusyError(error)
        yield
        return
    try:
        lock = runlock.acquire(run_dir, name)
    except runlock.RunBusyError as exc:
        ddp.broadcast(str(exc), info)
        raise
    with lock:
        atomic.clean_temp_files(run_dir)
        if not any((run_dir / f).exists() for f in (resume.LAST, resume.PREV)):
            lineage = run_fingerprint(params, phase, inputs, with_epochs=False)
            _write_run_info(run_dir, lineage, None if on_budget(params, phase) else phase.epochs)
            _continue_other_epoch_count(params, phase, run_dir, lineage, fp)
        for removed in runlock.prune(run_dir.parent, params.train.keep_checkpoints, fp):
            print(f"pruned old checkpoint folder {removed}")
        ddp.broadcast(None, info)
        yield


def _save_epoch(state: dict, run_dir: Path, tsv_path: str | Path, name: str) -> None:
    resume.save(state, run_dir, name)
    try:
        write_history(tsv_path, state["history"])
    except atomic.WriteError as exc:
        raise atomic.WriteError(f"{name}: {exc}; kept: the checkpoint of epoch {state['history'][-1]['epoch']} "
                                f"({run_dir / resume.LAST}); free space and rerun the same command") from None


def _validate(ema_module, val_loader, device, params: Params, gts: list, weights: LossWeights,
              info: ddp.DistInfo) -> dict[str, float]:
    """Val losses and scores of the EMA weights (`EpochRow`'s val_* fields); under DDP each rank
    evaluates its share of the val batches with rank 0's BatchNorm statistics, and every rank gets
    the same figures."""
    start = time.perf_counter()
    ddp.sync_buffers(ema_module, info)
    sums, dets = evaluate_batches(ema_module, val_loader, device, params.model.imgsz, params.map.confidence,
                                  params.predict.nms_iou, params.predict.max_det, weights=weights)
    sums, dets = ddp.gather_evaluation(sums, dets, info)
    losses = mean_losses(sums)
    scores = val_scores(gts, dets, len(params.data.classes))
    return {"val_loss": losses["loss"], "val_box_loss": losses["box"], "val_cls_loss": losses["cls"], **scores,
            "val_seconds": time.perf_counter() - start}


def train_phase(params: Params, phase_name: str, train_records: list[Record], val_records: list[Record],
                inputs: list[str | Path], ckpt_root: str | Path, tsv_path: str | Path,
                init: str | Path | None = None, recipe: tuple[recipes.Choice, ...] | None = None) -> dict:
    """Train one phase, resuming from its own checkpoint if one exists; returns the final state.

    `params` may hold `auto` settings, resolved here (detpipe.recipe), or come resolved with the
    `recipe` that resolved them (the stage, which prints the choices). The returned dict (also in
    .ckpt/<stage>/<fingerprint>/last.pt) carries "best_model" and "best_ema" state dicts of the
    epoch with the highest val mAP50.
    """
    if recipe is None:
        params, recipe = resolve_recipe(params, train_records)
    t = params.train
    phase = phase_of(params, phase_name)
    # An image above data.max_image_pixels (or unreadable) stops the run here, from the headers,
    # not in the middle of an epoch (the loaders apply the same limit).
    check_headers([r.path for r in [*train_records, *val_records]], PixelLimit(params.data.max_image_pixels))
    torch.set_num_threads(t.threads or usable_cpus())
    # world 1 without torchrun; under DDP on CUDA, rank r trains on cuda:r
    info, device = ddp.start(select_device(t.device), t, phase.batch_size, f"train_{phase.name}")
    accel.configure_backends(device, t.deterministic)
    amp_dtype = accel.amp_dtype(t, device)  # refuses bfloat16 on a GPU without it, before any work
    fp = run_fingerprint(params, phase, inputs)
    run_dir = Path(ckpt_root) / f"train_{phase.name}" / fp
    with _hold_run_dir(params, phase, inputs, run_dir, fp, info):
        return _train(params, phase, device, amp_dtype, info, train_records, val_records, run_dir, fp, tsv_path,
                      init, recipe)


def _automatic_threads(t, info) -> bool:
    """`train.threads: 0` on one process: detpipe picks the count (DDP ranks split the CPUs evenly)."""
    return not t.threads and info.world == 1


def _train(params: Params, phase: Phase, device: torch.device, amp_dtype, info, train_records: list[Record],
           val_records: list[Record], run_dir: Path, fp: str, tsv_path: str | Path,
           init: str | Path | None, recipe: tuple[recipes.Choice, ...]) -> dict:
    t, name = params.train, f"train_{phase.name}"
    torch.manual_seed(params.seed)
    with ddp.main_first(info):  # rank 0 downloads pretrained weights once, before the others read them
        model = build_model(model_config(params), params.model.pretrained if phase.name == "frozen" else "none")
    if init is not None:
        start = ckpt.load(init)
        model.load_state_dict(start["model"])
    model.backbone.freeze(phase.name == "frozen")
    nhwc = channels_last(device, model)
    model.to(device, memory_format=torch.channels_last if nhwc else torch.preserve_format)
    ema = ModelEMA(model, t.ema_decay)
    if init is not None and "ema" in start:
        ema.module.load_state_dict(start["ema"])
        ema.updates = int(start.get("ema_updates", 0))

    limit = PixelLimit(params.data.max_image_pixels)
    train_set = DetectionDataset(train_records, params.model.imgsz, params.seed, Augment.from_train_params(t),
                                 cache=t.cache_images, pixel_limit=limit)
    steps_per_epoch = max(1, len(train_set) // phase.batch_size) if len(train_set) > phase.batch_size else 1
    drop_last = len(train_set) > phase.batch_size
    optimizer = build_optimizer(model, t.optimizer, phase.lr, t.momentum, t.weight_decay, fused=device.type == "cuda")
    warmup = round(t.warmup_epochs * steps_per_epoch) if phase.name == "frozen" or t.freeze_epochs == 0 else 0
    budget = on_budget(params, phase)
    if budget:  # one epoch trains before the count is fitted: its LR must not depend on the count
        phase = replace(phase, epochs=1)
        print(f"{name}: train.time {t.time:g} h: the epoch count is fitted to the budget after the first epoch "
              f"(train.unfreeze_epochs {t.unfreeze_epochs} is ignored)", flush=True)

    def schedule(epochs: int):
        return lr_lambda(epochs * steps_per_epoch, warmup, t.lr_schedule, t.min_lr_ratio, t.lr_milestones,
                         t.lr_gamma, hold_steps=steps_per_epoch if budget else 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(phase.epochs))
    scaler = accel.grad_scaler(t, device)  # float16 autocast on CUDA only
    # Built once per phase: loader workers (and their image caches) live across epochs.
    loader = ddp.train_loader(train_set, phase.batch_size, t.num_workers, drop_last, info, device)
    val_loader = ddp.val_loader(DetectionDataset(val_records, params.model.imgsz, pixel_limit=limit), phase.batch_size,
                                t.num_workers, info, device)
    gts = ground_truths(val_records)
    weights = LossWeights.from_train_params(t)
    # Without val images mAP50 is 0 in every epoch: that says nothing, so it stops nothing.
    patience = t.patience if val_records else 0
    if t.patience and not val_records:
        print(f"{name}: no val images, so no early stopping (train.patience {t.patience} ignored)",
              flush=True)

    parts = resume.Trainables(model, ema, optimizer, scheduler, scaler)
    env = resume.environment(device, amp_dtype)
    history, best, done, stopped = [], {"epoch": 0, "val_map50": -1.0}, 0, None
    best_states = {"best_model": _snapshot(model), "best_ema": _snapshot(ema.module)}
    fresh = {**_state(parts, 0, [], dict(best), params, fp, phase, env, recipe), **best_states}
    found = resume.latest(run_dir, fresh, parts, _ANY_EPOCHS if budget else phase.epochs, name, info.main,
                          lambda obj: ddp.broadcast(obj, info))
    fitted = False  # a budget phase's count: fitted from its first epoch, once (on resume, from its record)
    if found is not None:
        state, path = found
        history, best, done = state["history"], state["best"], state["epoch"]
        stopped = state["stopped_early"]
        best_states = {k: state[k] for k in ("best_model", "best_ema")}
        if budget:  # before the loader's workers start, so they copy the fitted augmentation
            params, phase, recipe = _fit_epochs(params, phase, recipe, history, name, scheduler, schedule, train_set,
                                                 run_dir if info.main else None)
            fitted = True
        if _automatic_threads(t, info):  # the count this phase started with, so numerics stay bitwise
            usable = usable_cpus()
            torch.set_num_threads(min(int(state["env"].get("threads", usable)), usable))
            env = resume.environment(device, amp_dtype)
        resume.warn_environment(state, env, name)
        _announce_resume(phase, path, done, stopped, best, t.patience)
    else:
        if _automatic_threads(t, info):
            threads, why = training_threads()
            torch.set_num_threads(threads)
            env = resume.environment(device, amp_dtype)
            if why:
                print(f"{name}: threads: {why}", flush=True)
        print(f"model: {describe(model.config, model_summary(model, params.model.imgsz))}", flush=True)
        print(f"{name}: starting fresh ({phase.epochs} epochs, batch {phase.batch_size}, "
              f"lr {phase.lr:.3g}, {len(train_records)} train / {len(val_records)} val images, "
              f"device {device}, checkpoints in {run_dir})", flush=True)
    # What trains: DDP (+ compile) around `model`; EMA, evaluation and checkpoints use `model` itself.
    net = accel.maybe_compile(ddp.wrap_model(model, device, info, t.sync_bn), t.compile)

    epoch = done
    # A phase stopped by patience trains no further; a budget phase's count is known after its first epoch.
    while epoch < (phase.epochs if stopped is None else done):
        global_epoch = phase.first_epoch + epoch
        # Model-side randomness is seeded per epoch, so a resumed epoch draws what the original would.
        torch.manual_seed(params.seed * 100_003 + global_epoch)
        epoch_start = _now()
        # This rank's slice of each global batch (the whole batch when world is 1).
        ddp.set_epoch(loader, global_epoch)
        desc = f"{phase.name} {global_epoch}/{'?' if budget and not fitted else phase.first_epoch + phase.epochs - 1}"
        sums, n_img, seconds = train_one_epoch(net, loader, optimizer, scheduler, ema, device, scaler, t.grad_clip,
                                               desc, weights, amp_dtype=amp_dtype, channels_last=nhwc,
                                               ema_source=model)
        tr = ddp.reduce_epoch_stats(sums, n_img, seconds, info)
        check_epoch_stats(tr, desc, optimizer.param_groups[0]["lr"], scaler.is_enabled(), len(loader) * info.world)
        val = _validate(ema.module, val_loader, device, params, gts, weights, info)
        val_map = val["val_map50"]
        # Rows are kept as plain dicts: the checkpoint holds them (weights_only=True loads no classes).
        history.append(asdict(EpochRow(
            epoch=global_epoch, phase=phase.name, train_loss=tr["loss"], lr=optimizer.param_groups[0]["lr"],
            seconds=_now() - epoch_start, images_per_s=tr["images"] / max(tr["seconds"], 1e-9),
            mosaic=train_set.augment.mosaic_on(global_epoch), train_box_loss=tr["box"],
            train_cls_loss=tr["cls"], **val)))
        print(f"  epoch {global_epoch}: train loss {tr['loss']:.3f}  val loss {val['val_loss']:.3f}  "
              f"val mAP50 {val_map:.3f}  mAP50-95 {val['val_map50_95']:.3f}  P {val['val_precision']:.3f}  "
              f"R {val['val_recall']:.3f}  ({tr['images'] / max(tr['seconds'], 1e-9):.1f} img/s)", flush=True)
        if budget and not fitted:  # this epoch's wall time (its history row) fits the count, once
            history[-1]["seconds"] = ddp.broadcast(history[-1]["seconds"], info)  # DDP: rank 0's, on every rank
            params, phase, recipe = _fit_epochs(params, phase, recipe, history, name, scheduler, schedule, train_set,
                                                 run_dir if info.main else None)
            if t.num_workers:  # persistent workers hold a copy of the dataset and its augmentation
                loader = ddp.train_loader(train_set, phase.batch_size, t.num_workers, drop_last, info, device)
            fitted = True
        if val_map > best["val_map50"]:
            best = {"epoch": global_epoch, "val_map50": val_map}
            best_states = {"best_model": _snapshot(model), "best_ema": _snapshot(ema.module)}
        # Every rank decides alike (val_map is broadcast). Recorded even at the last planned epoch:
        # a run continued from this checkpoint with more epochs must stop here as a fresh one would.
        if patience_exhausted(patience, global_epoch, best["epoch"]):
            stopped = global_epoch
        done = epoch + 1
        if info.main:  # DDP: rank 0 alone writes checkpoints and TSVs
            _save_epoch({**_state(parts, done, history, best, params, fp, phase, env, recipe, stopped),
                         **best_states}, run_dir, tsv_path, name)
        if stopped is not None:
            if epoch + 1 < phase.epochs:
                print(f"early stop: no val mAP50 improvement for {t.patience} epochs; best epoch {best['epoch']} "
                      f"(val mAP50 {best['val_map50']:.3f}); {name} ends after epoch {global_epoch} "
                      f"of {phase.first_epoch + phase.epochs - 1}", flush=True)
            break
        epoch = done

    if info.main:
        write_history(tsv_path, history)
    ddp.barrier(info)  # every rank reads the final checkpoint rank 0 wrote
    last = run_dir / resume.LAST
    if last.exists():
        final = ckpt.load(last)
    else:  # no epoch trained or resumed (zero epochs, or a stopped run resumed from prev.pt)
        final = {**_state(parts, done, history, best, params, fp, phase, env, recipe, stopped), **best_states}
    # Also when no epoch was left to train: a checkpoint of `auto` resolved alike serves `auto` and its number.
    final.update(params=_recorded_params(params), recipe=_recorded_recipe(recipe), fingerprint=fp)
    if info.main:
        os.utime(run_dir)  # mark as recently used for pruning
    return final


def _now() -> float:
    """Wall-clock seconds (tests replace it to make epochs last as long as they need)."""
    return time.time()


def _fit_epochs(params: Params, phase: Phase, recipe: tuple[recipes.Choice, ...], history: list[dict], name: str,
                scheduler, schedule, train_set: DetectionDataset,
                run_dir: Path | None) -> tuple[Params, Phase, tuple[recipes.Choice, ...]]:
    """A budget phase's epoch count from its first epoch's wall time as its history records it: measured
    once, when that epoch trained, and read back on every resume, so a resumed run never re-measures.
    The LR schedule (`schedule(epochs)`, a lambda for `scheduler`) and the mosaic window follow the
    count; the steps trained before, and the next one, have the same LR under any count (hold_steps).
    `run_dir` (rank 0's) records the count in run.json for the runs of its lineage."""
    choice, warning = recipes.fit_to_budget(params, float(history[0]["seconds"]))
    print(f"recipe: {choice.line()}", flush=True)
    if warning:
        print(f"{name}: warning: {warning}", flush=True)
    params = recipes.resolve(params, (choice,))
    scheduler.lr_lambdas = [schedule(choice.value)] * len(scheduler.lr_lambdas)
    train_set.augment = Augment.from_train_params(params.train)
    if run_dir is not None:
        _record_fitted_epochs(run_dir, choice.value)
    return params, replace(phase, epochs=choice.value), tuple(c for c in recipe if c.key != choice.key) + (choice,)


def _announce_resume(phase: Phase, path: Path, done: int, stopped: int | None, best: dict, patience: int) -> None:
    where = f"checkpoint {path}, {done}/{phase.epochs} epochs done"
    if stopped is not None and done < phase.epochs:
        print(f"train_{phase.name}: the checkpoint stopped early after epoch {stopped} (no val mAP50 "
              f"improvement for {patience} epochs; best epoch {best['epoch']}): nothing left to train ({where})",
              flush=True)
    else:
        print(f"resuming train_{phase.name} from epoch {phase.first_epoch + done} ({where})", flush=True)


def export_weights(state: dict, which: str) -> dict:
    """The deployable part of a training state: `which` is "last" or "best"."""
    keys = ("model", "ema") if which == "last" else ("best_model", "best_ema")
    out = {"model": state[keys[0]], "ema": state[keys[1]]}
    for k in ("model_config", "class_names", "imgsz", "params", "recipe", "history", "best", "epoch", "ema_updates",
              "phase"):
        out[k] = state[k]
    out["stopped_early"] = state.get("stopped_early")  # None also for states written before patience existed
    return out


