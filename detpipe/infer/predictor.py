"""Batched inference with a trained detector: PyTorch weights or an exported ONNX file, one code path.

RGB images of any size -> letterboxed to the model's square input (the same `letterbox_image` the
evaluation loader uses) -> a batch through the model -> per-class NMS -> boxes mapped back to the
original pixels (the same arithmetic as `engine.evaluate`). The predict stage, the `predict` and
`fps` commands and the ONNX model therefore all give the same boxes.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, Dataset, SequentialSampler

from torchvision.ops import box_iou

from ..boxes import Letterbox, letterbox_params
from ..data.dataset import PAD_VALUE, batch_loader, letterbox_into
from .backends import CANDIDATE_SCORE, LOW_PRECISION_TOLERANCE, OnnxBackend, TorchBackend  # noqa: F401 (re-exported)
from .decode import detections_per_image
from .onnx_cache import onnxruntime_backend, resolve_backend
from ..data.images import DEFAULT_LIMIT, PixelLimit, load_rgb
from ..model.device import select_device
from ..model.load import load_detector

def is_onnx(weights: str | Path) -> bool:
    return str(weights).lower().endswith(".onnx")


def check_imgsz(imgsz: int, strides: Sequence[int]) -> None:
    """`strides`: the model's levels' (Detector.strides), empty when unknown (an older ONNX export)."""
    largest = max(strides, default=1)
    if imgsz % largest:
        raise ValueError(f"imgsz must be a multiple of {largest} (the model's largest stride), got {imgsz}")


def make_backend(model: torch.nn.Module, class_names: Sequence[str], imgsz: int, device: torch.device,
                 dtype: str = "float32", backend: str = "auto") -> TorchBackend | OnnxBackend:
    """The network ready to run: `backend` auto, torch or onnxruntime (see onnx_cache.resolve_backend)."""
    check_imgsz(imgsz, model.strides)
    if resolve_backend(backend, device, dtype) == "onnxruntime":
        if device.type != "cpu" or dtype != "float32":
            raise ValueError(f"predict.backend: onnxruntime runs float32 on the CPU, not {dtype} on {device}; "
                             "use backend auto or torch")
        return onnxruntime_backend(model, class_names, imgsz)
    return TorchBackend(model, device, dtype)


class Predictor:
    """Detections for RGB images: `predictor(list_of_uint8_HxWx3) -> [{"boxes", "scores", "labels"}]`.

    Boxes are float64 xyxy in the original image's pixels, scores descending, labels class indices.
    `classes` restricts the output to those class names (filtered before NMS, as in YOLOv8).
    """

    def __init__(self, weights: str | Path, device: str = "auto", conf: float = 0.25, iou: float = 0.45,
                 max_det: int = 100, classes: Sequence[str] | None = None, imgsz: int | None = None,
                 dtype: str = "float32", backend: str = "auto") -> None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: no such weights file (train with `dvc repro`, or give models/best.pt)")
        self.device = select_device(device)
        if is_onnx(weights):
            self.backend = OnnxBackend(weights, self.device)
            self.class_names, trained = self.backend.class_names, self.backend.imgsz
            self.imgsz = int(imgsz or trained)
            check_imgsz(self.imgsz, self.backend.strides)
        else:
            model, state = load_detector(weights, self.device)
            self.class_names, self.imgsz = list(state["class_names"]), int(imgsz or state["imgsz"])
            self.backend = make_backend(model, self.class_names, self.imgsz, self.device, dtype, backend)
        fixed = self.backend.fixed_size
        if fixed is not None and self.imgsz != fixed and is_onnx(weights):
            raise ValueError(f"{weights} was exported for {fixed}x{fixed} inputs, not {self.imgsz}; "
                             "export with --dynamic or --imgsz to change the size")
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.keep: Tensor | None = None
        if classes:
            unknown = [c for c in classes if c not in self.class_names]
            if unknown:
                raise ValueError(f"unknown class {', '.join(map(repr, unknown))}; the model knows "
                                 f"{', '.join(self.class_names)}")
            self.keep = torch.tensor([c in classes for c in self.class_names])

    @classmethod
    def from_model(cls, model: torch.nn.Module, class_names: Sequence[str], imgsz: int,
                   device: torch.device, conf: float, iou: float, max_det: int, dtype: str = "float32",
                   backend: str = "auto") -> "Predictor":
        """A predictor around an already-built model (the predict stage, tests)."""
        self = cls.__new__(cls)
        self.device, self.class_names, self.imgsz = device, list(class_names), imgsz
        self.backend = make_backend(model.to(device), self.class_names, imgsz, device, dtype, backend)
        self.conf, self.iou, self.max_det, self.keep = conf, iou, max_det, None
        return self

    @property
    def batch_limit(self) -> int | None:
        return self.backend.fixed_batch

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[Tensor, list[Letterbox]]:
        """`letterbox_batch`, filled up to a fixed-batch ONNX model's size."""
        return letterbox_batch(images, self.imgsz, self.batch_limit or 0)

    def forward(self, batch: Tensor) -> dict[str, Tensor]:
        return self.backend(batch)

    def postprocess(self, out: dict[str, Tensor], lbs: Sequence[Letterbox]) -> list[dict[str, np.ndarray]]:
        """Per-class NMS, then boxes back to each image's own pixels (clipped to the image)."""
        out = {k: v[: len(lbs)] for k, v in out.items()}
        if self.keep is not None:
            # Other classes get a logit no threshold admits, so max_det counts only wanted classes.
            out["cls"] = out["cls"].masked_fill(~self.keep.to(out["cls"].device), -torch.inf)
        return detections_per_image(out, list(lbs), self.conf, self.iou, self.max_det)

    def chunks(self, n: int, batch_size: int) -> Iterable[slice]:
        size = self.batch_limit or max(1, batch_size)
        return (slice(i, i + size) for i in range(0, n, size))

    def __call__(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[dict[str, np.ndarray]]:
        dets: list[dict[str, np.ndarray]] = []
        for part in self.chunks(len(images), batch_size):
            batch, lbs = self.preprocess(images[part])
            dets.extend(self.postprocess(self.forward(batch), lbs))
        return dets

    def predict_files(self, paths: Sequence[str | Path], batch_size: int, workers: int = 0,
                      progress: Callable[[Iterable], Iterable] = lambda it: it,
                      pixel_limit: PixelLimit = DEFAULT_LIMIT) -> list[dict[str, np.ndarray]]:
        """Detections for image files, decoded and letterboxed by `workers` loader processes
        (an image above `pixel_limit` raises ImageTooLarge, from its header)."""
        size = self.batch_limit or max(1, batch_size)
        paths = list(paths)
        loader = batch_loader(_Letterboxed(paths, self, pixel_limit),
                              BatchSampler(SequentialSampler(paths), size, False), workers, self.backend.device,
                              collate_fn=_collate)
        dets: list[dict[str, np.ndarray]] = []
        for batch, lbs in progress(loader):
            dets.extend(self.postprocess(self.forward(pad_batch(batch, self.batch_limit)), lbs))
        return dets


class _Letterboxed(Dataset):
    def __init__(self, paths: list, predictor: Predictor, pixel_limit: PixelLimit) -> None:
        self.paths, self.imgsz, self.pixel_limit = paths, predictor.imgsz, pixel_limit

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, Letterbox]:
        return letterbox_tensor(load_rgb(self.paths[i], self.pixel_limit), self.imgsz)


