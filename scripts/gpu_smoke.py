"""GPU smoke test: the CUDA paths of detpipe, end to end, on tiny synthetic data (no network).

Run by scripts/gpu_smoke.sh on a machine with a CUDA GPU; prints one `PASS name: ...`,
`FAIL name: ...` or `SKIP name: why` line per check and exits 1 if any check failed. About
5-10 minutes on one GPU. Without a GPU every check is a SKIP and the exit code is 0.

    scripts/gpu_smoke.sh [--workdir DIR] [--only name,name] [--list]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TIMEOUT = 600  # seconds, per command


class Skip(Exception):
    """The check does not apply on this machine; the message says why."""


class Smoke:
    """The shared work folder: data, params variants and the runs the checks build on."""

    def __init__(self, workdir: Path, device: str = "cuda") -> None:
        self.dir, self.device = workdir, device  # device "cpu": --dry-run-on-cpu, testing this script
        self.runs: dict[str, subprocess.CompletedProcess] = {}
        self.gpus = torch.cuda.device_count()
        self.bf16 = device == "cpu" or torch.cuda.get_device_capability(0)[0] >= 8

    def dev(self, name: str) -> str:
        """A device of a check ("cuda" or "cpu"); in a dry run on the CPU, "cuda" is the CPU too."""
        return self.device if name == "cuda" else name

    def needs_cuda(self, what: str) -> None:
        if self.device != "cuda":
            raise Skip(f"{what} needs CUDA (dry run on the CPU)")

    # -------------------------------------------------------------------------------- plumbing
    def run(self, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                              timeout=TIMEOUT, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)

    def data(self) -> Path:
        """48 synthetic images, annotated and split by the pipeline's own stages (once)."""
        splits = self.dir / "splits"
        if not (splits / "train.txt").exists():
            for cmd in (["scripts/make_demo_data.py", "--out", str(self.dir / "data"), "--n", "48",
                         "--min-size", "96", "--max-size", "200"],
                        ["stages/annotate.py", "--params", str(self.params("base")), "--out", str(self.dir / "ann.txt"),
                         "--report", str(self.dir / "ann.json")],
                        ["stages/split.py", "--params", str(self.params("base")), "--annotations",
                         str(self.dir / "ann.txt"), "--out-dir", str(splits), "--report", str(self.dir / "split.json"),
                         "--plot", str(self.dir / "split.png")]):
                p = self.run(cmd)
                if p.returncode:
                    raise RuntimeError(f"{' '.join(cmd)}: {p.stderr[-500:]}")
        return splits

    def params(self, name: str, **train) -> Path:
        """params.yaml for a tiny, quick run (CUDA, float16 AMP) with `train` overrides."""
        p = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
        p["data"]["root"] = str(self.dir / "data" / "VOCdevkit" / "VOC2007")
        p["model"].update(imgsz=160, scale="n", backbone="cspdarknet", pretrained="none")
        train["device"] = self.dev(train.get("device", "cuda"))
        p["train"].update({"freeze_epochs": 2, "unfreeze_epochs": 3, "freeze_batch_size": 8,
                           "unfreeze_batch_size": 8, "num_workers": 2, "amp": True, "amp_dtype": "float16",
                           "mosaic": 0.0, "mixup": 0.0, "lr_schedule": "constant", **train})
        p["predict"]["samples"] = 2
        path = self.dir / f"params_{name}.yaml"
        path.write_text(yaml.safe_dump(p, sort_keys=False), encoding="utf-8")
        return path

    def train_cmd(self, name: str, phase: str, params: Path, init: Path | None = None) -> list[str]:
        splits, out = self.data(), self.dir / name
        return ["stages/train.py", "--phase", phase, "--params", str(params), "--train", str(splits / "train.txt"),
                "--val", str(splits / "val.txt"), "--out", str(out / f"{phase}.pt"), "--metrics",
                str(out / f"{phase}.tsv"), "--ckpt-dir", str(out / "ckpt")] + (["--init", str(init)] if init else [])

    def train(self, name: str, phase: str, params: Path, init: Path | None = None, env: dict | None = None
              ) -> subprocess.CompletedProcess:
        """The train stage's command for run `name` (its own folder and checkpoints), memoised."""
        key = f"{name}/{phase}"
        if key not in self.runs:
            self.runs[key] = self.run(self.train_cmd(name, phase, params, init), env)
        return self.runs[key]

    def fp16_params(self) -> Path:
        return self.params("fp16", unfreeze_epochs=20)

    def fp16_run(self) -> Path:
        """Both phases in float16 (checks reuse them); returns the best weights (models/best.pt's kind).

        20 unfrozen epochs: enough for boxes with real scores to compare across devices.
        """
        params = self.fp16_params()
        for phase, init in (("frozen", None), ("unfrozen", self.dir / "fp16" / "frozen.pt")):
            p = self.train("fp16", phase, params, init)
            if p.returncode:
                raise AssertionError(f"the float16 {phase} run failed: {tail(p)}")
        return self.dir / "fp16" / "unfrozen.pt"


