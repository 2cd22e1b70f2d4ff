"""The synthetic dataset generator: byte-determinism, valid VOC XML, tight boxes, the rare cases."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from lxml import etree
from PIL import Image

from scripts.synth import STYLES, generate, render, style_classes


def _voc(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2007"


def _files(root: Path) -> dict[str, bytes]:
    voc = _voc(root)
    return {p.relative_to(voc).as_posix(): p.read_bytes() for p in sorted(voc.rglob("*")) if p.is_file()}


def _parse(xml_path: Path) -> tuple[int, int, int, list[dict]]:
    tree = etree.parse(str(xml_path), etree.XMLParser(resolve_entities=False, no_network=True))
    size = tree.find("size")
    objects = []
    for o in tree.iter("object"):
        box = tuple(int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append({"name": o.findtext("name"), "pose": o.findtext("pose"), "box": box,
                        "truncated": int(o.findtext("truncated")), "difficult": int(o.findtext("difficult"))})
    assert tree.findtext("folder") and tree.findtext("filename") == xml_path.stem + ".jpg"
    return int(size.findtext("width")), int(size.findtext("height")), int(size.findtext("depth")), objects


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("shapes")
    return root, generate(root, 60, seed=0, min_size=96, max_size=200)


def test_same_arguments_same_bytes_and_earlier_images_stable(tmp_path):
    generate(tmp_path / "a", 6, seed=3)
    generate(tmp_path / "b", 6, seed=3)
    generate(tmp_path / "c", 3, seed=3)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 12 and a == b
    assert c == {k: v for k, v in a.items() if k[-10:-4] <= "000003"}
    generate(tmp_path / "d", 6, seed=4)
    assert _files(tmp_path / "d") != a


def test_xml_matches_image_and_boxes_lie_inside(sample):
    root, counts = sample
    voc = _voc(root)
    xmls = sorted((voc / "Annotations").glob("*.xml"))
    assert [p.stem for p in xmls] == [f"{i:06d}" for i in range(1, 61)]
    n_objects = 0
    for xml in xmls:
        width, height, depth, objects = _parse(xml)
        with Image.open(voc / "JPEGImages" / f"{xml.stem}.jpg") as img:
            assert img.size == (width, height) and img.format == "JPEG"
            assert depth == {"L": 1, "RGB": 3}[img.mode]
        assert 96 <= width <= 200 and 96 <= height <= 200
        for o in objects:
            x1, y1, x2, y2 = o["box"]
            assert 1 <= x1 <= x2 <= width and 1 <= y1 <= y2 <= height
            assert o["name"] in counts["classes"] and o["pose"] == "Unspecified"
            assert o["difficult"] == (max(x2 - x1, y2 - y1) + 1 < 12)
        n_objects += len(objects)
    assert n_objects == counts["objects"] == sum(counts["per_class"].values())


def test_rare_cases_appear_in_a_moderate_sample(sample):
    _, counts = sample
    assert counts["images"] == 60
    for key in ("difficult", "truncated", "empty", "grayscale"):
        assert 0 < counts[key] < counts["images"], key
    assert all(n > 0 for n in counts["per_class"].values())


def _extent(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1])


def test_boxes_are_the_tight_pixel_extent():
    # One white outline-free shape on flat grey: the box holds every pixel covered more than 60%
    # and none covered less than 40% (the generator cuts at 50%; pixel noise blurs the exact cut).
    plain = dataclasses.replace(
        STYLES["shapes"], backgrounds=(lambda rng, h, w: np.full((h, w, 3), 128.0),),
        marks=lambda *a: None, palette=lambda rng: np.full(3, 255.0), clutter={},
        objects=(1, 1), p_gray=0.0, p_empty=0.0, p_tiny=0.0, p_outline=0.0, p_truncate=0.0)
    for i in range(12):
        img, objects = render(np.random.default_rng([5, i]), plain, 80, 120)
        coverage = (np.asarray(img, np.float32).mean(axis=2) - 128) / 127
        inner, outer = _extent(coverage > 0.6), _extent(coverage > 0.4)
        box = np.array(objects[0]["box"])
        assert len(objects) == 1
        assert (box[:2] <= inner[:2]).all() and (box[2:] >= inner[2:]).all()
        assert (box[:2] >= outer[:2]).all() and (box[2:] <= outer[2:]).all()


def test_alt_style_has_its_own_classes(tmp_path):
    counts = generate(tmp_path, 8, seed=1, style="alt")
    assert counts["classes"] == style_classes("alt")
    assert not set(style_classes("alt")) & set(style_classes("shapes"))
    assert set(style_classes("shapes")) == {"circle", "square", "triangle", "star"}
    names = {o["name"] for p in (_voc(tmp_path) / "Annotations").glob("*.xml") for o in _parse(p)[3]}
    assert names and names <= set(style_classes("alt"))


def test_fewer_images_remove_stale_ones_and_zero_images_is_empty(tmp_path):
    generate(tmp_path, 4, seed=0)
    (_voc(tmp_path) / "Annotations" / "notes.txt").write_text("kept")
    counts = generate(tmp_path, 2, seed=0)
    assert sorted(_files(tmp_path)) == ["Annotations/000001.xml", "Annotations/000002.xml",
                                        "Annotations/notes.txt", "JPEGImages/000001.jpg",
                                        "JPEGImages/000002.jpg"]
    assert counts["images"] == 2
    assert generate(tmp_path, 0, seed=0)["objects"] == 0
    assert sorted(_files(tmp_path)) == ["Annotations/notes.txt"]


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="shapes"):
        generate(tmp_path, 1, seed=0, style="nope")
    with pytest.raises(ValueError, match="min_size"):
        generate(tmp_path, 1, seed=0, min_size=300, max_size=200)
