"""The stage table: the one place that says what each stage runs, reads and writes.

dvc.yaml is generated from it (`python -m detpipe.pipeline`, checked by a test) and the Snakefile
reads it, so the two orchestrators cannot drift apart. Per stage:

- `args`: the command line after `python <script>`; its paths are the only place paths are named.
- `deps`: data the stage reads that is not the code (the code deps are derived: the import closure
  of the script inside detpipe/, see closure.py). `${key}` is a params.yaml value, as in dvc.yaml.
- params: the params.yaml keys the stage reads are declared by the stage script itself (its
  module-level `PARAMS`), read here from the script's source. The script loads params through
  `load_stage_params(path, PARAMS, stage)`, which refuses to hand out any other key, so an
  undeclared read fails the stage (and the end-to-end tests) instead of silently escaping the
  rerun rules. (Scripts do not import this table: editing one stage's entry must not rerun the
  others, and a stage's code deps are what it imports.)
- `outs`: every file or folder it writes, with how DVC treats it.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Out:
    """A declared output. kind: outs | metrics (DVC's per-stage sections; metrics and plots are
    declared at the top level, see METRICS and PLOTS); cache False for small reports (DVC keeps
    them in git)."""

    path: str
    kind: str = "outs"
    cache: bool = True
    directory: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("outs", "metrics"):
            raise ValueError(f"{self.path}: kind {self.kind!r}; outs or metrics (plots go in PLOTS)")


@dataclass(frozen=True)
class Stage:
    name: str
    script: str
    args: tuple[tuple[str, str], ...]
    outs: tuple[Out, ...]
    deps: tuple[str, ...] = ()
    always_changed: bool = False
    description: str = ""

    @property
    def cmd(self) -> str:
        return " ".join(["python", self.script] + [f"{flag} {value}" if value else flag for flag, value in self.args])

    def params(self, root: str | Path = ".") -> tuple[str, ...]:
        """The params keys the stage reads: its script's `PARAMS`."""
        return script_params(str(Path(root).resolve() / self.script))


