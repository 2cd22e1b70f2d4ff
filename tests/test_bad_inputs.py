"""The bad-input corpus: every case has one expected outcome — an error naming the file, what is
wrong and the fix, or a warning counted in the report with the file named — and the report's
books balance (images / objects in = kept + skipped-with-reason) in every case."""
from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import zlib
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image, ImageFile

from detpipe.data.annotations import format_line, parse_line
from detpipe.data.dataset_check import check_dataset
from detpipe.data.images import load_rgb
from detpipe.params import DataParams
from tests.vocgen import CLASSES, make_voc, voc_xml, write_image

REPO = Path(__file__).resolve().parents[1]
GOOD = {f"good_{c}": {"objects": [(c, (4, 4, 40, 40))]} for c in CLASSES}
CASES: dict[str, tuple[str, object]] = {}


def case(name: str, outcome: str):
    """Register a corpus case with its expected outcome (listed in the closing note)."""
    def wrap(fn):
        CASES[name] = (outcome, fn)
        return fn
    return wrap


def run(tmp_path: Path, items: dict, good: bool = True, **data) -> object:
    root = make_voc(tmp_path / "VOC", {**(GOOD if good else {}), **items})
    params = DataParams(root=str(root), classes=CLASSES, **data)
    return check_dataset(params, base=tmp_path, workers=1)


def rec_of(res, stem: str):
    return next(r for r in res.records if Path(r.path).stem == stem)


def errors(res) -> dict[str, str]:
    return {e.kind: e.message for e in res.errors}


def warned(res, kind: str) -> list[dict]:
    return [w for w in res.report.to_json()["warnings"] if w["kind"] == kind]


def assert_error(res, kind: str, *needles: str) -> str:
    msg = errors(res).get(kind)
    assert msg is not None, f"expected error {kind}, got {errors(res)}"
    assert "Fix" in msg or "fix" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@case("malformed XML", "error malformed_xml naming the file")
def _malformed(tmp_path):
    assert_error(run(tmp_path, {"bad": {"xml": "<annotation><object>"}}), "malformed_xml", "bad.xml")


@case("empty XML file", "error empty_xml naming the file")
def _empty(tmp_path):
    assert_error(run(tmp_path, {"e": {"xml": b""}}), "empty_xml", "e.xml")


@case("XML without <object> (background)", "kept as a path-only line, counted in images_without_objects")
def _background(tmp_path):
    res = run(tmp_path, {"bg": {"objects": []}})
    assert not res.errors
    assert len(rec_of(res, "bg")) == 0
    assert res.report.to_json()["images"]["without_objects"] == 1


@case("unknown class names", "error listing every unknown name with its files and the configured classes")
def _unknown(tmp_path):
    res = run(tmp_path, {"d1": {"objects": [("dog", (1, 1, 9, 9))]}, "d2": {"objects": [("dog", (1, 1, 9, 9))]},
                         "c1": {"objects": [("cat", (1, 1, 9, 9))]}})
    assert_error(res, "unknown_class", "'dog'", "'cat'", "d1.xml", "d2.xml", "c1.xml", "circle, square, triangle, star")
    assert res.report.to_json()["objects"]["skipped"]["unknown_class"] == 3


@case("class name differing in case", "error that says it differs only in case from 'circle'")
def _case(tmp_path):
    assert_error(run(tmp_path, {"u": {"objects": [("Circle", (1, 1, 9, 9))]}}), "unknown_class", "'Circle'",
                 "only in case", "'circle'")


@case("class name with surrounding whitespace", "kept, warning class_whitespace")
def _whitespace(tmp_path):
    res = run(tmp_path, {"w": {"objects": [("  square \n", (1, 1, 9, 9))]}})
    assert not res.errors and warned(res, "class_whitespace")[0]["file"].endswith("w.xml")


@case("XML whose image is missing", "error missing_image naming the XML and the image")
def _missing_image(tmp_path):
    assert_error(run(tmp_path, {"gone": {"image": False}}), "missing_image", "gone.xml", "gone.jpg")


@case("image present, XML missing", "skipped no_annotation, counted with the image named")
def _no_xml(tmp_path):
    res = run(tmp_path, {"lonely": {"xml_missing": True}})
    assert not res.errors and res.report.to_json()["images"]["skipped"] == {"no_annotation": 1}
    assert warned(res, "no_annotation")[0]["file"].endswith("lonely.jpg")


