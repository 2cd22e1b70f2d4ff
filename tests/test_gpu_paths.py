"""The CUDA code paths, checked on the CPU: what each would do on a GPU is reproduced by a CPU
equivalent (fused optimizers, float16 autocast and GradScaler all run on the CPU) or a stand-in
that fails the way CUDA does. scripts/gpu_smoke.sh runs the real thing on a GPU."""
from __future__ import annotations

import math
import multiprocessing
import os

import pytest
import torch
import torch.distributed as dist
import yaml
from torch import nn

from detpipe.train import accel
from detpipe.train import engine
from detpipe.train import phase as training
from detpipe.train import distributed as ddp
from detpipe.data.dataset import DetectionDataset, make_loader
from detpipe.train.engine import ModelEMA, build_optimizer, load_optimizer_state, train_one_epoch
from detpipe.train.hostsync import HostSyncCounter
from detpipe.train.loss import complete_iou_loss
from detpipe.model.detector import Detector, ModelConfig, build_model
from detpipe.params import Params, ParamsError, TrainParams, from_dict
from tests.conftest import REPO, tiny_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
CFG = ModelConfig(4, "cspdarknet", 16, "n")


def _batches(n: int, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    targets = torch.tensor([[[0, 5.0, 5, 30, 30], [1, 20, 20, 60, 50]], [[2, 10, 10, 40, 40], [-1, -1, -1, -1, -1]]])
    return [(torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8, generator=g), targets,
             torch.tensor([0, 1]), torch.tensor([[64, 64], [64, 64]])) for _ in range(n)]


