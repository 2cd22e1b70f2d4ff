"""COCO stats against pycocotools (the test oracle) on seeded random cases."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detpipe.metrics import STAT_NAMES, coco_eval
from detpipe.metrics.coco import coco_eval_arrays
from detpipe.metrics.io import coco_to_flat, to_coco_json


def pycoco(gts, dets, n_cls):
    gt, res = to_coco_json(gts, dets, [f"c{k}" for k in range(n_cls)])
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO()
        c.dataset = gt
        c.createIndex()
        e = COCOeval(c, c.loadRes(res), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def random_case(rng, n_img, n_cls, max_gt, max_det, scale):
    gts, dets = [], []
    for _ in range(n_img):
        m = int(rng.integers(0, max_gt + 1))
        wh = rng.uniform(1, scale, (m, 2))
        xy = rng.uniform(0, 3 * scale, (m, 2))
        g = np.c_[xy, xy + wh]
        if rng.random() < 0.5:
            g = np.round(g)
        lab = rng.integers(0, n_cls, m)
        k = int(rng.integers(0, max_det + 1))
        src = rng.integers(0, max(m, 1), k)
        if m:
            d = g[src] + rng.normal(0, 0.1, (k, 4)) * np.tile(np.maximum(g[src, 2:] - g[src, :2], 1), 2)
            d_lab = np.where(rng.random(k) < 0.8, lab[src], rng.integers(0, n_cls, k))
        else:
            d = rng.uniform(0, 3 * scale, (k, 4))
            d_lab = rng.integers(0, n_cls, k)
        noise = rng.random(k) < 0.3
        d[noise] = rng.uniform(0, 3 * scale, (int(noise.sum()), 4))
        d = np.c_[np.minimum(d[:, :2], d[:, 2:]), np.maximum(d[:, :2], d[:, 2:])]
        dup = rng.random(k) < 0.15  # exact duplicates of earlier boxes
        if k > 1:
            d[dup] = d[rng.integers(0, k, int(dup.sum()))]
        scores = np.round(rng.random(k), int(rng.integers(1, 4)))  # ties
        gts.append({"boxes": g, "labels": lab, "difficult": rng.random(m) < 0.15})
        dets.append({"boxes": d, "labels": d_lab, "scores": scores})
    return gts, dets


@pytest.mark.parametrize("seed", range(40))
def test_equals_pycocotools(seed):
    rng = np.random.default_rng(1000 + seed)
    n_cls = int(rng.integers(1, 8))
    # some cases exceed maxDets=100 per image and class; scales cover small/medium/large
    max_det = 150 if seed % 5 == 0 else 40
    gts, dets = random_case(rng, int(rng.integers(1, 25)), n_cls, 8, max_det, [20, 60, 200][seed % 3])
    if sum(len(d["scores"]) for d in dets) == 0:  # pycocotools cannot load an empty result list
        dets[0] = {"boxes": np.array([[0.0, 0, 5, 5]]), "labels": np.array([0]), "scores": np.array([0.5])}
    ref = pycoco(gts, dets, n_cls)
    ours = coco_eval(gts, dets, n_cls)
    np.testing.assert_allclose(ours.stats, ref.stats, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.precision, ref.eval["precision"][..., -1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-9)
    p = ref.eval["precision"][:, :, :, 0, -1]
    for k in range(n_cls):
        v = p[:, :, k]
        if (v > -1).any():
            assert ours.per_class_ap[k] == pytest.approx(np.mean(v[v > -1]), abs=1e-9)
        else:
            assert np.isnan(ours.per_class_ap[k])


def test_perfect_and_empty():
    g = [{"boxes": np.array([[0.0, 0, 50, 50], [100, 100, 300, 300]]), "labels": np.array([0, 1]),
          "difficult": np.array([False, False])}]
    d = [{"boxes": g[0]["boxes"].copy(), "labels": np.array([0, 1]), "scores": np.array([0.9, 0.8])}]
    r = coco_eval(g, d, 3)
    assert r.as_dict()["AP"] == pytest.approx(1.0) and r.as_dict()["AP50"] == pytest.approx(1.0)
    assert r.as_dict()["APs"] == -1  # no small objects: -1 as in pycocotools
    assert np.isnan(r.per_class_ap[2])
    none = coco_eval(g, [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0)}], 3)
    assert none.stats[0] == 0.0 and list(none.as_dict()) == list(STAT_NAMES)
    assert coco_eval([], [], 2).stats[0] == -1


def test_crowd_absorbs_detections_without_penalty():
    g = [{"boxes": np.array([[0.0, 0, 100, 100], [200, 200, 240, 240]]), "labels": np.array([0, 0]),
          "difficult": np.array([True, False])}]
    d = [{"boxes": np.array([[10.0, 10, 50, 50], [20, 20, 60, 60], [200, 200, 240, 240]]),
          "labels": np.array([0, 0, 0]), "scores": np.array([0.9, 0.8, 0.7])}]
    r = coco_eval(g, d, 1)
    assert r.stats[0] == pytest.approx(1.0)
    assert r.stats == pytest.approx(pycoco(g, d, 1).stats)


def test_arrays_entry_unsorted_images_and_lists_roundtrip():
    rng = np.random.default_rng(7)
    gts, dets = random_case(rng, 12, 3, 6, 30, 60)
    gt_json, res = to_coco_json(gts, dets, ["a", "b", "c"])
    order = rng.permutation(len(res))  # results in any image order: ties keep per-image input order
    res = [res[i] for i in order]
    img = np.array([r["image_id"] - 1 for r in res])
    data = {
        "gt": {"img": np.array([a["image_id"] - 1 for a in gt_json["annotations"]]),
               "cat": np.array([a["category_id"] - 1 for a in gt_json["annotations"]]),
               "xywh": np.array([a["bbox"] for a in gt_json["annotations"]]).reshape(-1, 4),
               "area": np.array([a["area"] for a in gt_json["annotations"]]),
               "crowd": np.array([a["iscrowd"] for a in gt_json["annotations"]], bool)},
        "det": {"img": img, "cat": np.array([r["category_id"] - 1 for r in res]),
                "xywh": np.array([r["bbox"] for r in res]).reshape(-1, 4),
                "score": np.array([r["score"] for r in res])},
        "num_images": len(gts), "num_classes": 3}
    g, d = data["gt"], data["det"]
    ours = coco_eval_arrays(g["img"], g["cat"], g["xywh"], g["area"], g["crowd"], d["img"], d["cat"],
                            d["xywh"], d["score"], len(gts), 3)
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO()
        c.dataset = gt_json
        c.createIndex()
        e = COCOeval(c, c.loadRes(res), "bbox")
        e.evaluate(); e.accumulate(); e.summarize()
    np.testing.assert_allclose(ours.stats, e.stats, atol=1e-9)
    flat = coco_to_flat(data)
    assert len(flat.g_lab) == len(gt_json["annotations"]) and len(flat.d_score) == len(res)
    assert (np.diff(flat.d_img) >= 0).all() and (np.diff(flat.g_img) >= 0).all()  # image-major
    # within an image the results keep their file order
    np.testing.assert_array_equal(flat.d_score[flat.d_img == 0], [r["score"] for r in res if r["image_id"] == 1])


def _pycoco_by_area(e: COCOeval) -> dict[str, tuple[int, int, float]]:
    """Per area label: counted ground truth and those matched at IoU 0.5 (maxDets 100), from
    pycocotools' per-image records, and AP50 from its precision array."""
    p = e.params
    out = {}
    for a, label in enumerate(p.areaRngLbl):
        n_gt = found = 0
        for rec in e.evalImgs:
            if rec is None or rec["aRng"] != p.areaRng[a] or rec["maxDet"] != p.maxDets[-1]:
                continue
            counted = ~np.asarray(rec["gtIgnore"], bool)
            n_gt += int(counted.sum())
            found += int((np.asarray(rec["gtMatches"])[0][counted] > 0).sum()) if counted.any() else 0
        v = e.eval["precision"][0, :, :, a, -1]
        out[label] = (n_gt, found, float(np.mean(v[v > -1])) if (v > -1).any() else -1.0)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_by_area_equals_pycocotools(seed):
    """Ground truth, objects found at IoU 0.5 and AP50 per area range, as pycocotools counts them."""
    rng = np.random.default_rng(2000 + seed)
    n_cls = int(rng.integers(1, 5))
    gts, dets = random_case(rng, int(rng.integers(2, 20)), n_cls, 8, 40, [20, 60, 200][seed % 3])
    if sum(len(d["scores"]) for d in dets) == 0:
        dets[0] = {"boxes": np.array([[0.0, 0, 5, 5]]), "labels": np.array([0]), "scores": np.array([0.5])}
    ref = _pycoco_by_area(pycoco(gts, dets, n_cls))
    ours = coco_eval(gts, dets, n_cls).by_area(0.5)
    assert set(ours) == set(ref)
    for name, (n_gt, found, ap50) in ref.items():
        assert ours[name][:2] == (n_gt, found), name
        assert ours[name][2] == pytest.approx(ap50, abs=1e-9), name
