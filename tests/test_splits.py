"""Splits: stable (an image keeps its split whatever else changes), seeded, sized by the fractions in
expectation, disjoint, every class in every split; ImageSets; the distribution comparison; the split
stage end to end with its per-split image hashes."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detpipe.data.annotations import Record, read_lines, write_lines
from detpipe.reports.split_check import compare_splits, size_bucket_counts, split_stats
from detpipe.artifacts.image_manifest import read_manifest, write_manifest
from detpipe.data.splits import SplitError, imagesets_split, split_key, split_records

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle", "star"]


def rec(path: str, labels: list[int], side: float = 20.0) -> Record:
    boxes = np.array([[0, 0, side, side]] * len(labels), dtype=np.float64).reshape(-1, 4)
    return Record(path, boxes, np.array(labels, dtype=np.int64), np.zeros(len(labels), dtype=bool))


def random_records(n: int, seed: int, n_classes: int = 4) -> list[Record]:
    rng = random.Random(seed)
    return [rec(f"img {i} 图.jpg", rng.sample(range(n_classes), rng.randint(0, 2))) for i in range(n)]


def _paths(splits) -> list[list[str]]:
    return [[r.path for r in splits[s]] for s in ("train", "val", "test")]


def test_bad_fractions():
    with pytest.raises(SplitError, match="sum to 1"):
        split_records(random_records(10, 0), 4, (0.8, 0.15, 0.15), 0)


@pytest.mark.parametrize("seed", range(5))
def test_split_invariants(seed):
    records = random_records(200, seed)
    splits, _ = split_records(records, 4, (0.7, 0.15, 0.15), seed)
    paths = _paths(splits)
    assert sorted(sum(paths, [])) == sorted(r.path for r in records)          # a partition
    assert not set(paths[1]) & set(paths[2])                                  # val and test distinct
    for c in range(4):
        assert all(any(c in r.labels for r in splits[s]) for s in splits)
    order = [r.path for r in records]
    assert all(p == sorted(p, key=order.index) for p in paths)               # input order kept


def test_an_image_keeps_its_split_when_others_are_added_or_removed():
    records = random_records(300, 1)
    before, _ = split_records(records, 4, (0.7, 0.15, 0.15), 0)
    where = {r.path: s for s in before for r in before[s]}
    changed = records[40:] + [rec(f"new {i}.jpg", [i % 4]) for i in range(25)]    # 40 gone, 25 new
    after, notes = split_records(changed, 4, (0.7, 0.15, 0.15), 0)
    assert not notes
    moved = [r.path for s in after for r in after[s] if r.path in where and where[r.path] != s]
    assert moved == []


def test_the_split_follows_the_image_not_the_dataset_folder():
    a = [rec(f"data/old/JPEGImages/{i}.jpg", [i % 2]) for i in range(50)]
    b = [rec(f"elsewhere/new/JPEGImages/{i}.jpg", [i % 2]) for i in range(50)]
    sa, _ = split_records(a, 2, (0.7, 0.15, 0.15), 3, root="data/old")
    sb, _ = split_records(b, 2, (0.7, 0.15, 0.15), 3, root="elsewhere/new")
    assert [[Path(p).name for p in ps] for ps in _paths(sa)] == [[Path(p).name for p in ps] for ps in _paths(sb)]


def test_split_sizes_follow_the_fractions_in_expectation():
    records = [rec(f"{i}.jpg", [0]) for i in range(4000)]
    splits, _ = split_records(records, 1, (0.6, 0.25, 0.15), 11)
    for s, frac in (("train", 0.6), ("val", 0.25), ("test", 0.15)):
        sd = (4000 * frac * (1 - frac)) ** 0.5
        assert abs(len(splits[s]) - 4000 * frac) < 4 * sd, (s, len(splits[s]))
    assert split_records(records, 1, (1.0, 0.0, 0.0), 0)[0]["val"] == []     # a closed split stays empty


def test_split_key_is_uniform_and_seeded():
    keys = np.array([split_key(f"img{i}.jpg", 0) for i in range(20000)])
    assert ((0 <= keys) & (keys < 1)).all()
    assert abs(np.histogram(keys, bins=10, range=(0, 1))[0] / 2000 - 1).max() < 0.1
    assert split_key("a.jpg", 0) == split_key("a.jpg", 0) != split_key("a.jpg", 1)


def test_rare_class_reaches_every_split_with_the_moves_listed():
    records = [rec(f"c{i}", [0]) for i in range(60)] + [rec(f"r{i}", [1]) for i in range(3)]
    for seed in range(20):
        splits, notes = split_records(records, 2, (0.7, 0.15, 0.15), seed)
        assert all(sum(1 in r.labels for r in splits[s]) == 1 for s in splits)
        assert all("so that every class reaches" in n and n.startswith("r") for n in notes)
    # Two images cannot reach three splits: nothing is forced.
    splits, notes = split_records(records[:62], 2, (0.7, 0.15, 0.15), 0)
    assert sum(1 in r.labels for s in splits for r in splits[s]) == 2


def test_seeded_and_deterministic():
    records = random_records(150, 1)
    a, _ = split_records(records, 4, (0.7, 0.15, 0.15), 7)
    assert _paths(a) == _paths(split_records(records, 4, (0.7, 0.15, 0.15), 7)[0])
    assert _paths(a) != _paths(split_records(records, 4, (0.7, 0.15, 0.15), 8)[0])


def test_empty_and_duplicates():
    empty, _ = split_records([], 4, (0.7, 0.15, 0.15), 0)
    assert {k: len(v) for k, v in empty.items()} == {"train": 0, "val": 0, "test": 0}
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


def test_box_size_buckets_agree_with_pycocotools_area_ranges():
    """The split report's small/medium/large are the mAP stage's: pycocotools' areaRng
    [0, 32²], [32², 96²], [96², 1e10] (inclusive both ends). Off an end a box is in exactly one range
    and the report's bucket must be it; on a shared end (32², 96²) it must be one of the two."""
    rng = np.random.default_rng(0)
    sides = np.concatenate([rng.uniform(1, 200, 300), [32.0, 96.0, np.nextafter(32.0, 0), np.nextafter(96.0, 200)]])
    ranges = [(0.0, 32.0 ** 2), (32.0 ** 2, 96.0 ** 2), (96.0 ** 2, 1e10)]
    for side in sides:
        counts = size_bucket_counts([rec("a", [0], side=float(side))])
        bucket = counts.index(1)
        inside = [i for i, (lo, hi) in enumerate(ranges) if lo <= side * side <= hi]
        assert bucket in inside, (side, bucket, inside)


