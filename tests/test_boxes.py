import pytest
import torch
from torchvision.ops import box_iou

from detpipe.boxes import (box_area, clip_boxes, distances_to_boxes, from_letterbox, letterbox_params,
                           multiclass_nms, to_letterbox)


@pytest.mark.parametrize("w,h", [(640, 480), (480, 640), (333, 101), (17, 900), (256, 256)])
def test_letterbox_round_trip_is_exact(w, h):
    lb = letterbox_params(w, h, 256)
    assert max(lb.new_width, lb.new_height) == 256
    assert 0 <= lb.pad_x and lb.pad_x + lb.new_width <= 256 and lb.pad_y + lb.new_height <= 256
    boxes = torch.tensor([[0.0, 0.0, w, h], [10.5, 3.25, w / 2, h / 3]], dtype=torch.float64)
    back = from_letterbox(to_letterbox(boxes, lb), lb)
    assert torch.allclose(back, boxes, atol=1e-9)


def test_letterbox_fills_the_square_with_the_whole_image():
    lb = letterbox_params(640, 480, 320)
    full = to_letterbox(torch.tensor([[0.0, 0.0, 640, 480]]), lb)
    assert full[0, 0] == 0 and full[0, 2] == 320
    assert full[0, 1] == lb.pad_y and full[0, 3] == lb.pad_y + lb.new_height


def test_clip_and_area():
    boxes = torch.tensor([[-5.0, -5, 20, 30], [5, 5, 200, 300], [10, 10, 5, 5]])
    clipped = clip_boxes(boxes, 100, 50)
    assert clipped.tolist() == [[0, 0, 20, 30], [5, 5, 100, 50], [10, 10, 5, 5]]
    assert box_area(clipped).tolist() == [600, 95 * 45, 0]


def test_distances_to_boxes():
    points = torch.tensor([[10.0, 20.0]])
    ltrb = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    assert distances_to_boxes(points, ltrb).tolist() == [[[9.0, 18.0, 13.0, 24.0]]]


def test_multiclass_nms_keeps_one_box_per_object_and_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.5, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([[0.9, 0.0], [0.8, 0.7], [0.0, 0.6]])
    out_boxes, out_scores, labels = multiclass_nms(boxes, scores, conf=0.5, iou=0.5, max_det=10)
    assert out_scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert labels.tolist() == [0, 1, 1]
    assert box_iou(out_boxes[:1], boxes[:1]).item() == 1.0


def test_multiclass_nms_empty_and_max_det():
    boxes = torch.rand(50, 2).repeat(1, 2) * 100 + torch.tensor([0, 0, 5, 5])
    scores = torch.rand(50, 3)
    assert multiclass_nms(boxes, scores * 0, 0.1, 0.5, 10)[0].shape == (0, 4)
    assert len(multiclass_nms(boxes, scores, 0.0, 0.99, 7)[1]) == 7
