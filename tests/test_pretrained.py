"""Pretrained starts: torchvision's ImageNet/COCO files are hash-checked and loaded with weights_only=True
into exactly the tensors torchvision's own modules hold; planted, corrupt or foreign files are refused
with one line. No weights can be downloaded here: the files are generated with torchvision's own
builders (real keys and shapes, random values) in a temporary TORCH_HOME."""
from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from detpipe.model import checkpoint as ckpt
from detpipe.model import pretrained
from detpipe.catalog import COCO_DETECTORS, YOLO_FAMILIES, pretrained_choices
from detpipe.model.detector import ModelConfig, build_model
from detpipe.model.pretrained import PretrainedError, ensure_pretrained_file


@pytest.fixture()
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _randomize(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """The network's own initial weights with random BatchNorm parameters and statistics, variances
    down to 1e-2 (where an eps of 1e-3 instead of 1e-5 changes the output by 5%)."""
    gen = torch.Generator().manual_seed(seed)
    bns = {k.removesuffix(".running_var") for k in state if k.endswith(".running_var")}
    out = dict(state)
    for bn in bns:
        n = state[f"{bn}.running_var"].shape
        out[f"{bn}.running_var"] = 10 ** (torch.rand(n, generator=gen) * 2.3 - 2)   # 1e-2 .. 2
        out[f"{bn}.running_mean"] = torch.rand(n, generator=gen) - 0.5
        out[f"{bn}.weight"] = torch.rand(n, generator=gen) + 0.5
        out[f"{bn}.bias"] = torch.rand(n, generator=gen) - 0.5
    return out


def _trust(monkeypatch, path: Path) -> None:
    """Make the generated file the published one: its sha256 prefix becomes the expected prefix."""
    digest = pretrained.file_sha256(path)[:8]
    monkeypatch.setattr(pretrained.Published, "sha256_prefix", property(lambda self: digest))


def _plant(state: dict, backbone: str, kind: str) -> Path:
    path = pretrained.published(backbone, kind).cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _torchvision_detector(weights_name: str, monkeypatch, device: str = "cpu") -> nn.Module:
    """torchvision's detector built exactly as for its published COCO weights (frozen BatchNorm
    where torchvision uses it), without loading them."""
    weights = torchvision.models.get_weight(weights_name)
    builder = torchvision.models.get_model_builder(type(weights).__name__.removesuffix("_Weights").lower())
    with monkeypatch.context() as m:
        m.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, *a, **k: {})
        m.setattr(nn.Module, "load_state_dict", lambda self, *a, **k: None)
        with torch.device(device):
            return builder(weights=weights)


def _stage_outputs(body, x: torch.Tensor, cuts: list[int]) -> list[torch.Tensor]:
    outs = []
    for i, layer in enumerate(body.values() if isinstance(body, nn.ModuleDict) else body):
        x = layer(x)
        if i + 1 in cuts:
            outs.append(x)
    return outs


def test_the_published_files_are_torchvisions_own_names_and_hashes(torch_home):
    for backbone, kind in [("resnet18", "imagenet"), ("mobilenet_v3_large", "coco"), ("resnet50", "coco")]:
        pub = pretrained.published(backbone, kind)
        tv = (torchvision.models.get_model_weights(backbone).DEFAULT if kind == "imagenet"
              else torchvision.models.get_weight(COCO_DETECTORS[backbone][0]))
        assert pub.url == tv.url and pub.file_name in tv.url and len(pub.sha256_prefix) >= 8
        assert pub.sha256_prefix == torch.hub.HASH_REGEX.search(pub.file_name).group(1)
        assert pub.cache_path() == torch_home / pub.file_name
    assert pretrained.published("resnet18", "imagenet").sha256_prefix == "f37072fd"


def test_pretrained_choices_follow_what_torchvision_ships():
    for own in ("cspdarknet", *YOLO_FAMILIES):
        assert pretrained_choices(own) == ("none",)
    assert pretrained_choices("resnet18") == ("none", "imagenet")
    assert pretrained_choices("resnet50") == ("none", "imagenet", "coco")
    assert pretrained_choices("mobilenet_v3_large") == ("none", "imagenet", "coco")
    assert pretrained_choices("no_such_net") == ("none",)
    with pytest.raises(PretrainedError, match="no coco weights for resnet18; .*none, imagenet"):
        ensure_pretrained_file("resnet18", "coco")