def tail(p: subprocess.CompletedProcess, n: int = 400) -> str:
    return " | ".join((p.stdout + p.stderr)[-n:].splitlines())


def tsv_rows(path: Path) -> list[dict]:
    import csv
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def trained_ok(s: Smoke, name: str, phase: str, epochs: int) -> str:
    """The run finished, with one TSV row per epoch and finite losses; raises AssertionError otherwise."""
    p = s.runs[f"{name}/{phase}"]
    assert p.returncode == 0, f"exit {p.returncode}: {tail(p)}"
    rows = tsv_rows(s.dir / name / f"{phase}.tsv")
    assert len(rows) == epochs, f"{len(rows)} TSV rows for {epochs} epochs"
    assert all(math.isfinite(float(r["train_loss"])) and math.isfinite(float(r["val_loss"])) for r in rows), rows
    return f"{epochs} epochs, last train loss {float(rows[-1]['train_loss']):.3f}, val mAP50 {float(rows[-1]['val_map50']):.3f}"


# ------------------------------------------------------------------------------------ checks


def check_cuda_nms(s: Smoke) -> str:
    from torchvision.ops import batched_nms

    from detpipe.boxes import multiclass_nms
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3000, 2, generator=g) * 600
    boxes = torch.cat([xy, xy + torch.rand(3000, 2, generator=g) * 120 + 4], 1)
    scores, labels = torch.rand(3000, generator=g), torch.randint(0, 5, (3000,), generator=g)
    cpu = batched_nms(boxes, scores, labels, 0.5)
    s.needs_cuda("CUDA NMS")
    cuda = batched_nms(boxes.cuda(), scores.cuda(), labels.cuda(), 0.5).cpu()
    assert torch.equal(cpu, cuda), f"{len(cpu)} kept on the CPU, {len(cuda)} on CUDA"
    probs = torch.rand(3000, 5, generator=g)
    a, b = multiclass_nms(boxes, probs, 0.3, 0.45, 300), multiclass_nms(boxes.cuda(), probs.cuda(), 0.3, 0.45, 300)
    assert all(torch.equal(x, y.cpu()) for x, y in zip(a, b)), "multiclass_nms differs between CPU and CUDA"
    return f"torchvision batched_nms and detpipe multiclass_nms keep the same {len(cpu)} / {len(a[0])} boxes"


def check_train_fp16_frozen(s: Smoke) -> str:
    s.train("fp16", "frozen", s.fp16_params())
    return trained_ok(s, "fp16", "frozen", 2)


def check_train_fp16_unfrozen(s: Smoke) -> str:
    s.fp16_run()
    return trained_ok(s, "fp16", "unfrozen", 20)


