"""Data pipeline invariants: boxes follow the pixels through letterbox, flips, zoom, mosaic, mixup and greying."""
from dataclasses import fields, replace

import numpy as np
import pytest
import torch
from PIL import Image

from detpipe.data.annotations import Record
from detpipe.boxes import letterbox_params
from detpipe.data.dataset import (ALWAYS_DRAWN, PAD_VALUE, Augment, DetectionDataset, EpochBatchSampler, collate,
                                  letterbox_image, mixup, to_gray3)
from detpipe.params import TrainParams

STRONG = Augment(hflip=0.5, scale_jitter=0.4, translate=0.2, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0,
                 mosaic=0.5, mosaic_until=100)


@pytest.fixture(scope="module")
def white_boxes(tmp_path_factory):
    """Black images holding white rectangles, with their exact boxes."""
    folder = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        w, h = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        img = np.zeros((h, w, 3), np.uint8)
        x1, y1 = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
        x2, y2 = x1 + int(rng.integers(20, 30)), y1 + int(rng.integers(20, 30))
        img[y1:y2, x1:x2] = 255
        Image.fromarray(img).save(folder / f"{i} 图.png")
        records.append(Record(str(folder / f"{i} 图.png"), np.array([[x1, y1, x2, y2]], float),
                              np.array([i % 3]), np.array([False])))
    return records


def _assert_boxes_on_white(image: torch.Tensor, boxes: torch.Tensor):
    img = image.float().mean(0)
    for x1, y1, x2, y2 in boxes.round().int().tolist():
        inner = img[y1 + 2:y2 - 2, x1 + 2:x2 - 2]
        if inner.numel():
            assert inner.mean() > 200, (x1, y1, x2, y2)


def test_eval_items_letterbox_boxes_onto_the_object(white_boxes):
    ds = DetectionDataset(white_boxes, 96)
    for i in range(len(ds)):
        image, boxes, labels, index, size = ds[i]
        assert image.shape == (3, 96, 96) and index == i and len(boxes) == 1
        _assert_boxes_on_white(image, boxes)


def test_augmented_items_keep_boxes_on_the_object_and_are_reproducible(white_boxes):
    ds = DetectionDataset(white_boxes, 96, seed=7, augment=STRONG)
    for epoch in range(4):
        for i in range(len(ds)):
            image, boxes, labels, _, _ = ds[(epoch, i)]
            assert image.shape == (3, 96, 96)
            assert ((boxes >= 0) & (boxes <= 96)).all()
            _assert_boxes_on_white(image, boxes)
            again = ds[(epoch, i)]
            assert torch.equal(image, again[0]) and torch.equal(boxes, again[1])
    assert not torch.equal(ds[(0, 0)][0], ds[(1, 0)][0])


def test_mosaic_turns_off_after_its_last_epoch(white_boxes):
    ds = DetectionDataset(white_boxes, 96, augment=Augment(mosaic=1.0, mosaic_until=2))
    assert len(ds[(2, 0)][1]) > 1 or len(ds[(2, 1)][1]) > 1 or len(ds[(2, 2)][1]) > 1
    assert all(len(ds[(3, i)][1]) <= 1 for i in range(len(ds)))


def _same_item(a, b) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_mixup_draws_only_from_its_own_generator(white_boxes):
    # Mixup off must leave every sample as it was; on, a sample whose mixup coin does not fire is
    # bitwise the mixup-off sample, and one that fires starts with that sample's boxes. So the
    # feature consumes nothing from the sample's own (seed, epoch, index) stream.
    off = DetectionDataset(white_boxes, 96, seed=7, augment=STRONG)
    on = DetectionDataset(white_boxes, 96, seed=7, augment=replace(STRONG, mixup=0.5))
    short = replace(STRONG, mosaic_until=2)
    short_off = DetectionDataset(white_boxes, 96, seed=7, augment=short)
    always = DetectionDataset(white_boxes, 96, seed=7, augment=replace(short, mixup=1.0))
    same = mixed = 0
    for epoch in range(1, 5):
        for i in range(len(off)):
            plain, item = off[(epoch, i)], on[(epoch, i)]
            if _same_item(plain, item):
                same += 1
            else:
                mixed += 1
                n = len(plain[1])
                assert torch.equal(item[1][:n], plain[1]) and torch.equal(item[2][:n], plain[2])
            if epoch > 2:  # past mosaic's epochs mixup is off too, whatever its probability
                assert _same_item(always[(epoch, i)], short_off[(epoch, i)])
            else:
                assert not _same_item(always[(epoch, i)], short_off[(epoch, i)])
    assert same and mixed, (same, mixed)


