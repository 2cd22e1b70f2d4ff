"""Class-loss options: label smoothing and the quality focal loss, as invariants of the loss alone.

The head outputs are made up (no model), so these hold whatever the network looks like.
"""
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from detpipe.train.loss import LossWeights, assign, detection_loss, quality_focal_loss, smooth_targets


def _head_outputs(seed: int = 0):
    """Outputs of a 2-image batch on a 64 px, stride-8 grid (3 classes) and targets with a padded row."""
    g = torch.Generator().manual_seed(seed)
    points = torch.tensor([[x + 4.0, y + 4.0] for y in range(0, 64, 8) for x in range(0, 64, 8)])
    half = 4 + 20 * torch.rand(2, len(points), 2, generator=g)
    out = {"cls": torch.randn(2, len(points), 3, generator=g) - 2, "points": points,
           "boxes": torch.cat([points - half, points + half], -1), "strides": torch.full((len(points), 1), 8.0)}
    targets = torch.tensor([[[0, 4, 6, 30, 36], [2, 28, 20, 60, 56]],
                            [[1, 10, 10, 50, 30], [-1, -1, -1, -1, -1]]], dtype=torch.float)
    return out, targets


def test_label_smoothing_moves_only_foreground_targets_as_documented():
    target = torch.zeros(1, 4, 3)
    target[0, 0, 1], target[0, 1, 2] = 0.9, 0.05           # two positives: well and poorly aligned
    fg = torch.tensor([[True, True, False, False]])
    eps = 0.2
    got = smooth_targets(target, fg, eps)
    assert torch.equal(got[~fg], target[~fg])                 # background stays 0: no score floor
    assert torch.allclose(got[fg], target[fg] * (1 - eps) + eps / 2)
    assert torch.allclose(got[0, 0], torch.tensor([0.1, 0.82, 0.1]))
    # A positive's target stays above its row's negatives, however poor its quality.
    for a, c in ((0, 1), (1, 2)):
        assert got[0, a, c] > got[0, a].masked_fill(torch.arange(3) == c, -1).max()
    assert smooth_targets(target, fg, 0.0) is target


def test_label_smoothing_zero_is_the_plain_bce_loss_and_eps_changes_only_the_class_part():
    out, targets = _head_outputs()
    loss, parts = detection_loss(out, targets, LossWeights(label_smoothing=0.0))
    _, fg, target = assign(out["cls"].sigmoid(), out["boxes"], out["points"], targets, LossWeights())
    assert fg.any()
    plain = F.binary_cross_entropy_with_logits(out["cls"], target, reduction="sum") / target.sum().clamp(min=1)
    assert parts["cls"] == float(plain)                       # exactly the class loss before smoothing existed
    assert torch.equal(loss, detection_loss(out, targets)[0])
    _, smoothed = detection_loss(out, targets, LossWeights(label_smoothing=0.1))
    assert smoothed["cls"] != parts["cls"] and smoothed["box"] == parts["box"]


def test_quality_focal_loss_generalises_focal_loss_to_soft_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, generator=g) * 3
    soft = torch.rand(500, generator=g)
    hard = (torch.rand(500, generator=g) < 0.3).float()
    # gamma 0 without alpha balancing is BCE; on 0/1 targets it is torchvision's focal loss.
    assert torch.equal(quality_focal_loss(logits, soft, 0.0, -1.0),
                       F.binary_cross_entropy_with_logits(logits, soft, reduction="none"))
    for gamma, alpha in ((1.5, 0.25), (2.0, -1.0)):
        assert torch.allclose(quality_focal_loss(logits, hard, gamma, alpha),
                              sigmoid_focal_loss(logits, hard, alpha, gamma), atol=1e-6)
    # For a soft target t the loss is lowest at score t (no gradient there); torchvision's form is not.
    t = torch.tensor([0.1, 0.3, 0.8])
    x = torch.logit(t).requires_grad_(True)
    quality_focal_loss(x, t, 1.5, 0.25).sum().backward()
    assert x.grad.abs().max() < 1e-6
    y = torch.logit(t).requires_grad_(True)
    sigmoid_focal_loss(y, t, 0.25, 1.5).sum().backward()
    assert y.grad.abs().min() > 1e-3
    # Finite gradients where a saturated score equals its 0 target exactly, even for gamma < 1.
    z = torch.tensor([-200.0, 0.0]).requires_grad_(True)
    quality_focal_loss(z, torch.zeros(2), 0.5, 0.25).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_focal_switch_replaces_only_the_class_term():
    out, targets = _head_outputs(seed=1)
    _, bce = detection_loss(out, targets)
    _, as_bce = detection_loss(out, targets, LossWeights(focal=True, focal_gamma=0.0, focal_alpha=-1.0))
    _, focal = detection_loss(out, targets, LossWeights(focal=True))
    assert float(as_bce["cls"]) == pytest.approx(float(bce["cls"]), rel=1e-6) and as_bce["box"] == bce["box"]
    assert focal["cls"] < bce["cls"] and focal["box"] == bce["box"]


def test_loss_weights_follow_the_train_params():
    from detpipe.params import TrainParams
    t = TrainParams(label_smoothing=0.1, focal_loss=True, focal_gamma=2.0, focal_alpha=-1.0, cls_gain=0.7)
    w = LossWeights.from_train_params(t)
    assert (w.label_smoothing, w.focal, w.focal_gamma, w.focal_alpha, w.cls) == (0.1, True, 2.0, -1.0, 0.7)
    assert LossWeights.from_train_params(TrainParams()) == LossWeights(box=7.5, cls=0.5)