@case("file that is not an image", "error bad_image 'not an image'")
def _not_image(tmp_path):
    root = make_voc(tmp_path / "VOC", {**GOOD, "txt": {}})
    (root / "JPEGImages" / "txt.jpg").write_text("hello, I am text")
    res = check_dataset(DataParams(root=str(root), classes=CLASSES), base=tmp_path, workers=1)
    assert_error(res, "bad_image", "txt.xml", "not an image")


@case("truncated JPEG", "error bad_image 'truncated'")
def _truncated(tmp_path):
    root = make_voc(tmp_path / "VOC", {**GOOD, "cut": {"size": (300, 200)}})
    path = root / "JPEGImages" / "cut.jpg"
    path.write_bytes(path.read_bytes()[:-400])
    res = check_dataset(DataParams(root=str(root), classes=CLASSES), base=tmp_path, workers=1)
    assert_error(res, "bad_image", "cut.xml", "truncated")


@case("degenerate box (xmax <= xmin)", "object dropped, counted degenerate_box")
def _degenerate(tmp_path):
    res = run(tmp_path, {"d": {"objects": [("circle", (30, 5, 10, 20)), ("star", (1, 1, 9, 9))]}})
    assert res.report.to_json()["objects"]["skipped"] == {"degenerate_box": 1}
    assert warned(res, "degenerate_box")[0]["file"].endswith("d.xml")


@case("box partly outside the image", "clipped to the image, counted clipped")
def _partly_outside(tmp_path):
    res = run(tmp_path, {"p": {"objects": [("circle", (-5, 10, 90, 30))]}})
    rec = rec_of(res, "p")
    assert rec.boxes.tolist() == [[0, 10, 64, 30]] and len(warned(res, "clipped")) == 1


@case("box entirely outside the image", "dropped, counted outside_image")
def _outside(tmp_path):
    res = run(tmp_path, {"o": {"objects": [("circle", (100, 100, 120, 130)), ("star", (1, 1, 9, 9))]}})
    assert res.report.to_json()["objects"]["skipped"] == {"outside_image": 1}


@case("float coordinates", "kept exactly as written, counted float_coordinates")
def _floats(tmp_path):
    res = run(tmp_path, {"f": {"objects": [("circle", ("10.5", "4.25", "30.75", "20"))]}})
    rec = rec_of(res, "f")
    assert rec.boxes.tolist() == [[10.5, 4.25, 30.75, 20]] and warned(res, "float_coordinates")
    assert parse_line(format_line(rec)).boxes.tolist() == rec.boxes.tolist()


@case("<size> disagreeing with the image", "trust the image, counted size_mismatch")
def _size_mismatch(tmp_path):
    res = run(tmp_path, {"s": {"declared": (640, 480), "objects": [("circle", (10, 10, 600, 400))]}})
    rec = rec_of(res, "s")
    assert rec.boxes.tolist() == [[10, 10, 64, 48]] and warned(res, "size_mismatch")


def _modes(tmp_path, mode):
    ext = ".jpg" if mode in ("L", "CMYK") else ".png"
    res = run(tmp_path, {"m": {"mode": mode, "ext": ext}})
    assert not res.errors
    rec = next(r for r in res.records if Path(r.path).stem == "m")
    pixels = load_rgb(tmp_path / rec.path)
    assert pixels.shape == (48, 64, 3) and pixels.dtype == np.uint8
    assert warned(res, "converted_mode")


for _mode, _label in [("L", "grayscale JPEG"), ("RGBA", "RGBA PNG"), ("P", "palette PNG"),
                      ("CMYK", "CMYK JPEG"), ("I;16", "16-bit grayscale PNG")]:
    case(_label, "converted to 8-bit RGB [H,W,3], counted converted_mode")(
        lambda tmp_path, m=_mode: _modes(tmp_path, m))


def _exif(tmp_path, ext):
    res = run(tmp_path, {"r": {"exif": 6, "ext": ext, "objects": [("circle", (4, 8, 20, 30))]}})
    rec = rec_of(res, "r")
    assert load_rgb(tmp_path / rec.path).shape == (64, 48, 3)  # stored 64x48 shown as 48x64
    assert rec.boxes.tolist() == [[48 - 30, 4, 48 - 8, 20]] and warned(res, "exif_rotated")


