"""The task-aligned assigner against a loop reference, and the class-loss options (label smoothing,
the quality focal loss) as invariants of the loss alone.

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


def _iou(a, b) -> float:
    """IoU of two xyxy boxes (plain union, no eps: torchvision's box_iou, which the assigner uses)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_assign(scores, boxes, points, targets, topk, alpha, beta, iou_target):
    """YOLOv8's task-aligned assignment with plain loops over images, targets and anchors, in
    float64, following detpipe's documented variant of it (see test_assigner_matches_...).

    Returns (gt_index [B][A], fg [B][A], target [B][A][C]) as nested lists, and the number of
    top-k boundaries decided by an exact tie (where torch.topk's order is unspecified).
    """
    B, A, C = len(scores), len(points), len(scores[0][0])
    gt_index = [[0] * A for _ in range(B)]
    fg = [[False] * A for _ in range(B)]
    target = [[[0.0] * C for _ in range(A)] for _ in range(B)]
    ties = 0
    for b in range(B):
        gts = [(g, int(row[0]), row[1:]) for g, row in enumerate(targets[b]) if row[0] >= 0]
        claims: dict[int, list[int]] = {}  # anchor -> the targets that chose it
        align, iou = {}, {}
        for g, label, box in gts:
            inside = [a for a in range(A) if box[0] < points[a][0] < box[2] and box[1] < points[a][1] < box[3]]
            for a in inside:
                iou[g, a] = max(0.0, _iou(box, boxes[b][a]))
                align[g, a] = scores[b][a][label] ** alpha * iou[g, a] ** beta
            ranked = sorted(inside, key=lambda a: -align[g, a])
            chosen = [a for a in ranked[:topk] if align[g, a] > 0]
            if len(ranked) > topk and align[g, ranked[topk]] > 0 and align[g, ranked[topk]] == align[g, ranked[topk - 1]]:
                ties += 1
            if not chosen:  # no aligned anchor: the (up to) 3 inside anchors nearest the box centre
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                chosen = sorted(inside, key=lambda a: (points[a][0] - cx) ** 2 + (points[a][1] - cy) ** 2)[:3]
            for a in chosen:
                claims.setdefault(a, []).append(g)
        owner = {}
        for a, claimants in claims.items():  # several targets: the highest IoU, the first on a tie
            owner[a] = max(claimants, key=lambda g: (iou[g, a], -g))
        for g, label, box in gts:
            mine = [a for a, o in owner.items() if o == g]
            best_align = max([align[g, a] for a in mine], default=0.0)
            best_iou = max([iou[g, a] for a in mine], default=0.0)
            for a in mine:
                quality = iou[g, a] if iou_target else align[g, a] / max(best_align, 1e-9) * best_iou
                gt_index[b][a], fg[b][a] = g, True
                target[b][a][label] = quality
    return gt_index, fg, target, ties


def _random_case(g: torch.Generator, B: int = 3, C: int = 3):
    """Random scores and predicted boxes on two grids (stride 8 and 16, 64 px), random targets of
    2..60 px with random classes, padding rows, one image without targets, and some classes with
    zero scores (no aligned anchor: the centre fallback)."""
    points = torch.tensor([[x + s / 2, y + s / 2] for s in (8, 16) for y in range(0, 64, s) for x in range(0, 64, s)])
    A = len(points)
    scores = torch.rand(B, A, C, generator=g)
    scores[..., 2] *= (torch.rand(B, A, 1, generator=g) > 0.5).float()[..., 0]  # class 2 often exactly 0
    if torch.rand(1, generator=g) < 0.3:
        scores[..., 1] = 0.0
    centre = points + 6 * torch.randn(B, A, 2, generator=g)
    half = 1 + 20 * torch.rand(B, A, 2, generator=g)
    boxes = torch.cat([centre - half, centre + half], -1)
    G = int(torch.randint(1, 7, (1,), generator=g))
    xy = 64 * torch.rand(B, G, 2, generator=g)
    wh = 2 + 58 * torch.rand(B, G, 2, generator=g) ** 2
    labels = torch.randint(0, C, (B, G, 1), generator=g).float()
    targets = torch.cat([labels, xy - wh / 2, xy + wh / 2], -1)
    n_valid = torch.randint(0, G + 1, (B,), generator=g)
    n_valid[0] = 0  # an image without objects: every row is padding
    for b in range(B):
        targets[b, n_valid[b]:] = -1
    return scores, boxes, points, targets


@pytest.mark.parametrize("seed", range(40))
def test_assigner_matches_a_loop_reference(seed):
    """assign() equals the loop reference to 1e-6 on random cases.

    Where detpipe deviates from YOLOv8's TaskAlignedAssigner (all written in the reference):
    - IoU is plain IoU (torchvision's box_iou), not CIoU, in the alignment metric and the targets;
    - "inside" is strict (centre > x1 and < x2), without YOLOv8's 1e-9 margin;
    - a top-k anchor is positive only when its alignment is > 0 (YOLOv8 keeps zero-metric top-k
      anchors); a target with no such anchor takes the (up to) 3 inside anchors nearest its centre;
    - an anchor claimed by several targets goes to the highest IoU among the targets that chose it
      (YOLOv8: among all targets, which can hand it to one that never chose it); equal IoUs: the
      first target (torch.argmax);
    - the normaliser is max(alignment).clamp(1e-9) (YOLOv8: + 1e-9).
    """
    g = torch.Generator().manual_seed(seed)
    scores, boxes, points, targets = _random_case(g)
    topk = [1, 3, 10, 13][seed % 4]
    alpha, beta = [(0.5, 6.0), (1.0, 2.0)][seed % 2]
    w = LossWeights(topk=topk, alpha=alpha, beta=beta, iou_target=seed % 3 == 0)
    gt_index, fg, target = assign(scores, boxes, points, targets, w)
    ref_index, ref_fg, ref_target, ties = reference_assign(
        scores.double().tolist(), boxes.double().tolist(), points.double().tolist(), targets.double().tolist(),
        topk, alpha, beta, w.iou_target)
    assert ties == 0  # random floats: the top-k is defined without torch.topk's tie order
    assert fg.tolist() == ref_fg
    assert gt_index.tolist() == ref_index
    assert torch.allclose(target.double(), torch.tensor(ref_target, dtype=torch.float64), rtol=0, atol=1e-6)


def test_contested_anchor_goes_to_the_best_iou_among_its_claimants():
    """Targets 0 and 1 choose anchor 0 (top-1); target 2 overlaps it most but chose anchor 1, so
    anchor 0 goes to target 0 (YOLOv8 would give it to target 2), and target 1 keeps nothing."""
    points = torch.tensor([[10.0, 10.0], [12.0, 10.0]])
    boxes = torch.tensor([[[1.0, 0, 21, 20], [1, 0, 21, 20]]])                 # both = target 2's box
    targets = torch.tensor([[[0, 0, 0, 20, 20], [1, 0, 0, 24, 20], [2, 1, 0, 21, 20]]])
    scores = torch.tensor([[[0.9, 0.9, 0.001], [0.1, 0.1, 0.9]]])
    w = LossWeights(topk=1)
    gt_index, fg, target = assign(scores, boxes, points, targets, w)
    assert gt_index.tolist() == [[0, 2]] and fg.tolist() == [[True, True]]
    expected = torch.zeros(1, 2, 3)
    expected[0, 0, 0], expected[0, 1, 2] = 380 / 420, 1.0  # IoU of target 0's best anchor; target 2's own
    assert torch.allclose(target, expected, atol=1e-6)
    ref = reference_assign(scores.double().tolist(), boxes.double().tolist(), points.double().tolist(),
                           targets.double().tolist(), 1, w.alpha, w.beta, False)
    assert ref[:2] == (gt_index.tolist(), fg.tolist())
    assert torch.allclose(target.double(), torch.tensor(ref[2], dtype=torch.float64), atol=1e-6)


def test_random_assigner_cases_reach_every_branch():
    """The random cases above hold images without targets, targets without any inside anchor,
    the centre fallback, contested anchors and both target kinds: the reference's every branch."""
    seen = {"empty": 0, "no_inside": 0, "fallback": 0, "contested": 0, "positives": 0}
    for seed in range(40):
        scores, boxes, points, targets = _random_case(torch.Generator().manual_seed(seed))
        topk = [1, 3, 10, 13][seed % 4]
        alpha, beta = [(0.5, 6.0), (1.0, 2.0)][seed % 2]
        for b in range(len(targets)):
            rows = [r for r in targets[b].tolist() if r[0] >= 0]
            seen["empty"] += not rows
            chosen = []
            for label, *box in rows:
                inside = [a for a, (x, y) in enumerate(points.tolist()) if box[0] < x < box[2] and box[1] < y < box[3]]
                seen["no_inside"] += not inside
                aligned = [a for a in inside if scores[b, a, int(label)] ** alpha * _iou(box, boxes[b, a].tolist()) ** beta > 0]
                seen["fallback"] += bool(inside) and not aligned
                chosen += sorted(aligned, key=lambda a: -float(scores[b, a, int(label)]) ** alpha
                                 * _iou(box, boxes[b, a].tolist()) ** beta)[:topk]
            seen["contested"] += len(chosen) > len(set(chosen))
        seen["positives"] += int(assign(scores, boxes, points, targets, LossWeights(topk=topk))[1].sum())
    assert all(v > 0 for v in seen.values()), seen


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
    _, parts = detection_loss(out, targets, LossWeights(label_smoothing=0.0))
    w = LossWeights()
    *_, target, _ = reference_assign(out["cls"].sigmoid().double().tolist(), out["boxes"].double().tolist(),
                                     out["points"].double().tolist(), targets.double().tolist(), w.topk, w.alpha,
                                     w.beta, w.iou_target)
    target = torch.tensor(target, dtype=torch.float64)
    assert (target > 0).any()
    plain = F.binary_cross_entropy_with_logits(out["cls"].double(), target, reduction="sum") / target.sum().clamp(min=1)
    assert float(parts["cls"]) == pytest.approx(float(plain), rel=1e-5)  # the class loss before smoothing existed
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
