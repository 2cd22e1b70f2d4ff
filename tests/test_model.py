import pytest
import torch

from detpipe.model import checkpoint as ckpt
from detpipe.train.loss import assign, detection_loss, LossWeights
from detpipe.model.device import channels_last
from detpipe.model.detector import ModelConfig, build_model, describe, fuse_conv_bn, model_summary
from detpipe.model.pretrained import PretrainedError

CFG = ModelConfig(num_classes=3, backbone="shufflenet_v2_x0_5", neck_channels=16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(CFG).eval()


def test_output_shapes(model):
    out = model(torch.randint(0, 255, (2, 3, 96, 96), dtype=torch.uint8))
    anchors = 12 * 12 + 6 * 6 + 3 * 3
    assert out["cls"].shape == (2, anchors, 3) and out["boxes"].shape == (2, anchors, 4)
    assert (out["boxes"][..., 2:] >= out["boxes"][..., :2]).all()


def test_batched_equals_per_image(model):
    images = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        batched = model(images)
        single = [model(images[i:i + 1]) for i in range(3)]
    for i in range(3):
        assert torch.allclose(batched["cls"][i], single[i]["cls"][0], atol=1e-4)
        assert torch.allclose(batched["boxes"][i], single[i]["boxes"][0], atol=1e-3)


@pytest.mark.parametrize("name", ["resnet18", "regnet_x_400mf", "mobilenet_v3_small"])
def test_other_torchvision_backbones(name):
    m = build_model(ModelConfig(2, name, 16)).eval()
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 64, 64))["cls"].shape == (1, 64 + 16 + 4, 2)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="model.backbone: 'vit_b_16' is not supported"):
        build_model(ModelConfig(2, "vit_b_16"))


def test_frozen_backbone_takes_no_gradient_and_keeps_bn_statistics():
    torch.manual_seed(0)
    m = build_model(CFG)
    m.backbone.freeze(True)
    m.train()
    bn_before = {k: v.clone() for k, v in m.backbone.state_dict().items() if "running" in k}
    targets = torch.tensor([[[1, 10, 10, 40, 50]]], dtype=torch.float)
    loss, _ = detection_loss(m(torch.randint(0, 255, (1, 3, 64, 64)).float()), targets)
    loss.backward()
    assert all(p.grad is None for p in m.backbone.parameters())
    assert any(p.grad is not None for p in m.head.parameters())
    for k, v in m.backbone.state_dict().items():
        if "running" in k:
            assert torch.equal(v, bn_before[k]), k
    m.backbone.freeze(False)
    m.train()
    assert m.backbone.stem[0][1].training and all(p.requires_grad for p in m.backbone.parameters())


def test_empty_targets_give_finite_loss_with_only_class_term(model):
    out = model(torch.zeros(2, 3, 64, 64))
    loss, parts = detection_loss(out, torch.full((2, 1, 5), -1.0))
    assert torch.isfinite(loss) and parts["box"] == 0.0 and parts["cls"] > 0


def test_assignment_gives_every_object_a_positive_inside_it():
    points = torch.tensor([[x + 4.0, y + 4.0] for y in range(0, 64, 8) for x in range(0, 64, 8)])
    scores = torch.full((1, len(points), 2), 0.01)
    pred = torch.cat([points - 4, points + 4], -1)[None]
    targets = torch.tensor([[[0, 0, 0, 20, 20], [1, 30, 30, 60, 60], [-1, -1, -1, -1, -1]]])
    gt_index, fg, target = assign(scores, pred, points, targets, LossWeights())
    for g, (x1, y1, x2, y2) in enumerate(targets[0, :2, 1:].tolist()):
        mine = fg[0] & (gt_index[0] == g)
        assert mine.any()
        p = points[mine]
        assert ((p[:, 0] > x1) & (p[:, 0] < x2) & (p[:, 1] > y1) & (p[:, 1] < y2)).all()
    assert target[0, fg[0]].sum(-1).gt(0).all() and target[0, ~fg[0]].sum() == 0