@lru_cache(maxsize=None)
def script_params(path: str) -> tuple[str, ...]:
    """The literal tuple assigned to `PARAMS` at the top level of a stage script."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "PARAMS" for t in targets):
                return tuple(ast.literal_eval(node.value))
    raise ValueError(f"{path}: no top-level PARAMS = (...) naming the params keys the stage reads")


def _report(path: str, kind: str = "outs", directory: bool = False) -> Out:
    return Out(path, kind, cache=False, directory=directory)


# The index page reads every other stage's report: each path once, as its argument and its dep.
_REPORT_INPUTS = (
    ("--annotate", "reports/data/annotate.json"), ("--split", "reports/data/split.json"),
    ("--split-png", "reports/data/split.png"), ("--frozen", "reports/train/frozen.tsv"),
    ("--unfrozen", "reports/train/unfrozen.tsv"), ("--recipe", "reports/train/recipe.json"),
    ("--overfit-json", "reports/overfitting.json"),
    ("--overfit-md", "reports/overfitting.md"), ("--overfit-png", "reports/overfitting.png"),
    ("--metrics", "reports/map/metrics.json"), ("--map-info", "reports/map/info.json"),
    ("--pr-dir", "reports/map/pr"), ("--prf-png", "reports/map/prf_confidence.png"),
    ("--confusion", "reports/map/confusion_matrix.png"), ("--predictions", "reports/predictions"),
    ("--predict-summary", "reports/predict.json"),
)

STAGES: tuple[Stage, ...] = (
    Stage(
        "annotate", "stages/annotate.py",
        args=(("--params", PARAMS_FILE), ("--out", "data/annotations.txt"), ("--images", "data/images.sha256"),
              ("--report", "reports/data/annotate.json")),
        deps=("${data.root}",),
        outs=(Out("data/annotations.txt"), Out("data/images.sha256"), _report("reports/data/annotate.json")),
        description="VOC/COCO labels -> annotation lines and the content hash of every kept image",
    ),
    Stage(
        "split", "stages/split.py",
        args=(("--params", PARAMS_FILE), ("--annotations", "data/annotations.txt"),
              ("--images", "data/images.sha256"), ("--out-dir", "data/splits"),
              ("--report", "reports/data/split.json"), ("--plot", "reports/data/split.png")),
        deps=("data/annotations.txt", "data/images.sha256"),
        outs=tuple(Out(f"data/splits/{s}.{ext}") for s in ("train", "val", "test") for ext in ("txt", "sha256"))
        + (_report("reports/data/split.json"), _report("reports/data/split.png")),
        description="stable seeded train/val/test split by image path, with per-split image hashes",
    ),
    Stage(
        "pretrained", "stages/pretrained.py",
        args=(("--params", PARAMS_FILE), ("--out", "models/pretrained.json")),
        outs=(Out("models/pretrained.json", cache=False),),
        # It hashes the starting weights file on every run (a file named in params.yaml is no DVC
        # dep), so a changed file reruns training while an unchanged one reruns nothing.
        always_changed=True,
        description="the content hash of the starting weights named by model.pretrained",
    ),
    Stage(
        "train_frozen", "stages/train.py",
        args=(("--phase", "frozen"), ("--params", PARAMS_FILE), ("--train", "data/splits/train.txt"),
              ("--val", "data/splits/val.txt"), ("--train-images", "data/splits/train.sha256"),
              ("--val-images", "data/splits/val.sha256"), ("--pretrained", "models/pretrained.json"),
              ("--out", "models/frozen.pt"), ("--metrics", "reports/train/frozen.tsv")),
        deps=("data/splits/train.txt", "data/splits/val.txt", "data/splits/train.sha256",
              "data/splits/val.sha256", "models/pretrained.json"),
        outs=(Out("models/frozen.pt"), _report("reports/train/frozen.tsv")),
        description="neck and head train on the frozen backbone",
    ),
    Stage(
        "train_unfrozen", "stages/train.py",
        args=(("--phase", "unfrozen"), ("--params", PARAMS_FILE), ("--train", "data/splits/train.txt"),
              ("--val", "data/splits/val.txt"), ("--train-images", "data/splits/train.sha256"),
              ("--val-images", "data/splits/val.sha256"), ("--init", "models/frozen.pt"),
              ("--out", "models/best.pt"), ("--last", "models/last.pt"), ("--metrics", "reports/train/unfrozen.tsv"),
              ("--recipe", "reports/train/recipe.json")),
        deps=("data/splits/train.txt", "data/splits/val.txt", "data/splits/train.sha256",
              "data/splits/val.sha256", "models/frozen.pt"),
        outs=(Out("models/best.pt"), Out("models/last.pt"), _report("reports/train/unfrozen.tsv"),
              _report("reports/train/recipe.json")),
        description="everything trains; the best epoch by val mAP50 becomes best.pt",
    ),
    Stage(
        "predict", "stages/predict.py",
        args=(("--params", PARAMS_FILE), ("--weights", "models/best.pt"), ("--split", "data/splits/test.txt"),
              ("--images", "data/splits/test.sha256"), ("--out", "data/detections/test.csv"),
              ("--samples-dir", "reports/predictions"), ("--summary", "reports/predict.json")),
        deps=("models/best.pt", "data/splits/test.txt", "data/splits/test.sha256"),
        outs=(Out("data/detections/test.csv"), _report("reports/predict.json"),
              _report("reports/predictions", directory=True)),
        description="the best model on the test split: every box for the mAP, drawn samples",
    ),
    Stage(
        "map", "stages/map.py",
        args=(("--params", PARAMS_FILE), ("--split", "data/splits/test.txt"),
              ("--detections", "data/detections/test.csv"), ("--out", "reports/map")),
        deps=("data/detections/test.csv", "data/splits/test.txt"),
        outs=(_report("reports/map/info.json"), _report("reports/map/metrics.json"),
              _report("reports/map/pr", directory=True), _report("reports/map/pr.csv"),
              _report("reports/map/prf_confidence.csv"), _report("reports/map/prf_pooled.csv"),
              _report("reports/map/prf_confidence.png"), _report("reports/map/confusion_matrix.csv"),
              _report("reports/map/confusion_matrix.png")),
        description="VOC and COCO mAP, PR curves, P/R/F1 vs confidence, confusion matrix",
    ),
    Stage(
        "overfit", "stages/overfit.py",
        args=(("--params", PARAMS_FILE), ("--frozen", "reports/train/frozen.tsv"),
              ("--unfrozen", "reports/train/unfrozen.tsv"), ("--split-report", "reports/data/split.json"),
              ("--map-metrics", "reports/map/metrics.json"), ("--recipe", "reports/train/recipe.json"),
              ("--out-md", "reports/overfitting.md"), ("--out-json", "reports/overfitting.json"),
              ("--out-png", "reports/overfitting.png")),
        # The map stage's metrics.json holds no wall time, so an unchanged result reruns nothing here.
        deps=("reports/train/frozen.tsv", "reports/train/unfrozen.tsv", "reports/data/split.json",
              "reports/map/metrics.json", "reports/train/recipe.json"),
        outs=(_report("reports/overfitting.md"), _report("reports/overfitting.json"),
              _report("reports/overfitting.png")),
        description="train vs val across both phases: verdict, evidence, advice and what limits the model",
    ),
    Stage(
        "report", "stages/report.py",
        args=(("--out", "reports/index.md"), ("--headline", "reports/metrics.json")) + _REPORT_INPUTS,
        deps=tuple(path for _, path in _REPORT_INPUTS),
        outs=(_report("reports/index.md"), _report("reports/metrics.json")),
        description="reports/index.md, the page that ties it together, and the headline metrics",
    ),
)

# dvc.yaml's top-level sections: what `dvc metrics show` / `dvc exp show` and `dvc plots show` gather.
# One small metrics file, so `dvc exp show` has a column per headline figure and no other (the
# details, settings and timings are plain outputs); plots only here, each one chart with its title
# (per-stage plots: entries draw every column of a file as a meaningless "step vs X" chart).
METRICS: tuple[str, ...] = ("reports/metrics.json",)
_HISTORY = ("reports/train/frozen.tsv", "reports/train/unfrozen.tsv")
PLOTS: tuple[dict, ...] = (
    {"loss": {"template": "simple", "x": "epoch", "y": {t: ["train_loss", "val_loss"] for t in _HISTORY},
              "title": "Train and val loss per epoch (frozen phase, then unfrozen)", "y_label": "loss"}},
    {"val_map": {"template": "simple", "x": "epoch", "y": {t: ["val_map50", "val_map50_95"] for t in _HISTORY},
                 "title": "Val mAP50 and mAP50-95 per epoch", "y_label": "val mAP"}},
    {"pr": {"template": "by_class", "x": "recall", "y": {"reports/map/pr.csv": "precision"},
            "title": "Precision-recall on the test split, per class and all classes (VOC interpolated)"}},
    {"prf_confidence": {"template": "simple", "x": "confidence",
                        "y": {"reports/map/prf_pooled.csv": ["precision", "recall", "f1"]},
                        "title": "Precision, recall and F1 against confidence (test split, all classes)",
                        "y_label": "precision / recall / F1"}},
)


def stage(name: str) -> Stage:
    """The table entry of stage `name`."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def stage_of_script(script: str, phase: str | None = None) -> Stage:
    """The table entry whose script is `script` (the train script serves two stages, told apart by phase)."""
    matches = [s for s in STAGES if s.script == script]
    if phase is not None:
        matches = [s for s in matches if ("--phase", phase) in s.args]
    if len(matches) != 1:
        raise KeyError(f"{script} (phase {phase}) is not exactly one stage of the table")
    return matches[0]
