"""`detpipe import-weights` against the key/shape manifest of Ultralytics' real YOLOv8 and YOLO11 models
(tests/data/ultralytics_manifest.json, written by scripts/make_ultralytics_manifest.py): every backbone,
neck and head-hidden tensor is imported, only the output layers are left out, and the result trains as
`model.pretrained`. That the imported tensors compute Ultralytics' feature maps is shown by
bench/import_weights_parity.py (it needs Ultralytics)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from detpipe.model import checkpoint as ckpt
from detpipe.cli import import_weights as cli
from detpipe.model.detector import Detector, ModelConfig, build_model, fuse_conv_bn
from detpipe.model.yolo_import import ConversionError, class_branch_width, convert, read_state_dict
from tests.conftest import tiny_params

MANIFEST = json.loads((Path(__file__).parent / "data" / "ultralytics_manifest.json").read_text())
OUTPUT_LAYER = re.compile(r"head\.(cls|reg)\.\d\.2\.")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the keys and shapes of Ultralytics' `name` (e.g. yolov8n) and random values
    of sensible scale (the network's activations neither vanish nor overflow)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = MANIFEST["models"][name]

    def value(k: str, shape: list[int]) -> torch.Tensor:
        if k.endswith("num_batches_tracked"):
            return torch.randint(1, 10**6, (), generator=gen)
        if len(shape) == 4:  # conv weight: unit gain per output
            return torch.randn(shape, generator=gen) / (shape[1] * shape[2] * shape[3]) ** 0.5
        if k.endswith(("running_var", ".weight")):  # BatchNorm scale and variance
            return torch.rand(shape, generator=gen) + 0.5
        return (torch.rand(shape, generator=gen) - 0.5) * 0.2  # means and biases
    return {k: value(k, shape) for k, shape in shapes.items()}


def _family_scale(name: str) -> tuple[str, str]:
    return name[:-1], name[-1]


@pytest.mark.parametrize("name", sorted(MANIFEST["models"]))
def test_every_tensor_but_the_output_layers_is_imported(name):
    state = random_state(name)
    conv = convert(state)
    family, scale = _family_scale(name)
    assert (conv.config.backbone, conv.config.neck, conv.config.scale, conv.config.num_classes) == \
        (family, family, scale, MANIFEST["num_classes"])
    head = max(int(k.split(".")[1]) for k in state)
    outputs = {k for k in state if re.fullmatch(rf"model\.{head}\.(cv2|cv3)\.\d\.2\.(weight|bias)", k)}
    assert set(conv.skipped) == outputs | {f"model.{head}.dfl.conv.weight"}
    assert set(conv.imported) | set(conv.skipped) == set(state)
    ours = Detector(conv.config).state_dict()
    assert {k for k in ours if k not in conv.state} == {k for k in ours if OUTPUT_LAYER.match(k)}
    for theirs, mine in conv.imported.items():
        assert conv.state[mine] is state[theirs] and ours[mine].shape == state[theirs].shape


def _write(state, path: Path) -> Path:
    torch.save(state, path)
    return path


@pytest.mark.parametrize("name, classes", [("yolov8n", 3), ("yolo11s", 3), ("yolov8s", 120)])
def test_the_converted_file_starts_training_from_the_imported_tensors(name, classes, tmp_path, capsys):
    state = random_state(name, seed=1)
    out = tmp_path / "imported.pt"
    assert cli.main([str(_write(state, tmp_path / f"{name}-state.pt")), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    family, scale = _family_scale(name)
    assert f"model: {{backbone: {family}, neck: {family}, scale: {scale}, pretrained: {out}}}" in printed
    assert "skipped 6: box output layer" in printed and "skipped 6: class output layer" in printed

    config = ModelConfig(classes, family, 0, scale, family)
    model = build_model(config, pretrained=str(out))
    assert "pretrained" in capsys.readouterr().out
    conv = convert(state)
    cls_loads = class_branch_width(config) == class_branch_width(conv.config)
    own = model.state_dict()
    for theirs, mine in conv.imported.items():
        expected = not mine.startswith("head.cls.") or cls_loads
        assert torch.equal(own[mine], state[theirs]) == expected, mine
    fresh = Detector(config)  # the output layers keep detpipe's initialisation (class prior)
    for k in own:
        if OUTPUT_LAYER.match(k) and k.endswith("bias"):
            assert torch.equal(own[k], fresh.state_dict()[k])


def test_a_yolo_wrapper_state_dict_and_half_precision_are_accepted(tmp_path):
    state = {f"model.{k}": v.half() if v.is_floating_point() else v for k, v in random_state("yolov8n").items()}
    read = read_state_dict(_write(state, tmp_path / "wrapped.pt"))  # YOLO(...).state_dict() names
    assert set(read) == set(MANIFEST["models"]["yolov8n"]) and read["model.0.conv.weight"].dtype == torch.float32


def _run_cli(capsys, *argv) -> tuple[int, str]:
    """Exit status and stderr of the command."""
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_a_pickled_ultralytics_checkpoint_is_refused_with_the_way_to_save_a_state_dict(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Model(torch.nn.Conv2d):  # an Ultralytics .pt pickles its model classes
        def __reduce_ex__(self, protocol):
            return (Path.touch, (marker,))
    torch.save({"model": Model(3, 3, 1)}, tmp_path / "yolov8n.pt")
    code, out = _run_cli(capsys, tmp_path / "yolov8n.pt")
    assert code == 1 and not marker.exists() and len(out.strip().splitlines()) == 1
    assert "refused to load" in out and "model.float().state_dict()" in out


def test_what_cannot_be_imported_is_a_one_line_error(tmp_path, capsys):
    resnet_like = build_model(ModelConfig(3, "yolov8", 0, "n", "yolov8")).state_dict()
    code, out = _run_cli(capsys, _write(resnet_like, tmp_path / "detpipe.pt"))
    assert code == 1 and "no detection head" in out and len(out.strip().splitlines()) == 1
    x_scale = random_state("yolov8s")  # a width detpipe does not build (like scale x)
    x_scale["model.2.cv1.conv.weight"] = torch.zeros(40, 32, 1, 1)
    code, out = _run_cli(capsys, _write(x_scale, tmp_path / "x.pt"))
    assert code == 1 and "no detpipe layout fits it" in out and len(out.strip().splitlines()) == 1
    code, out = _run_cli(capsys, _write([1, 2], tmp_path / "list.pt"))
    assert code == 1 and "not a state dict of tensors" in out
    code, out = _run_cli(capsys, tmp_path / "missing.pt")
    assert code == 1 and out == f"error: {tmp_path / 'missing.pt'}: file not found\n"
    with pytest.raises(ConversionError):
        convert({"model.22.cv3.0.2.weight": torch.zeros(80, 64, 1, 1)})


@pytest.mark.parametrize("layout", [("yolov8", "s"), ("yolo11", "n"), ("yolo11", "m")])
def test_yolo_layouts_fold_batchnorm_and_batch_like_the_pan_layout(layout):
    torch.manual_seed(0)
    model = Detector(ModelConfig(3, layout[0], 0, layout[1], layout[0]))
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert (bn.eps, bn.momentum) == (1e-3, 0.03)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        a, b = model(images), fuse_conv_bn(model)(images)
        single = model(images[1:])
    assert torch.allclose(a["cls"], b["cls"], atol=1e-3) and torch.allclose(a["boxes"], b["boxes"], atol=1e-2)
    assert torch.allclose(a["cls"][1:], single["cls"], atol=1e-4)
    assert torch.equal(model.normalize(images), images.float() / 255)


def test_frozen_phase_from_imported_weights_keeps_the_backbone(tiny_records, tmp_path, capsys):
    from detpipe.params import load_params
    from detpipe.train.phase import train_phase
    out = tmp_path / "yolov8n-detpipe.pt"
    assert cli.main([str(_write(random_state("yolov8n", 2), tmp_path / "s.pt")), "--out", str(out)]) == 0
    raw = tiny_params("unused")
    raw["model"].update(backbone="yolov8", neck="yolov8", scale="n", neck_channels=0, pretrained=str(out), imgsz=64)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    state = train_phase(params, "frozen", tiny_records[:8], tiny_records[8:12], [], tmp_path / "ckpt", tmp_path / "h.tsv")
    imported = ckpt.load(out)["model"]
    n = sum(k.startswith("backbone.") for k in Detector(ModelConfig(4, "yolov8", 0, "n", "yolov8")).state_dict())
    assert f"backbone {n}/{n}, neck" in capsys.readouterr().out
    for k, v in state["model"].items():
        if k.startswith("backbone."):
            assert torch.equal(v, imported[k]), k  # frozen: weights and BatchNorm statistics unchanged


def test_yolo_layouts_export_to_onnx_with_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from detpipe.infer.predictor import sample_images
    from detpipe.infer.onnx_export import export_onnx, parity
    torch.manual_seed(0)
    config = ModelConfig(4, "yolo11", 0, "n", "yolo11")  # attention and depthwise convs included
    model = Detector(config).eval()
    for branch in model.head.cls:  # scores on both sides of the threshold
        torch.nn.init.normal_(branch[-1].weight, std=0.3)
        torch.nn.init.zeros_(branch[-1].bias)
    state = model.state_dict()
    ckpt.save_atomic({"model": state, "ema": state, "model_config": config.to_dict(),
                      "class_names": ["a", "b", "c", "d"], "imgsz": 64}, tmp_path / "m.pt")
    r = parity(tmp_path / "m.pt", export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx", dynamic=True),
               sample_images(2), conf=0.3)
    assert r["cls"] < 1e-3 and r["boxes"] < 1e-2 and r["torch_detections"] == r["onnx_detections"] > 0, r
