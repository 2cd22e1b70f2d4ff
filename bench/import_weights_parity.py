"""`detpipe import-weights` against Ultralytics: with the same random weights, detpipe's backbone, neck and
head hidden-layer feature maps must equal Ultralytics' (YOLOv8 and YOLO11, scales n/s/m/l).

    /tmp/yolo-venv/bin/python bench/import_weights_parity.py [--imgsz 160] [--models yolov8n,yolo11s]
        [--out reports/bench/import_weights_parity.json]

Runs in the bench venv bench/compare_ultralytics.py describes (Ultralytics is not a detpipe
dependency). For each model: Ultralytics builds it from its YAML with random weights, and every
BatchNorm gets random affine parameters and statistics measured on random images (so the maps stay
O(1) and the 1e-3 eps, where detpipe's default is 1e-5, changes them far more than 1e-5); its state dict is saved as a user would (`torch.save(model.state_dict())`), converted
by `python -m detpipe import-weights` (in process) and loaded as `model.pretrained` into a detpipe
model of the printed layout. Both run in eval mode on the same random uint8 images (Ultralytics
sees x / 255, detpipe its own input normalisation), and the script prints, per part, the largest
absolute difference and the largest absolute value of Ultralytics' maps: backbone = the P3, P4, P5
maps the neck reads, neck = its three outputs, head = the box and class branches' hidden layers
(the output layers are not imported). Exit status 1 if any difference exceeds --tol (default 1e-5)
times max(1, largest value).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from detpipe.cli import import_weights  # noqa: E402
from detpipe.model.detector import ModelConfig, build_model  # noqa: E402

MODELS = ("yolov8n", "yolov8s", "yolov8m", "yolov8l", "yolo11n", "yolo11s", "yolo11m", "yolo11l")


def randomize_batchnorm(model: torch.nn.Module, gen: torch.Generator, imgsz: int) -> None:
    """Random BatchNorm affine parameters, then running statistics measured on random images (one
    train-mode pass with cumulative averaging), so that eval-mode maps stay O(1) through the whole
    network instead of overflowing, and the eps (1e-3 of variances of order 1) matters."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
        m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, imgsz, imgsz, generator=gen))
    for m in bns:
        m.momentum = 0.03


def ultralytics_maps(model, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Outputs of every layer up to the Detect head, as DetectionModel._predict_once routes them, then
    the maps detpipe's parts compute: backbone P3/P4/P5 (the neck's inputs), neck outputs, head hidden."""
    layers, ys = list(model.model), []
    detect = layers[-1]
    for layer in layers[:-1]:
        if layer.f != -1:
            x = ys[layer.f] if isinstance(layer.f, int) else [x if j == -1 else ys[j] for j in layer.f]
        x = layer(x)
        ys.append(x)
    neck_out = [ys[j] for j in detect.f]
    # the Concat layers that read the backbone's P4, P3 and P5 (yolov8.yaml / yolo11.yaml)
    backbone = [ys[layers[i].f[1]] for i in (-9, -12, -3)]
    hidden = [branch[i][:2](f) for branch in (detect.cv2, detect.cv3) for i, f in enumerate(neck_out)]
    return backbone, neck_out, hidden


def detpipe_maps(model, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    backbone = model.backbone(model.normalize(images))
    neck = model.neck(backbone)
    hidden = [branch[i][:2](f) for branch in (model.head.reg, model.head.cls) for i, f in enumerate(neck)]
    return backbone, neck, hidden


def compare(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> dict[str, float]:
    assert [o.shape for o in ours] == [t.shape for t in theirs], ([o.shape for o in ours], [t.shape for t in theirs])
    return {"max_abs_diff": max(float((o - t).abs().max()) for o, t in zip(ours, theirs)),
            "max_abs_value": max(float(t.abs().max()) for t in theirs)}


def run(yolo, name: str, imgsz: int, seed: int, tmp: Path) -> dict:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ultra = yolo(f"{name}.yaml").model.float()
    randomize_batchnorm(ultra, gen, imgsz)
    ultra.eval()
    src, dst = tmp / f"{name}-state.pt", tmp / f"{name}-detpipe.pt"
    torch.save(ultra.state_dict(), src)
    with contextlib.redirect_stdout(io.StringIO()) as log:
        if import_weights.main([str(src), "--out", str(dst)]) != 0:
            raise SystemExit(log.getvalue())
        config = ModelConfig(**torch.load(dst, weights_only=True)["model_config"])
        ours = build_model(config, pretrained=str(dst)).eval()
    images = torch.randint(0, 256, (2, 3, imgsz, imgsz), generator=gen, dtype=torch.uint8)
    with torch.no_grad():
        theirs_maps = ultralytics_maps(ultra, images.float() / 255)
        our_maps = detpipe_maps(ours, images)
    parts = {part: compare(o, t) for part, o, t in zip(("backbone", "neck", "head_hidden"), our_maps, theirs_maps)}
    return {"layout": f"{config.backbone}-{config.scale} + {config.neck} neck", "parts": parts,
            "import_log": log.getvalue().splitlines()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "reports" / "bench" / "import_weights_parity.json"))
    args = p.parse_args()
    from compare_ultralytics import import_ultralytics
    yolo, version = import_ultralytics(Path(tempfile.mkdtemp(prefix="yolo-config-")), args.threads)
    torch.set_num_threads(args.threads)
    results, ok = {}, True
    print(f"Ultralytics {version}, torch {torch.__version__}, imgsz {args.imgsz}, tolerance {args.tol} x max(1, |value|)")
    print(f"{'model':<8} {'part':<12} {'max |diff|':>11} {'max |value|':>12}  ok")
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.models.split(",")):
            results[name] = run(yolo, name, args.imgsz, i, Path(tmp))
            for part, r in results[name]["parts"].items():
                good = r["max_abs_diff"] <= args.tol * max(1.0, r["max_abs_value"])
                ok &= good
                print(f"{name:<8} {part:<12} {r['max_abs_diff']:11.2e} {r['max_abs_value']:12.3g}  {'yes' if good else 'NO'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"ultralytics": version, "torch": torch.__version__, "imgsz": args.imgsz,
                                          "tolerance": args.tol, "ok": ok, "models": results}, indent=2) + "\n")
    print(f"{'all equal' if ok else 'DIFFERENCES'} within tolerance; wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
