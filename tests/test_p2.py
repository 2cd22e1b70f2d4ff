"""model.p2: the stride-4 detection level (YOLOv8-p2). Levels and anchors against the strides the
layout implies, one training run that learns, boxes and detections against a loop over levels,
checkpoints with p2 (through `detpipe predict`) and without the key (older files), pretrained starts
across p2 (the levels of the same stride meet), and no stride list written down outside the model."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detpipe.infer.decode import decode
from detpipe.model import checkpoint as ckpt
from detpipe.model import detector
from detpipe.model.detector import Detector, ModelConfig, build_model
from detpipe.model.layers import conv_bn
from detpipe.model.load import load_detector
from detpipe.model.yolo_import import convert, save
from detpipe.train.loss import detection_loss
from tests.conftest import CLASSES, REPO
from tests.test_import_weights import random_state
from tests.test_predict_cli import make_weights, read_txt, run_cli, write_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The layout's levels, written here as the reference the model's measured strides must equal.
LEVELS = {False: (8, 16, 32), True: (4, 8, 16, 32)}


def tiny(p2: bool, backbone: str = "cspdarknet", neck: str = "pan", classes: int = 3) -> ModelConfig:
    return ModelConfig(classes, backbone, 16 if neck == "pan" else 0, "n", neck, p2)


def neck_outputs(model: Detector, images: torch.Tensor) -> tuple[dict, list[torch.Tensor]]:
    seen = []
    hook = model.neck.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        out = model(images)
    finally:
        hook.remove()
    return out, seen[0]


@pytest.mark.parametrize("imgsz", [64, 96])
@pytest.mark.parametrize("p2", [False, True])
@pytest.mark.parametrize("backbone, neck", [("cspdarknet", "pan"), ("yolov8", "yolov8")])
def test_levels_and_anchor_count(backbone, neck, p2, imgsz):
    torch.manual_seed(0)
    model = Detector(tiny(p2, backbone, neck)).eval()
    assert model.strides == LEVELS[p2]
    with torch.no_grad():
        out, feats = neck_outputs(model, torch.randint(0, 255, (2, 3, imgsz, imgsz), dtype=torch.uint8))
    assert [tuple(f.shape[-2:]) for f in feats] == [(imgsz // s, imgsz // s) for s in LEVELS[p2]]
    if neck != "pan":  # yolov8-p2.yaml: 128 x width channels at P2, then 256, 512, 1024 x width
        assert [f.shape[1] for f in feats] == [int(c * 0.25) for c in (128, 256, 512, 1024)][1 - p2:]
    anchors = sum((imgsz // s) ** 2 for s in LEVELS[p2])
    assert out["cls"].shape == (2, anchors, 3) and out["boxes"].shape == (2, anchors, 4)
    assert out["points"].shape == (anchors, 2)
    expected = torch.cat([torch.full(((imgsz // s) ** 2, 1), float(s)) for s in LEVELS[p2]])
    assert torch.equal(out["strides"], expected)


@pytest.mark.parametrize("backbone", ["yolo11", "resnet18", "shufflenet_v2_x0_5", "regnet_x_400mf",
                                      "mobilenet_v3_small", "efficientnet_b0"])
def test_every_backbone_family_gets_the_stride_4_level(backbone):
    neck = "yolo11" if backbone == "yolo11" else "pan"
    model = build_model(tiny(True, backbone, neck)).eval()
    assert model.strides == LEVELS[True]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64))["cls"].shape == (1, 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2, 3)


def test_a_backbone_without_a_stride_4_feature_is_refused_naming_model_p2(monkeypatch):
    def stages(name, scale="n"):  # a stem at stride 2, then straight to stride 8
        return (conv_bn(3, 8, 3, 2), nn.Sequential(conv_bn(8, 8, 3, 2), conv_bn(8, 8, 3, 2)),
                conv_bn(8, 8, 3, 2), conv_bn(8, 8, 3, 2))
    monkeypatch.setattr(detector, "_stages", stages)
    assert Detector(tiny(False, "resnet18")).strides == LEVELS[False]
    with pytest.raises(ValueError, match=r"^model.p2: backbone resnet18 has no stride-4 feature map \(its stem "
                                         r"ends at stride 2\); set model.p2: false"):
        Detector(tiny(True, "resnet18"))


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model(tiny(True)).train()
    images = torch.randint(0, 255, (2, 3, 64, 64)).float()
    # Small objects (6-12 px): the ones the stride-4 level is for.
    targets = torch.tensor([[[0, 10, 10, 18, 18], [1, 40, 30, 52, 40]],
                            [[2, 20, 44, 26, 52], [-1, -1, -1, -1, -1]]], dtype=torch.float)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss, _ = detection_loss(model(images), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses


def loop_reference(model: Detector, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits [A, C] and xyxy boxes [A, 4] of image 0, cell by cell, level by level."""
    cls, boxes = [], []
    for level, (f, s) in enumerate(zip(feats, LEVELS[model.config.p2])):
        logits = model.head.cls[level](f[:1])[0]
        ltrb = F.softplus(model.head.reg[level](f[:1])[0]) + 1e-3
        for y in range(f.shape[-2]):
            for x in range(f.shape[-1]):
                cx, cy = (x + 0.5) * s, (y + 0.5) * s
                l, t, r, b = (ltrb[:, y, x] * s).tolist()
                cls.append(logits[:, y, x])
                boxes.append(torch.tensor([cx - l, cy - t, cx + r, cy + b]))
    return torch.stack(cls), torch.stack(boxes)


