"""VOC parsing, image modes and EXIF, and the COCO source producing the same lines as VOC."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from detpipe.data.annotations import format_line
from detpipe.data.dataset_check import check_dataset
from detpipe.data.images import exif_transform_boxes, inspect_image, load_rgb, load_rgb_scaled, to_rgb
from detpipe.params import DataParams, ParamsError, load_params
from detpipe.data.voc import XmlError, parse_voc, parse_xml_bytes
from tests.vocgen import CLASSES, make_voc, voc_xml, write_coco, write_image


def test_parse_voc_fields(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(voc_xml("a.jpg", (64, 48), [("circle", (1, 2, 30, 40), 1), ("star", ("1.5", 2, 9, 9))]))
    item = parse_voc(path)
    assert item.filename == "a.jpg" and item.size == (64, 48) and len(item.objects) == 2
    assert item.objects[0].box == (1, 2, 30, 40) and item.objects[0].difficult
    assert item.objects[1].float_coords and not item.objects[0].float_coords


def test_parse_voc_no_objects_and_no_size(tmp_path):
    path = tmp_path / "b.xml"
    path.write_text("<annotation><filename>b.png</filename></annotation>")
    item = parse_voc(path)
    assert item.objects == () and item.size is None and item.filename == "b.png"


@pytest.mark.parametrize("data,kind", [
    (b"", "empty_xml"), (b"   \n", "empty_xml"), (b"<annotation>", "malformed_xml"),
    (b"<?xml version='1.0'?><!DOCTYPE a [<!ENTITY x 'y'>]><annotation>&x;</annotation>", "xml_entities"),
    (b"<!DOCTYPE annotation SYSTEM 'http://127.0.0.1:9/x.dtd'><annotation/>", "xml_entities"),
])
def test_parse_refusals(data, kind):
    with pytest.raises(XmlError) as err:
        parse_xml_bytes(data, "f.xml")
    assert err.value.kind == kind and "f.xml" in str(err.value)


def test_entities_refused_even_past_the_byte_check():
    # UTF-16 hides "<!ENTITY" from the byte scan; the parsed DTD must still be refused.
    xml = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    with pytest.raises(XmlError) as err:
        parse_xml_bytes(xml.encode("utf-16"), "u.xml")
    assert err.value.kind == "xml_entities"


def test_plain_doctype_is_accepted():
    root = parse_xml_bytes(b"<!DOCTYPE annotation><annotation><filename>a.jpg</filename></annotation>", "x")
    assert root.findtext("filename") == "a.jpg"


def test_wrong_root_element(tmp_path):
    (tmp_path / "x.xml").write_text("<html/>")
    with pytest.raises(XmlError, match="expected <annotation>"):
        parse_voc(tmp_path / "x.xml")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_pixels_and_boxes_agree(tmp_path, orientation):
    """Paint a red box on stored pixels, save with an EXIF orientation: the transformed box must
    cover exactly the red pixels of what load_rgb returns."""
    stored = np.zeros((40, 60, 3), dtype=np.uint8)
    box = (10, 5, 25, 30)  # x1, y1, x2, y2 on stored pixels
    stored[box[1]:box[3], box[0]:box[2]] = (255, 0, 0)
    ex = Image.Exif()
    ex[0x0112] = orientation
    path = tmp_path / "e.png"
    Image.fromarray(stored).save(path, exif=ex.tobytes())
    shown = load_rgb(path)
    x1, y1, x2, y2 = exif_transform_boxes(np.array([box]), orientation, 60, 40)[0].astype(int)
    red = shown[..., 0] > 128
    assert red[y1:y2, x1:x2].all() and red.sum() == (x2 - x1) * (y2 - y1)
    info = inspect_image(path)
    assert (info.height, info.width) == shown.shape[:2] and info.orientation == orientation


def test_exif_boxes_already_in_displayed_frame(tmp_path):
    """<size> equal to the rotated size means the tool drew on the rotated image: no transform."""
    root = make_voc(tmp_path / "V", {"r": {"exif": 6, "size": (64, 48), "declared": (48, 64),
                                           "objects": [("circle", (4, 8, 20, 30))]}})
    res = check_dataset(DataParams(root=str(root), classes=CLASSES), base=tmp_path, workers=1)
    assert res.records[0].boxes.tolist() == [[4, 8, 20, 30]]


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "RGB"])
def test_to_rgb_every_mode(mode):
    arr = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3)
    if mode in ("I;16", "I", "F"):
        img = Image.fromarray((arr[..., 0].astype(np.uint16) * 257)).convert(mode) if mode != "I;16" \
            else Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    else:
        img = Image.fromarray(arr).convert(mode)
    out = np.asarray(to_rgb(img))
    assert out.shape == (12, 10, 3) and out.dtype == np.uint8


def test_16bit_png_scaled_not_clipped(tmp_path):
    path = tmp_path / "d.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(path)
    assert load_rgb(path).min() == 255


def test_load_rgb_scaled_reduces_big_jpegs(tmp_path):
    path = write_image(tmp_path / "big.jpg", (1600, 1200))
    pixels, scale = load_rgb_scaled(path, 256)
    assert pixels.shape[0] >= 256 and pixels.shape[0] < 1200 and scale == pixels.shape[1] / 1600
    same, one = load_rgb_scaled(write_image(tmp_path / "s.png", (64, 48)), 256)
    assert same.shape == (48, 64, 3) and one == 1.0


def test_coco_source_gives_the_same_lines_as_voc(tmp_path):
    boxes = {"a": [("circle", 1, 2, 30, 40, 0), ("star", 5.5, 6, 20, 21.25, 1)], "b": [], "c": [("square", 3, 3, 9, 9, 0)]}
    items = {s: {"objects": [(n, (x1, y1, x2, y2), d) for n, x1, y1, x2, y2, d in b]} for s, b in boxes.items()}
    root = make_voc(tmp_path / "VOC", items)
    voc = check_dataset(DataParams(root=str(root), classes=CLASSES), base=tmp_path, workers=1)
    coco_json = write_coco(tmp_path / "instances.json",
                           [{"file_name": f"{s}.jpg", "width": 64, "height": 48, "boxes": b} for s, b in boxes.items()])
    coco = check_dataset(DataParams(root=str(root), classes=CLASSES, source="coco", coco_json=str(coco_json),
                                    images=str(root / "JPEGImages")), base=tmp_path, workers=1)
    assert not voc.errors and not coco.errors
    assert [format_line(r) for r in voc.records] == [format_line(r) for r in coco.records]
    assert coco.report.to_json()["images"] == voc.report.to_json()["images"]


def test_coco_errors(tmp_path):
    root = make_voc(tmp_path / "VOC", {"a": {}})
    path = tmp_path / "i.json"
    path.write_text('{"images": [{"id": 1, "file_name": "../a.jpg", "width": 64, "height": 48}],'
                    '"annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]}],'
                    '"categories": [{"id": 1, "name": "circle"}]}')
    res = check_dataset(DataParams(root=str(root), classes=CLASSES, source="coco", coco_json=str(path),
                                   images=str(root / "JPEGImages")), base=tmp_path, workers=1)
    kinds = {e.kind for e in res.errors}
    assert {"coco_unknown_image", "unsafe_filename", "no_objects"} <= kinds


def test_parallel_equals_serial(tmp_path):
    items = {f"im{i:02d}": {"objects": [(CLASSES[i % 4], (i % 20, 2, 30 + i % 20, 40))]} for i in range(24)}
    root = make_voc(tmp_path / "VOC", items)
    data = DataParams(root=str(root), classes=CLASSES)
    serial = check_dataset(data, base=tmp_path, workers=1)
    parallel = check_dataset(data, base=tmp_path, workers=2)
    assert [format_line(r) for r in serial.records] == [format_line(r) for r in parallel.records]
    assert serial.report == parallel.report


def test_classes_file(tmp_path):
    (tmp_path / "classes.txt").write_text("# shapes\ncircle\nsquare\n\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(f"data:\n  classes_file: {tmp_path / 'classes.txt'}\n")
    assert load_params(tmp_path / "p.yaml").data.classes == ("circle", "square")
    (tmp_path / "q.yaml").write_text("data:\n  source: labelme\n  classes: [a]\n")
    with pytest.raises(ParamsError, match="voc, coco, yolo"):
        load_params(tmp_path / "q.yaml")
