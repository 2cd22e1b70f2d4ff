"""Data pipeline invariants: boxes follow the pixels through letterbox, flips, zoom and mosaic."""
import numpy as np
import pytest
import torch
from PIL import Image

from detpipe.annotations import Record
from detpipe.data import Augment, DetectionDataset, EpochBatchSampler, collate

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
