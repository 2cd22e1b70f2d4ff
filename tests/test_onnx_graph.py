"""The exported graph runs the network only (#18): the input's std folded into the first convolution (a
non-zero mean still subtracted), and for one image size no shape computed at run time; the outputs stay
the PyTorch model's (tests/test_backends.py checks the final boxes at 1e-3 px, three backbones)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from detpipe.infer import onnx_cache
from detpipe.infer.onnx_graph import ExportNetwork, export_model, input_conv
from detpipe.model.detector import Detector, fuse_conv_bn
from detpipe.model.layers import separate_halves
from tests.test_backends import IMGSZ, NAMES, detector

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE_OPS = {"Shape", "Range", "Expand", "ConstantOfShape"}


def optimised(path: Path) -> onnx.GraphProto:
    """onnxruntime's optimised graph of `path`: what a session runs on this CPU."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path.with_suffix(".optimised.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath).graph


def consumers(graph: onnx.GraphProto, name: str) -> list[str]:
    return [n.op_type for n in graph.node if name in n.input]


def calibrated(model: Detector, size: int = 96) -> Detector:
    """`model` with each BatchNorm's statistics those of one random batch, so that the outputs depend on the
    image through the whole network (with fresh statistics the features fade, and any error with them)."""
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average: after one batch, that batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, size, size) * 255)
    return model.eval()


@pytest.mark.parametrize("backbone, neck", [("cspdarknet", "pan"), ("yolo11", "yolo11")])
def test_batch_dynamic_graph_runs_the_network_only(backbone, neck, tmp_path):
    """The inference cache's export: the image goes into the first conv with no Div (its std is in the
    weights), through a Sub only for a non-zero mean (cspdarknet's is ImageNet's, yolo11's 0), and no
    shape is computed, in the exported graph or in onnxruntime's optimised one."""
    model = detector(backbone=backbone, neck=neck)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = onnx_cache.export_graph(model, NAMES, IMGSZ, tmp_path / "m.onnx")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # folded in a copy
    for graph in (onnx.load(str(path)).graph, optimised(path)):
        ops = [n.op_type for n in graph.node]
        assert not SHAPE_OPS & set(ops) and "Div" not in ops, ops
        first = consumers(graph, "images")
        if model.mean.any():
            assert first == ["Sub"]
            first = consumers(graph, next(n.output[0] for n in graph.node if "images" in n.input))
        assert first == ["Conv"]


def test_free_size_export_gives_the_pytorch_boxes_at_other_sizes(tmp_path):
    """dynamic=True keeps the anchor grid computed from the feature maps' shapes (the std still folded)."""
    model = detector()
    path = export_model(model, NAMES, IMGSZ, tmp_path / "m.onnx", dynamic=True)
    assert "Div" not in [n.op_type for n in onnx.load(str(path)).graph.node]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for height, width in ((IMGSZ, IMGSZ), (2 * IMGSZ, IMGSZ + 32)):
        x = torch.rand(2, 3, height, width) * 255
        cls, boxes = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref = model(x)
        assert boxes.shape == tuple(ref["boxes"].shape)
        assert np.abs(boxes - ref["boxes"].numpy()).max() < 1e-3 and np.abs(cls - ref["cls"].numpy()).max() < 1e-4


@pytest.mark.parametrize("backbone, neck", [
    ("cspdarknet", "pan"), ("yolo11", "yolo11"), ("resnet18", "pan"), ("shufflenet_v2_x0_5", "pan"),
    ("regnet_x_400mf", "pan"), ("mobilenet_v3_small", "pan"), ("efficientnet_b0", "pan")])
def test_std_folds_into_every_backbone_familys_first_conv(backbone, neck):
    """Each family's first layer is a conv taking the normalised image, and the folded network (fixed size
    or not) computes the unfolded one's outputs to float rounding, its padded borders included (a mean
    folded into the bias would be tens of pixels off; the features are alive: `calibrated`)."""
    model = calibrated(detector(backbone=backbone, neck=neck))
    unfolded = separate_halves(fuse_conv_bn(model))  # the network exported before #18
    assert input_conv(unfolded, 96) is next(m for m in unfolded.backbone.modules() if isinstance(m, nn.Conv2d))
    x = torch.rand(2, 3, 96, 96) * 255
    with torch.no_grad():
        ref = unfolded(x)
        for fixed_size in (True, False):
            network = ExportNetwork(separate_halves(fuse_conv_bn(model)), 96, fixed_size)
            cls, boxes = network(x)
            assert network.folded and (network.mean is not None) == bool(model.mean.any())
            torch.testing.assert_close(cls, ref["cls"], rtol=1e-3, atol=1e-2)
            torch.testing.assert_close(boxes, ref["boxes"], rtol=1e-4, atol=0.05)


def test_normalisation_stays_explicit_when_the_image_meets_another_layer_first(tmp_path):
    """A layer before the first conv (here a Tanh) would see the unnormalised image: nothing is folded, the
    graph divides, and the outputs are the model's."""
    model = detector()
    model.backbone.stem = nn.Sequential(nn.Tanh(), model.backbone.stem)
    model = calibrated(model)
    network = ExportNetwork(separate_halves(fuse_conv_bn(model)), 96, True)
    assert not network.folded
    x = torch.rand(2, 3, 96, 96) * 255
    with torch.no_grad():
        ref, (cls, boxes) = model(x), network(x)
    torch.testing.assert_close(cls, ref["cls"], rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(boxes, ref["boxes"], rtol=1e-4, atol=0.05)
    path = export_model(model, NAMES, 96, tmp_path / "m.onnx", dynamic="batch")
    assert "Div" in [n.op_type for n in onnx.load(str(path)).graph.node]
