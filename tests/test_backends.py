"""The CPU's default inference backend (onnxruntime on a cached export) against the PyTorch float32
path: the same boxes to 1e-3 px; `auto` falling back with one line when onnxruntime is missing; the
graph cache keyed by the weights, written privately, and not read from a folder others may write."""
from __future__ import annotations

import os
import sys
from unittest import mock

import numpy as np
import pytest
import torch

from detpipe.cpus import thread_placement
from detpipe.infer import onnx_cache
from detpipe.infer import backends, onnx_graph
from detpipe.infer.backends import OnnxBackend, TorchBackend, leave_cpu_to
from detpipe.infer.predictor import Predictor, compare, sample_images
from detpipe.model.detector import Detector, ModelConfig, fuse_conv_bn
from detpipe.model.layers import C2f, C2PSA, HalfConvs, separate_halves

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
NAMES = ["circle", "square", "triangle", "star"]
IMGSZ = 128


def detector(seed: int = 0, backbone: str = "cspdarknet", neck: str = "pan") -> Detector:
    """The params.yaml architecture with random weights whose class logits sit near 0, so random
    features give boxes on both sides of every threshold (as a barely trained model would)."""
    torch.manual_seed(seed)
    model = Detector(ModelConfig(len(NAMES), backbone, neck=neck)).eval()
    for branch in model.head.cls:
        torch.nn.init.normal_(branch[-1].weight, std=0.05)
        torch.nn.init.zeros_(branch[-1].bias)
    return model


def predictors(model: Detector, conf: float = 0.3) -> tuple[Predictor, Predictor]:
    ref = Predictor.from_model(model, NAMES, IMGSZ, CPU, conf, 0.45, 100, backend="torch")
    default = Predictor.from_model(model, NAMES, IMGSZ, CPU, conf, 0.45, 100)
    return ref, default


@pytest.mark.parametrize("backbone, neck", [("cspdarknet", "pan"), ("yolo11", "yolo11"), ("shufflenet_v2_x0_5", "pan")])
def test_default_cpu_path_gives_the_pytorch_float32_boxes(backbone, neck):
    ref, default = predictors(detector(backbone=backbone, neck=neck))
    assert isinstance(default.backend, OnnxBackend) and isinstance(ref.backend, TorchBackend)
    images = sample_images(5) + [np.full((20, 70, 3), 30, np.uint8)]
    for batch in (1, 4):
        r = compare(ref, default, images, batch=batch)
        assert r["ref_detections"] == r["other_detections"] > 20 and r["label_mismatches"] == 0, r
        assert r["final_boxes"] < 1e-3 and r["boxes"] < 1e-3 and r["final_scores"] < 1e-5, r


@pytest.mark.parametrize("backbone, neck", [("cspdarknet", "pan"), ("yolo11", "yolo11")])
def test_exported_graph_slices_no_channels(backbone, neck, tmp_path):
    """C2f / C2PSA split convs leave the export as two half convs, computing the same numbers, so no
    Split/Slice cuts a conv's channels and onnxruntime's optimised graph converts few tensors into
    its blocked layout (the default model: 0, 18 with the slices; yolo11: 2, 21; before #18's fixed-size
    upsampling each had 2 more)."""
    import onnx
    import onnxruntime as ort
    model = fuse_conv_bn(detector(backbone=backbone, neck=neck))
    halved = separate_halves(fuse_conv_bn(model))
    assert sum(isinstance(m, HalfConvs) for m in halved.modules()) == sum(
        isinstance(m, (C2f, C2PSA)) for m in model.modules()) > 0
    x = torch.rand(2, 3, IMGSZ, IMGSZ) * 255
    with torch.no_grad():
        a, b = model(x), halved(x)
    assert torch.allclose(a["boxes"], b["boxes"], atol=1e-4) and torch.allclose(a["cls"], b["cls"], atol=1e-5)
    path = onnx_cache.export_graph(model, NAMES, IMGSZ, tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    consts.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
                   for n in graph.node if n.op_type == "Constant" and n.attribute[0].type == onnx.AttributeProto.TENSOR})
    assert not [n.name for n in graph.node if n.op_type == "Split"
                and next((a.i for a in n.attribute if a.name == "axis"), 0) == 1]
    channel_slices = [n.name for n in graph.node if n.op_type == "Slice"
                      and len(n.input) > 3 and 1 in np.atleast_1d(consts.get(n.input[3], [])).tolist()]
    assert not channel_slices

    def conversions(graph_path) -> int:
        """ReorderInput nodes onnxruntime puts in its optimised graph (0 without its blocked layout)."""
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(graph_path.with_suffix(".optimised.onnx"))
        ort.InferenceSession(str(graph_path), options, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node].count("ReorderInput")

    with mock.patch.object(onnx_graph, "separate_halves", lambda m: m):  # the export before HalfConvs
        sliced = conversions(onnx_cache.export_graph(model, NAMES, IMGSZ, tmp_path / "sliced.onnx"))
    if sliced:  # the blocked layout is in use (an x86 CPU with AVX2 or better)
        assert conversions(path) <= 4 < 10 <= sliced