for _ext in (".jpg", ".png", ".webp", ".tif"):
    case(f"EXIF-rotated {_ext[1:].upper()} (orientation 6)", "pixels and boxes rotated together, counted "
         "exif_rotated")(lambda tmp_path, e=_ext: _exif(tmp_path, e))


@case(".png / .jpeg / uppercase extensions", "found and kept")
def _extensions(tmp_path):
    res = run(tmp_path, {"a": {"ext": ".png"}, "b": {"ext": ".jpeg"}, "c": {"ext": ".JPG"}})
    assert not res.errors and {Path(r.path).name for r in res.records} >= {"a.png", "b.jpeg", "c.JPG"}


@case("paths with spaces and Chinese characters", "kept; annotation lines round-trip")
def _unicode_paths(tmp_path):
    root = make_voc(tmp_path / "my data 数据" / "VOC", {**GOOD, "图片 一": {"objects": [("star", (1, 2, 30, 40))]}})
    res = check_dataset(DataParams(root=str(root), classes=CLASSES), base=tmp_path, workers=1)
    rec = next(r for r in res.records if "图片 一" in r.path)
    assert rec.path == "my data 数据/VOC/JPEGImages/图片 一.jpg"
    assert parse_line(format_line(rec)).path == rec.path


@case("<filename> with ../", "error unsafe_filename; the file outside is never read")
def _dotdot(tmp_path):
    write_image(tmp_path / "VOC" / "outside.jpg")
    res = run(tmp_path, {"x": {"filename": "../outside.jpg", "image": False}})
    assert_error(res, "unsafe_filename", "x.xml", "../outside.jpg")


@case("<filename> absolute path", "error unsafe_filename")
def _absolute(tmp_path):
    target = write_image(tmp_path / "elsewhere.jpg")
    assert_error(run(tmp_path, {"x": {"filename": str(target), "image": False}}), "unsafe_filename", "x.xml")


