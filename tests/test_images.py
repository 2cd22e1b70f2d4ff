"""The image decoding policy (detpipe/data/images.py) reaches every reader: the pixel limit's one
default, the train loader and training's up-front check, the predict stage and the predict command;
and every allowed format decodes to the same pixels as a PNG of the same content."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from detpipe.data.annotations import Record, write_lines
from detpipe.data.dataset import DetectionDataset
from detpipe.data.images import (DEFAULT_MAX_PIXELS, FORMATS, IMAGE_EXTENSIONS, ImageCheckError, ImageTooLarge,
                                 PixelLimit, check_headers, inspect_image, load_rgb, load_rgb_scaled)
from detpipe.params import DataParams, Params, from_dict
from detpipe.train import phase as training
from tests.conftest import CLASSES, REPO, tiny_params
from tests.test_bad_inputs import jpeg_huge_header, never_decoded_above, png_bomb
from tests.test_predict_cli import make_weights, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_one_default_in_code_params_yaml_and_the_model():
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert raw["data"]["max_image_pixels"] == DEFAULT_MAX_PIXELS == DataParams().max_image_pixels
    assert PixelLimit().pixels == DEFAULT_MAX_PIXELS
    for bad in (0, 999_999, 1_000_000_001):
        with pytest.raises(ValidationError, match="max_image_pixels"):
            DataParams(max_image_pixels=bad)


def test_formats_are_the_extensions_formats():
    """Only the decoders of IMAGE_EXTENSIONS are tried, whatever a file's name (an EPS or PSD
    renamed .jpg is refused, never handed to Ghostscript or another decoder)."""
    assert set(FORMATS) == {"BMP", "JPEG", "PNG", "TIFF", "WEBP"}
    assert all(Image.registered_extensions()[e] in FORMATS for e in IMAGE_EXTENSIONS)


def test_a_gif_named_jpg_is_refused_with_one_line(tmp_path):
    path = tmp_path / "x.jpg"
    Image.new("P", (8, 8)).save(path, "GIF")
    with pytest.raises(ImageCheckError, match=r"x\.jpg: not an image") as err:
        load_rgb(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "I;16"])
def test_every_format_decodes_like_png(tmp_path, mode):
    """The same content saved losslessly in each format gives the very pixels of the PNG."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    img.save(tmp_path / "ref.png")
    ref = load_rgb(tmp_path / "ref.png")
    assert ref.shape == (30, 40, 3) and ref.dtype == np.uint8
    for ext, kwargs in ((".tif", {}), (".bmp", {}), (".webp", {"lossless": True, "exact": True})):
        if mode == "I;16" and ext != ".tif":  # only TIFF (and PNG) store 16-bit samples
            continue
        img.save(tmp_path / f"x{ext}", **kwargs)
        np.testing.assert_array_equal(load_rgb(tmp_path / f"x{ext}"), ref, err_msg=f"{mode} {ext}")


def test_limit_from_the_header_in_every_reader(tmp_path):
    over = tmp_path / "over.png"
    Image.new("RGB", (1001, 1000)).save(over)
    limit = PixelLimit(1_000_000)
    for read in (lambda: load_rgb(over, limit), lambda: load_rgb_scaled(over, 100, limit),
                 lambda: inspect_image(over, True, limit), lambda: check_headers([over], limit)):
        with pytest.raises(ImageTooLarge, match=r"over\.png: 1001x1000 pixels .* \(data\.max_image_pixels\)"):
            read()
    at = tmp_path / "at.png"
    Image.new("RGB", (1000, 1000)).save(at)
    assert load_rgb(at, limit).shape == (1000, 1000, 3)


def test_train_loader_refuses_from_the_header(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 60_000, 60_000)
    record = Record(str(bomb), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
    with never_decoded_above(DEFAULT_MAX_PIXELS), pytest.raises(ImageTooLarge, match="data.max_image_pixels"):
        DetectionDataset([record], 64)[0]


def test_training_stops_before_its_first_step(tiny_records, tmp_path):
    """An image above the limit in a split stops train_phase with one line, before a model exists."""
    bomb = png_bomb(tmp_path / "bomb.png", 60_000, 60_000)
    bad = Record(str(bomb), tiny_records[0].boxes, tiny_records[0].labels, tiny_records[0].difficult)
    params = from_dict(Params, tiny_params("unused"))
    with never_decoded_above(DEFAULT_MAX_PIXELS), pytest.raises(ImageTooLarge, match=r"bomb\.png: 60000x60000"):
        training.train_phase(params, "frozen", [*tiny_records[:4], bad], tiny_records[4:6], [], tmp_path / "ckpt",
                             tmp_path / "h.tsv")
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "h.tsv").exists()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("w") / "tiny.pt")


def test_predict_stage_names_the_file_and_the_key(weights, tmp_path, monkeypatch):
    """A user's 200 MPx panorama in the test split: one line naming it and data.max_image_pixels."""
    small = tmp_path / "small.jpg"
    Image.new("RGB", (64, 48)).save(small)
    pano = jpeg_huge_header(tmp_path / "pano.jpg", 20_000, 10_000)
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
    write_lines(tmp_path / "test.txt", [Record(str(small), *empty), Record(str(pano), *empty)])
    raw = tiny_params("unused")
    raw["data"]["classes"] = list(CLASSES)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(sys, "argv", ["predict.py", "--params", str(tmp_path / "params.yaml"), "--weights",
                                      str(weights), "--split", str(tmp_path / "test.txt"), "--out",
                                      str(tmp_path / "det.csv"), "--samples-dir", str(tmp_path / "s"),
                                      "--summary", str(tmp_path / "p.json")])
    with never_decoded_above(DEFAULT_MAX_PIXELS), pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "stages" / "predict.py"), run_name="__main__")
    message = str(done.value.code)
    assert message.startswith("predict: error: ") and "\n" not in message
    for needle in ("pano.jpg", "20000x10000", "200.0 MPx", "100 MPx", "data.max_image_pixels"):
        assert needle in message, (needle, message)
    assert not (tmp_path / "det.csv").exists()


def test_predict_command_skips_it_naming_the_flag(weights, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "in" / "small.jpg")
    jpeg_huge_header(tmp_path / "in" / "pano.jpg", 20_000, 10_000)
    with never_decoded_above(DEFAULT_MAX_PIXELS):
        assert run_cli(tmp_path / "in", "--weights", weights, "--out", tmp_path / "out", "--save-txt") == 0
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "pano.jpg" in ln)
    assert line.startswith("skipped ") and "20000x10000" in line and "--max-image-pixels" in line
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == ["small.txt"]
    capsys.readouterr()
    assert run_cli(tmp_path / "in" / "small.jpg", "--weights", weights, "--out", tmp_path / "o2",
                   "--max-image-pixels", "3000") == 0  # 64x48 = 3072 pixels: above a 3000 limit
    assert "--max-image-pixels" in capsys.readouterr().err