def test_grayscale_greys_some_tiles_and_changes_nothing_else(tmp_path):
    # A red square on green: greying must give equal channels at the luma of each colour, leave
    # the boxes exactly where they were, and leave the samples whose coin does not fire bitwise alone.
    img = np.zeros((80, 120, 3), np.uint8)
    img[..., 1] = 200
    img[20:50, 30:60] = (220, 0, 0)
    Image.fromarray(img).save(tmp_path / "red.png")
    records = [Record(str(tmp_path / "red.png"), np.array([[30, 20, 60, 50]], float), np.array([0]), np.array([False]))]
    single = replace(STRONG, mosaic=0.0)  # a mosaic greys tile by tile: one image per sample here
    off = DetectionDataset(records, 96, seed=1, augment=single)
    on = DetectionDataset(records, 96, seed=1, augment=replace(single, grayscale=0.5))
    greyed = kept = 0
    for epoch in range(12):
        plain, item = off[(epoch, 0)], on[(epoch, 0)]
        assert torch.equal(item[1], plain[1]) and torch.equal(item[2], plain[2])
        if _same_item(plain, item):
            kept += 1
            continue
        greyed += 1
        image = item[0]
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
        assert (image[0].float() - plain[0].float().mul(torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)
                ).abs().max() <= 2  # greying before or after the resize rounds differently
    assert greyed and kept, (greyed, kept)
    assert to_gray3(img)[25, 35].tolist() == [66, 66, 66] and to_gray3(img)[0, 0].tolist() == [117, 117, 117]


def test_mixup_blends_two_letterboxed_images_and_keeps_both_boxes(white_boxes):
    plain = DetectionDataset(white_boxes, 96)  # unaugmented: what each image contributes
    ds = DetectionDataset(white_boxes, 96, seed=3, augment=Augment(mixup=1.0, mosaic_until=10))
    looks = [plain[i] for i in range(len(plain))]
    other_images = 0
    for epoch in range(1, 4):
        for i in range(len(ds)):
            image, boxes, labels, _, _ = ds[(epoch, i)]
            own = looks[i]
            n = len(own[1])
            assert torch.equal(boxes[:n], own[1]) and torch.equal(labels[:n], own[2])
            partners = [j for j, o in enumerate(looks) if torch.equal(boxes[n:], o[1]) and torch.equal(labels[n:], o[2])]
            assert len(partners) == 1, "the added boxes are exactly one image's boxes"
            a, b = own[0].double(), looks[partners[0]][0].double()
            if partners[0] == i:
                assert torch.equal(image, own[0])
                continue
            other_images += 1
            # One ratio r must explain every pixel as round(r * a + (1 - r) * b): each pixel where
            # the images differ bounds r to an interval; they must all overlap.
            img, d = image.double(), a - b
            assert torch.equal(image[d == 0], own[0][d == 0])
            ends = torch.stack([(img - 0.5 - b) / d, (img + 0.5 - b) / d])[:, d != 0]
            lo, hi = float(ends.min(0).values.max()), float(ends.max(0).values.min())
            assert lo <= hi + 1e-9, (lo, hi)
            assert 0.2 < lo and hi < 0.8  # Beta(32, 32): 0.5 +- 0.3 with overwhelming probability
    assert other_images > 0


