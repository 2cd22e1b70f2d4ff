"""Write tests/data/ultralytics_manifest.json: the state-dict keys and shapes of Ultralytics' YOLOv8 and
YOLO11 detection models (n, s, m; 80 classes), built from Ultralytics' own YAMLs and classes.

    /tmp/yolo-venv/bin/python scripts/make_ultralytics_manifest.py [--out tests/data/ultralytics_manifest.json]

Run it once per Ultralytics version in the bench venv that bench/compare_ultralytics.py describes
(Ultralytics is not a detpipe dependency). tests/test_import_weights.py builds random state dicts
from the manifest and imports them, so `detpipe import-weights` is checked against the real key
layout in CI without Ultralytics.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
MODELS = ("yolov8n", "yolov8s", "yolov8m", "yolo11n", "yolo11s", "yolo11m")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "tests" / "data" / "ultralytics_manifest.json"))
    args = p.parse_args()
    from compare_ultralytics import import_ultralytics
    yolo, version = import_ultralytics(Path(tempfile.mkdtemp(prefix="yolo-config-")), threads=1)
    models = {}
    for name in MODELS:
        state = yolo(f"{name}.yaml").model.state_dict()
        models[name] = {k: list(v.shape) for k, v in state.items()}
        print(f"{name}: {len(state)} tensors")
    manifest = {"ultralytics": version, "num_classes": 80, "models": models}
    Path(args.out).write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
