"""`detpipe compare`: the workspace, the baseline commit and its experiments side by side, in one
table that fits the terminal: each run's headline metrics and only the params that differ.

    detpipe compare            # after `dvc exp run -S lr=1e-4 ...`
    detpipe compare --md       # Markdown, for a pull request or a notebook
    detpipe compare --all-params

It reads `dvc exp show --json` (DVC's own data, so it shows exactly the runs DVC knows) and
keeps what `dvc exp show` cannot fit: DVC gives every key of params.yaml and every stage
dependency a column. Queued, running and failed experiments are listed with their state.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..pipeline.table import METRICS
from .common import prog

METRICS_FILE = METRICS[0]
PARAMS_FILE = "params.yaml"  # its keys are shown bare, as `dvc exp run -S` takes them
# (field of reports/metrics.json, column title); tests check every field exists in `Headline`.
METRIC_COLUMNS = (("map50", "mAP50"), ("map50_95", "mAP50-95"), ("precision", "P"), ("recall", "R"),
                  ("f1", "F1"), ("verdict", "verdict"))
GAP = "  "


class CompareError(ValueError):
    """DVC's output lacks something the table needs, or DVC failed; the message is one line."""


@dataclass(frozen=True)
class Run:
    """One row: the workspace, a baseline commit or an experiment."""

    name: str
    rev: str                        # short sha; "" for the workspace
    state: str                      # "success", or DVC's "queued", "running", "failed", or "error"
    params: dict[str, Any]          # dotted keys
    metrics: Optional[dict[str, Any]]  # reports/metrics.json, None when the run has none


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"mosaic": 0.5}} -> {"train.mosaic": 0.5}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _files(data: dict[str, Any], section: str, where: str) -> dict[str, Any]:
    """The {file: {"data": ...}} part of an entry's data; a file DVC could not read has "error"."""
    files = data.get(section)
    if files is None:
        return {}
    if not isinstance(files, dict):
        raise CompareError(f"`dvc exp show --json`: {where}: `{section}` is not an object")
    return {path: entry.get("data") for path, entry in files.items() if isinstance(entry, dict)}