def letterbox_tensor(rgb: np.ndarray, imgsz: int) -> tuple[Tensor, Letterbox]:
    """uint8 [H, W, 3] -> uint8 Tensor[3, S, S] letterboxed as in training, and how it was placed."""
    batch, lbs = letterbox_batch([rgb], imgsz)
    return batch[0], lbs[0]


def letterbox_batch(images: Sequence[np.ndarray], imgsz: int, min_batch: int = 0) -> tuple[Tensor, list[Letterbox]]:
    """uint8 [H, W, 3] images letterboxed as in training, each straight into its slot of one uint8
    Tensor[B, 3, S, S] (B = max(len(images), min_batch); the extra slots are grey), and how each
    was placed."""
    batch = torch.full((max(len(images), min_batch), 3, imgsz, imgsz), PAD_VALUE, dtype=torch.uint8)
    lbs = [letterbox_params(rgb.shape[1], rgb.shape[0], imgsz) for rgb in images]
    for slot, rgb, lb in zip(batch, images, lbs):
        letterbox_into(slot, rgb, lb)
    return batch, lbs


def pad_batch(batch: Tensor, size: int | None) -> Tensor:
    """uint8 Tensor[B, 3, S, S] filled up to `size` images with the letterbox grey (a fixed-batch
    ONNX model takes no other batch size; the padding's detections are cut by postprocess)."""
    if not size or len(batch) >= size:
        return batch
    return torch.cat([batch, torch.full((size - len(batch), *batch.shape[1:]), PAD_VALUE, dtype=batch.dtype)])