def test_easy_train_hard_val_is_flagged():
    train = [rec(f"t{i}", [i % 4], side=200) for i in range(100)]
    val = [rec(f"v{i}", [i % 4], side=10) for i in range(40)]
    stats = {"train": split_stats(train, CLASSES, {}), "val": split_stats(val, CLASSES, {}),
             "test": split_stats(train[:40], CLASSES, {})}
    cmp = compare_splits(stats, 0.25)
    assert cmp["val"].flagged and "box-size" in cmp["val"].reason and not cmp["test"].flagged


def _run_split(tmp_path: Path, records: list[Record], extra: str = "") -> subprocess.CompletedProcess:
    params = (REPO / "params.yaml").read_text(encoding="utf-8") + extra
    (tmp_path / "params.yaml").write_text(params, encoding="utf-8")
    write_lines(tmp_path / "data" / "annotations.txt", records)
    write_manifest(tmp_path / "data" / "images.sha256", {r.path: f"{i:064x}" for i, r in enumerate(records)})
    cmd = [sys.executable, str(REPO / "stages" / "split.py"), "--params", "params.yaml",
           "--annotations", "data/annotations.txt", "--images", "data/images.sha256", "--out-dir", "data/splits 分割",
           "--report", "reports/data/split.json", "--plot", "reports/data/split.png"]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)


def test_split_stage_end_to_end(tmp_path):
    records = random_records(120, 0)
    proc = _run_split(tmp_path, records)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "data" / "splits 分割"
    parts = {s: read_lines(out / f"{s}.txt") for s in ("train", "val", "test")}
    assert sum(len(v) for v in parts.values()) == 120
    for name, lines in parts.items():   # each split's hashes are those of its images, in its order
        hashes = read_manifest(out / f"{name}.sha256")
        assert list(hashes) == [r.path for r in lines]
        assert all(int(hashes[r.path], 16) == records.index(next(x for x in records if x.path == r.path))
                   for r in lines)
    report = json.loads((tmp_path / "reports/data/split.json").read_text(encoding="utf-8"))
    assert report["splits"]["val"]["images"] == len(parts["val"]) and "seconds" not in report
    assert set(report["splits"]["train"]["box_sizes"]) == {"small", "medium", "large"}
    # the records name no real files: counted in a warning, never a traceback
    assert report["splits"]["train"]["object_scale"]["objects"] == 0
    assert any("120 image(s) could not be opened for their size" in w for w in report["warnings"])
    assert (tmp_path / "reports/data/split.png").stat().st_size > 10_000
    assert proc.stdout.startswith("split: train")


def test_split_stage_rejects_foreign_class_indices(tmp_path):
    proc = _run_split(tmp_path, [rec("a", [9])] * 1)
    assert proc.returncode == 1 and "class indices [9]" in proc.stderr


def test_object_scale_from_image_headers(tmp_path):
    """Medians of √(w·h) / longer side equal a loop over the objects, with image sizes from the
    headers (an EXIF-rotated photo has the same longer side); an unreadable image leaves its
    objects out and is reported as None."""
    from PIL import Image

    from detpipe.data.images import DEFAULT_LIMIT, longer_sides
    from detpipe.reports.split_check import object_scale

    sizes = {"wide.jpg": (640, 480), "tall.png": (300, 900), "tiny.bmp": (64, 64)}
    for name, wh in sizes.items():
        Image.new("RGB", wh).save(tmp_path / name)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths = [str(tmp_path / n) for n in [*sizes, "broken.jpg"]]
    longer = longer_sides(paths, DEFAULT_LIMIT)
    assert [longer[p] for p in paths] == [640, 900, 64, None]
    boxes = {paths[0]: [[0, 0, 10, 40], [5, 5, 205, 105]], paths[1]: [[0, 0, 30, 30]],
             paths[2]: [[1, 1, 9, 3], [0, 0, 64, 64]], paths[3]: [[0, 0, 5, 5]]}
    records = [Record(p, np.array(b, float), np.zeros(len(b), np.int64), np.zeros(len(b), bool))
               for p, b in boxes.items()]
    fracs, small = [], []
    for p, bs in boxes.items():
        for x1, y1, x2, y2 in bs:
            if longer[p] is None:
                continue
            fracs.append(((x2 - x1) * (y2 - y1)) ** 0.5 / longer[p])
            if (x2 - x1) * (y2 - y1) < 32 ** 2:
                small.append(fracs[-1])
    got = object_scale(records, longer)
    assert (got.objects, got.small_objects) == (5, 3)
    assert got.median == pytest.approx(sorted(fracs)[2], abs=1e-6)
    assert got.median_small == pytest.approx(sorted(small)[1], abs=1e-6)
    assert object_scale(records[3:], longer).median is None  # nothing measurable