def _params(data: dict[str, Any], where: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for path, tree in _files(data, "params", where).items():
        if isinstance(tree, dict):
            params.update(flatten(tree, "" if path == PARAMS_FILE else f"{path}:"))
    return params


def _metrics(data: dict[str, Any], where: str) -> Optional[dict[str, Any]]:
    headline = _files(data, "metrics", where).get(METRICS_FILE)
    if headline is None:
        return None
    missing = [key for key, _ in METRIC_COLUMNS if key not in headline]
    if missing:
        raise CompareError(f"`dvc exp show --json`: {where}: {METRICS_FILE} has no {', '.join(missing)} "
                           f"(written by an older detpipe? rerun `dvc repro`)")
    return headline


def _run(entry: dict[str, Any], name: Optional[str], state: str) -> Run:
    if not isinstance(entry, dict) or not isinstance(entry.get("rev"), str):
        raise CompareError(f"`dvc exp show --json`: an entry has no `rev` (got {str(entry)[:60]!r})")
    rev = entry["rev"]
    label = name or entry.get("name") or ("workspace" if rev == "workspace" else rev[:7])
    where = f"run {label!r}"
    data = entry.get("data")
    if entry.get("error") and state == "success":
        state = "error"
    short = "" if rev == "workspace" else rev[:7]
    if not isinstance(data, dict):
        return Run(label, short, state, {}, None)
    metrics = _metrics(data, where) if state == "success" else None
    return Run(label, short, state, _params(data, where), metrics)


def parse_exp_show(shown: Any) -> list[Run]:
    """`dvc exp show --json` (a list of commits, each with its experiments) -> rows, in DVC's order."""
    if not isinstance(shown, list):
        raise CompareError("`dvc exp show --json` did not print a list of runs")
    runs = []
    for commit in shown:
        runs.append(_run(commit, None, "success"))
        for group in (commit.get("experiments") or []) if isinstance(commit, dict) else []:
            revs = group.get("revs") if isinstance(group, dict) else None
            if not revs:
                raise CompareError("`dvc exp show --json`: an experiment has no `revs`")
            executor = group.get("executor") or {}
            runs.append(_run(revs[0], group.get("name"), executor.get("state") or "success"))
    return runs


def differing_params(runs: list[Run]) -> list[str]:
    """The params whose values are not the same in every run that has params (a key missing from
    some runs differs), in first-seen order."""
    with_params = [run.params for run in runs if run.params]
    keys = list(dict.fromkeys(key for params in with_params for key in params))
    missing = object()
    return [key for key in keys
            if len({json.dumps(p.get(key, missing), default=repr, sort_keys=True) for p in with_params}) > 1]


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e-3 or value == round(value, 4) else f"{value:.4f}"
    return json.dumps(value)


def columns(runs: list[Run], keys: list[str]) -> list[tuple[str, list[str]]]:
    """(title, cells) of every column after the run's name and rev."""
    cols = []
    for key, title in METRIC_COLUMNS:
        cells = []
        for run in runs:
            if run.metrics is None:
                cells.append(("no metrics" if run.state == "success" else run.state) if key == "verdict" else "-")
            else:
                value = run.metrics[key]
                cells.append("-" if value is None else
                             (f"{value:.4f}" if isinstance(value, float) else str(value)))
        cols.append((title, cells))
    cols += [(key, [format_value(run.params[key]) if key in run.params else "-" for run in runs]) for key in keys]
    return cols


def _wrap_title(title: str, width: int) -> list[str]:
    """A dotted key over several lines, broken after its dots, each line at most `width` if it can."""
    lines = [""]
    for part in title.replace(".", ".\n").split("\n"):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return lines


def _abbreviate(text: str, width: int) -> str:
    """Keep the head and tail of a long name: `no-mosaic-long-run` -> `no-mos..ng-run`."""
    if len(text) <= width:
        return text
    head = (width - 2 + 1) // 2
    return text[:head] + ".." + text[len(text) - (width - 2 - head):]


def render_text(runs: list[Run], keys: list[str], width: int) -> str:
    """Plain-text table no wider than `width`: columns that do not fit continue in a second block
    below (the run names repeated); dotted param titles wrap after their dots."""
    name_w = min(max(len("run"), *(len(r.name) for r in runs)), max(8, width // 5))
    names = [_abbreviate(r.name, name_w) for r in runs]
    lead = [("run", names), ("rev", [r.rev for r in runs])]
    lead_w = sum(max(len(t), *map(len, c)) for t, c in lead) + len(GAP)
    blocks: list[list[tuple[list[str], list[str], int]]] = [[]]
    used = lead_w
    for title, cells in columns(runs, keys):
        value_w = max(map(len, cells))
        cell_w = max(value_w, min(len(title), max(value_w, 6)))
        title_lines = _wrap_title(title, cell_w)
        col_w = max(cell_w, *map(len, title_lines))
        if blocks[-1] and used + len(GAP) + col_w > width:
            blocks.append([])
            used = lead_w
        blocks[-1].append((title_lines, [c[:col_w] for c in cells], col_w))
        used += len(GAP) + col_w
    out: list[str] = []
    for block in blocks:
        height = max(len(t) for t, _, _ in block)
        lead_cols = [([""] * (height - 1) + [t], c, max(len(t), *map(len, c))) for t, c in lead]
        cols = lead_cols + [([""] * (height - len(t)) + t, c, w) for t, c, w in block]
        right = [j >= len(lead) and all(_numeric(cell) for cell in c) for j, (_, c, _) in enumerate(cols)]
        if out:
            out.append("")
        for i in range(height):
            out.append(GAP.join(_cell(t[i], w, right[j]) for j, (t, _, w) in enumerate(cols)).rstrip())
        out.append(GAP.join("-" * w for _, _, w in cols))
        for r in range(len(runs)):
            out.append(GAP.join(_cell(c[r], w, right[j]) for j, (_, c, w) in enumerate(cols)).rstrip())
    return "\n".join(out)


def _numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell == "-"
    return True


def _cell(text: str, width: int, right: bool) -> str:
    return text.rjust(width) if right else text.ljust(width)


def render_markdown(runs: list[Run], keys: list[str]) -> str:
    cols = [("run", [r.name for r in runs]), ("rev", [r.rev for r in runs])] + columns(runs, keys)
    lines = ["| " + " | ".join(t for t, _ in cols) + " |",
             "|" + "|".join("---" if i < 2 else "--:" for i in range(len(cols))) + "|"]
    lines += ["| " + " | ".join(c[r].replace("|", "\\|") for _, c in cols) + " |" for r in range(len(runs))]
    return "\n".join(lines)


def dvc_exp_show(cwd: Path) -> Any:
    """The parsed output of `dvc exp show --json` run in `cwd`; CompareError (one line) otherwise."""
    if not any((folder / ".dvc").is_dir() for folder in (cwd, *cwd.parents)):
        raise CompareError(f"{cwd} is not inside a DVC repository (no .dvc folder here or above): "
                           "run it in the project folder")
    try:
        proc = subprocess.run(["dvc", "exp", "show", "--json"], cwd=cwd, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise CompareError("`dvc` is not on PATH: install it (`pip install dvc`) or activate the venv") from None
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        why = next((line for line in errors if line.startswith("ERROR")), errors[-1] if errors else "no message")
        raise CompareError(f"`dvc exp show --json` failed ({proc.returncode}): {why}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise CompareError(f"`dvc exp show --json` printed no JSON ({exc})") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("compare"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--md", action="store_true", help="print a Markdown table (no width limit)")
    p.add_argument("--all-params", action="store_true", help="every param, not only those that differ")
    p.add_argument("--width", type=int, help="table width (default: the terminal's, $COLUMNS)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.width is not None and args.width < 30:
        parser.error(f"--width {args.width}: give at least 30 columns")
    try:
        runs = parse_exp_show(dvc_exp_show(Path.cwd()))
    except CompareError as exc:
        print(f"{prog('compare')}: {exc}", file=sys.stderr)
        return 1
    if not runs:
        print(f"{prog('compare')}: DVC knows no runs here: commit a `dvc repro`, then `dvc exp run -S lr=1e-4`",
              file=sys.stderr)
        return 1
    keys = (list(dict.fromkeys(k for r in runs for k in r.params)) if args.all_params
            else differing_params(runs))
    if args.md:
        print(render_markdown(runs, keys))
    else:
        print(render_text(runs, keys, args.width or shutil.get_terminal_size().columns))
    return 0