@pytest.mark.parametrize("weights_name", sorted(w for w, *_ in COCO_DETECTORS.values()))
def test_every_coco_entry_matches_the_torchvision_detector(weights_name, monkeypatch):
    """The table's key prefixes and BatchNorm eps against the detector torchvision builds for those
    weights: every backbone tensor is in it with detpipe's shape (a guard against drift)."""
    backbone = next(b for b, (w, *_) in COCO_DETECTORS.items() if w == weights_name)
    det = _torchvision_detector(weights_name, monkeypatch, device="meta")
    pub = pretrained.published(backbone, "coco")
    theirs = det.state_dict()
    ours = build_model(ModelConfig(2, backbone, 16)).backbone.state_dict()
    for key, net_key in pretrained._classifier_keys(backbone).items():
        src = pub.prefix + net_key.removeprefix(pub.net_prefix)
        if key.endswith("num_batches_tracked") and src not in theirs:
            continue
        assert theirs[src].shape == ours[key].shape, (key, src)
    eps = {m.eps for m in det.backbone.body.modules() if hasattr(m, "running_var")}
    classifier_eps = {m.eps for m in torchvision.models.get_model(backbone).modules() if isinstance(m, nn.BatchNorm2d)}
    assert eps == ({pub.bn_eps} if pub.bn_eps is not None else classifier_eps)


def test_coco_weights_give_the_torchvision_detectors_backbone_maps(torch_home, monkeypatch, capsys):
    """mobilenet_v3_large from fasterrcnn_mobilenet_v3_large_fpn: frozen BatchNorm (eps 1e-5) folded
    into detpipe's BatchNorm (eps 1e-3); the stage outputs equal torchvision's body's."""
    torch.manual_seed(0)  # the detector's initial weights and the input: one case, every run
    det = _torchvision_detector(COCO_DETECTORS["mobilenet_v3_large"][0], monkeypatch)
    state = _randomize({k: v for k, v in det.state_dict().items() if k.startswith("backbone.body.")})
    path = _plant(state, "mobilenet_v3_large", "coco")
    _trust(monkeypatch, path)
    model = build_model(ModelConfig(2, "mobilenet_v3_large", 16), pretrained="coco").eval()
    assert "loaded" in capsys.readouterr().out
    body = det.backbone.body
    body.load_state_dict({k.removeprefix("backbone.body."): v for k, v in state.items()})
    body.eval()
    x = torch.randn(2, 3, 96, 96)
    b = model.backbone
    cuts = [len(b.stem) + len(b.c3), len(b.stem) + len(b.c3) + len(b.c4), len(body)]
    with torch.no_grad():
        ours, theirs = b(x), _stage_outputs(body, x, cuts)
    # frozen BatchNorm computes x * scale + shift: equal up to float32 rounding, which over 15 layers
    # reached 1.6e-5 of the largest value (CI, one random input); a wrong eps is off by ~5%
    for o, t in zip(ours, theirs):
        assert o.shape == t.shape and float((o - t).abs().max()) <= 1e-4 * float(t.abs().max())


def test_imagenet_weights_give_the_classifiers_stage_maps(torch_home, monkeypatch, capsys):
    net = torchvision.models.get_model("shufflenet_v2_x0_5")
    state = _randomize(net.state_dict(), seed=1)
    _trust(monkeypatch, _plant(state, "shufflenet_v2_x0_5", "imagenet"))
    model = build_model(ModelConfig(2, "shufflenet_v2_x0_5", 16), pretrained="imagenet").eval()
    assert "sha256 checked): loaded 330/330 backbone tensors" in capsys.readouterr().out
    net.load_state_dict(state)
    net.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        c3 = net.stage2(net.maxpool(net.conv1(x)))
        c4 = net.stage3(c3)
        theirs = [c3, c4, net.stage4(c4)]
        ours = model.backbone(x)
    for o, t in zip(ours, theirs):
        assert torch.equal(o, t)


