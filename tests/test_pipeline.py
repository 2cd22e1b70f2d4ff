"""One stage table is the truth for both orchestrators: dvc.yaml is generated from it, the Snakefile
reads it, code deps are each script's import closure, params are the keys each script declares,
and the training fingerprint derives from the same places. Every test here fails on drift."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from detpipe.pipeline.closure import code_closure
from detpipe.pipeline.dvcfile import render
from detpipe.pipeline.table import STAGES, script_params
from detpipe.pipeline.view import ParamsView, UndeclaredParamError
from detpipe.params import load_params
from tests.conftest import REPO


def test_dvc_yaml_is_generated_from_the_table():
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == render(REPO), (
        "dvc.yaml is out of date: run `python -m detpipe.pipeline`")


def test_every_stage_script_and_library_file_is_a_dep_of_exactly_the_stages_that_import_it():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for s in STAGES:
        deps = stages[s.name]["deps"]
        code = [d for d in deps if d.endswith(".py")]
        assert code == code_closure(s.script, REPO), s.name
        assert s.script in code and stages[s.name]["cmd"] == s.cmd


def _loaded_detpipe_files(script: str) -> set[str]:
    """The detpipe files a script really loads when imported (its main() not run)."""
    probe = (f"import runpy, sys; sys.path.insert(0, {str(REPO)!r}); sys.argv = ['x'];"
             f"runpy.run_path({str(REPO / script)!r}, run_name='not_main');"
             "import json; print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()"
             " if (n == 'detpipe' or n.startswith('detpipe.')) and getattr(m, '__file__', None))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO).stdout
    return {Path(f).resolve().relative_to(REPO).as_posix() for f in json.loads(out.splitlines()[-1])}


@pytest.mark.parametrize("script", sorted({s.script for s in STAGES}))
def test_static_closure_covers_what_python_really_imports(script):
    # An independent reading of the same fact: Python's own import system, not the AST walk.
    assert _loaded_detpipe_files(script) <= set(code_closure(script, REPO))


def test_closure_follows_relative_lazy_and_package_imports(tmp_path):
    pkg = tmp_path / "detpipe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (pkg / "b.py").write_text("from detpipe.sub import leaf\ng = 1\n")
    (pkg / "unused.py").write_text("")
    (tmp_path / "run.py").write_text("from detpipe import a\n")
    assert code_closure("run.py", tmp_path) == ["detpipe/__init__.py", "detpipe/a.py", "detpipe/b.py",
                                                "detpipe/sub/__init__.py", "detpipe/sub/leaf.py", "run.py"]


def test_every_stage_declares_its_params_and_loads_them_through_the_view():
    for s in STAGES:
        keys = script_params(str(REPO / s.script))
        source = (REPO / s.script).read_text(encoding="utf-8")
        if keys:
            assert "load_stage_params(args.params, PARAMS," in source, s.script
        assert "load_params(" not in source.replace("load_stage_params(", ""), (
            f"{s.script} must load params through load_stage_params (the declared keys only)")
        params = load_params(REPO / "params.yaml")
        for key in keys:  # every declared key exists
            node = params
            for part in key.split("."):
                node = getattr(node, part)


def test_view_hands_out_declared_keys_only():
    params = load_params(REPO / "params.yaml")
    view = ParamsView(params, ("lr", "data.classes", "train"), "demo")
    assert view.lr == params.lr and view.data.classes == params.data.classes
    assert view.train.mosaic == params.train.mosaic
    with pytest.raises(UndeclaredParamError, match="stage demo reads params key 'data.root'"):
        view.data.root
    with pytest.raises(UndeclaredParamError, match="'predict'"):
        view.predict
    assert view.declared() == {"lr": params.lr, "data": {"classes": list(params.data.classes)},
                               "train": json.loads(json.dumps(view.declared()["train"]))}


def _snakemake_rules() -> dict:
    from snakemake import api
    from snakemake.settings.types import ResourceSettings
    with api.SnakemakeApi() as sm:
        wf = sm.workflow(resource_settings=ResourceSettings(), snakefile=REPO / "Snakefile", workdir=REPO)
        return {r.name: r for r in wf._workflow.rules}  # parsing the Snakefile is what we test


def _rule_inputs(rule, config) -> set[str]:
    """A rule's input files; an input function from the table is asked for its files (its waiting
    for upstream checkpoints needs a running DAG, so the table function it wraps is called)."""
    from detpipe.pipeline import snake
    files = set()
    for item in rule.input:
        if item.is_callable():
            function = item._file.callable  # Snakemake keeps an input function inside its file object
            assert getattr(function, "stage", None) == rule.name, f"{rule.name} reads another stage's inputs"
            files |= {f for fs in snake.inputs(function.stage, config, REPO).values() for f in fs}
        else:
            files.add(str(item))
    return files


def test_snakefile_runs_the_same_stages_with_the_same_inputs_params_and_outputs():
    from detpipe.pipeline import snake
    rules = _snakemake_rules()
    config = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert set(rules) - {"all"} == {s.name for s in STAGES}
    for s in STAGES:
        rule = rules[s.name]
        assert rule.shellcmd.split(" 2>&1")[0] == dvc[s.name]["cmd"], s.name
        inputs = _rule_inputs(rule, config)
        assert set(code_closure(s.script, REPO)) <= inputs, s.name
        for dep in dvc[s.name]["deps"]:
            if dep.startswith("${"):   # a data folder: every file in it is an input
                root = REPO / config["data"]["root"]
                some = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))[:5]
                assert some and all(p.relative_to(REPO).as_posix() in inputs for p in some), s.name
            else:
                assert dep in inputs, (s.name, dep)
        declared = script_params(str(REPO / s.script))
        assert sorted(rule.params.keys()) == sorted(k.replace(".", "_") for k in declared), s.name
        dvc_outs = {next(iter(o)) if isinstance(o, dict) else o for kind in ("outs", "metrics", "plots")
                    for o in dvc[s.name].get(kind, [])}
        assert {str(f) for f in rule.output} == dvc_outs == {o.path for o in s.outs}, s.name
        # The rules whose rerun often leaves their outputs unchanged are checkpoints, so that an
        # unchanged output stops the reruns there, as with DVC (tests/test_reruns.py shows it).
        assert rule.is_checkpoint == (s.name in snake.CHECKPOINTS), s.name


def test_fingerprint_changes_with_every_declared_train_param_but_the_speed_settings(tmp_path):
    """Derived from the train script's PARAMS: any key added there is covered without editing this test."""
    from detpipe.train import phase as training
    from detpipe.pipeline.view import ParamsView
    from detpipe.params import to_dict
    raw = to_dict(load_params(REPO / "params.yaml"))  # every field, also those left at their defaults
    keys = script_params(str(REPO / "stages/train.py"))
    speed_only = set(training._NOT_IN_FINGERPRINT)
    other_phase = {f"train.{k}" for k in training._OTHER_PHASE["frozen"]}
    inactive = {"train.focal_gamma", "train.focal_alpha", "train.lr_milestones", "train.lr_gamma"}

    def leaves(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, f"{prefix}.{k}" if prefix else k)
        else:
            yield prefix, node

    def fp(doc) -> str:
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        params, _ = training.resolve_recipe(ParamsView(load_params(path), keys, "train_frozen"), [])  # as the stage does
        return training.run_fingerprint(params, training.phase_of(params, "frozen"), [])

    base = fp(raw)
    checked = []
    for key, value in leaves({k: _get(raw, k) for k in keys}, ""):
        if key in speed_only | other_phase | inactive or key in ("model.pretrained", "train.device"):
            continue
        changed = json.loads(json.dumps(raw))
        _set(changed, key, _other(key, value))
        assert fp(changed) != base, f"{key} does not change the training fingerprint"
        checked.append(key)
    assert {"lr", "seed", "model.imgsz", "model.p2", "train.mosaic", "predict.nms_iou", "map.confidence"} <= set(checked)
    for key in speed_only:
        changed = json.loads(json.dumps(raw))
        _set(changed, key, _other(key, _get(raw, key)))
        assert fp(changed) == base, f"{key} should not change the fingerprint (speed only)"


