"""`detpipe import-weights SRC`: turn a YOLOv8 / YOLO11 state dict saved with Ultralytics into a
detpipe checkpoint for `model.pretrained`.

Save the state dict in your own Ultralytics environment (detpipe never imports Ultralytics and
never unpickles its .pt files):

    python -c "import torch; from ultralytics import YOLO; torch.save(YOLO('yolov8n.pt').model.float().state_dict(), 'yolov8n-state.pt')"
    detpipe import-weights yolov8n-state.pt --out models/yolov8n-detpipe.pt

The backbone, the neck and the head's hidden layers are imported; the head's output layers start
from scratch in training. The command prints what it imported and skipped, and the params to use.
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="detpipe import-weights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="state dict saved with torch.save(model.state_dict()) in Ultralytics")
    p.add_argument("--out", help="detpipe checkpoint to write (default: SOURCE's name + -detpipe.pt beside it)")
    args = p.parse_args(argv)
    from ..model.checkpoint import CheckpointError
    from ..params import print_error
    from ..model.pretrained import file_sha256
    from ..model.yolo_import import class_branch_width, convert, read_state_dict, save
    source = Path(args.source)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}-detpipe.pt")
    if out.resolve() == source.resolve():
        p.error(f"--out {out} would overwrite the source; choose another name")
    try:
        conv = convert(read_state_dict(source), str(source))
    except CheckpointError as exc:
        return print_error(exc)
    c = conv.config
    parts = Counter(k.split(".")[0] for k in conv.state)
    print(f"{source}: Ultralytics {c.backbone} scale {c.scale}, {c.num_classes} classes, "
          f"{len(conv.imported) + len(conv.skipped)} tensors")
    print(f"  imported {len(conv.imported)}: backbone {parts['backbone']}, neck {parts['neck']}, "
          f"head {parts['head']} (its hidden layers)")
    for reason, n in Counter(conv.skipped.values()).most_common():
        examples = [k for k, r in conv.skipped.items() if r == reason][:2]
        print(f"  skipped {n}: {reason} (e.g. {', '.join(examples)})")
    save(conv, out, source.name, file_sha256(source))
    print(f"wrote {out}; train from it with, in params.yaml:\n"
          f"  model: {{backbone: {c.backbone}, neck: {c.neck}, scale: {c.scale}, pretrained: {out}}}\n"
          f"(with neck: pan only the backbone loads; the class branch's hidden layers load when your class count "
          f"gives them the source's width {class_branch_width(c)}, as in Ultralytics' own fine-tuning; with "
          "model.p2: true the stride-4 level's layers start from scratch and that width follows P2's, as in YOLOv8-p2)")
    return 0
