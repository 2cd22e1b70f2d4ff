"""dvc.yaml, generated from the stage table (dvc.yaml is YAML and cannot compute its own deps)."""
from __future__ import annotations

from pathlib import Path

import yaml

from .closure import code_closure
from .table import METRICS, PLOTS, STAGES, Stage

HEADER = ("# Generated from detpipe/pipeline/table.py by `python -m detpipe.pipeline`; do not edit by hand.\n"
          "# Code deps are each stage script's import closure inside detpipe/ (tests/test_pipeline.py\n"
          "# fails when this file and the table disagree).\n")


def _out(o) -> str | dict:
    return {o.path: {"cache": False}} if not o.cache else o.path


def stage_entry(s: Stage, root: Path) -> dict:
    entry: dict = {"cmd": s.cmd, "deps": code_closure(s.script, root) + list(s.deps)}
    params = s.params(root)
    if params:
        entry["params"] = list(params)
    for kind in ("outs", "metrics"):
        items = [_out(o) for o in s.outs if o.kind == kind]
        if items:
            entry[kind] = items
    if s.always_changed:
        entry["always_changed"] = True
    return entry


def render(root: str | Path) -> str:
    """The text of dvc.yaml for the repo at `root`."""
    root = Path(root)
    doc = {"stages": {s.name: stage_entry(s, root) for s in STAGES},
           "metrics": list(METRICS), "plots": [dict(p) for p in PLOTS]}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=4096, allow_unicode=True)