@case("XML external entity (file and network)", "error xml_entities; nothing read or fetched")
def _xxe(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    dtd = (f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY s SYSTEM "file://{secret}">'
           f'<!ENTITY n SYSTEM "http://127.0.0.1:{port}/x">]>')
    body = voc_xml("x.jpg", (64, 48), [("circle", (1, 1, 9, 9))]).replace("circle", "&s;&n;")
    res = run(tmp_path, {"x": {"xml": dtd + body}})
    assert_error(res, "xml_entities", "x.xml")
    assert "TOPSECRET" not in json.dumps(res.report.to_json())
    with pytest.raises(BlockingIOError):
        server.accept()  # nobody connected
    server.close()


@case("billion-laughs XML", "error xml_entities, refused at once")
def _laughs(tmp_path):
    ents = '<!ENTITY a0 "ha">' + "".join(f'<!ENTITY a{i} "{("&a%d;" % (i - 1)) * 10}">' for i in range(1, 10))
    xml = f'<?xml version="1.0"?><!DOCTYPE annotation [{ents}]><annotation><filename>&a9;</filename></annotation>'
    assert_error(run(tmp_path, {"lol": {"xml": xml}}), "xml_entities", "lol.xml")


@case("huge image (100 Mpx JPEG, at the data.max_image_pixels default)", "kept, checked at 1/8 scale with bounded memory")
def _huge(tmp_path):
    code = (
        "import sys, resource, json\nfrom pathlib import Path\nfrom PIL import Image\n"
        "Image.MAX_IMAGE_PIXELS = None\n"
        "root = Path(sys.argv[1]); (root / 'Annotations').mkdir(parents=True); (root / 'JPEGImages').mkdir()\n"
        "Image.new('L', (10000, 10000), 128).save(root / 'JPEGImages' / 'big.jpg')\n"
        "(root / 'Annotations' / 'big.xml').write_text('<annotation><filename>big.jpg</filename>"
        "<object><name>circle</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>5000</xmax>"
        "<ymax>5000</ymax></bndbox></object></annotation>')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "VOC")], check=True)
    probe = (
        "import sys, resource, json\nfrom detpipe.data.dataset_check import check_dataset\n"
        "from detpipe.params import DataParams\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "res = check_dataset(DataParams(root=sys.argv[1], classes=('circle',)), workers=1)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'kb': after - before, 'kept': res.report.to_json()['images']['kept'],"
        " 'warn': res.report.to_json()['warning_counts'], 'errors': len(res.errors)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "VOC")], check=True, cwd=REPO,
                         capture_output=True, text=True).stdout
    got = json.loads(out)
    assert got["kept"] == 1 and got["errors"] == 0
    assert got["kb"] < 40_000, f"peak memory grew by {got['kb']} kB; a full decode is ~100 MB"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bomb(path: Path, w: int, h: int) -> Path:
    """A ~1 kB PNG declaring w x h RGB pixels (its IDAT inflates to 1 MB of zeros)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 << 20), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def tiff_bomb(path: Path, w: int, h: int) -> Path:
    """A ~1 kB deflate-compressed grayscale TIFF declaring w x h pixels in one strip."""
    data = zlib.compress(b"\0" * (1 << 20), 9)
    tags = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 8), (277, 3, 1),
            (278, 4, h), (279, 4, len(data))]  # size, 8 bits, deflate, min-is-black, strip at 8, 1 sample
    entries = b"".join(struct.pack("<HHII", t, kind, 1, v) if kind == 4 else struct.pack("<HHIHH", t, kind, 1, v, 0)
                       for t, kind, v in tags)
    path.write_bytes(b"II*\0" + struct.pack("<I", 8 + len(data)) + data + struct.pack("<H", len(tags)) + entries
                     + b"\0\0\0\0")
    return path


def jpeg_huge_header(path: Path, w: int, h: int) -> Path:
    """A 16x16 JPEG whose frame header (SOF0) is rewritten to declare w x h (at most 65535 each)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(data))
    return path


@contextmanager
def never_decoded_above(pixels: int):
    """Fail the test if any image of more than `pixels` pixels is decoded (ImageFile.load)."""
    load = ImageFile.ImageFile.load

    def guarded(img):
        assert img.width * img.height <= pixels, f"decoded a {img.size} image"
        return load(img)
    with mock.patch.object(ImageFile.ImageFile, "load", guarded):
        yield


def _refused_from_header(tmp_path: Path, ext: str, make) -> None:
    """The bomb is refused (error image_too_large naming file and key) or, with skip_bad_files, a
    counted skip; in both runs without decoding it."""
    for skip in (False, True):
        root = make_voc(tmp_path / f"VOC{skip}", {**GOOD, "bomb": {"ext": ext}})
        make(root / "JPEGImages" / f"bomb{ext}", 60_000, 60_000)
        with never_decoded_above(100_000_000):
            res = check_dataset(DataParams(root=str(root), classes=CLASSES, skip_bad_files=skip), base=tmp_path,
                                workers=1)
        if skip:
            assert not res.errors and res.report.to_json()["images"]["skipped"] == {"image_too_large": 1}
            assert warned(res, "image_too_large")[0]["file"].endswith("bomb.xml")
        else:
            msg = assert_error(res, "image_too_large", "bomb.xml", f"bomb{ext}", "60000x60000",
                               "data.max_image_pixels", "not decoded")
            assert "\n" not in msg
        assert res.report.to_json()["images"]["kept"] == len(GOOD)


@case("PNG bomb (1 kB file declaring 60000x60000)", "error image_too_large naming file and key, never decoded; "
      "skip_bad_files: counted skip")
def _png_bomb(tmp_path):
    _refused_from_header(tmp_path, ".png", png_bomb)


@case("TIFF bomb (1 kB deflate TIFF declaring 60000x60000)", "error image_too_large naming file and key, never "
      "decoded; skip_bad_files: counted skip")
def _tiff_bomb(tmp_path):
    _refused_from_header(tmp_path, ".tif", tiff_bomb)


@case("huge-dimension header (16x16 JPEG declaring 60000x60000)", "error image_too_large naming file and key, "
      "never decoded; skip_bad_files: counted skip")
def _huge_header(tmp_path):
    _refused_from_header(tmp_path, ".jpg", jpeg_huge_header)


@case("large PNG (5000x4000, a phone photo)", "kept, also with skip_bad_files (once a verify() crash)")
def _large_png(tmp_path):
    for skip in (False, True):
        root = make_voc(tmp_path / f"VOC{skip}", {**GOOD, "big": {"ext": ".png"}})
        Image.new("RGB", (5000, 4000), (90, 120, 150)).save(root / "JPEGImages" / "big.png", compress_level=1)
        res = check_dataset(DataParams(root=str(root), classes=CLASSES, skip_bad_files=skip), base=tmp_path,
                            workers=1)
        assert not res.errors and res.report.to_json()["images"]["kept"] == len(GOOD) + 1 and not res.report.to_json()["images"]["skipped"]


@case("image above a lowered data.max_image_pixels", "error image_too_large with the size and the key; "
      "skip_bad_files: counted skip; at the limit kept")
def _lowered_limit(tmp_path):
    items = {**GOOD, "over": {"size": (1001, 1000)}, "at": {"size": (1000, 1000)}}
    res = run(tmp_path / "a", items, max_image_pixels=1_000_000)
    assert_error(res, "image_too_large", "over.xml", "1001x1000", "1 MPx", "data.max_image_pixels")
    assert any(Path(r.path).stem == "at" for r in res.records)
    res = run(tmp_path / "b", items, max_image_pixels=1_000_000, skip_bad_files=True)
    assert not res.errors and res.report.to_json()["images"]["skipped"] == {"image_too_large": 1}


def _formats(tmp_path, mode, ext):
    res = run(tmp_path, {"m": {"mode": mode, "ext": ext}})
    assert not res.errors
    rec = rec_of(res, "m")
    pixels = load_rgb(tmp_path / rec.path)
    assert pixels.shape == (48, 64, 3) and pixels.dtype == np.uint8


for _ext in (".tif", ".webp", ".bmp"):
    for _mode in ("RGB", "L", "P", "RGBA") + (("I;16",) if _ext == ".tif" else ()):
        case(f"{_mode} {_ext[1:].upper()}", "kept, decoded to 8-bit RGB [H,W,3] like a JPEG")(
            lambda tmp_path, m=_mode, e=_ext: _formats(tmp_path, m, e))


@case("duplicate image stems (a.jpg + a.png)", "warning duplicate_stem; the unused one counted no_annotation")
def _dup_stem(tmp_path):
    root = make_voc(tmp_path / "VOC", {**GOOD, "a": {}})
    write_image(root / "JPEGImages" / "a.png")
    res = check_dataset(DataParams(root=str(root), classes=CLASSES), base=tmp_path, workers=1)
    assert warned(res, "duplicate_stem") and res.report.to_json()["images"]["skipped"] == {"no_annotation": 1}


@case("zero objects in the whole dataset", "error no_objects before any training")
def _zero(tmp_path):
    assert_error(run(tmp_path, {"bg1": {"objects": []}, "bg2": {"objects": []}}, good=False), "no_objects")


@case("a configured class with no objects", "warning class_without_objects naming the class")
def _class_empty(tmp_path):
    res = run(tmp_path, {"a": {"objects": [("circle", (1, 1, 9, 9))]}}, good=False)
    names = {w["message"].split("'")[1] for w in warned(res, "class_without_objects")}
    assert not res.errors and names == {"square", "triangle", "star"}


@case("<filename> with the wrong extension", "image found by stem, counted filename_mismatch")
def _wrong_ext(tmp_path):
    res = run(tmp_path, {"w": {"ext": ".png", "filename": "w.jpg"}})
    assert not res.errors and warned(res, "filename_mismatch")


@case("<bndbox> missing or non-numeric", "object dropped, counted bad_box")
def _bad_box(tmp_path):
    res = run(tmp_path, {"b": {"objects": [("circle", ("a", "1", "9", "9")), ("star", (1, 1, 9, 9))]}})
    assert res.report.to_json()["objects"]["skipped"] == {"bad_box": 1}


@case("two XMLs naming the same image", "second skipped, counted duplicate_image")
def _dup_image(tmp_path):
    res = run(tmp_path, {"z1": {}, "z2": {"filename": "z1.jpg", "image": False}})
    assert res.report.to_json()["images"]["skipped"] == {"duplicate_image": 1}
    assert res.report.to_json()["objects"]["skipped"] == {"image_skipped:duplicate_image": 1}


@case("every box of an image invalid", "image skipped, counted all_objects_invalid (not taught as background)")
def _all_invalid(tmp_path):
    res = run(tmp_path, {"i": {"objects": [("circle", (9, 9, 1, 1))]}})
    assert res.report.to_json()["images"]["skipped"] == {"all_objects_invalid": 1}


@case("data.skip_bad_files: true with a malformed XML", "counted skip malformed_xml, no error")
def _skip_bad(tmp_path):
    res = run(tmp_path, {"bad": {"xml": "<annotation"}}, skip_bad_files=True)
    assert not res.errors and res.report.to_json()["images"]["skipped"] == {"malformed_xml": 1}


@case("data.ignore_classes lists a label", "objects dropped knowingly, counted ignored_class")
def _ignore(tmp_path):
    res = run(tmp_path, {"p": {"objects": [("person", (1, 1, 9, 9))]}}, ignore_classes=("person",))
    assert not res.errors and res.report.to_json()["objects"]["skipped"] == {"ignored_class": 1}


@case("difficult objects", "kept with the difficult flag (6th field 1)")
def _difficult(tmp_path):
    res = run(tmp_path, {"d": {"objects": [("circle", (1, 1, 9, 9), 1)]}})
    rec = rec_of(res, "d")
    assert format_line(rec).endswith("1,1,9,9,0,1") and res.report.to_json()["per_class"]["circle"]["difficult"] == 1


def test_corpus_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", list(CASES))
def test_case(name, tmp_path):
    CASES[name][1](tmp_path)


def test_every_warning_names_a_file(tmp_path):
    res = run(tmp_path, {"p": {"objects": [("circle", (-5, 10, 90, 30))]}, "lonely": {"xml_missing": True},
                         "f": {"objects": [("circle", ("1.5", "1", "9", "9"))]}})
    assert res.report.to_json()["warnings"] and all(w["file"] and w["message"] for w in res.report.to_json()["warnings"])
    assert Counter(w["kind"] for w in res.report.to_json()["warnings"]) == Counter(res.report.to_json()["warning_counts"])


def _stage(tmp_path: Path, root: Path, classes=CLASSES) -> subprocess.CompletedProcess:
    params = (REPO / "params.yaml").read_text(encoding="utf-8")
    params = params.replace("data/VOCdevkit/VOC2007", os.path.relpath(root, tmp_path))
    params = params.replace("[circle, square, triangle, star]", "[" + ", ".join(classes) + "]")
    (tmp_path / "params.yaml").write_text(params, encoding="utf-8")
    cmd = [sys.executable, str(REPO / "stages" / "annotate.py"), "--params", "params.yaml",
           "--out", "data/annotations.txt", "--images", "data/images.sha256", "--report", "reports/data/annotate.json"]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)


