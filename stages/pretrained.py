"""Stage pretrained: the content hash of the starting weights that `model.pretrained` names.

A weights file named in params.yaml is no DVC dependency, so editing it in place would not rerun
training. This stage runs on every `dvc repro` (it is cheap) and writes the file's hash; the
frozen training phase depends on that record, so it reruns exactly when the weights changed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detpipe.artifacts.image_manifest import file_sha256  # noqa: E402
from detpipe.artifacts.pretrained_record import PretrainedRecord  # noqa: E402
from detpipe.pipeline.view import load_stage_params  # noqa: E402
from detpipe.params import ParamsError  # noqa: E402

PARAMS = ("model.backbone", "model.pretrained")


def describe(backbone: str, spec: str) -> PretrainedRecord:
    """What identifies the starting weights: a keyword as it is (torchvision checks its files'
    hashes itself), or a file by its content."""
    if spec in ("", "none", "imagenet", "coco"):
        return PretrainedRecord(pretrained=spec or "none", backbone=backbone)
    path = Path(spec)
    if not path.is_file():
        raise ParamsError(f"model.pretrained: {spec!r} is not a file; give a checkpoint path, none or imagenet")
    return PretrainedRecord(pretrained=spec, backbone=backbone, sha256=file_sha256(path), bytes=path.stat().st_size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True)
    ap.add_argument("--out", required=True, help="JSON record of the starting weights")
    args = ap.parse_args(argv)
    params = load_stage_params(args.params, PARAMS, "pretrained")
    try:
        record = describe(params.model.backbone, params.model.pretrained)
    except ParamsError as exc:
        print(f"pretrained: error: {exc}", file=sys.stderr)
        return 1
    record.write(args.out)
    print(f"pretrained: {record.pretrained}" + (f" sha256 {record.sha256[:12]}" if record.sha256 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
