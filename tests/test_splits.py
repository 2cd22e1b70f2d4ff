"""Splits: seeded, sized by the fractions, disjoint, stratified so every class reaches every split;
ImageSets; the distribution comparison; the split stage end to end."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detpipe.annotations import Record, read_lines, write_lines
from detpipe.split_report import compare_splits, size_bucket_counts, split_stats
from detpipe.splits import SplitError, imagesets_split, split_records, stratified_assign, target_sizes

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle", "star"]


def rec(path: str, labels: list[int], side: float = 20.0) -> Record:
    boxes = np.array([[0, 0, side, side]] * len(labels), dtype=np.float64).reshape(-1, 4)
    return Record(path, boxes, np.array(labels, dtype=np.int64), np.zeros(len(labels), dtype=bool))


def random_records(n: int, seed: int, n_classes: int = 4) -> list[Record]:
    rng = random.Random(seed)
    return [rec(f"img {i} 图.jpg", rng.sample(range(n_classes), rng.randint(0, 2))) for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 100, 1001])
def test_target_sizes_sum_and_cover(n):
    sizes = target_sizes(n, (0.7, 0.15, 0.15))
    assert sum(sizes) == n
    if n >= 3:
        assert min(sizes) >= 1


def test_bad_fractions():
    with pytest.raises(SplitError, match="sum to 1"):
        target_sizes(10, (0.8, 0.15, 0.15))


@pytest.mark.parametrize("seed", range(5))
def test_split_invariants(seed):
    records = random_records(200, seed)
    splits = split_records(records, 4, (0.7, 0.15, 0.15), seed)
    paths = [[r.path for r in splits[s]] for s in ("train", "val", "test")]
    assert [len(p) for p in paths] == target_sizes(200, (0.7, 0.15, 0.15))
    assert sorted(sum(paths, [])) == sorted(r.path for r in records)          # a partition
    assert not set(paths[1]) & set(paths[2])                                  # val and test distinct
    for c in range(4):
        assert all(any(c in r.labels for r in splits[s]) for s in splits)


def test_rare_class_reaches_every_split():
    records = [rec(f"c{i}", [0]) for i in range(60)] + [rec(f"r{i}", [1]) for i in range(3)]
    splits = split_records(records, 2, (0.7, 0.15, 0.15), 0)
    assert all(sum(1 in r.labels for r in splits[s]) == 1 for s in splits)


def test_stratification_keeps_class_shares():
    records = [rec(f"a{i}", [0]) for i in range(400)] + [rec(f"b{i}", [1]) for i in range(100)]
    splits = split_records(records, 2, (0.6, 0.2, 0.2), 3)
    for s, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert abs(sum(1 in r.labels for r in splits[s]) - 100 * frac) <= 1


def test_seeded_and_deterministic():
    labels = [set(r.labels.tolist()) for r in random_records(150, 1)]
    a = stratified_assign(labels, 4, (0.7, 0.15, 0.15), 7)
    assert (a == stratified_assign(labels, 4, (0.7, 0.15, 0.15), 7)).all()
    assert (a != stratified_assign(labels, 4, (0.7, 0.15, 0.15), 8)).any()


def test_empty_and_duplicates():
    assert {k: len(v) for k, v in split_records([], 4, (0.7, 0.15, 0.15), 0).items()} == {"train": 0, "val": 0, "test": 0}
    with pytest.raises(SplitError, match="more than once"):
        split_records([rec("a", [0]), rec("a", [1])], 4, (0.7, 0.15, 0.15), 0)


def test_imagesets(tmp_path):
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("a\nb\n")
    (main / "val.txt").write_text("c\nghost\n")
    (main / "test.txt").write_text("d  1\n")
    records = [rec(f"JPEGImages/{s}.jpg", [0]) for s in "abcde"]
    splits, warnings = imagesets_split(records, tmp_path)
    assert [[Path(r.path).stem for r in splits[s]] for s in ("train", "val", "test")] == [["a", "b"], ["c"], ["d"]]
    assert any("ghost" in w for w in warnings) and any("e.jpg" in w for w in warnings)
    (main / "test.txt").write_text("a\n")
    with pytest.raises(SplitError, match="both train.txt and test.txt"):
        imagesets_split(records, tmp_path)


def test_box_size_buckets():
    records = [rec("a", [0], side=10), rec("b", [0, 0], side=50), rec("c", [0], side=200), rec("d", [])]
    assert size_bucket_counts(records) == [1, 2, 1]


def test_easy_train_hard_val_is_flagged():
    train = [rec(f"t{i}", [i % 4], side=200) for i in range(100)]
    val = [rec(f"v{i}", [i % 4], side=10) for i in range(40)]
    stats = {"train": split_stats(train, CLASSES), "val": split_stats(val, CLASSES), "test": split_stats(train[:40], CLASSES)}
    cmp = compare_splits(stats, 0.25)
    assert cmp["val"]["flagged"] and "box-size" in cmp["val"]["reason"] and not cmp["test"]["flagged"]


def _run_split(tmp_path: Path, records: list[Record], extra: str = "") -> subprocess.CompletedProcess:
    params = (REPO / "params.yaml").read_text(encoding="utf-8") + extra
    (tmp_path / "params.yaml").write_text(params, encoding="utf-8")
    write_lines(tmp_path / "data" / "annotations.txt", records)
    cmd = [sys.executable, str(REPO / "stages" / "split.py"), "--params", "params.yaml",
           "--annotations", "data/annotations.txt", "--out-dir", "data/splits 分割",
           "--report", "reports/data/split.json", "--plot", "reports/data/split.png"]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)


def test_split_stage_end_to_end(tmp_path):
    records = random_records(120, 0)
    proc = _run_split(tmp_path, records)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "data" / "splits 分割"
    parts = {s: read_lines(out / f"{s}.txt") for s in ("train", "val", "test")}
    assert sum(len(v) for v in parts.values()) == 120
    report = json.loads((tmp_path / "reports/data/split.json").read_text(encoding="utf-8"))
    assert report["splits"]["val"]["images"] == len(parts["val"]) and "seconds" in report
    assert set(report["splits"]["train"]["box_sizes"]) == {"small", "medium", "large"}
    assert (tmp_path / "reports/data/split.png").stat().st_size > 10_000
    assert proc.stdout.startswith("split: train")


def test_split_stage_rejects_foreign_class_indices(tmp_path):
    proc = _run_split(tmp_path, [rec("a", [9])] * 1)
    assert proc.returncode == 1 and "class indices [9]" in proc.stderr