def overlap(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, conf: float, iou: float) -> set[tuple]:
    """Per class: highest score first, drop what overlaps a kept box of the class by more than iou."""
    rows, kept = boxes.tolist(), set()
    for c in range(scores.shape[1]):
        order = [int(i) for i in scores[:, c].argsort(descending=True) if scores[i, c] >= conf]
        mine: list[int] = []
        for i in order:
            if all(overlap(rows[i], rows[j]) <= iou for j in mine):
                mine.append(i)
        kept |= {(c, *[round(v, 2) for v in rows[i]]) for i in mine}
    return kept


def test_boxes_and_detections_equal_a_loop_over_levels():
    torch.manual_seed(3)
    # Training mode: BatchNorm's batch statistics keep a random network's activations from fading
    # to ~0 (running statistics would leave every score at 0.5). The loop sees the same batch of one.
    model = Detector(tiny(True)).train()
    for branch in model.head.cls:  # scores spread around 0.5, so thresholds and NMS both bite
        nn.init.normal_(branch[-1].weight, std=0.3)
        nn.init.zeros_(branch[-1].bias)
    with torch.no_grad():
        out, feats = neck_outputs(model, torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8))
        cls, boxes = loop_reference(model, feats)
    torch.testing.assert_close(out["cls"][0], cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["boxes"][0], boxes, atol=1e-4, rtol=1e-5)
    conf, iou = 0.62, 0.5
    scores = cls.sigmoid()
    assert 0 < int((scores >= conf).sum()) < 1000  # below multiclass_nms's pre-NMS cap
    got_boxes, got_scores, labels = decode(out, conf, iou, max_det=1000)[0]
    got = {(int(c), *[round(v, 2) for v in b.tolist()]) for b, c in zip(got_boxes, labels)}
    assert got == greedy_nms(boxes, scores, conf, iou) and len(got) > 1


def test_a_p2_checkpoint_predicts_through_the_cli(tmp_path):
    weights = make_weights(tmp_path / "p2.pt", p2=True)
    model, state = load_detector(weights)
    assert state["model_config"]["p2"] and model.strides == LEVELS[True]
    write_images(tmp_path / "in")
    assert run_cli(tmp_path / "in", "--weights", weights, "--out", tmp_path / "out", "--save-txt", "--conf", "0.3") == 0
    rows = [r for txt in (tmp_path / "out" / "labels").rglob("*.txt") for r in read_txt(txt)]
    assert rows and {r[0] for r in rows} <= set(CLASSES)


def test_a_checkpoint_from_before_p2_loads_as_p2_false(tmp_path):
    weights = make_weights(tmp_path / "old.pt")
    state = ckpt.load(weights)
    del state["model_config"]["p2"]
    ckpt.save_atomic(state, tmp_path / "old.pt")
    model, _ = load_detector(tmp_path / "old.pt")
    assert model.config.p2 is False and model.strides == LEVELS[False]
    assert all(torch.equal(v, state["ema"][k]) for k, v in model.state_dict().items())