def _payload(marker: Path):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))
    return Payload()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_a_planted_pickle_payload_is_refused_and_never_run(torch_home, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = _plant({"conv1.weight": _payload(marker)}, "resnet18", "imagenet")
    with pytest.raises(PretrainedError) as exc:   # the hash check refuses it before any unpickling
        build_model(ModelConfig(2, "resnet18", 16), pretrained="imagenet")
    assert "sha256" in _one_line(exc) and str(path) in str(exc.value)
    assert not marker.exists()
    _trust(monkeypatch, path)  # even a payload that matched the published hash is never unpickled
    with pytest.raises(ckpt.CheckpointError) as exc:
        build_model(ModelConfig(2, "resnet18", 16), pretrained="imagenet")
    assert "refused to load" in _one_line(exc) and "weights_only=True" in str(exc.value)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # and the file really would run code if unpickled freely
        torch.load(path, weights_only=True)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_file_with_the_wrong_hash_is_refused(torch_home):
    state = _randomize(torchvision.models.get_model("resnet18").state_dict())
    path = _plant(state, "resnet18", "imagenet")  # right keys and shapes, not torchvision's bytes
    with pytest.raises(PretrainedError) as exc:
        ensure_pretrained_file("resnet18", "imagenet")
    msg = _one_line(exc)
    assert f"{path}: refused: its sha256 starts" in msg and "f37072fd" in msg and "delete it" in msg


def test_a_file_without_the_backbone_tensors_is_a_clear_error(torch_home, monkeypatch):
    state = _randomize(torchvision.models.get_model("shufflenet_v2_x0_5").state_dict())
    del state["stage3.0.branch1.0.weight"]
    _trust(monkeypatch, _plant(state, "shufflenet_v2_x0_5", "imagenet"))
    with pytest.raises(PretrainedError) as exc:
        build_model(ModelConfig(2, "shufflenet_v2_x0_5", 16), pretrained="imagenet")
    assert "tensor stage3.0.branch1.0.weight is missing" in _one_line(exc)


def test_a_missing_file_is_downloaded_once_by_torch_hub(torch_home, monkeypatch):
    state = _randomize(torchvision.models.get_model("shufflenet_v2_x0_5").state_dict())
    blob = torch_home.parent / "blob.pth"
    blob.parent.mkdir(parents=True)
    torch.save(state, blob)
    _trust(monkeypatch, blob)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        Path(dst).write_bytes(blob.read_bytes())
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    pub = pretrained.published("shufflenet_v2_x0_5", "imagenet")
    assert ensure_pretrained_file("shufflenet_v2_x0_5", "imagenet") == pub.cache_path()
    assert ensure_pretrained_file("shufflenet_v2_x0_5", "imagenet") == pub.cache_path()
    assert calls == [(pub.url, pretrained.file_sha256(blob)[:8])]


def test_offline_without_the_file_says_where_to_copy_it(torch_home, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedError) as exc:
        build_model(ModelConfig(2, "resnet18", 16), pretrained="imagenet")
    msg = _one_line(exc)
    pub = pretrained.published("resnet18", "imagenet")
    assert f"{pub.cache_path()}: missing, and downloading {pub.url} failed" in msg and "copy the file to" in msg


def test_a_checkpoint_path_must_exist(tmp_path):
    with pytest.raises(PretrainedError) as exc:
        build_model(ModelConfig(2), pretrained=str(tmp_path / "nope.pt"))
    assert "nope.pt does not exist" in _one_line(exc)


def test_a_checkpoint_of_another_backbone_is_refused_and_another_neck_keeps_the_backbone(tmp_path, capsys):
    src = build_model(ModelConfig(3, "yolov8", 0, "n", "yolov8"))
    ckpt.save_atomic({"model": src.state_dict(), "model_config": src.config.to_dict()}, tmp_path / "v8.pt")
    with pytest.raises(PretrainedError) as exc:  # same key names, other input scaling and BatchNorm eps
        build_model(ModelConfig(3, "cspdarknet"), pretrained=str(tmp_path / "v8.pt"))
    assert "its backbone is yolov8-n, this model's is cspdarknet-n; to start from it set model.backbone: yolov8" \
        in _one_line(exc)
    dst = build_model(ModelConfig(3, "yolov8", 0, "n", "pan"), pretrained=str(tmp_path / "v8.pt"))
    out = capsys.readouterr().out
    assert "its neck is yolov8, this model's is pan: neck and head start from scratch" in out
    src_state, dst_state = src.state_dict(), dst.state_dict()
    assert all(torch.equal(dst_state[k], v) for k, v in src_state.items() if k.startswith("backbone."))
    same_name_and_shape = [k for k in dst_state if k.startswith("neck.") and dst_state[k].dim() == 4
                           and k in src_state and src_state[k].shape == dst_state[k].shape]
    assert same_name_and_shape and not any(torch.equal(dst_state[k], src_state[k]) for k in same_name_and_shape)


def test_the_train_stage_refuses_a_planted_file_in_one_line(torch_home, tiny_records, tmp_path):
    """As the user meets it: `dvc repro` runs the train stage, which finds a payload in the cache."""
    import os
    import subprocess
    import sys

    import yaml

    from detpipe.data.annotations import write_lines
    from tests.conftest import REPO, tiny_params
    marker = tmp_path / "pwned"
    _plant({"conv1.weight": _payload(marker)}, "shufflenet_v2_x0_5", "imagenet")
    raw = tiny_params("unused")
    raw["model"]["pretrained"] = "imagenet"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    write_lines(tmp_path / "t.txt", tiny_records[:8])
    write_lines(tmp_path / "v.txt", tiny_records[8:12])
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "--phase", "frozen", "--params",
                           "params.yaml", "--train", "t.txt", "--val", "v.txt", "--out", "o.pt", "--metrics", "m.tsv",
                           "--ckpt-dir", "ckpt"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TORCH_HOME": os.environ["TORCH_HOME"]})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "shufflenetv2_x0.5-f707e7126e.pth: refused" in lines[0]
    assert not marker.exists() and not (tmp_path / "o.pt").exists()