def check_train_bf16_both_phases(s: Smoke) -> str:
    params = s.params("bf16", amp_dtype="bfloat16")
    if not s.bf16:
        p = s.train("bf16", "frozen", params)
        assert p.returncode == 1 and "needs a GPU with native bfloat16" in p.stderr, tail(p)
        return f"refused with a clear message on {torch.cuda.get_device_name(0)} (no native bfloat16)"
    s.train("bf16", "frozen", params)
    s.train("bf16", "unfrozen", params, s.dir / "bf16" / "frozen.pt")
    return trained_ok(s, "bf16", "frozen", 2) + "; " + trained_ok(s, "bf16", "unfrozen", 3)


def check_checkpoint_keys_and_scaler(s: Smoke) -> str:
    from detpipe.model import checkpoint as ckpt
    s.fp16_run()
    last = next((s.dir / "fp16" / "ckpt" / "train_unfrozen").glob("*/last.pt"))
    state = ckpt.load(last)
    need = {"model", "ema", "ema_updates", "optimizer", "scheduler", "scaler", "epoch", "history", "best", "rng",
            "params", "model_config", "class_names", "imgsz", "fingerprint", "phase", "best_model", "best_ema"}
    assert need <= set(state), f"missing {sorted(need - set(state))}"
    scaler = state["scaler"]
    if s.device != "cuda":  # dry run: the CPU has neither
        return f"{len(state)} keys, epoch {state['epoch']} (no GradScaler or fused optimizer on the CPU)"
    assert scaler and scaler.get("scale", 0) > 0 and "_growth_tracker" in scaler, f"scaler state {scaler}"
    assert all(g.get("fused") for g in state["optimizer"]["param_groups"]), "optimizer not fused on CUDA"
    return f"{len(state)} keys, GradScaler scale {scaler['scale']:g}, fused optimizer, epoch {state['epoch']}"


def _resume_across(s: Smoke, name: str, first: str, second: str) -> str:
    """One epoch on `first`, then the same run with 2 epochs on `second` continues the checkpoint."""
    s.train(name, "frozen", s.params(f"{name}_1", device=first, freeze_epochs=1))
    p1 = s.runs[f"{name}/frozen"]
    assert p1.returncode == 0, f"{first} run: {tail(p1)}"
    del s.runs[f"{name}/frozen"]
    p2 = s.train(name, "frozen", s.params(f"{name}_2", device=second, freeze_epochs=2))
    assert "continuing the 1-epoch run" in p2.stdout, f"did not continue: {tail(p2)}"
    return trained_ok(s, name, "frozen", 2) + f" ({first} epoch 1, {second} epoch 2)"


def check_resume_cpu_to_cuda(s: Smoke) -> str:
    return _resume_across(s, "cpu_to_cuda", "cpu", "cuda")


def check_resume_cuda_to_cpu(s: Smoke) -> str:
    return _resume_across(s, "cuda_to_cpu", "cuda", "cpu")