def _get(doc, dotted):
    for part in dotted.split("."):
        doc = doc[part]
    return doc


def _set(doc, dotted, value):
    *head, last = dotted.split(".")
    for part in head:
        doc = doc[part]
    doc[last] = value


def _other(key, value):
    """A different valid value for a params leaf: another choice of a Literal field (read from the
    params models, so a new choice field is covered), else a nearby number, the other bool, ..."""
    import typing
    from detpipe import params as P
    section, _, name = key.rpartition(".")
    model = {"": P.Params, "data": P.DataParams, "split": P.SplitParams, "model": P.ModelParams,
             "train": P.TrainParams, "predict": P.PredictParams, "map": P.MapParams}.get(section)
    field = model.model_fields.get(name) if model is not None else None
    if field is not None and typing.get_origin(field.annotation) is typing.Literal:
        return next(c for c in typing.get_args(field.annotation) if c != value)
    if key == "model.backbone":
        return "resnet18" if value != "resnet18" else "cspdarknet"
    if key == "train.device":
        return "cpu" if value != "cpu" else "auto"
    if value == "auto":  # resolved from the run's inputs (detpipe.recipe): a number is another value
        return 96 if key.endswith("imgsz") else 1
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 32 if key.endswith("imgsz") else value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.1
    if isinstance(value, list):
        return value + ["extra"] if all(isinstance(v, str) for v in value) else [v / 2 for v in value]
    raise AssertionError(f"no other value known for {key} = {value!r}: teach _other")