def test_threads_spin_within_a_run_only_with_two_or_more(tmp_path):
    """At batch 1 a second thread gains little unless it spins between operators and stays on its
    own CPU; spinning stops when a run returns. One thread neither spins nor is pinned; boxes are
    the same either way."""
    model = detector()
    path = onnx_cache.export_graph(model, NAMES, IMGSZ, tmp_path / "m.onnx")
    before = torch.get_num_threads()
    try:
        by_threads = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            by_threads[threads] = OnnxBackend(path, CPU)
    finally:
        torch.set_num_threads(before)
    for threads, spins in ((1, "0"), (2, "1")):
        options = by_threads[threads].session.get_session_options()
        assert options.intra_op_num_threads == threads
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == spins
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        try:
            pinned = options.get_session_config_entry("session.intra_op_thread_affinities")
        except RuntimeError:  # not set
            pinned = None
        placement = thread_placement(threads)
        assert pinned == (placement[1] if placement else None), (threads, pinned)
        assert by_threads[threads].caller_cpus == (placement[0] if placement else None)
    x = torch.rand(1, 3, IMGSZ, IMGSZ) * 255
    mine = os.sched_getaffinity(0)
    one, two = by_threads[1](x), by_threads[2](x)
    assert os.sched_getaffinity(0) == mine  # the caller's CPUs are its own again after a run
    assert torch.allclose(one["boxes"], two["boxes"], atol=1e-3) and torch.allclose(one["cls"], two["cls"], atol=1e-4)


def test_auto_falls_back_to_pytorch_with_one_line_when_onnxruntime_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr(onnx_cache, "_noted", set())
    model = detector()
    for _ in range(2):
        assert isinstance(Predictor.from_model(model, NAMES, IMGSZ, CPU, 0.3, 0.45, 100).backend, TorchBackend)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime is not installed" in err and "pip install" in err
    with pytest.raises(SystemExit, match="pip install onnx onnxruntime"):
        Predictor.from_model(model, NAMES, IMGSZ, CPU, 0.3, 0.45, 100, backend="onnxruntime")


def test_auto_keeps_pytorch_for_low_precision_and_checks_names():
    assert onnx_cache.resolve_backend("auto", CPU, "bfloat16") == "torch"
    assert onnx_cache.resolve_backend("auto", torch.device("cuda"), "float32") == "torch"
    with pytest.raises(ValueError, match="predict.backend: 'tensorrt' is not one of auto, torch, onnxruntime"):
        onnx_cache.resolve_backend("tensorrt", CPU)
    with pytest.raises(ValueError, match="onnxruntime runs float32 on the CPU"):
        Predictor.from_model(detector(), NAMES, IMGSZ, CPU, 0.3, 0.45, 100, dtype="bfloat16", backend="onnxruntime")


def test_graph_cache_is_keyed_by_the_weights_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("DETPIPE_CACHE", str(tmp_path / "cache"))
    a, b = detector(0), detector(1)
    folder = onnx_cache.private_cache()
    first = onnx_cache.cached_graph(a, NAMES, IMGSZ, folder)
    assert folder == tmp_path / "cache" / "onnx" and first.stat().st_mode & 0o077 == 0
    exports = []
    monkeypatch.setattr(onnx_cache, "export_graph", lambda *args: exports.append(args))
    assert onnx_cache.cached_graph(detector(0), NAMES, IMGSZ, folder) == first and exports == []  # reused
    monkeypatch.setattr(onnx_cache, "export_graph", lambda model, names, size, path: path.write_bytes(b"graph"))
    for seed in range(2, 2 + onnx_cache.KEEP):  # a graph per training run: only the KEEP most recently used stay
        os.utime(first)
        onnx_cache.cached_graph(detector(seed), NAMES, IMGSZ, folder)
    assert len(list(folder.glob("*.onnx"))) == onnx_cache.KEEP and first.exists()
    keys = {onnx_cache.graph_key(m, names, size) for m, names, size in
            ((a, NAMES, IMGSZ), (b, NAMES, IMGSZ), (a, NAMES[::-1], IMGSZ), (a, NAMES, 2 * IMGSZ))}
    assert len(keys) == 4


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_graph_cache_is_not_read_from_a_folder_others_may_write(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETPIPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_cache, "_noted", set())
    model = detector()
    folder = onnx_cache.private_cache()
    planted = onnx_cache.cached_graph(model, NAMES, IMGSZ, folder)
    os.chmod(folder, 0o777)  # anyone could have put a graph there
    assert onnx_cache.private_cache() is None and "not a folder only you can write" in capsys.readouterr().err
    loaded = []
    monkeypatch.setattr(onnx_cache, "OnnxBackend", lambda path, device: loaded.append(path))
    onnx_cache.onnxruntime_backend(model, NAMES, IMGSZ)
    assert loaded and loaded[0].parent != folder and not loaded[0].exists()  # exported for this run, then removed
    os.chmod(folder, 0o700)
    os.chmod(planted, 0o666)  # a file others may rewrite is exported again, private
    assert onnx_cache.cached_graph(model, NAMES, IMGSZ, folder) == planted and planted.stat().st_mode & 0o077 == 0