def test_pretrained_path_loads_matching_tensors_and_skips_the_head(tmp_path, capsys):
    torch.manual_seed(1)
    src = build_model(ModelConfig(20, "shufflenet_v2_x0_5", 16))
    ckpt.save_atomic({"model": src.state_dict()}, tmp_path / "w.pt")
    dst = build_model(CFG, pretrained=str(tmp_path / "w.pt"))
    assert "skipped" in capsys.readouterr().out
    assert torch.equal(dst.backbone.stem[0][0].weight, src.backbone.stem[0][0].weight)
    assert dst.head.cls[0][-1].weight.shape[0] == 3


def test_cspdarknet_scales_grow_and_give_the_same_outputs_layout():
    sizes = []
    for scale in ("n", "s", "m", "l"):
        cfg = ModelConfig(num_classes=2, backbone="cspdarknet", scale=scale)
        m = build_model(cfg).eval()
        with torch.no_grad():
            out = m(torch.zeros(1, 3, 64, 64))
        assert out["cls"].shape == (1, 64 + 16 + 4, 2) and out["boxes"].shape == (1, 84, 4)
        assert m.neck.lateral[0][0].out_channels == {"n": 64, "s": 128, "m": 192, "l": 256}[scale]
        sizes.append(sum(p.numel() for p in m.parameters()))
    assert sizes == sorted(sizes) and sizes[-1] > 10 * sizes[0]


def test_scale_and_pretrained_errors_are_clear():
    with pytest.raises(ValueError, match="model.scale: 'x' is not one of n, s, m, l"):
        ModelConfig(num_classes=2, scale="x")
    with pytest.raises(PretrainedError, match="torchvision has no imagenet weights for yolov8; .* import-weights"):
        build_model(ModelConfig(num_classes=2, backbone="yolov8"), pretrained="imagenet")


@pytest.mark.parametrize("backbone", ["cspdarknet", "shufflenet_v2_x0_5"])
def test_folding_batchnorm_keeps_the_outputs(backbone):
    torch.manual_seed(0)
    m = build_model(ModelConfig(num_classes=3, backbone=backbone, neck_channels=16))
    for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    m.eval()
    fused = fuse_conv_bn(m)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in fused.modules())
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        a, b = m(images), fused(images)
    assert torch.allclose(a["cls"], b["cls"], atol=1e-4) and torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
    assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # the original is untouched


def test_channels_last_only_where_it_helps():
    cpu = torch.device("cpu")
    assert channels_last(cpu, build_model(ModelConfig(num_classes=2)))            # dense convs
    assert not channels_last(cpu, build_model(CFG))                               # depthwise (ShuffleNet)
    assert channels_last(torch.device("cuda"), None)


def test_summary_counts_parameters_and_flops_that_grow_with_the_input():
    m = build_model(ModelConfig(num_classes=2))
    small, big = model_summary(m, 64), model_summary(m, 128)
    assert small["parameters"] == sum(p.numel() for p in m.parameters())
    assert 3.5 < big["gflops"] / small["gflops"] < 4.5           # convolutions: FLOPs ~ pixels
    assert m.training and "cspdarknet-n + PAN 64" in describe(m.config, small)


def test_summary_command(capsys):
    from detpipe.__main__ import main
    assert main(["summary", "--imgsz", "64"]) == 0
    out = capsys.readouterr().out
    assert "GFLOPs at 64x64" in out and "backbone" in out and "head" in out


def test_weights_that_do_not_fit_the_network_are_a_clear_error(tmp_path):
    from detpipe.model.load import load_detector
    m = build_model(CFG)
    wrong = {**CFG.to_dict(), "neck_channels": 32}  # e.g. written by a version with another layout
    ckpt.save_atomic({"model": m.state_dict(), "ema": m.state_dict(), "model_config": wrong,
                      "class_names": ["a", "b", "c"], "imgsz": 64}, tmp_path / "old.pt")
    with pytest.raises(ckpt.CheckpointError, match="do not fit the network.*retrain"):
        load_detector(tmp_path / "old.pt")