def _collate(items: list) -> tuple[Tensor, list[Letterbox]]:
    return torch.stack([i[0] for i in items]), [i[1] for i in items]


def count_by_class(det: dict[str, np.ndarray], class_names: Sequence[str]) -> dict[str, int]:
    """{class name: boxes} in class order, only classes present."""
    counts = np.bincount(det["labels"].astype(int), minlength=len(class_names)) if len(det["labels"]) else []
    return {class_names[i]: int(n) for i, n in enumerate(counts) if n}


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts.items()) or "no detections"


def compare(ref: Predictor, other: Predictor, images: Sequence[np.ndarray], batch: int = 4) -> dict[str, float]:
    """Max abs differences between two predictors of one model (ONNX vs PyTorch, float16 vs
    float32, CUDA vs CPU) on `images`.

    Raw outputs: "cls" logits and "boxes" pixels over all anchors; "scores", class probabilities,
    and "candidate_iou", the lowest IoU of the two boxes of an anchor scoring at least
    CANDIDATE_SCORE in `ref` (1 when there is none). Final
    detections: counts of each, and for each detection of `ref` the nearest one of `other` with
    its label (largest coordinate difference, in pixels; order-free, so tied scores sorted
    otherwise do not count): the largest such box and score difference, and "label_mismatches",
    ref detections with no counterpart of their label.
    """
    result = {"cls": 0.0, "boxes": 0.0, "scores": 0.0, "candidate_iou": 1.0, "final_boxes": 0.0,
              "final_scores": 0.0, "ref_detections": 0, "other_detections": 0, "label_mismatches": 0}
    for part in other.chunks(len(images), batch):
        batch_t, lbs = ref.preprocess(images[part])
        a, b = ref.forward(batch_t), other.forward(other.preprocess(images[part])[0])
        _compare_raw({k: v[:len(lbs)].cpu() for k, v in a.items()}, {k: v[:len(lbs)].cpu() for k, v in b.items()},
                     result)
        for da, db in zip(ref.postprocess(a, lbs), other.postprocess(b, lbs)):
            _compare_final(da, db, result)
    return result


def _compare_raw(a: dict[str, Tensor], b: dict[str, Tensor], result: dict) -> None:
    """compare()'s raw-output figures of one batch, folded into `result`."""
    pa, pb = a["cls"].sigmoid(), b["cls"].sigmoid()
    for key, value in (("cls", (a["cls"] - b["cls"]).abs().max()), ("boxes", (a["boxes"] - b["boxes"]).abs().max()),
                       ("scores", (pa - pb).abs().max())):
        result[key] = max(result[key], float(value))
    candidate = pa.amax(-1) >= CANDIDATE_SCORE  # [B, A]
    if candidate.any():
        iou = box_iou(a["boxes"][candidate].float(), b["boxes"][candidate].float()).diagonal()
        result["candidate_iou"] = min(result["candidate_iou"], float(iou.min()))


