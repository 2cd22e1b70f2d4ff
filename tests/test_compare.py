"""`detpipe compare` on real `dvc exp show --json` output (tests/data/exp_show/: tiny.json from
make_tiny.sh, with a failed and a queued experiment; demo.json captured from the demo with its two
experiments, README "Experiments")."""
from __future__ import annotations

import copy
import json
from dataclasses import fields
from pathlib import Path

import pytest

from detpipe.artifacts.metrics import Headline
from detpipe.cli import compare
from detpipe.pipeline.table import METRICS

DATA = Path(__file__).parent / "data" / "exp_show"


def load(name: str):
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def reference_differing(shown) -> set[str]:
    """Plain reference: walk each run's params.yaml with an explicit stack, compare every leaf
    across all runs that have params."""
    entries = []
    for commit in shown:
        entries.append(commit)
        entries += [group["revs"][0] for group in commit.get("experiments") or []]
    leaves = []
    for entry in entries:
        tree = ((entry.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data")
        if not tree:
            continue
        found, stack = {}, [((), tree)]
        while stack:
            path, node = stack.pop()
            if isinstance(node, dict) and node:
                stack += [(path + (k,), v) for k, v in node.items()]
            else:
                found[".".join(path)] = node
        leaves.append(found)
    keys = set().union(*leaves)
    return {k for k in keys if any(a.get(k, "<missing>") != b.get(k, "<missing>") for a in leaves for b in leaves)}


def test_metric_columns_are_the_headline_contract():
    assert {key for key, _ in compare.METRIC_COLUMNS} <= {f.name for f in fields(Headline)}
    assert compare.METRICS_FILE in METRICS


def test_parse_tiny_with_failed_and_queued():
    shown = load("tiny.json")
    runs = compare.parse_exp_show(shown)
    assert [r.name for r in runs] == ["workspace", "master", "no-mosaic", "lr-half", "later", "broken"]
    assert [r.state for r in runs] == ["success"] * 4 + ["queued", "failed"]
    assert runs[0].rev == "" and runs[1].rev == shown[1]["rev"][:7]
    assert runs[1].metrics == shown[1]["data"]["metrics"]["reports/metrics.json"]["data"]
    assert runs[4].metrics is None and runs[5].metrics is None
    assert runs[5].params["lr"] == -1 and runs[4].params["train.epochs"] == 10


@pytest.mark.parametrize("name", ["tiny.json", "demo.json"])
def test_differing_params_match_reference(name):
    shown = load(name)
    runs = compare.parse_exp_show(shown)
    assert set(compare.differing_params(runs)) == reference_differing(shown)
    assert len(compare.differing_params(runs)) == len(set(compare.differing_params(runs)))


def test_demo_differs_in_lr_and_mosaic_only():
    runs = compare.parse_exp_show(load("demo.json"))
    assert compare.differing_params(runs) == ["lr", "train.mosaic"]
    assert len(runs[0].params) > 80  # every knob is in params.yaml; only two reach the table


@pytest.mark.parametrize("name", ["tiny.json", "demo.json"])
@pytest.mark.parametrize("width", [40, 80, 120])
def test_table_fits_and_shows_everything(name, width):
    shown = load(name)
    runs = compare.parse_exp_show(shown)
    keys = compare.differing_params(runs)
    text = compare.render_text(runs, keys, width)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width, text
    assert "…" not in text
    for run in runs:
        if width >= 80:
            assert any(line.startswith(run.name + " ") for line in lines), (run.name, text)
        if run.metrics:
            assert f"{run.metrics['map50']:.4f}" in text and run.metrics["verdict"] in text
        else:
            assert run.state in text
    for key in keys:  # dotted titles wrap after their dots: every part is there
        assert all(part in text for part in key.split(".")), (key, text)


def test_demo_at_120_is_one_table():
    runs = compare.parse_exp_show(load("demo.json"))
    text = compare.render_text(runs, compare.differing_params(runs), 120)
    assert "" not in text.splitlines()  # no second block: metrics and params side by side
    header = " ".join(text.splitlines()[:2]).split()
    assert {"mAP50", "mAP50-95", "lr", "mosaic"} <= set(header) and header.index("mAP50") < header.index("lr")


def test_markdown_and_all_params():
    runs = compare.parse_exp_show(load("demo.json"))
    every = list(dict.fromkeys(k for r in runs for k in r.params))
    md = compare.render_markdown(runs, every).splitlines()
    assert len(md) == 2 + len(runs)
    assert {"train.mosaic", "seed", "mAP50"} <= {c.strip() for c in md[0].split("|")}
    assert all(line.count("|") == md[0].count("|") for line in md)


def test_missing_metric_field_is_one_line_error():
    shown = load("tiny.json")
    broken = copy.deepcopy(shown)
    del broken[1]["data"]["metrics"]["reports/metrics.json"]["data"]["map50_95"]
    with pytest.raises(compare.CompareError, match=r"'master'.*reports/metrics.json has no map50_95"):
        compare.parse_exp_show(broken)
    no_rev = copy.deepcopy(shown)
    del no_rev[0]["rev"]
    with pytest.raises(compare.CompareError, match="no `rev`"):
        compare.parse_exp_show(no_rev)
    with pytest.raises(compare.CompareError, match="list"):
        compare.parse_exp_show({"rev": "workspace"})


def test_outside_dvc_repo_and_dvc_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert compare.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not inside a DVC repository" in err and "Traceback" not in err
    (tmp_path / ".dvc").mkdir()  # a .dvc folder but no git: DVC itself fails
    assert compare.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`dvc exp show --json` failed" in err and "git" in err


def test_readme_shows_the_demo_table():
    """The README's output is this command's on the committed demo JSON (no hand edits)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ COLUMNS=120 detpipe compare\n", 1)[1].split("```", 1)[0].rstrip("\n")
    runs = compare.parse_exp_show(load("demo.json"))
    assert block == compare.render_text(runs, compare.differing_params(runs), 120)