def check_kill9_and_resume(s: Smoke) -> str:
    params = s.params("kill", freeze_epochs=4)
    cmd, tsv = s.train_cmd("kill", "frozen", params), s.dir / "kill" / "frozen.tsv"
    proc = subprocess.Popen([sys.executable, *cmd], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + TIMEOUT
    while not (tsv.exists() and len(tsv.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch was saved"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    p = s.train("kill", "frozen", params)
    assert "resuming train_frozen from epoch" in p.stdout, tail(p)
    return trained_ok(s, "kill", "frozen", 4) + "; " + p.stdout.split("resuming ")[1].split(" (")[0]


def _predict(s: Smoke, device: str) -> Path:
    out = s.dir / f"predict_{device}"
    p = s.run(["stages/predict.py", "--params", str(s.params(f"predict_{device}", device=device)), "--weights",
               str(s.fp16_run()), "--split", str(s.data() / "test.txt"), "--out", str(out / "test.csv"),
               "--samples-dir", str(out / "samples"), "--summary", str(out / "predict.json")])
    assert p.returncode == 0, f"predict on {device}: {tail(p)}"
    return out / "test.csv"


def check_predict_cuda_vs_cpu(s: Smoke, threshold: float = 0.1) -> str:
    # CUDA convolutions run in TF32 on Ampere and newer (10-bit mantissa, like float16), so the
    # tolerance is about float16's: boxes within 1.5 px (images up to 200 px), scores within 0.01.
    # Boxes near the threshold may be on one side only.
    import csv
    rows = {}
    for device in ("cpu", "cuda"):
        with open(_predict(s, device), encoding="utf-8") as fh:
            rows[device] = [r for r in csv.DictReader(fh) if float(r["score"]) >= threshold]
    worst_box = worst_score = 0.0
    for a_dev, b_dev in (("cpu", "cuda"), ("cuda", "cpu")):
        for a in rows[a_dev]:
            cands = [b for b in rows[b_dev] if b["image"] == a["image"] and b["class"] == a["class"]]
            near = min(cands, key=lambda b: _box_dist(a, b), default=None)
            if near is None:
                assert float(a["score"]) < threshold + 0.02, f"{a_dev} box {a} has no {b_dev} counterpart"
                continue
            worst_box, worst_score = max(worst_box, _box_dist(a, near)), max(worst_score, abs(float(a["score"]) - float(near["score"])))
    assert rows["cpu"] and worst_box < 1.5 and worst_score < 0.01, f"boxes {worst_box:.3g} px, scores {worst_score:.3g}"
    return (f"{len(rows['cpu'])} / {len(rows['cuda'])} boxes (score >= {threshold}); max diff {worst_box:.3g} px, "
            f"score {worst_score:.3g}")


def _box_dist(a: dict, b: dict) -> float:
    return max(abs(float(a[k]) - float(b[k])) for k in ("x1", "y1", "x2", "y2"))


def check_fps_cuda(s: Smoke) -> str:
    lines = []
    for dtype in ("float32", "float16"):
        p = s.run(["-m", "detpipe", "fps", "--weights", str(s.fp16_run()), "--device", s.dev("cuda"), "--dtype", dtype,
                   "--batch", "1,8", "--images", "32"])
        assert p.returncode == 0 and f" on {s.dev('cuda')}" in p.stdout, tail(p)
        lines.append(f"{dtype}: " + " / ".join(f"batch {r.split()[0]} {r.split()[6]} img/s"
                                                for r in p.stdout.splitlines() if r[:1].isdigit()))
    return "; ".join(lines)


def check_half_precision_inference(s: Smoke) -> str:
    from detpipe.data.images import load_rgb
    from detpipe.infer.predictor import LOW_PRECISION_TOLERANCE, Predictor, compare
    from detpipe.data.annotations import read_lines
    images = [load_rgb(r.path) for r in read_lines(s.data() / "val.txt") + read_lines(s.data() / "test.txt")]
    ref = Predictor(s.fp16_run(), s.dev("cuda"), 0.001, 0.45)
    out = []
    for dtype in ("float16", "bfloat16")[: 1 + s.bf16]:
        r = compare(ref, Predictor(s.fp16_run(), s.dev("cuda"), 0.001, 0.45, dtype=dtype), images)
        tol = LOW_PRECISION_TOLERANCE[dtype]
        assert r["scores"] < tol["score"] and r["candidate_iou"] > tol["iou"], f"{dtype}: {r}"
        out.append(f"{dtype} scores {r['scores']:.2g} (tol {tol['score']}), candidate boxes' IoU "
                   f"{r['candidate_iou']:.3f} (tol {tol['iou']}), {r['other_detections']} vs {r['ref_detections']} detections")
    return "; ".join(out)


def check_onnx_on_cuda(s: Smoke) -> str:
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError:
        raise Skip("onnx / onnxruntime not installed (pip install onnx onnxruntime-gpu)") from None
    onnx_path = s.dir / "best.onnx"
    p = s.run(["-m", "detpipe", "export", "--weights", str(s.fp16_run()), "--out", str(onnx_path), "--dynamic"])
    assert p.returncode == 0 and "parity: ok" in p.stdout, tail(p)
    p = s.run(["-m", "detpipe", "fps", "--weights", str(onnx_path), "--device", s.dev("cuda"), "--batch", "1,8",
               "--images", "16"])
    assert p.returncode == 0, tail(p)
    where = p.stdout.split(" on ", 1)[1].split(",")[0]
    return f"exported, parity ok; fps ran on {where} (providers available: {', '.join(ort.get_available_providers())})"


def check_oom_message(s: Smoke) -> str:
    # A training step of model l at 640 px, batch 32, in 256 MB of GPU memory.
    s.needs_cuda("capping GPU memory")
    total = torch.cuda.get_device_properties(0).total_memory
    params = s.params("oom", unfreeze_batch_size=32, freeze_epochs=1)
    text = yaml.safe_load(params.read_text())
    text["model"].update(scale="l", imgsz=640)
    params.write_text(yaml.safe_dump(text), encoding="utf-8")
    argv = s.train_cmd("oom", "unfrozen", params)
    code = (f"import runpy, sys, torch; torch.cuda.set_per_process_memory_fraction({256 * 2**20 / total!r}); "
            f"sys.argv = {argv!r}; runpy.run_path({argv[0]!r}, run_name='__main__')")
    p = s.run(["-c", code])
    assert p.returncode == 1 and "error: CUDA out of memory in train_unfrozen at batch size 32" in p.stderr, tail(p)
    assert "Traceback" not in p.stderr, tail(p)
    return p.stderr.strip().splitlines()[-1][:160]


def check_compile_with_recompiles_logged(s: Smoke) -> str:
    p = s.train("compile", "frozen", s.params("compile", compile=True))
    detail = trained_ok(s, "compile", "frozen", 2)
    recompiles = sum("Recompiling" in line for line in p.stderr.splitlines())
    return f"{detail}; {recompiles} recompilations logged (torch._logging recompiles on)"


def check_host_syncs_per_step(s: Smoke) -> str:
    out = []
    for amp in ("float16", "bfloat16")[: 1 + s.bf16]:
        p = s.run(["bench/bench_syncs.py", "--device", s.dev("cuda"), "--amp", amp])
        assert p.returncode == 0, tail(p)
        counted = float(p.stdout.split("host syncs per step: ")[1].split()[0])
        debug = float(p.stdout.split("cuda sync debug mode: ")[1].split()[0]) if s.device == "cuda" else 0.0
        assert counted == 0 and debug == 0, p.stdout.strip()
        out.append(f"{amp}: 0 counted" + (", 0 from torch.cuda sync debug mode" if s.device == "cuda" else ""))
    return "; ".join(out)


def _weights_distance(a: Path, b: Path) -> tuple[int, float]:
    from detpipe.model import checkpoint as ckpt
    x, y = ckpt.load(a)["model"], ckpt.load(b)["model"]
    differ = sum(not torch.equal(x[k], y[k]) for k in x)
    num = sum(float((x[k].double() - y[k].double()).pow(2).sum()) for k in x if x[k].is_floating_point())
    den = sum(float(x[k].double().pow(2).sum()) for k in x if x[k].is_floating_point())
    return differ, (num / max(den, 1e-30)) ** 0.5


def check_repeatability(s: Smoke) -> str:
    # Two identical runs with cuDNN autotuning (the default): not bitwise equal (algorithms and
    # atomic adds vary), but close; with train.deterministic: bitwise equal.
    s.fp16_run()
    p = s.train("fp16_again", "frozen", s.fp16_params())
    assert p.returncode == 0, tail(p)
    differ, rel = _weights_distance(s.dir / "fp16" / "frozen.pt", s.dir / "fp16_again" / "frozen.pt")
    assert rel < 1e-2, f"default runs differ by {rel:.2g} (relative L2 of the weights)"
    det = s.params("deterministic", deterministic=True)
    for name in ("det_a", "det_b"):
        q = s.train(name, "frozen", det)
        assert q.returncode == 0, tail(q)
    det_differ, det_rel = _weights_distance(s.dir / "det_a" / "frozen.pt", s.dir / "det_b" / "frozen.pt")
    missing = sorted({line.split("UserWarning: ")[-1][:80] for line in q.stderr.splitlines()
                      if "does not have a deterministic implementation" in line})
    assert det_differ == 0, f"deterministic runs differ in {det_differ} tensors ({det_rel:.2g}); {missing}"
    return f"default: {differ} tensors differ, relative {rel:.2g}; deterministic: bitwise equal"


def check_ddp_two_gpus_sync_bn(s: Smoke) -> str:
    if s.gpus < 2:
        raise Skip(f"needs 2 GPUs, {s.gpus} visible")
    params = s.params("ddp", nproc=2, sync_bn=True)
    s.train("ddp", "frozen", params)
    s.train("ddp", "unfrozen", params, s.dir / "ddp" / "frozen.pt")
    log = s.runs["ddp/frozen"].stdout
    assert "DDP over 2 processes (nccl), global batch 8 = 2 x 4" in log, tail(s.runs["ddp/frozen"])
    return trained_ok(s, "ddp", "frozen", 2) + "; " + trained_ok(s, "ddp", "unfrozen", 3)


CHECKS: list[Callable[[Smoke], str]] = [
    check_cuda_nms, check_train_fp16_frozen, check_train_fp16_unfrozen, check_train_bf16_both_phases,
    check_checkpoint_keys_and_scaler, check_resume_cpu_to_cuda, check_resume_cuda_to_cpu, check_kill9_and_resume,
    check_predict_cuda_vs_cpu, check_fps_cuda, check_half_precision_inference, check_onnx_on_cuda,
    check_oom_message, check_compile_with_recompiles_logged, check_host_syncs_per_step, check_repeatability,
    check_ddp_two_gpus_sync_bn]


def name_of(check: Callable) -> str:
    return check.__name__.removeprefix("check_")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--only", help="comma-separated check names")
    ap.add_argument("--list", action="store_true", help="print the check names and exit")
    ap.add_argument("--dry-run-on-cpu", action="store_true",
                    help="test this script itself: every 'cuda' becomes the CPU, CUDA-only checks are skipped; "
                         "says nothing about a GPU")
    args = ap.parse_args(argv)
    checks = [c for c in CHECKS if not args.only or name_of(c) in args.only.split(",")]
    if args.list:
        print("\n".join(name_of(c) for c in checks))
        return 0
    if not torch.cuda.is_available() and not args.dry_run_on_cpu:
        print(f"gpu_smoke: no CUDA GPU present (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
              "nothing was run on a GPU", flush=True)
        for c in checks:
            print(f"SKIP {name_of(c)}: no CUDA GPU")
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="detpipe-gpu-smoke-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.dry_run_on_cpu:
        print(f"gpu_smoke: DRY RUN ON THE CPU (tests this script; not a GPU verdict); work folder {workdir}", flush=True)
    else:
        print(f"gpu_smoke: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}; work folder {workdir}", flush=True)
    s = Smoke(workdir, "cpu" if args.dry_run_on_cpu else "cuda")
    start, counts = time.monotonic(), {"PASS": 0, "FAIL": 0, "SKIP": 0}
    for c in checks:
        t0 = time.monotonic()
        try:
            verdict, detail = "PASS", c(s)
        except Skip as exc:
            verdict, detail = "SKIP", str(exc)
        except Exception as exc:  # a FAIL line, and on to the next check
            verdict, detail = "FAIL", f"{type(exc).__name__}: {exc}"[:1500]
        counts[verdict] += 1
        print(f"{verdict} {name_of(c)}: {detail} ({time.monotonic() - t0:.0f} s)", flush=True)
    print(f"gpu_smoke: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in "
          f"{time.monotonic() - start:.0f} s; runs kept in {workdir}", flush=True)
    json.dump(counts, open(workdir / "summary.json", "w"))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