def _compare_final(da: dict[str, np.ndarray], db: dict[str, np.ndarray], result: dict) -> None:
    """compare()'s final-detection figures of one image, folded into `result`."""
    result["ref_detections"] += len(da["scores"])
    result["other_detections"] += len(db["scores"])
    dist = np.abs(da["boxes"][:, None, :] - db["boxes"][None, :, :]).max(-1, initial=0.0)  # [Na, Nb]
    dist[da["labels"][:, None] != db["labels"][None, :]] = np.inf
    best = dist.argmin(1) if dist.shape[1] else np.zeros(len(da["scores"]), int)
    near = dist[np.arange(len(best)), best] if dist.shape[1] else np.full(len(best), np.inf)
    found = np.isfinite(near)
    result["label_mismatches"] += int((~found).sum())
    if found.any():
        result["final_boxes"] = max(result["final_boxes"], float(near[found].max()))
        result["final_scores"] = max(result["final_scores"], float(np.abs(da["scores"][found] - db["scores"][best[found]]).max()))


# ---------------------------------------------------------------------------------------- timing

def time_parts(predictor: Predictor, images: Sequence[np.ndarray], batch_size: int, runs: int = 5,
               warmup: int = 2, draw: bool = True) -> dict[str, float]:
    """Milliseconds per image for preprocess, forward, decode + NMS and drawing: the median over
    `runs` timed batches after `warmup` untimed ones (GPU work synchronised before each clock
    read). The median, not the mean: a late page fault, allocation or a neighbour's burst
    would otherwise move the figure from run to run.

    `images` are cycled to fill each batch. Returns the per-part median ms per image, "total"
    (the median of each batch's total, so not exactly the parts' sum), "fastest" and "slowest"
    (the timed batches' extreme totals), images/s without and with drawing (from the medians of
    each batch's sums) and detections per image.
    """
    from ..reports.prediction_grid import draw_detections

    if runs < 1:
        raise ValueError(f"time_parts needs at least one timed run, got runs={runs}")
    sync = predictor.backend.sync
    parts: dict[str, list[float]] = {"preprocess": [], "forward": [], "nms": [], "draw": []}
    n_img = n_det = 0
    for it in range(warmup + runs):
        start = (it * batch_size) % len(images)
        chosen = [images[(start + k) % len(images)] for k in range(batch_size)]
        sync()
        t0 = time.perf_counter()
        batch, lbs = predictor.preprocess(chosen)
        batch = batch.to(predictor.backend.device)  # the CPU for ONNX, whatever --device says
        sync()
        t1 = time.perf_counter()
        out = predictor.forward(batch)
        sync()
        t2 = time.perf_counter()
        dets = predictor.postprocess(out, lbs)
        sync()
        t3 = time.perf_counter()
        if draw:
            for rgb, d in zip(chosen, dets):
                draw_detections(rgb, d["boxes"], d["labels"], d["scores"], predictor.class_names)
        t4 = time.perf_counter()
        if it >= warmup:
            for key, (a, b) in zip(parts, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
                parts[key].append(1000 * (b - a) / batch_size)
            n_img += batch_size
            n_det += sum(len(d["scores"]) for d in dets)
    per_run = np.array(list(parts.values()))  # [part, run], ms per image
    infer, totals = per_run[:3].sum(0), per_run.sum(0)
    return {**{k: float(np.median(v)) for k, v in parts.items()}, "total": float(np.median(totals)),
            "fastest": float(totals.min()), "slowest": float(totals.max()),
            "images_per_s": 1000 / max(float(np.median(infer)), 1e-9),
            "images_per_s_with_drawing": 1000 / max(float(np.median(totals)), 1e-9),
            "detections_per_image": n_det / n_img}


def sample_images(n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Synthetic photo-sized test images (640x480 and 480x640): textured noise with shapes."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        h, w = (480, 640) if i % 2 == 0 else (640, 480)
        base = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        img = np.kron(base, np.ones((16, 16, 1), dtype=np.uint8))
        for _ in range(4):
            x, y = rng.integers(0, w - 100), rng.integers(0, h - 100)
            img[y:y + rng.integers(30, 100), x:x + rng.integers(30, 100)] = rng.integers(0, 256, 3)
        images.append(np.ascontiguousarray(img))
    return images