def _saved(model: Detector, path: Path) -> Path:
    ckpt.save_atomic({"model": model.state_dict(), "model_config": model.config.to_dict()}, path)
    return path


@pytest.mark.parametrize("src_p2, dst_p2", [(False, True), (True, False)])
def test_pretrained_across_p2_loads_each_head_level_into_the_level_of_its_stride(src_p2, dst_p2, tmp_path, capsys):
    torch.manual_seed(0)
    src = Detector(tiny(src_p2))
    torch.manual_seed(1)
    dst = build_model(tiny(dst_p2), pretrained=str(_saved(src, tmp_path / "src.pt")))
    assert "each level loads into the level of the same stride" in capsys.readouterr().out
    torch.manual_seed(1)
    theirs, ours, fresh = src.state_dict(), dst.state_dict(), Detector(tiny(dst_p2)).state_dict()
    for s in LEVELS[dst_p2]:
        j = LEVELS[dst_p2].index(s)
        for branch in ("cls", "reg"):
            b = getattr(dst.head, branch)[j].state_dict()
            if s in LEVELS[src_p2]:
                a = getattr(src.head, branch)[LEVELS[src_p2].index(s)].state_dict()
            else:  # the level only this model has starts from scratch
                a = {k: fresh[f"head.{branch}.{j}.{k}"] for k in b}
            assert all(torch.equal(a[k], b[k]) for k in a), (s, branch)
    for k, v in ours.items():
        if not k.startswith("head."):  # the p2 path's own layers (neck.p2.*) exist in one model only
            assert torch.equal(v, theirs[k] if k in theirs else fresh[k]), k


def test_imported_yolov8_weights_fill_every_layer_of_the_same_role_in_a_p2_model(tmp_path):
    state = random_state("yolov8n", seed=2)
    conv = convert(state)
    save(conv, tmp_path / "v8.pt", "yolov8n-state.pt", "0" * 64)
    torch.manual_seed(5)
    fresh = Detector(tiny(True, "yolov8", "yolov8")).state_dict()
    torch.manual_seed(5)
    model = build_model(tiny(True, "yolov8", "yolov8"), pretrained=str(tmp_path / "v8.pt")).state_dict()
    shift = len(LEVELS[True]) - len(LEVELS[False])
    expected = {}
    for k, v in conv.state.items():
        parts = k.split(".")
        if parts[0] == "head":
            parts[2] = str(int(parts[2]) + shift)
        expected[".".join(parts)] = v
    def fits(k: str) -> bool:  # a BatchNorm's batch counter loads with its statistics only
        if k.endswith("num_batches_tracked"):
            return fits(k.removesuffix("num_batches_tracked") + "running_var")
        return k in expected and expected[k].shape == model[k].shape

    for k, v in model.items():
        if fits(k):
            assert torch.equal(v, expected[k]), k
        else:
            assert torch.equal(v, fresh[k]), k
            assert k.startswith(("neck.p2.", "head.cls.", "head.reg.0.")) or ".2." in k, k
    assert all(k in expected for k in model if k.startswith("backbone."))
    assert all(k in expected for k in model if k.startswith("neck.") and not k.startswith("neck.p2."))


def test_no_stride_list_is_written_down_outside_the_model():
    """The model measures its strides (Detector.strides); anchors, the loss, decoding, export and
    predict must take them from there, not from a literal such as (8, 16, 32)."""
    found = []
    for root in ("detpipe", "stages", "bench", "scripts"):
        for path in sorted((REPO / root).rglob("*.py")):
            if path.parent == REPO / "detpipe" / "model":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2:
                    values = [e.value for e in node.elts if isinstance(e, ast.Constant) and type(e.value) is int]
                    if (len(values) == len(node.elts) and values[0] in (2, 4, 8)
                            and all(b == 2 * a for a, b in zip(values, values[1:]))):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} {values}")
    assert not found, f"stride lists outside detpipe/model: {found}; use the model's strides"
