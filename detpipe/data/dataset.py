"""Datasets and loaders: annotation lines in, letterboxed batches out.

All randomness of sample `i` in epoch `e` comes from a generator seeded with (seed, e, i), so
the batches of an epoch are the same whether the run was resumed or not and whatever the
number of loader workers. Mosaic tiles and mixup draw from generators seeded with that key plus
a fixed suffix (see `_MIXUP_STREAM`), so turning mixup on or off leaves every other draw as it was.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .annotations import Record
from ..boxes import Letterbox, letterbox_params
from .images import DEFAULT_LIMIT, PixelLimit, load_rgb

PAD_VALUE = 114  # the grey YOLO letterboxes with, so padding looks like nothing in particular
# The loader's parallelism is its worker processes (and torch's threads run the model): OpenCV's
# own thread pool on these small images would only compete with them for the cores.
cv2.setNumThreads(0)
# Suffix of the mixup generator's seed (seed, epoch, index, 5): mosaic tiles use 1-4. Not 0,
# because numpy's SeedSequence pads with zeros, so (s, e, i, 0) would replay the sample's own stream.
_MIXUP_STREAM = 5
MIXUP_BETA = 32.0  # mixup ratio ~ Beta(32, 32), as YOLOv5/v8: mostly 0.4-0.6, never one image alone

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # image uint8 [S, S, 3], boxes float32 [N, 4], labels [N]


@dataclass(frozen=True)
class Augment:
    """Training augmentation strengths; all zero means plain letterboxing.

    Each knob is `train.<its name>` in params.yaml (mosaic_until is derived from
    train.mosaic_fraction). Adding one: a field here and one in params.TrainParams, nothing else.
    Its random draws must happen only when it is on (`if aug.new > 0 and rng.random() < aug.new`,
    or a generator of its own, as mixup): off, every sample of an old run stays bitwise what it
    was, and so do its weights. tests/test_data.py fails when an option that is off draws. (The
    first knobs, ALWAYS_DRAWN, draw whether on or not; they keep doing so for the same reason.)
    """

    hflip: float = 0.0
    scale_jitter: float = 0.0
    translate: float = 0.0
    hsv_h: float = 0.0
    hsv_s: float = 0.0
    hsv_v: float = 0.0
    mosaic: float = 0.0
    mosaic_until: int = 0  # last global epoch with mosaic (YOLO turns it off for the final epochs)
    # Blend probability. It shares mosaic's epochs (epoch <= mosaic_until) whatever the mosaic
    # probability, as Ultralytics closes mosaic and mixup together: the last epochs train on
    # images as they will be seen.
    mixup: float = 0.0
    # Probability of turning a tile grey (luma replicated to 3 channels). A detector trained on
    # colour alone keys on hue and misses objects in the grey images many datasets mix in (IR
    # cameras, scans, old photos); seeing some colour images grey teaches it shape and contrast.
    grayscale: float = 0.0

    def mosaic_on(self, epoch: int) -> bool:
        """Whether global epoch `epoch` draws mosaics (the training figure marks where it stops)."""
        return self.mosaic > 0 and epoch <= self.mosaic_until

    @classmethod
    def from_train_params(cls, p) -> "Augment":
        """The strengths of params.yaml's train section, each by its name."""
        until = int(round((p.freeze_epochs + p.unfreeze_epochs) * p.mosaic_fraction))
        if getattr(p, "time", 0) > 0 and p.mosaic_fraction > 0:
            # On a train.time budget the first unfrozen epoch trains before the count is known: it
            # (and so every frozen epoch) is in mosaic's window whatever the count turns out to be.
            until = max(until, p.freeze_epochs + 1)
        return cls(**{f.name: getattr(p, f.name) for f in fields(cls) if f.name != "mosaic_until"}, mosaic_until=until)


# The knobs whose draws predate the rule above: each tile draws its zoom, shift, flip coin and
# colour gains whatever their strengths.
ALWAYS_DRAWN = ("scale_jitter", "translate", "hflip", "hsv_h", "hsv_s", "hsv_v")