def _trainer(fused: bool, scaled: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(CFG)
    opt = build_optimizer(model, "adamw", 1e-3, 0.9, 0.05, fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched, ModelEMA(model, 0.99), torch.amp.GradScaler("cpu", enabled=scaled)


# ------------------------------------------------------------------------------ host syncs


def test_the_sync_counter_sees_what_synchronises_on_cuda():
    t = torch.arange(6.0)
    with HostSyncCounter() as c:
        float(t.sum()), bool(t.any()), t[t > 2], t.nonzero()
        t[t > 4] = 0.0
        t * 2, t.topk(2), torch.where(t > 1, t, 0.0)  # none of these waits
    assert c.ops == {"_local_scalar_dense": 2, "index": 1, "nonzero": 1, "index_put_": 1}, c.ops


@pytest.mark.parametrize("scaled", [False, True], ids=["float32", "float16-gradscaler"])
def test_training_steps_never_wait_for_the_device(scaled):
    # As on CUDA: a fused optimizer (GradScaler hands it its inf check as a tensor), float16
    # autocast with the scaler. The old loop synchronised 20 times per step (bench/bench_syncs.py).
    model, opt, sched, ema, scaler = _trainer(fused=True, scaled=scaled)
    batches = _batches(4)
    train_one_epoch(model, batches[:1], opt, sched, ema, CPU, scaler, 10.0, "warm-up")
    with HostSyncCounter() as c:
        stats, images, _ = train_one_epoch(model, batches[1:], opt, sched, ema, CPU, scaler, 10.0, "count")
    assert c.total == 0, c.ops
    assert images == 6 and stats[3] == 6 and stats[4] == 0 and torch.isfinite(stats).all()


def test_epoch_statistics_are_the_per_step_losses_weighted_by_images():
    model, opt, sched, ema, scaler = _trainer(fused=False, scaled=False)
    seen = []
    real = engine.detection_loss

    def spy(*a, **k):
        loss, parts = real(*a, **k)
        seen.append({k: float(v) for k, v in parts.items()})
        return loss, parts
    batches = _batches(3)
    batches[1] = tuple(x[:1] for x in batches[1])  # a batch of one image
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "detection_loss", spy)
        stats, images, seconds = train_one_epoch(model, batches, opt, sched, ema, CPU, scaler, 10.0, "spy")
    tr = ddp.reduce_epoch_stats(stats, images, seconds, ddp.DistInfo())
    sizes = [2, 1, 2]
    for key in ("loss", "box", "cls"):
        assert tr[key] == sum(s[key] * b for s, b in zip(seen, sizes)) / 5
    assert tr["images"] == 5 and tr["nonfinite"] == 0


# ------------------------------------------------------------------------------ non-finite losses


def _nan_at(step: int):
    real, calls = engine.detection_loss, []

    def loss(*a, **k):
        value, parts = real(*a, **k)
        calls.append(1)
        if len(calls) == step:
            return value * math.nan, {k: v * math.nan for k, v in parts.items()}
        return value, parts
    return loss


def test_float16_non_finite_loss_is_a_skipped_step_not_an_abort(monkeypatch, capsys):
    model, opt, sched, ema, scaler = _trainer(fused=True, scaled=True)
    batches = _batches(3)
    monkeypatch.setattr(engine, "detection_loss", _nan_at(2))
    train_one_epoch(model, batches[:1], opt, sched, ema, CPU, scaler, 10.0, "step 1")
    before, scale = {k: v.clone() for k, v in model.named_parameters()}, scaler.get_scale()
    train_one_epoch(model, batches[1:2], opt, sched, ema, CPU, scaler, 10.0, "nan step")
    # The loss was nan: the scaler skipped the update and halved the scale.
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]), k
    assert scaler.get_scale() == scale / 2
    stats, _, _ = train_one_epoch(model, batches[2:], opt, sched, ema, CPU, scaler, 10.0, "goes on")
    assert stats[4] == 0 and all(torch.isfinite(p).all() for p in model.parameters())
    model2, opt2, sched2, ema2, scaler2 = _trainer(fused=True, scaled=True)
    monkeypatch.setattr(engine, "detection_loss", _nan_at(1))
    stats, images, seconds = train_one_epoch(model2, batches, opt2, sched2, ema2, CPU, scaler2, 10.0, "nan")
    tr = ddp.reduce_epoch_stats(stats, images, seconds, ddp.DistInfo())
    assert tr["nonfinite"] == 1 and tr["images"] == 6 and math.isfinite(tr["loss"])
    engine.check_epoch_stats(tr, "frozen 1/3", 1e-3, scaled=True, steps=3)  # goes on
    assert "GradScaler skipped 1 of 3 steps" in capsys.readouterr().out
    with pytest.raises(FloatingPointError, match="not finite .* in 3 of 3 steps"):
        engine.check_epoch_stats({**tr, "nonfinite": 3}, "frozen 1/3", 1e-3, scaled=True, steps=3)


def test_float32_or_bfloat16_non_finite_loss_stops_with_the_message(monkeypatch):
    model, opt, sched, ema, scaler = _trainer(fused=False, scaled=False)
    monkeypatch.setattr(engine, "detection_loss", _nan_at(2))
    stats, images, seconds = train_one_epoch(model, _batches(3), opt, sched, ema, CPU, scaler, 10.0, "nan")
    tr = ddp.reduce_epoch_stats(stats, images, seconds, ddp.DistInfo())
    # Step 2's nan reached the weights, so step 3's loss is nan too.
    with pytest.raises(FloatingPointError, match=r"frozen 2/3: the loss was not finite \(nan or inf\) in 2 of 3 "
                                                 r"steps; lower lr \(now 0.001\) or check the data"):
        engine.check_epoch_stats(tr, "frozen 2/3", 1e-3, scaled=False, steps=3)


# ------------------------------------------------------------------------------ EMA, optimizer


def _old_ema_update(ema: ModelEMA, model: nn.Module) -> None:
    """The per-tensor update the foreach one replaced."""
    ema.updates += 1
    d = ema.decay * (1 - math.exp(-ema.updates / ema.tau))
    for ema_v, v in zip(ema.module.state_dict().values(), model.state_dict().values()):
        if ema_v.dtype.is_floating_point:
            ema_v.mul_(d).add_(v.detach(), alpha=1 - d)
        else:
            ema_v.copy_(v)