def test_mixup_function_extremes_and_self_blend(white_boxes):
    ds = DetectionDataset(white_boxes, 96)
    a, b = [(ds[i][0].permute(1, 2, 0).numpy(), ds[i][1].numpy(), ds[i][2].numpy()) for i in (0, 1)]
    assert np.array_equal(mixup(a, b, 1.0)[0], a[0]) and np.array_equal(mixup(a, b, 0.0)[0], b[0])
    assert np.array_equal(mixup(a, a, 0.37)[0], a[0])
    image, boxes, labels = mixup(a, b, 0.5)
    assert (image >= np.minimum(a[0], b[0])).all() and (image <= np.maximum(a[0], b[0])).all()
    assert np.array_equal(boxes, np.concatenate([a[1], b[1]])) and np.array_equal(labels, np.concatenate([a[2], b[2]]))


def test_sampler_order_depends_only_on_seed_and_epoch():
    a = list(EpochBatchSampler(10, 4, seed=1, epoch=3))
    assert a == list(EpochBatchSampler(10, 4, seed=1, epoch=3))
    assert a != list(EpochBatchSampler(10, 4, seed=1, epoch=4))
    assert sorted(i for batch in a for _, i in batch) == list(range(10))
    assert len(list(EpochBatchSampler(10, 4, 1, 3, drop_last=True))) == 2


def test_collate_pads_empty_targets(white_boxes):
    ds = DetectionDataset(white_boxes, 64)
    empty = (torch.zeros(3, 64, 64, dtype=torch.uint8), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 9, (5, 5))
    images, targets, indices, sizes = collate([ds[0], empty])
    assert images.shape == (2, 3, 64, 64) and targets.shape == (2, 1, 5)
    assert targets[1, 0, 0] == -1 and indices.tolist() == [0, 9] and sizes[1].tolist() == [5, 5]


def test_hsv_jitter_invariants():
    from detpipe.data.dataset import _hsv_jitter
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    same = _hsv_jitter(rgb, np.zeros(3)).astype(int)
    assert np.abs(same - rgb).max() <= 8 and np.abs(same - rgb).mean() < 1.0   # only HSV round-off
    full_turn = _hsv_jitter(rgb, np.array([1.0, 0.0, 0.0])).astype(int)        # hue + 360 degrees
    assert np.array_equal(full_turn, same)
    assert _hsv_jitter(rgb, np.array([0.0, 0.0, -1.0])).max() == 0                # value x 0 = black
    grey = _hsv_jitter(rgb, np.array([0.0, -1.0, 0.0]))                           # saturation x 0 = grey
    assert (grey.max(-1).astype(int) - grey.min(-1)).max() <= 1


class _Recording:
    """A numpy Generator that logs the name of every draw (the log is shared by all generators)."""

    def __init__(self, rng: np.random.Generator, log: list[str]):
        self._rng, self._log = rng, log

    def __getattr__(self, name):
        draw = getattr(self._rng, name)
        if not callable(draw):
            return draw

        def logged(*args, **kwargs):
            self._log.append(name)
            return draw(*args, **kwargs)
        return logged


def _draws(records, augment: Augment, monkeypatch) -> list[str]:
    import detpipe.data.dataset as dataset

    log: list[str] = []
    real = np.random.default_rng
    monkeypatch.setattr(dataset.np.random, "default_rng", lambda *a, **k: _Recording(real(*a, **k), log))
    ds = DetectionDataset(records, 64, seed=1, augment=augment)
    for epoch in (1, 2):
        for i in range(len(records)):
            ds[epoch, i]
    monkeypatch.undo()
    return log


def test_an_augmentation_that_is_off_draws_nothing(white_boxes, monkeypatch):
    # With every option off but the first knobs, each sample draws exactly what the first
    # knobs draw: a new option that draws while off (changing old runs' samples and weights) fails here.
    knobs = {f.name for f in fields(Augment)} - {"mosaic_until"}
    first_only = Augment(**{k: 0.3 if k in ALWAYS_DRAWN else 0.0 for k in knobs}, mosaic_until=10)
    per_tile = _draws(white_boxes[:1], replace(first_only, hflip=0.0), monkeypatch)[:4]
    assert per_tile == ["uniform", "uniform", "random", "uniform"]  # zoom, shift, flip coin, colour gains
    assert _draws(white_boxes, first_only, monkeypatch) == per_tile * len(white_boxes) * 2
    all_zero = Augment(**{k: 0.0 for k in knobs}, mosaic_until=10)
    assert _draws(white_boxes, all_zero, monkeypatch) == per_tile * len(white_boxes) * 2
    for k in sorted(knobs - set(ALWAYS_DRAWN)):  # and on, it does draw (or the check above proves nothing)
        assert _draws(white_boxes, replace(first_only, **{k: 1.0}), monkeypatch) != per_tile * len(white_boxes) * 2, k


