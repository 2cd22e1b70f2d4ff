"""One training phase (frozen or unfrozen backbone) with per-epoch checkpoints and exact resume."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import accel
from . import checkpoint as ckpt
from . import distributed as ddp
from .annotations import Record
from .data import Augment, DetectionDataset
from .engine import (ModelEMA, build_optimizer, eval_loader, evaluate, ground_truth, lr_lambda,
                     select_device, train_one_epoch)
from .metrics import voc_map
from .loss import LossWeights
from .model import Detector, ModelConfig, build_model, describe, model_summary
from .params import Params, to_dict

TSV_COLUMNS = ["epoch", "phase", "train_loss", "val_loss", "val_map50", "lr", "seconds", "images_per_s",
               "train_box_loss", "train_cls_loss", "val_box_loss", "val_cls_loss"]
# Settings that change how fast a run goes but not what it computes: a change resumes.
_NOT_IN_FINGERPRINT = ("device", "num_workers", "threads", "keep_checkpoints", "cache_images")
# The other phase's settings do not change this phase's weights (epoch counts reach the
# augmentation only through mosaic_until, which the fingerprint holds as derived).
_OTHER_PHASE = {"frozen": ("unfreeze_epochs", "unfreeze_batch_size"),
                "unfrozen": ("freeze_batch_size", "freeze_lr_scale")}
_EPOCHS = {"frozen": "freeze_epochs", "unfrozen": "unfreeze_epochs"}
# The code that determines the weights (dvc.yaml's train deps): a change there starts fresh.
_CODE = ("training.py", "engine.py", "model.py", "layers.py", "loss.py", "data.py", "boxes.py", "distributed.py",
         "accel.py")
RUN_INFO = "run.json"  # beside last.pt: the run's lineage and epoch count


@dataclass
class Phase:
    """What differs between the two training stages."""

    name: str          # "frozen" or "unfrozen"
    epochs: int
    first_epoch: int   # global number of this phase's first epoch (1-based)
    batch_size: int
    lr: float


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


def model_config(params: Params) -> ModelConfig:
    return ModelConfig(len(params.data.classes), params.model.backbone, params.model.neck_channels,
                       params.model.scale, params.model.neck)


def run_fingerprint(params: Params, phase: Phase, inputs: list[str | Path], with_epochs: bool = True) -> str:
    """Hash of everything that determines the phase's weights: params, input files, training code.

    A weights file among the inputs (the frozen phase's output) counts by its tensors, not its
    bytes, so rewriting the same weights with other metadata still resumes. with_epochs=False
    leaves out this phase's epoch count (and what derives from it): the run's lineage, shared by
    runs that differ only in how many epochs they train.
    """
    skip = set(_NOT_IN_FINGERPRINT) | set(_OTHER_PHASE[phase.name])
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
    if not with_epochs:
        skip.add(_EPOCHS[phase.name])
        augment.pop("mosaic_until", None)
    train = {k: v for k, v in to_dict(params.train).items() if k not in skip}
    weights = [f for f in inputs if _is_weights_file(f)]
    config = {"phase": phase.name, "lr": params.lr, "seed": params.seed, "model": to_dict(params.model),
              "train": train, "augment": augment, "classes": list(params.data.classes),
              "weights": [_weights_digest(f) for f in weights]}
    code = [Path(__file__).with_name(name) for name in _CODE]
    return ckpt.fingerprint(config, [f for f in inputs if f not in weights] + code)


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


def _write_run_info(run_dir: Path, lineage: str, epochs: int) -> None:
    tmp = run_dir / f".{RUN_INFO}.tmp"
    tmp.write_text(json.dumps({"lineage": lineage, "epochs": epochs}), encoding="utf-8")
    os.replace(tmp, run_dir / RUN_INFO)


def _continue_other_epoch_count(params: Params, phase: Phase, run_dir: Path, lineage: str) -> None:
    """Start from the checkpoint of a run that differed only in its epoch count, where that is exact.

    The checkpoint is hard-linked into `run_dir` (save_atomic later replaces the link, so the
    other run's file stays as it was); otherwise say why this run starts fresh.
    """
    name, others = f"train_{phase.name}", []
    for other in run_dir.parent.iterdir():
        try:
            info = json.loads((other / RUN_INFO).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if other != run_dir and info.get("lineage") == lineage and (other / "last.pt").is_file():
            others.append((other.stat().st_mtime, other, int(info["epochs"])))
    if not others:
        return
    _, newest, n = max(others)
    reasons = epoch_count_dependence(params, this_phase=n != phase.epochs)
    if reasons:
        print(f"{name}: not continuing the {n}-epoch run of the same params ({newest}): {'; '.join(reasons)}. "
              "A changed epoch count continues only with lr_schedule constant and mosaic off or over all epochs",
              flush=True)
        return
    done = {other: int(ckpt.load(other / "last.pt")["epoch"]) for _, other, _ in others}
    usable = [(done[other], other, n) for _, other, n in others if done[other] <= phase.epochs]
    if not usable:
        print(f"{name}: not continuing the {n}-epoch run of the same params ({newest}): its checkpoint "
              f"is already past epoch {phase.first_epoch + phase.epochs - 1}", flush=True)
        return
    _, source, n = max(usable)
    try:
        os.link(source / "last.pt", run_dir / "last.pt")
    except OSError:
        shutil.copy2(source / "last.pt", run_dir / "last.pt")
    print(f"{name}: only the epoch count changed ({n} -> {phase.epochs}) and the LR schedule and "
          f"augmentation do not depend on it: continuing the {n}-epoch run ({source})", flush=True)


def write_tsv(path: str | Path, history: list[dict]) -> None:
    """Rewrite the training TSV in full (a declared output, so never appended to)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, TSV_COLUMNS, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _snapshot(module: torch.nn.Module) -> dict:
    """A copy of the state dict (state_dict() alone returns live tensors that training keeps changing)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _state(model, ema, optimizer, scheduler, scaler, epoch, history, best, params, fp, phase,
           stopped_early=None) -> dict:
    # stopped_early: the global epoch after which patience ended the phase (None: it did not), so a
    # rerun, or a run continuing this one with more epochs, does not train past the stop.
    return {"model": model.state_dict(), "ema": ema.module.state_dict(), "ema_updates": ema.updates,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "history": history, "best": best,
            "stopped_early": stopped_early,
            "rng": {"torch": torch.get_rng_state()}, "params": to_dict(params),
            "model_config": model.config.to_dict(), "class_names": list(params.data.classes),
            "imgsz": params.model.imgsz, "fingerprint": fp, "phase": phase.name}


def train_phase(params: Params, phase_name: str, train_records: list[Record], val_records: list[Record],
                inputs: list[str | Path], ckpt_root: str | Path, tsv_path: str | Path,
                init: str | Path | None = None) -> dict:
    """Train one phase, resuming from its own checkpoint if one exists; returns the final state.

    The returned dict (also in .ckpt/<stage>/<fingerprint>/last.pt) carries "best_model" and
    "best_ema" state dicts of the epoch with the highest val mAP50.
    """
    t = params.train
    phase = phase_of(params, phase_name)
    device = select_device(t.device)
    torch.set_num_threads(t.threads or os.cpu_count() or 1)
    info = ddp.start(device, t, phase.batch_size, f"train_{phase.name}")  # world 1 without torchrun
    if not info.main:  # rank 0 prepares the checkpoint folder (resume link, pruning) first
        ddp.barrier(info)
    fp = run_fingerprint(params, phase, inputs)
    run_dir = Path(ckpt_root) / f"train_{phase.name}" / fp
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.clean_temp_files(run_dir)
    if not (run_dir / "last.pt").exists():
        lineage = run_fingerprint(params, phase, inputs, with_epochs=False)
        _write_run_info(run_dir, lineage, phase.epochs)
        _continue_other_epoch_count(params, phase, run_dir, lineage)
    for removed in ckpt.prune(run_dir.parent, t.keep_checkpoints, fp):
        print(f"pruned old checkpoint folder {removed}")
    if info.main:
        ddp.barrier(info)

    torch.manual_seed(params.seed)
    model = build_model(model_config(params), params.model.pretrained if phase.name == "frozen" else "none")
    if init is not None:
        start = ckpt.load(init)
        model.load_state_dict(start["model"])
    model.backbone.freeze(phase.name == "frozen")
    nhwc = accel.channels_last(device, model)
    model.to(device, memory_format=torch.channels_last if nhwc else torch.preserve_format)
    ema = ModelEMA(model, t.ema_decay)
    if init is not None and "ema" in start:
        ema.module.load_state_dict(start["ema"])
        ema.updates = int(start.get("ema_updates", 0))

    train_set = DetectionDataset(train_records, params.model.imgsz, params.seed, Augment.from_train_params(t),
                                 cache=t.cache_images)
    steps_per_epoch = max(1, len(train_set) // phase.batch_size) if len(train_set) > phase.batch_size else 1
    drop_last = len(train_set) > phase.batch_size
    optimizer = build_optimizer(model, t.optimizer, phase.lr, t.momentum, t.weight_decay)
    warmup = round(t.warmup_epochs * steps_per_epoch) if phase.name == "frozen" or t.freeze_epochs == 0 else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(phase.epochs * steps_per_epoch, warmup, t.lr_schedule, t.min_lr_ratio,
                             t.lr_milestones, t.lr_gamma))
    scaler = accel.grad_scaler(t, device)  # float16 autocast on CUDA only
    val_loader = eval_loader(val_records, params.model.imgsz, phase.batch_size, t.num_workers)
    gts = ground_truth(val_records)
    weights = LossWeights.from_train_params(t)
    # Without val images mAP50 is 0 in every epoch: that says nothing, so it stops nothing.
    patience = t.patience if val_records else 0
    if t.patience and not val_records:
        print(f"train_{phase.name}: no val images, so no early stopping (train.patience {t.patience} ignored)",
              flush=True)

    history, best, done, stopped = [], {"epoch": 0, "val_map50": -1.0}, 0, None
    best_states = {"best_model": _snapshot(model), "best_ema": _snapshot(ema.module)}
    last_path = run_dir / "last.pt"
    if last_path.exists():
        state = ckpt.load(last_path)
        model.load_state_dict(state["model"])
        ema.module.load_state_dict(state["ema"])
        ema.updates = state["ema_updates"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        history, best, done = state["history"], state["best"], state["epoch"]
        stopped = state.get("stopped_early")
        best_states = {k: state[k] for k in ("best_model", "best_ema")}
        if stopped is not None and done < phase.epochs:
            print(f"train_{phase.name}: the checkpoint stopped early after epoch {stopped} (no val mAP50 "
                  f"improvement for {t.patience} epochs; best epoch {best['epoch']}): nothing left to train "
                  f"(checkpoint {last_path}, {done}/{phase.epochs} epochs done)", flush=True)
        else:
            print(f"resuming train_{phase.name} from epoch {phase.first_epoch + done} "
                  f"(checkpoint {last_path}, {done}/{phase.epochs} epochs done)", flush=True)
    else:
        print(f"model: {describe(model.config, model_summary(model, params.model.imgsz))}", flush=True)
        print(f"train_{phase.name}: starting fresh ({phase.epochs} epochs, batch {phase.batch_size}, "
              f"lr {phase.lr:.3g}, {len(train_records)} train / {len(val_records)} val images, "
              f"device {device}, checkpoints in {run_dir})", flush=True)
    # What trains: DDP (+ compile) around `model`; EMA, evaluation and checkpoints use `model` itself.
    net = accel.maybe_compile(ddp.wrap_model(model, device, info, t.sync_bn), t.compile)

    end = phase.epochs if stopped is None else done  # a phase stopped by patience trains no further
    for epoch in range(done, end):
        global_epoch = phase.first_epoch + epoch
        # Model-side randomness is seeded per epoch, so a resumed epoch draws what the original would.
        torch.manual_seed(params.seed * 100_003 + global_epoch)
        epoch_start = time.time()
        # This rank's slice of each global batch (the whole batch when world is 1).
        loader = ddp.train_loader(train_set, phase.batch_size, global_epoch, t.num_workers, drop_last, info)
        tr = train_one_epoch(net, loader, optimizer, scheduler, ema, device, scaler, t.grad_clip,
                             f"{phase.name} {global_epoch}/{phase.first_epoch + phase.epochs - 1}", weights,
                             amp_dtype=accel.amp_dtype(t, device), channels_last=nhwc,
                             ema_source=model)
        tr = ddp.reduce_epoch_stats(tr, info)
        val_loss, val_map = None, 0.0
        if info.main:  # validation on rank 0 only; the others wait in the broadcast
            val_loss, dets = evaluate(ema.module, val_loader, device, params.model.imgsz, params.map.confidence,
                                      params.predict.nms_iou, params.predict.max_det, weights=weights)
            val_map = float(voc_map(gts, dets, len(params.data.classes), 0.5).map) if val_records else 0.0
        val_loss, val_map = ddp.broadcast((val_loss, val_map), info)
        history.append({"epoch": global_epoch, "phase": phase.name, "train_loss": tr["loss"],
                        "val_loss": val_loss["loss"], "val_map50": val_map,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - epoch_start,
                        "images_per_s": tr["images"] / max(tr["seconds"], 1e-9),
                        "train_box_loss": tr["box"], "train_cls_loss": tr["cls"],
                        "val_box_loss": val_loss["box"], "val_cls_loss": val_loss["cls"]})
        print(f"  epoch {global_epoch}: train loss {tr['loss']:.3f}  val loss {val_loss['loss']:.3f}  "
              f"val mAP50 {val_map:.3f}  ({tr['images'] / max(tr['seconds'], 1e-9):.1f} img/s)", flush=True)
        if val_map > best["val_map50"]:
            best = {"epoch": global_epoch, "val_map50": val_map}
            best_states = {"best_model": _snapshot(model), "best_ema": _snapshot(ema.module)}
        # Every rank decides alike (val_map is broadcast). Recorded even at the last planned epoch:
        # a run continued from this checkpoint with more epochs must stop here as a fresh one would.
        if patience_exhausted(patience, global_epoch, best["epoch"]):
            stopped = global_epoch
        state = _state(model, ema, optimizer, scheduler, scaler, epoch + 1, history, best, params, fp, phase,
                       stopped)
        if info.main:  # DDP: rank 0 alone writes checkpoints and TSVs
            ckpt.save_atomic({**state, **best_states}, last_path)
            write_tsv(tsv_path, history)
        if stopped is not None:
            if epoch + 1 < phase.epochs:
                print(f"early stop: no val mAP50 improvement for {t.patience} epochs; best epoch {best['epoch']} "
                      f"(val mAP50 {best['val_map50']:.3f}); train_{phase.name} ends after epoch {global_epoch} "
                      f"of {phase.first_epoch + phase.epochs - 1}", flush=True)
            break

    if info.main:
        write_tsv(tsv_path, history)
    ddp.barrier(info)  # every rank reads the final checkpoint rank 0 wrote
    if last_path.exists():
        final = ckpt.load(last_path)
    else:  # zero epochs in this phase: the starting weights are the result
        final = {**_state(model, ema, optimizer, scheduler, scaler, 0, [], best, params, fp, phase), **best_states}
    final.update(params=to_dict(params), fingerprint=fp)  # also when no epoch was left to train
    os.utime(run_dir)  # mark as recently used for pruning
    return final


def export_weights(state: dict, which: str) -> dict:
    """The deployable part of a training state: `which` is "last" or "best"."""
    keys = ("model", "ema") if which == "last" else ("best_model", "best_ema")
    out = {"model": state[keys[0]], "ema": state[keys[1]]}
    for k in ("model_config", "class_names", "imgsz", "params", "history", "best", "epoch", "ema_updates", "phase"):
        out[k] = state[k]
    out["stopped_early"] = state.get("stopped_early")  # None also for states written before patience existed
    return out


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
