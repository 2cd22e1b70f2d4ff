"""What the Snakefile needs from the stage table: each rule's inputs, outputs, params and command.

Snakemake reruns a rule when an input is newer than its outputs (and its content differs from the
run recorded in .snakemake/metadata, for files up to `max-checksum-file-size`), when its set of
inputs changes, or when its params change. So the inputs are the stage's code closure and every
data file (a folder dep is expanded to the files in it: a folder's own time does not change when a
file inside does), and the params are the values of the keys the stage script declares.

Within one run, Snakemake plans every rule downstream of a rule it reruns, before knowing whether
that rule's outputs change. DVC instead looks again after each stage, so an unchanged result stops
there. To do the same where a rerun often changes nothing and much follows — annotate and split (a
code edit, a changed test image), pretrained (runs every time under DVC) — those rules are
Snakemake checkpoints, and the rules after them take their inputs from a function
that first waits for them: after a checkpoint, Snakemake re-evaluates what is left, comparing the
recorded content of the inputs. (A training phase that reruns writes new weights, so nothing is
gained there.)
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .closure import code_closure
from .table import Stage, stage

_TEMPLATE = re.compile(r"\$\{([^}]+)\}")


def lookup(config: dict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def expand(path: str, config: dict) -> list[str]:
    """A table dep as files: `${key}` filled in from params.yaml; a folder as the files under it
    (hidden files and folders left out, sorted)."""
    path = _TEMPLATE.sub(lambda m: str(lookup(config, m.group(1))), path)
    if not os.path.isdir(path):
        return [path]
    files = []
    for folder, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(os.path.join(folder, n) for n in sorted(names) if not n.startswith("."))
    return files


def _produced(s: Stage) -> set[str]:
    return {o.path for o in s.outs}


def inputs(name: str, config: dict, root: str | Path = ".") -> dict[str, list[str]]:
    """{"code": the script's import closure, "data": the data files} of stage `name`.

    A dep that another stage writes as a folder (reports/predictions) stays a folder, so Snakemake
    links the rules; a dep naming a source folder (data.root) becomes its files."""
    s = stage(name)
    from .table import STAGES
    produced = set().union(*(_produced(o) for o in STAGES))
    data: list[str] = []
    for dep in s.deps:
        data.extend([dep] if dep in produced else expand(dep, config))
    return {"code": code_closure(s.script, root), "data": data}


CHECKPOINTS = ("annotate", "split", "pretrained")


def upstream(name: str) -> list[str]:
    """The stages whose outputs stage `name` reads, in table order."""
    from .table import STAGES
    deps = set(stage(name).deps)
    return [s.name for s in STAGES if s.name != name and deps & {o.path for o in s.outs}]


def upstream_checkpoints(name: str) -> list[str]:
    """The checkpoints among the stages whose outputs `name` reads, and among theirs (a rule waits
    for every checkpoint it depends on, however indirectly: its inputs can only be known then)."""
    seen, todo, out = set(), list(upstream(name)), []
    while todo:
        up = todo.pop(0)
        if up in seen:
            continue
        seen.add(up)
        if up in CHECKPOINTS:
            out.append(up)
        todo.extend(upstream(up))
    return out


def inputs_after(name: str, config: dict, checkpoints: Any, root: str | Path = "."):
    """An input function for the Snakefile: waits for the upstream checkpoints, then gives `inputs`."""
    def function(wildcards) -> dict[str, list[str]]:
        for up in upstream_checkpoints(name):
            getattr(checkpoints, up).get()
        return inputs(name, config, root)
    function.stage = name  # for tests: which table entry this rule reads
    return function


def outputs(name: str) -> dict[str, Any]:
    """Output name -> path (folders wrapped in Snakemake's `directory`)."""
    from snakemake.io import directory

    return {_key(o.path): directory(o.path) if o.directory else o.path for o in stage(name).outs}


def params(name: str, config: dict, root: str | Path = ".") -> dict[str, Any]:
    """The values of the params keys the stage reads (keys with dots become underscores)."""
    return {key.replace(".", "_"): lookup(config, key) for key in stage(name).params(root)}


def shell(name: str) -> str:
    """The stage's command, its output also written to the rule's log."""
    return stage(name).cmd + " 2>&1 | tee {log:q}"


def _key(path: str) -> str:
    return re.sub(r"\W", "_", Path(path).name)


def pretrained_file(config: dict) -> list[str]:
    """The file model.pretrained names, if it names one (DVC's pretrained stage instead runs always)."""
    spec = str(config.get("model", {}).get("pretrained", "none"))
    return [spec] if spec not in ("", "none", "imagenet", "coco") else []