def test_stage_fails_with_message_and_writes_no_lines(tmp_path):
    root = make_voc(tmp_path / "数据 集" / "VOC2007", {**GOOD, "d": {"objects": [("dog", (1, 1, 9, 9))]}})
    proc = _stage(tmp_path, root)
    assert proc.returncode == 1
    assert "'dog'" in proc.stderr and "d.xml" in proc.stderr and "data.classes" in proc.stderr
    assert not (tmp_path / "data" / "annotations.txt").exists()
    assert json.loads((tmp_path / "reports/data/annotate.json").read_text())["errors"]


def test_stage_succeeds_with_relative_unicode_paths(tmp_path):
    root = make_voc(tmp_path / "数据 集" / "VOC2007", {**GOOD, "bg": {"objects": []}})
    proc = _stage(tmp_path, root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("annotate: images in 5, kept 5")
    lines = (tmp_path / "data/annotations.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("数据 集/VOC2007/JPEGImages/") and all((tmp_path / parse_line(ln).path).is_file() for ln in lines)
    report = json.loads((tmp_path / "reports/data/annotate.json").read_text(encoding="utf-8"))
    assert "seconds" not in report and report["objects"] == {"in": 4, "kept": 4, "skipped": {}}
    # Every kept image's content hash, checked against hashlib independently.
    import hashlib
    manifest = (tmp_path / "data/images.sha256").read_text(encoding="utf-8").splitlines()
    assert [m.split("  ", 1)[1] for m in manifest] == [parse_line(ln).path for ln in lines]
    for m in manifest:
        digest, path = m.split("  ", 1)
        assert digest == hashlib.sha256((tmp_path / path).read_bytes()).hexdigest()


def test_check_data_cli(tmp_path):
    root = make_voc(tmp_path / "v", {**GOOD})
    ok = subprocess.run([sys.executable, "-m", "detpipe", "check-data", "--root", str(root),
                         "--classes", ",".join(CLASSES)], cwd=REPO, capture_output=True, text=True)
    bad = subprocess.run([sys.executable, "-m", "detpipe", "check-data", "--root", str(root),
                          "--classes", "circle,square"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr
    assert bad.returncode == 1 and "'triangle'" in bad.stderr and "'star'" in bad.stderr
