"""The metrics files' contracts: what the map stage writes reads back equal, anything else is a
one-line error naming the file, and DVC's metrics file holds scores only."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from detpipe.artifacts.metrics import ArtifactError, Headline, MapInfo, MapMetrics
from detpipe.metrics.flat import from_lists
from detpipe.reports.map_report import write_reports


@pytest.fixture
def written(tmp_path):
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for _ in range(12):
        boxes = np.tile(rng.uniform(0, 100, (3, 2)), 2) + np.array([0, 0, 30, 30])
        labels = np.array([0, 1, 0])
        gts.append({"boxes": boxes, "labels": labels, "difficult": np.zeros(3, bool)})
        dets.append({"boxes": boxes + rng.normal(0, 3, boxes.shape), "labels": labels, "scores": rng.uniform(0, 1, 3)})
    # class "rare" has no ground truth: its AP is null, not NaN
    returned = write_reports(tmp_path, from_lists(gts, dets), ["a", "b", "rare"], plots=False, warnings=["w"])
    return tmp_path, returned


def test_what_the_map_stage_writes_reads_back_equal(written):
    out, returned = written
    assert MapMetrics.read(out / "metrics.json") == returned
    assert returned.voc.per_class["rare"] is None and 0 <= returned.map50 <= 1
    info = MapInfo.read(out / "info.json")
    assert info.warnings == ["w"] and info.counts.ground_truth == {"a": 24, "b": 12, "rare": 0}


@pytest.mark.parametrize("change, says", [
    (lambda d: d.pop("map50_95"), "missing field 'map50_95'"),
    (lambda d: d.update(seconds=1.0), "unknown field 'seconds'"),
    (lambda d: d["coco"].pop("ARl"), "coco: missing field 'ARl'"),
    (lambda d: d["at_confidence"].update(f1="high"), "at_confidence.f1: expected a number"),
    (lambda d: d.update(voc07="no"), "voc07: expected bool"),
])
def test_reader_refuses_what_the_writer_never_writes(written, change, says):
    out, _ = written
    data = json.loads((out / "metrics.json").read_text())
    change(data)
    (out / "metrics.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError) as err:
        MapMetrics.read(out / "metrics.json")
    msg = str(err.value)
    assert msg.startswith(str(out / "metrics.json")) and says in msg and "rerun the map stage" in msg
    assert "\n" not in msg
    (out / "metrics.json").write_text("{")
    with pytest.raises(ArtifactError, match="not JSON"):
        MapMetrics.read(out / "metrics.json")


def test_dvc_metrics_file_holds_scores_and_the_verdict_only():
    """What `dvc metrics diff` compares: a settings or timing field would show differences between
    identical runs (timings) or duplicate the params columns (settings)."""
    names = [f.name for f in dataclasses.fields(Headline)]
    assert names == ["map50", "map50_95", "precision", "recall", "f1", "best_val_map50", "verdict"]
    hints = {f.name: f.type for f in dataclasses.fields(Headline)}
    assert all(hints[n] == "Score" for n in names if n != "verdict") and hints["verdict"] == "str"