def letterbox_image(rgb: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Resize uint8 [H, W, 3] to lb.new_* and paste it at lb.pad_* into a grey square [S, S, 3]."""
    return letterbox_hwc(rgb, lb).numpy()


def letterbox_hwc(rgb: np.ndarray, lb: Letterbox) -> Tensor:
    """`letterbox_image` as a uint8 Tensor[S, S, 3]; `.permute(2, 0, 1)` is the network's [3, S, S]."""
    canvas = torch.full((lb.size, lb.size, 3), PAD_VALUE, dtype=torch.uint8)
    letterbox_into(canvas.permute(2, 0, 1), rgb, lb)
    return canvas


def letterbox_into(canvas: Tensor, rgb: np.ndarray, lb: Letterbox) -> Tensor:
    """Resize uint8 [H, W, 3] to lb.new_* and paste it at lb.pad_* into `canvas`, a uint8
    Tensor[3, S, S] already grey (any strides: a permuted [S, S, 3] canvas works); returns canvas.

    Inference writes each image straight into its slot of the batch, planar: no [S, S, 3] canvas
    and no stacking copy (the preprocess column of bench/results/bench_predict.txt). The resize is Pillow's BILINEAR
    (antialiased when shrinking), computed by torch's uint8 kernel: 5x faster than Pillow here,
    equal to it at some scales and elsewhere within two grey levels, a mean difference below 0.1
    (its weights are rounded to fewer bits; tests/test_data.py). Pixels outside the square (a
    zoomed-in training sample, negative pad) are cut off.
    """
    image = torch.from_numpy(np.require(rgb, np.uint8, ["C", "W"])).permute(2, 0, 1)
    if (lb.new_width, lb.new_height) != (lb.width, lb.height):
        # [3, H, W] over [H, W, 3] memory is channels-last: torch's fast uint8 kernel
        image = F.interpolate(image[None], size=(lb.new_height, lb.new_width), mode="bilinear", antialias=True,
                              align_corners=False)[0]
    x0, y0 = max(lb.pad_x, 0), max(lb.pad_y, 0)
    x1, y1 = min(lb.pad_x + lb.new_width, lb.size), min(lb.pad_y + lb.new_height, lb.size)
    if x1 > x0 and y1 > y0:
        canvas[:, y0:y1, x0:x1] = image[:, y0 - lb.pad_y:y1 - lb.pad_y, x0 - lb.pad_x:x1 - lb.pad_x]
    return canvas


def _hsv_jitter(rgb: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Shift hue by gains[0] of the colour circle and scale saturation/value by (1 + gains[1:]),
    through lookup tables on OpenCV's uint8 HSV (7x faster than PIL's HSV conversion)."""
    h, s, v = cv2.split(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))  # OpenCV's uint8 hue runs 0..179
    lut = np.arange(256, dtype=np.float64)
    h = cv2.LUT(h, ((lut + gains[0] * 180) % 180).astype(np.uint8))
    s = cv2.LUT(s, np.clip(lut * (1 + gains[1]), 0, 255).astype(np.uint8))
    v = cv2.LUT(v, np.clip(lut * (1 + gains[2]), 0, 255).astype(np.uint8))
    return cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2RGB)


def to_gray3(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB to its luma (ITU-R 601, as PIL's convert("L")) in all three channels."""
    return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def mixup(a: Sample, b: Sample, ratio: float) -> Sample:
    """Blend image a (weight `ratio`) with image b (1 - ratio) and keep the objects of both.

    Both images are S x S letterboxed samples. Pixels are rounded, not truncated as in
    Ultralytics, so a blend of an image with itself is that image. Every object stays a full
    target (YOLOv5/v8 do not weight boxes by the ratio either).
    """
    image = np.rint(a[0].astype(np.float64) * ratio + b[0].astype(np.float64) * (1.0 - ratio)).astype(np.uint8)
    return image, np.concatenate([a[1], b[1]]).astype(np.float32), np.concatenate([a[2], b[2]])


def training_targets(record: Record) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [N, 4] and labels [N] to train on: difficult objects are left out, as in VOC."""
    keep = ~record.difficult
    return record.boxes[keep].astype(np.float32), record.labels[keep]


class DetectionDataset(Dataset):
    """Items are indexed by (epoch, index) pairs so augmentation is a pure function of them.

    Returns (image uint8 Tensor[3, S, S], boxes Tensor[N, 4] letterboxed xyxy, labels Tensor[N],
    index). Evaluation datasets (augment=None) ignore the epoch.
    """

    def __init__(self, records: Sequence[Record], size: int, seed: int = 0,
                 augment: Augment | None = None, cache: bool = False,
                 pixel_limit: PixelLimit = DEFAULT_LIMIT) -> None:
        self.records = list(records)
        self.size = size
        self.seed = seed
        self.augment = augment
        self.pixel_limit = pixel_limit  # images above it are refused from their header (detpipe.data.images)
        # Decoded images kept in memory (per loader worker): small datasets stop paying for JPEG
        # decoding every epoch. Results are identical with or without it.
        self.cache: dict[int, np.ndarray] | None = {} if cache else None

    def _load(self, index: int) -> np.ndarray:
        if self.cache is None:
            return load_rgb(self.records[index].path, self.pixel_limit)
        if index not in self.cache:
            self.cache[index] = load_rgb(self.records[index].path, self.pixel_limit)
        return self.cache[index]

    def __len__(self) -> int:
        return len(self.records)

    def _tile(self, index: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """Image `index` letterboxed to size x size (augmented when `rng` is given).

        Returns image uint8 [S, S, 3], boxes float32 [N, 4] in its pixels (visible ones only),
        labels [N] and the original (width, height).
        """
        record = self.records[index]
        rgb = self._load(index)
        boxes, labels = training_targets(record)
        h, w = rgb.shape[:2]
        aug = self.augment
        if rng is None or aug is None:
            lb = letterbox_params(w, h, self.size)
        else:
            scale = float(rng.uniform(1 - aug.scale_jitter, 1 + aug.scale_jitter))
            centre = 0.5 + rng.uniform(-aug.translate, aug.translate, size=2) * 2
            lb = letterbox_params(w, h, self.size, scale, tuple(np.clip(centre, 0, 1)))
            if rng.random() < aug.hflip:
                rgb = rgb[:, ::-1]
                boxes = boxes.copy()
                boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
            gains = rng.uniform(-1, 1, 3) * [aug.hsv_h, aug.hsv_s, aug.hsv_v]
            if np.any(gains):
                rgb = _hsv_jitter(np.ascontiguousarray(rgb), gains)
            # The coin is drawn only when the option is on: off, every sample stays bitwise as before.
            if aug.grayscale > 0 and rng.random() < aug.grayscale:
                rgb = to_gray3(np.ascontiguousarray(rgb))
        image = letterbox_image(np.ascontiguousarray(rgb), lb)
        boxes = boxes * np.array([lb.scale_x, lb.scale_y] * 2, np.float32) + np.array([lb.pad_x, lb.pad_y] * 2, np.float32)
        boxes, keep = _clip_visible(boxes, 0, 0, self.size, self.size)
        return image, boxes, labels[keep], (w, h)

    def _mosaic(self, index: int, rng: np.random.Generator, key: tuple[int, ...]) -> Sample:
        """Four augmented tiles on a 2S canvas, cropped to S around a random centre (YOLOv4 mosaic).

        Tile k is augmented by a generator seeded with `key` + (k + 1).
        """
        s = self.size
        partners = rng.integers(0, len(self.records), size=3).tolist()
        canvas = np.empty((2 * s, 2 * s, 3), np.uint8)
        all_boxes, all_labels = [], []
        for k, (i, (ox, oy)) in enumerate(zip([index] + partners, [(0, 0), (s, 0), (0, s), (s, s)])):
            tile_rng = np.random.default_rng([*key, k + 1])
            image, boxes, labels, _ = self._tile(i, tile_rng)
            canvas[oy:oy + s, ox:ox + s] = image
            all_boxes.append(boxes + np.array([ox, oy, ox, oy], np.float32))
            all_labels.append(labels)
        x0, y0 = (rng.uniform(0.25, 0.75, size=2) * s).astype(int)
        boxes = np.concatenate(all_boxes) - np.array([x0, y0, x0, y0], np.float32)
        boxes, keep = _clip_visible(boxes, 0, 0, s, s)
        return canvas[y0:y0 + s, x0:x0 + s], boxes, np.concatenate(all_labels)[keep]

    def _augmented(self, epoch: int, index: int, rng: np.random.Generator, key: tuple[int, ...]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """A mosaic (with probability `mosaic`, in its epochs) or a single augmented tile, and its size."""
        aug = self.augment
        # No coin is drawn when mosaic is off, so the epoch counts then do not reach augmentation.
        if aug.mosaic_on(epoch) and rng.random() < aug.mosaic:
            return (*self._mosaic(index, rng, key), (self.size, self.size))
        return self._tile(index, rng)

    def __getitem__(self, key: tuple[int, int] | int):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        aug = self.augment
        if aug is None:
            image, boxes, labels, size = self._tile(index, None)
        else:
            own = (self.seed, epoch, index)
            image, boxes, labels, size = self._augmented(epoch, index, np.random.default_rng(own), own)
            # Mixup draws from its own generator, and only when it is on: with mixup 0 (or after
            # mosaic's epochs) the sample is bitwise what it was without this feature.
            if aug.mixup > 0 and epoch <= aug.mosaic_until:
                mix_key = (*own, _MIXUP_STREAM)
                mix_rng = np.random.default_rng(mix_key)
                if mix_rng.random() < aug.mixup:
                    partner = int(mix_rng.integers(0, len(self.records)))
                    ratio = float(mix_rng.beta(MIXUP_BETA, MIXUP_BETA))
                    other = self._augmented(epoch, partner, mix_rng, mix_key)[:3]
                    image, boxes, labels = mixup((image, boxes, labels), other, ratio)
        image_t = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a writable copy
        return image_t, torch.from_numpy(boxes).reshape(-1, 4), torch.from_numpy(labels).long(), index, size


def _clip_visible(boxes: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes [N, 4] to the window; drop those (almost) out of view, which are no longer targets."""
    boxes = boxes.reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(x0, x1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(y0, y1)
    keep = ((boxes[:, 2] - boxes[:, 0]) > 2) & ((boxes[:, 3] - boxes[:, 1]) > 2)
    return boxes[keep].astype(np.float32), keep


def collate(batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stack images; pad targets to Tensor[B, G, 5] rows (label, x1, y1, x2, y2), label -1 pads.

    Also returns the dataset indices Tensor[B] and original (width, height) Tensor[B, 2].
    """
    images = torch.stack([b[0] for b in batch])
    most = max(1, max(len(b[2]) for b in batch))
    targets = torch.full((len(batch), most, 5), -1.0)
    for i, (_, boxes, labels, _, _) in enumerate(batch):
        targets[i, : len(labels), 0] = labels.float()
        targets[i, : len(labels), 1:] = boxes
    indices = torch.tensor([b[3] for b in batch])
    sizes = torch.tensor([b[4] for b in batch])
    return images, targets, indices, sizes


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Shuffled batches of (epoch, index) keys; the order depends only on (seed, epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                 drop_last: bool = False) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.shuffle, self.drop_last = shuffle, drop_last

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        for start in range(0, self.n, self.batch_size):
            chunk = order[start:start + self.batch_size]
            if self.drop_last and len(chunk) < self.batch_size:
                return
            yield [(self.epoch, i) for i in chunk]

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration yields (a loader built once per phase serves every epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (0 if self.drop_last or rest == 0 else 1)


def batch_loader(dataset: Dataset, batch_sampler: Sampler, num_workers: int,
                 device: torch.device | None = None, collate_fn=collate) -> DataLoader:
    """The DataLoader every training, validation and prediction loop uses.

    Worker processes persist across epochs (so cache_images fills once per phase, not once per
    epoch); batches for CUDA come in pinned memory, which is what lets `.to(device,
    non_blocking=True)` overlap the copy with the GPU's work. The loader draws its workers' seeds
    from its own generator, not torch's global one (augmentation does not use them: it is keyed by
    (seed, epoch, index)).
    """
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate_fn,
                      pin_memory=device is not None and device.type == "cuda",
                      persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(0))


def make_loader(dataset: DetectionDataset, batch_size: int, epoch: int, num_workers: int,
                shuffle: bool, drop_last: bool = False, device: torch.device | None = None) -> DataLoader:
    """A DataLoader over `dataset` for `epoch` (see batch_loader)."""
    sampler = EpochBatchSampler(len(dataset), batch_size, dataset.seed, epoch, shuffle, drop_last)
    return batch_loader(dataset, sampler, num_workers, device)