def test_predict_command_writes_the_same_boxes_with_either_backend(tmp_path):
    from tests.test_predict_cli import make_weights, read_txt, run_cli, write_images

    weights = make_weights(tmp_path / "tiny.pt")
    write_images(tmp_path / "in")
    for backend in ("torch", "auto"):
        assert run_cli(tmp_path / "in", "--weights", weights, "--out", tmp_path / backend, "--save-txt",
                       "--conf", "0.3", "--backend", backend) == 0
    for txt in ("a.txt", "b.txt", "sub__c.txt"):
        ref, got = (read_txt(tmp_path / backend / "labels" / txt) for backend in ("torch", "auto"))
        assert ref and len(got) == len(ref)
        # Written to 0.01 px: boxes 1e-3 px apart may round to neighbouring hundredths, and scores
        # tied to 6 digits may swap rows.
        got, ref = (sorted(rows, key=lambda r: (r[0], round(r[2]), round(r[3]))) for rows in (got, ref))
        assert [r[0] for r in got] == [r[0] for r in ref]
        np.testing.assert_allclose([r[2:] for r in got], [r[2:] for r in ref], atol=0.0101)
        np.testing.assert_allclose([r[1] for r in got], [r[1] for r in ref], atol=2e-6)


def test_threads_never_exceed_the_cpus_this_process_may_use(tmp_path, monkeypatch):
    """torch's default thread count ignores a container's CPU quota; onnxruntime's spinning threads
    beyond it would only wait, so the backend takes at most usable_cpus()."""
    path = onnx_cache.export_graph(detector(), NAMES, IMGSZ, tmp_path / "m.onnx")
    monkeypatch.setattr(backends, "usable_cpus", lambda: 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        backend = OnnxBackend(path, CPU)
    finally:
        torch.set_num_threads(before)
    options = backend.session.get_session_options()
    assert options.intra_op_num_threads == 1 and backend.caller_cpus is None
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_commands_leave_the_cores_to_onnxruntime(tmp_path):
    """Once the network runs in onnxruntime, torch drops to one thread (its idle OpenMP workers spin
    against onnxruntime's), after onnxruntime took its count from torch; beside PyTorch nothing changes."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ref, default = predictors(detector())
        leave_cpu_to(ref.backend)
        assert torch.get_num_threads() == 2
        leave_cpu_to(default.backend)
        assert torch.get_num_threads() == 1
        assert default.backend.session.get_session_options().intra_op_num_threads == 2
        r = compare(ref, default, sample_images(2), batch=2)
        assert r["final_boxes"] < 1e-3 and r["ref_detections"] == r["other_detections"], r
    finally:
        torch.set_num_threads(before)


def test_predict_and_fps_commands_leave_the_cores_to_onnxruntime(tmp_path, monkeypatch):
    """`detpipe predict` and `detpipe fps` call it once the predictor is built (the predict stage's
    call is in stages/predict.py, run end to end by tests/test_pipeline.py)."""
    from detpipe.cli import fps as fps_cli
    from tests.test_predict_cli import make_weights, run_cli, write_images
    calls = []
    monkeypatch.setattr(backends, "leave_cpu_to", lambda backend: calls.append(type(backend).__name__))
    weights = make_weights(tmp_path / "w.pt")
    write_images(tmp_path / "in")
    assert run_cli(tmp_path / "in", "--weights", weights, "--out", tmp_path / "out") == 0
    assert fps_cli.main(["--weights", str(weights), "--batch", "1", "--images", "2", "--threads", "1"]) == 0
    assert calls == ["OnnxBackend", "OnnxBackend"]