def test_foreach_ema_equals_the_per_tensor_update_bitwise():
    torch.manual_seed(0)
    model = build_model(CFG).to(memory_format=torch.channels_last)
    new, old = ModelEMA(model, 0.9999), ModelEMA(model, 0.9999)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        with torch.no_grad():
            for v in model.state_dict().values():
                if v.dtype.is_floating_point:
                    v.add_(torch.randn(v.shape, generator=g).to(memory_format=torch.preserve_format) * 0.1)
                else:
                    v.add_(1)
        new.update(model)
        _old_ema_update(old, model)
    for (k, a), b in zip(new.module.state_dict().items(), old.module.state_dict().values()):
        assert torch.equal(a, b), k
    assert new.updates == old.updates == 5


def test_optimizer_state_crosses_between_cpu_and_cuda_implementations():
    # CPU checkpoints hold unfused optimizer state, CUDA ones fused (both run on the CPU here).
    # Loaded as they are, a CPU state switched a CUDA run's optimizer to unfused, and GradScaler
    # then handed it the fused-only inf check: "grad_scale and found_inf" assertion, every resume.
    batches = _batches(2)
    for saved_fused, run_fused in ((False, True), (True, False)):
        model, opt, sched, ema, scaler = _trainer(fused=saved_fused, scaled=saved_fused)
        train_one_epoch(model, batches[:1], opt, sched, ema, CPU, scaler, 10.0, "save")
        state = opt.state_dict()
        model2, opt2, sched2, ema2, scaler2 = _trainer(fused=run_fused, scaled=run_fused)
        model2.load_state_dict(model.state_dict())
        load_optimizer_state(opt2, state)
        assert all(bool(g.get("fused")) == run_fused for g in opt2.param_groups)
        train_one_epoch(model2, batches[1:], opt2, sched2, ema2, CPU, scaler2, 10.0, "resume")
        assert all(torch.isfinite(p).all() for p in model2.parameters())
    model, opt, sched, ema, scaler = _trainer(fused=True, scaled=True)
    opt.load_state_dict(build_optimizer(build_model(CFG), "adamw", 1e-3, 0.9, 0.05).state_dict())
    with pytest.raises((AssertionError, RuntimeError), match="grad_scale|found_inf"):  # what the helper prevents
        train_one_epoch(model, batches[:1], opt, sched, ema, CPU, scaler, 10.0, "plain load")


# ------------------------------------------------------------------------------ device choices