def test_augment_takes_each_knob_from_train_params_by_name():
    t = TrainParams(hflip=0.1, scale_jitter=0.2, translate=0.3, hsv_h=0.04, hsv_s=0.5, hsv_v=0.6, mosaic=0.7,
                    mixup=0.8, grayscale=0.9, freeze_epochs=2, unfreeze_epochs=8, mosaic_fraction=0.5)
    a = Augment.from_train_params(t)
    assert {f.name: getattr(a, f.name) for f in fields(a) if f.name != "mosaic_until"} == \
        {f.name: getattr(t, f.name) for f in fields(a) if f.name != "mosaic_until"}
    assert a.mosaic_until == 5


def _pillow_letterbox(rgb: np.ndarray, lb) -> np.ndarray:
    """The reference: Pillow's BILINEAR resize pasted into a grey canvas (what letterbox_image was)."""
    img = Image.fromarray(rgb)
    if (lb.new_width, lb.new_height) != img.size:
        img = img.resize((lb.new_width, lb.new_height), Image.BILINEAR)
    canvas = Image.new("RGB", (lb.size, lb.size), (PAD_VALUE,) * 3)
    canvas.paste(img, (lb.pad_x, lb.pad_y))
    return np.asarray(canvas)


@pytest.mark.parametrize("hw", [(480, 640), (375, 500), (1080, 1920), (100, 90), (96, 96), (33, 700)])
def test_letterbox_is_pillows_bilinear_to_two_grey_levels(hw):
    rng = np.random.default_rng(hw[0])
    rgb = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    rgb[::7] = 255  # sharp edges: where antialiasing differs most from plain sampling
    for size in (96, 320):
        for scale, shift in ((1.0, (0.5, 0.5)), (1.6, (0.2, 0.9)), (0.6, (0.0, 1.0)), (2.0, (1.0, 0.0))):
            lb = letterbox_params(hw[1], hw[0], size, scale, shift)
            ours, ref = letterbox_image(rgb, lb).astype(int), _pillow_letterbox(rgb, lb).astype(int)
            diff = np.abs(ours - ref)
            assert ours.shape == (size, size, 3) and diff.max() <= 2 and diff.mean() < 0.1, (size, scale, shift)
            assert (diff > 1).mean() < 1e-4, (size, scale, shift)
    view = rgb[::-1, ::2]  # a strided, read-only view: letterboxed as its copy
    view.flags.writeable = False
    lb = letterbox_params(view.shape[1], view.shape[0], 96)
    assert np.array_equal(letterbox_image(view, lb), letterbox_image(view.copy(), lb))


def test_inference_batches_hold_the_training_letterbox_planar():
    """Inference letterboxes each image straight into its planar slot of the batch: the pixels must be
    training's letterbox (the [S, S, 3] canvas), whatever the image's shape and memory layout."""
    from detpipe.infer.predictor import letterbox_batch, letterbox_tensor
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in ((480, 640), (640, 480), (320, 320), (7, 900))]
    images.append(images[0][::-1, ::3])  # a strided view
    batch, lbs = letterbox_batch(images, 320, min_batch=8)
    assert batch.shape == (8, 3, 320, 320) and batch.dtype == torch.uint8 and batch.is_contiguous()
    for rgb, lb, planar in zip(images, lbs, batch):
        assert lb == letterbox_params(rgb.shape[1], rgb.shape[0], 320)
        assert np.array_equal(planar.numpy(), letterbox_image(rgb, lb).transpose(2, 0, 1))
        assert torch.equal(letterbox_tensor(rgb, 320)[0], planar)
    assert (batch[len(images):] == PAD_VALUE).all()  # a fixed-batch model's filler slots are grey
