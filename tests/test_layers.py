"""The layers of the package, read from the imports (detpipe/pipeline/closure.py), so each test fails
as soon as a new import crosses a layer: lower layers never import higher ones, inference imports no
training module, and each stage's code deps hold only the layers it needs (an edit of the network
must not rerun annotate)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from detpipe.pipeline.closure import code_closure, imported_modules
from detpipe.pipeline.table import STAGES, stage
from tests.conftest import REPO

# The floor plan, bottom up: a module may import its own layer and the ones below. "" is the modules
# directly in detpipe/ (params, catalog, boxes, sizes, atomic, colors, safe_names): every layer uses them.
LAYERS = {
    "": 0, "artifacts": 0, "pipeline": 0,
    "data": 1,
    "model": 2, "metrics": 2,
    "reports": 3,      # renders artifacts and images; inference draws its boxes with it
    "infer": 4,
    "train": 5,        # validates with inference's decoding
    "cli": 6, "__main__": 6,
}
PACKAGE = REPO / "detpipe"


def _layer_name(dotted: str) -> str:
    """detpipe.train.phase -> train; detpipe.params -> "" (a module directly in detpipe/)."""
    parts = dotted.split(".")[1:]
    if not parts:
        return ""
    return parts[0] if (PACKAGE / parts[0]).is_dir() or parts[0] == "__main__" else ""


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _closure_layers(script: str) -> set[str]:
    return {_layer_name(_dotted(REPO / f)) for f in code_closure(script, REPO) if f.startswith("detpipe/")}


def test_every_subpackage_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(LAYERS), f"give {sorted(packages - set(LAYERS))} a place in LAYERS"


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _layer_name(_dotted(path))
        for target in imported_modules(path, REPO):
            there = _layer_name(target)
            if LAYERS[there] > LAYERS[here]:
                upward.append(f"{path.relative_to(REPO)} ({here or 'detpipe'}) imports {target} ({there})")
    assert upward == []


def _inference_entry_points() -> list[str]:
    """The predict stage, every module of detpipe/infer and every CLI command built on it."""
    infer = [p.relative_to(REPO).as_posix() for p in sorted((PACKAGE / "infer").glob("*.py"))]
    cli = [p.relative_to(REPO).as_posix() for p in sorted((PACKAGE / "cli").glob("*.py"))
           if any(f.startswith("detpipe/infer/") for f in code_closure(p.relative_to(REPO), REPO))]
    return [stage("predict").script] + infer + cli


def test_inference_imports_no_training_module():
    entry_points = _inference_entry_points()
    assert {"detpipe/cli/predict.py", "detpipe/cli/export.py", "detpipe/cli/fps.py"} <= set(entry_points)
    leaks = {e: [f for f in code_closure(e, REPO) if f.startswith("detpipe/train/")] for e in entry_points}
    assert {e: f for e, f in leaks.items() if f} == {}


# What each stage's code deps may hold: the data stages no network, the report stages no torch.
NO_NETWORK = {"model", "infer", "train"}
STAGE_LIMITS = {
    "annotate": NO_NETWORK, "split": NO_NETWORK, "pretrained": NO_NETWORK,
    "map": NO_NETWORK, "overfit": NO_NETWORK, "report": NO_NETWORK,
    "predict": {"train"},
    "train_frozen": set(), "train_unfrozen": set(),
}
WITHOUT_TORCH = ("map", "overfit", "report", "annotate", "split")


def test_every_stage_has_limits():
    assert set(STAGE_LIMITS) == {s.name for s in STAGES}


@pytest.mark.parametrize("name", sorted(STAGE_LIMITS))
def test_stage_code_deps_hold_only_the_layers_it_needs(name):
    assert _closure_layers(stage(name).script) & STAGE_LIMITS[name] == set()


def test_params_validation_needs_no_model_code():
    # params.py is in every stage's closure: what it imports, every stage reruns on.
    assert _closure_layers("detpipe/params.py") == {""}


@pytest.mark.parametrize("name", WITHOUT_TORCH)
def test_report_and_data_stages_import_no_torch(name):
    # Python's own import system, not the AST walk: load the script (main() not run) and its closure.
    modules = [_dotted(REPO / f) for f in code_closure(stage(name).script, REPO) if f.startswith("detpipe/")]
    probe = (f"import runpy, sys; sys.path.insert(0, {str(REPO)!r}); sys.argv = ['x'];"
             f"runpy.run_path({str(REPO / stage(name).script)!r}, run_name='not_main');"
             f"import importlib; [importlib.import_module(m) for m in {modules!r}];"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))[:3])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_docs_name_files_and_layers_that_exist():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    named = {p for d in docs for p in re.findall(r"\b((?:detpipe|stages|scripts|bench|tests)/[\w/]+\.py)\b",
                                                 d.read_text(encoding="utf-8"))}
    assert named and sorted(p for p in named if not (REPO / p).is_file()) == []
    text = docs[0].read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):text.index("## Development")]
    assert {n for n in LAYERS if n and n != "__main__"} <= set(re.findall(r"^  (\w+)/ ", layout, re.M))