def test_bfloat16_on_a_gpu_without_it_is_a_clear_error(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    train = TrainParams(amp=True, amp_dtype="bfloat16")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    with pytest.raises(ParamsError, match=r"bfloat16 needs a GPU with native bfloat16 .* Tesla T4 has 7\.5: "
                                          r"use amp_dtype: float16"):
        accel.amp_dtype(train, cuda)
    assert accel.amp_dtype(TrainParams(amp=True, amp_dtype="float16"), cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    assert accel.amp_dtype(train, cuda) == torch.bfloat16
    assert not accel.grad_scaler(train, cuda).is_enabled()


def test_cudnn_autotuning_unless_deterministic(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda on, warn_only=False: calls.append((on, warn_only)))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    accel.configure_backends(CPU, deterministic=False)
    assert not torch.backends.cudnn.benchmark  # the CPU is left alone
    accel.configure_backends(torch.device("cuda", 0), deterministic=False)
    assert torch.backends.cudnn.benchmark and not calls
    accel.configure_backends(torch.device("cuda", 0), deterministic=True)
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert calls == [(True, True)] and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_ddp_ranks_take_their_local_gpu_whatever_train_device_says(capsys):
    rank1 = ddp.DistInfo(rank=1, world=2, local_rank=1)
    assert ddp.rank_device(torch.device("cuda"), rank1) == torch.device("cuda", 1)
    assert ddp.rank_device(torch.device("cuda", 0), rank1) == torch.device("cuda", 1)
    assert ddp.rank_device(torch.device("cuda", 3), ddp.DistInfo(0, 2, 0)) == torch.device("cuda", 0)
    assert "train.device cuda:3 ignored under DDP" in capsys.readouterr().out
    assert ddp.rank_device(CPU, rank1) == CPU
    assert ddp.rank_device(torch.device("cuda", 3), ddp.DistInfo()) == torch.device("cuda", 3)


def test_process_group_timeout_covers_rank_0s_one_rank_work(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **k: seen.update(backend=backend, **k))
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    assert ddp.init("cpu") == ddp.DistInfo(1, 2, 1)
    assert seen["backend"] == "gloo" and seen["timeout"] == ddp.PROCESS_GROUP_TIMEOUT
    assert ddp.PROCESS_GROUP_TIMEOUT.total_seconds() >= 30 * 60  # NCCL's default (10 min) killed long waits


def test_progress_bars_only_on_rank_0(monkeypatch):
    assert not engine.progress([1]).disable
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    assert engine.progress([1]).disable
    monkeypatch.setattr(dist, "get_rank", lambda *a: 0)
    assert not engine.progress([1]).disable


def test_rank_0_runs_first_and_alone_touches_the_run_files(tiny_records, tmp_path, monkeypatch):
    order = []
    monkeypatch.setattr(ddp, "barrier", lambda info: order.append("barrier"))
    with ddp.main_first(ddp.DistInfo(1, 2, 1)):
        order.append("rank 1 body")
    with ddp.main_first(ddp.DistInfo(0, 2, 0)):
        order.append("rank 0 body")
    assert order == ["barrier", "rank 1 body", "rank 0 body", "barrier"]
    # Rank 1 of 2 up to its first epoch: it creates, cleans, links and prunes nothing.
    params = from_dict(Params, tiny_params("unused"))
    monkeypatch.setattr(ddp, "start", lambda device, *a: (ddp.DistInfo(1, 2, 1), device))
    monkeypatch.setattr(ddp, "wrap_model", lambda model, *a: model)
    monkeypatch.setattr(training, "train_one_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        training.train_phase(params, "frozen", tiny_records[:16], tiny_records[16:], [], tmp_path / "ckpt",
                             tmp_path / "h.tsv")
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "h.tsv").exists()


# ------------------------------------------------------------------------------ loaders


class _CountingDataset(DetectionDataset):
    """Counts image decodes across loader worker processes."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.decodes = multiprocessing.get_context("fork").Value("i", 0)

    def _load(self, index: int):
        if self.cache is not None and index not in self.cache:
            with self.decodes.get_lock():
                self.decodes.value += 1
        return super()._load(index)


def test_loader_workers_and_their_image_cache_live_across_epochs(tiny_records):
    data = _CountingDataset(tiny_records[:8], 64, seed=0, cache=True)
    plain = DetectionDataset(tiny_records[:8], 64, seed=0)
    loader = ddp.train_loader(data, 4, 1, False, ddp.DistInfo(), CPU)
    epochs = []
    for epoch in (1, 2):
        ddp.set_epoch(loader, epoch)
        epochs.append([b[2].tolist() for b in loader])
        assert epochs[-1] == [b[2].tolist() for b in make_loader(plain, 4, epoch, 0, shuffle=True)]
    assert epochs[0] != epochs[1]  # set_epoch reached the sampler
    assert data.decodes.value == 8  # each image decoded once for the phase, not once per epoch
    assert loader.persistent_workers and not loader.pin_memory
    cuda_loader = ddp.train_loader(data, 4, 1, False, ddp.DistInfo(), torch.device("cuda", 0))
    assert cuda_loader.pin_memory  # so that .to(cuda, non_blocking=True) really overlaps
    assert not ddp.train_loader(data, 4, 0, False, ddp.DistInfo(), CPU).persistent_workers


def test_validation_batches_are_per_rank_and_shared_out(tiny_records):
    # Global batch 4 over 2 ranks: each rank evaluates batches of 2 (the memory its training
    # steps fit in, not the global batch), alternating, so together they cover the val set once.
    data = DetectionDataset(tiny_records[:9], 64)
    shares = [[b[2].tolist() for b in ddp.val_loader(data, 4, 0, ddp.DistInfo(r, 2, r), CPU)] for r in (0, 1)]
    assert shares == [[[0, 1], [4, 5], [8]], [[2, 3], [6, 7]]]
    assert [b[2].tolist() for b in ddp.val_loader(data, 4, 0, ddp.DistInfo(), CPU)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]


def test_settings_a_machine_cannot_run_and_diverged_losses_are_one_line_errors(tmp_path, monkeypatch, capsys):
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("train_stage", REPO / "stages" / "train.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    (tmp_path / "t.txt").write_text("a.jpg 1,1,5,5,0\n")
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(tiny_params("unused")), encoding="utf-8")
    monkeypatch.setattr(stage.signal, "signal", lambda *a: None)
    monkeypatch.setattr(sys, "argv", ["train.py", "--phase", "frozen", "--params", str(params), "--train",
                                      str(tmp_path / "t.txt"), "--val", str(tmp_path / "t.txt"), "--out",
                                      str(tmp_path / "f.pt"), "--metrics", str(tmp_path / "m.tsv")])
    for exc in (ParamsError("train.amp_dtype: bfloat16 needs a GPU with native bfloat16"),
                FloatingPointError("frozen 1/3: the loss was not finite (nan or inf) in 4 of 4 steps")):
        monkeypatch.setattr(stage, "train_phase", lambda *a, exc=exc, **k: (_ for _ in ()).throw(exc))
        assert stage.main() == 1
        assert capsys.readouterr().err.strip() == f"error: {exc}"


# ------------------------------------------------------------------------------ model, loss


def _bn_stats(module: nn.Module) -> dict:
    return {(id(m), k): v.clone() for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for k, v in m.named_buffers()}


@pytest.mark.parametrize("backbone", ["cspdarknet", "resnet18", "mobilenet_v3_small"])
def test_building_the_model_leaves_every_batchnorm_statistic_unchanged(backbone, monkeypatch):
    # Stand-in for pretrained weights: torchvision's model with distinctive BatchNorm statistics.
    import torchvision
    real, made = torchvision.models.get_model, {}

    def pretrained_like(name, **kwargs):
        net = real(name, weights=None)
        g = torch.Generator().manual_seed(0)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.num_batches_tracked.fill_(1000)
        made["stats"] = _bn_stats(net)
        return net
    monkeypatch.setattr(torchvision.models, "get_model", pretrained_like)
    model = Detector(ModelConfig(3, backbone, 16))
    assert model.training and model.backbone.stem.training  # the probe restored the mode
    got = _bn_stats(model.backbone)
    if backbone == "cspdarknet":  # fresh layers: the initial statistics, untouched
        assert all(torch.equal(v, torch.zeros_like(v)) for (_, k), v in got.items() if k != "running_var")
        assert all(torch.equal(v, torch.ones_like(v)) for (_, k), v in got.items() if k == "running_var")
    else:
        assert got.keys() == made["stats"].keys()
        for key, v in made["stats"].items():
            assert torch.equal(got[key], v), key


def test_ciou_loss_equals_torchvisions_without_its_masks():
    from torchvision.ops import complete_box_iou_loss
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 50
    a = torch.cat([xy, xy + torch.rand(500, 2, generator=g) * 30 + 0.5], 1)
    xy = torch.rand(500, 2, generator=g) * 50
    b = torch.cat([xy, xy + torch.rand(500, 2, generator=g) * 30 + 0.5], 1)
    b[:50] = a[:50]  # identical boxes; many others do not overlap at all
    a1, a2 = a.clone().requires_grad_(), a.clone().requires_grad_()
    ours, theirs = complete_iou_loss(a1, b), complete_box_iou_loss(a2, b)
    assert torch.equal(ours, theirs)
    (ours * torch.arange(500.0)).sum().backward()
    (theirs * torch.arange(500.0)).sum().backward()
    # The same gradients up to float rounding (the intersection's backward runs other kernels).
    assert torch.allclose(a1.grad, a2.grad, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ inference


class CudaLike(torch.Tensor):
    """A batch as it is after `.to("cuda")`: numpy() refuses it, as for a real CUDA tensor."""

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", 0)

    def numpy(self, *a, **k):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")

    def cpu(self, *a, **k):
        return self.as_subclass(torch.Tensor)


def test_onnx_takes_host_arrays_whatever_the_device(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from detpipe.infer import predictor as inference
    from detpipe.cli import fps as fps_cli
    from detpipe.infer.onnx_export import export_onnx
    from tests.test_predict_cli import make_weights
    onnx_path = export_onnx(make_weights(tmp_path / "m.pt"), tmp_path / "m.onnx", dynamic=True)
    # `--device auto` on a CUDA machine: the old fps moved the batch to CUDA for onnxruntime
    # (here a real .to("cuda") fails, as it must without a GPU) and called .numpy() on it.
    monkeypatch.setattr(inference, "select_device", lambda name="auto": torch.device("cuda", 0))
    predictor = inference.Predictor(onnx_path, "auto")
    assert predictor.backend.device == CPU
    assert inference.time_parts(predictor, inference.sample_images(2), 2, runs=1, warmup=0, draw=False)["total"] > 0
    batch, _ = predictor.preprocess(inference.sample_images(1))
    with pytest.raises(TypeError, match="cuda"):
        batch.float().as_subclass(CudaLike).numpy()
    out = predictor.backend(batch.as_subclass(CudaLike))
    assert torch.equal(out["cls"], predictor.backend(batch)["cls"])
    assert fps_cli.main(["--weights", str(onnx_path), "--device", "cuda", "--batch", "2", "--images", "2"]) == 0
    assert "(onnxruntime) on onnxruntime CPUExecutionProvider" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained(tiny_records, tmp_path_factory) -> str:
    """A detector trained until some anchors score above CANDIDATE_SCORE (a random network's
    outputs are near zero, which says little about precision)."""
    tmp = tmp_path_factory.mktemp("trained")
    raw = tiny_params("unused", freeze_epochs=0, unfreeze_epochs=20, lr_schedule="constant")
    raw["model"].update(backbone="cspdarknet", scale="n")
    params = from_dict(Params, raw)
    state = training.train_phase(params, "unfrozen", tiny_records[:16], tiny_records[16:], [], tmp / "ckpt",
                                 tmp / "h.tsv")
    from detpipe.model import checkpoint as ckpt
    ckpt.save_atomic(training.export_weights(state, "last"), tmp / "m.pt")
    return str(tmp / "m.pt")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inference_stays_within_the_stated_tolerance(trained, tiny_records, dtype):
    # CPU autocast computes in float16 / bfloat16 as CUDA's does (accumulating in float32); the
    # same check runs on a GPU in scripts/gpu_smoke.sh.
    from detpipe.data.images import load_rgb
    from detpipe.infer.predictor import LOW_PRECISION_TOLERANCE, Predictor, compare
    images = [load_rgb(r.path) for r in tiny_records]
    ref = Predictor(trained, "cpu", 0.001, 0.45)
    r = compare(ref, Predictor(trained, "cpu", 0.001, 0.45, dtype=dtype), images)
    tol = LOW_PRECISION_TOLERANCE[dtype]
    print(f"{dtype} vs float32: scores {r['scores']:.2g}, candidate boxes' IoU {r['candidate_iou']:.3f}")
    assert 0 < r["scores"] < tol["score"] and tol["iou"] < r["candidate_iou"] < 1, r
    assert r["ref_detections"] == r["other_detections"] > 0 and r["label_mismatches"] == 0, r
