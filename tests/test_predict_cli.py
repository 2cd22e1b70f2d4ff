"""`python -m detpipe predict` and `fps`: every SOURCE kind, outputs, round trip through `evaluate`,
and the same boxes as the predict stage."""
from __future__ import annotations

import csv
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from detpipe.model import checkpoint as ckpt
from detpipe.data.annotations import write_lines
from detpipe.cli import evaluate as evaluate_cli
from detpipe.cli import fps as fps_cli
from detpipe.cli import predict as predict_cli
from detpipe.train.engine import eval_loader, evaluate
from detpipe.data.images import load_rgb
from detpipe.infer.predictor import Predictor, count_by_class, format_counts, time_parts
from detpipe.metrics import voc_map
from detpipe.model.detector import Detector, ModelConfig
from detpipe.infer.sources import open_source
from detpipe.model.load import load_detector
from tests.conftest import CLASSES, REPO, tiny_params

IMGSZ = 64


# On a shared 2-core machine one thread is both faster and steadier for these tiny models.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_weights(path: Path, imgsz: int = IMGSZ, seed: int = 0, p2: bool = False) -> Path:
    """An untrained tiny detector saved like models/best.pt (p2: with the stride-4 level). Its class
    bias is raised from the 1% prior to 50% so random features give boxes on both sides of every threshold."""
    torch.manual_seed(seed)
    config = ModelConfig(len(CLASSES), "shufflenet_v2_x0_5", 16, p2=p2)
    model = Detector(config).eval()
    for branch in model.head.cls:
        torch.nn.init.normal_(branch[-1].weight, std=0.3)
        torch.nn.init.zeros_(branch[-1].bias)
    state = model.state_dict()
    ckpt.save_atomic({"model": state, "ema": state, "model_config": config.to_dict(),
                      "class_names": list(CLASSES), "imgsz": imgsz}, path)
    return path


def write_images(folder: Path) -> dict[str, Path]:
    """RGB JPEG, grayscale PNG, RGBA PNG (in a sub-folder), a text file and a corrupt 'JPEG'."""
    rng = np.random.default_rng(1)
    (folder / "sub").mkdir(parents=True)
    files = {"rgb": folder / "a.jpg", "gray": folder / "b.png", "rgba": folder / "sub" / "c.PNG"}
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(files["rgb"])
    Image.fromarray(rng.integers(0, 255, (90, 50), dtype=np.uint8), "L").save(files["gray"])
    Image.fromarray(rng.integers(0, 255, (40, 120, 4), dtype=np.uint8), "RGBA").save(files["rgba"])
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return files


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("w") / "tiny.pt")


def read_txt(path: Path) -> list[tuple]:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(r[0], float(r[1]), *map(float, r[2:])) for r in rows]


def run_cli(*args) -> int:
    return predict_cli.main([str(a) for a in args])


def test_folder_recursive_with_gray_rgba_and_bad_files(weights, tmp_path, capsys):
    files = write_images(tmp_path / "in")
    before = {p: p.read_bytes() for p in (tmp_path / "in").rglob("*") if p.is_file()}
    out = tmp_path / "out"
    assert run_cli(tmp_path / "in", "--weights", weights, "--out", out, "--conf", "0.5", "--save-txt",
                   "--save-crop", "--batch", "2", "--max-det", "300") == 0
    captured = capsys.readouterr()
    drawn = Predictor(weights, "cpu", conf=0.5, max_det=300)
    for name, key in (("a.jpg", "rgb"), ("b.png", "gray"), ("sub/c.PNG", "rgba")):
        counts = count_by_class(drawn([load_rgb(files[key])])[0], CLASSES)
        assert f"{name}: {format_counts(counts)}\n" in captured.out  # counted (and drawn) at --conf
    assert "skipped 1 non-image files" in captured.out and "skipped 1 unreadable files" in captured.out
    assert "broken.jpg" in captured.err
    for key, rel in (("rgb", "a.jpg"), ("gray", "b.png"), ("rgba", "sub/c.PNG")):
        drawn = Image.open(out / rel)
        assert drawn.size == Image.open(files[key]).size and drawn.mode == "RGB"
    labels = sorted(p.name for p in (out / "labels").iterdir())
    assert labels == ["a.txt", "b.txt", "sub__c.txt"]
    # the txt boxes are what the library gives for the same images down to --txt-conf (0.001, as
    # the map stage), in original pixels
    predictor = Predictor(weights, "cpu", conf=0.001, max_det=300)
    for key, txt in (("rgb", "a.txt"), ("gray", "b.txt"), ("rgba", "sub__c.txt")):
        det = predictor([load_rgb(files[key])])[0]
        rows = read_txt(out / "labels" / txt)
        assert len(rows) == len(det["scores"]) > 0 and min(r[1] for r in rows) < 0.5
        np.testing.assert_allclose([r[2:] for r in rows], det["boxes"], atol=0.006)
        np.testing.assert_allclose([r[1] for r in rows], det["scores"], atol=1e-6)
        assert [r[0] for r in rows] == [CLASSES[i] for i in det["labels"]]
        w, h = Image.open(files[key]).size
        assert det["boxes"][:, [0, 2]].min() >= 0 and det["boxes"][:, [0, 2]].max() <= w
        assert det["boxes"][:, [1, 3]].min() >= 0 and det["boxes"][:, [1, 3]].max() <= h
    crops = list((out / "crops").rglob("*.jpg"))
    assert crops and {c.parent.name for c in crops} <= set(CLASSES)
    assert before == {p: p.read_bytes() for p in (tmp_path / "in").rglob("*") if p.is_file()}


def test_gray_and_rgba_inputs_equal_their_rgb_conversion(weights, tmp_path):
    files = write_images(tmp_path)
    predictor = Predictor(weights, "cpu", conf=0.3)
    for key in ("gray", "rgba"):
        img = Image.open(files[key])
        if img.mode == "RGBA":
            rgb = Image.alpha_composite(Image.new("RGBA", img.size, (114, 114, 114, 255)), img).convert("RGB")
        else:
            rgb = img.convert("RGB")
        a, b = predictor([load_rgb(files[key])])[0], predictor([np.asarray(rgb)])[0]
        np.testing.assert_array_equal(a["boxes"], b["boxes"])


def test_single_image_and_glob(weights, tmp_path, capsys):
    files = write_images(tmp_path / "in")
    assert run_cli(files["rgb"], "--weights", weights, "--out", tmp_path / "one", "--save-txt") == 0
    assert (tmp_path / "one" / "a.jpg").exists() and (tmp_path / "one" / "labels" / "a.txt").exists()
    assert run_cli(str(tmp_path / "in" / "**" / "*.*"), "--weights", weights, "--out", tmp_path / "g") == 0
    assert {p.relative_to(tmp_path / "g").as_posix() for p in (tmp_path / "g").rglob("*") if p.is_file()} == \
        {"a.jpg", "b.png", "sub/c.PNG", "predict.json"}
    assert "skipped 1 non-image files" in capsys.readouterr().out
    assert open_source(str(tmp_path / "in" / "*.png")).files == [files["gray"]]


def test_never_overwrites_the_input(weights, tmp_path, capsys, monkeypatch):
    files = write_images(tmp_path / "in")
    assert run_cli(tmp_path / "in", "--weights", weights, "--out", tmp_path / "in") == 2
    assert run_cli(files["rgb"], "--weights", weights, "--out", tmp_path / "in") == 2
    assert "overwrite" in capsys.readouterr().err
    assert not (tmp_path / "in" / "labels").exists()
    monkeypatch.chdir(tmp_path)
    assert run_cli(files["gray"], "--weights", weights) == 0
    assert run_cli(files["gray"], "--weights", weights) == 0
    assert (tmp_path / "runs/predict/exp/b.png").exists() and (tmp_path / "runs/predict/exp2/b.png").exists()
    # an --out inside the source folder: its results are not read back as inputs next time
    assert run_cli(tmp_path / "in", "--weights", weights, "--out", tmp_path / "in" / "res") == 0
    assert open_source(str(tmp_path / "in"), exclude=tmp_path / "in" / "res").total == 4  # broken.jpg counts until read


def test_classes_filter_and_errors(weights, tmp_path, capsys):
    files = write_images(tmp_path / "in")
    out = tmp_path / "o"
    assert run_cli(files["rgb"], "--weights", weights, "--out", out, "--conf", "0.3", "--save-txt",
                   "--classes", "circle,star") == 0
    rows = read_txt(out / "labels" / "a.txt")
    assert rows and {r[0] for r in rows} <= {"circle", "star"}
    assert run_cli(files["rgb"], "--weights", weights, "--classes", "cat", "--out", out) == 2
    assert "unknown class 'cat'" in capsys.readouterr().err
    assert run_cli(tmp_path / "nope.jpg", "--weights", weights, "--out", out) == 2
    assert "no such file, folder or glob" in capsys.readouterr().err


def make_video(path: Path, frames: int = 6, size=(96, 64)) -> Path:
    import cv2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    rng = np.random.default_rng(2)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    import cv2
    cap, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    cap.release()
    return frames


def test_video_file(weights, tmp_path, capsys):
    video = make_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert run_cli(video, "--weights", weights, "--out", out, "--save-txt", "--batch", "4") == 0
    frames = read_video(out / "clip.mp4")
    assert len(frames) == 6 and frames[0].shape == (64, 96, 3)
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"clip_{i:06d}.txt" for i in range(6)]
    # batched CLI boxes == one-by-one library boxes on the decoded frames (txt: down to 0.001)
    predictor = Predictor(weights, "cpu", conf=0.001)
    for i, rgb in enumerate(read_video(video)):
        det = predictor([rgb])[0]
        rows = read_txt(out / "labels" / f"clip_{i:06d}.txt")
        np.testing.assert_allclose(np.array([r[2:] for r in rows]).reshape(-1, 4), det["boxes"], atol=0.006)
    assert "6 frames" in capsys.readouterr().out
    assert run_cli(video, "--weights", weights, "--out", tmp_path / "o2", "--max-frames", "2") == 0
    assert len(read_video(tmp_path / "o2" / "clip.mp4")) == 2
    # the annotated clip.mp4 would land on the input: refused, input untouched
    size = video.stat().st_size
    assert run_cli(video, "--weights", weights, "--out", tmp_path) == 2
    assert video.stat().st_size == size and "would overwrite the input" in capsys.readouterr().err


class FakeCapture:
    """Stands in for cv2.VideoCapture(0): a few BGR frames, then the camera 'closes'."""

    def __init__(self, frames: list[np.ndarray], opened: bool = True) -> None:
        self.frames, self.opened, self.released = list(frames), opened, False

    def isOpened(self) -> bool:
        return self.opened

    def get(self, prop: int) -> float:
        return 0.0  # cameras often report no fps / frame count

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self) -> None:
        self.released = True


def test_camera_index_with_mocked_capture(weights, tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(4)
    fake = FakeCapture([rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(5)])
    asked = []
    monkeypatch.setattr("detpipe.infer.sources.open_capture", lambda target: asked.append(target) or fake)
    out = tmp_path / "cam"
    assert run_cli("0", "--weights", weights, "--out", out, "--max-frames", "3", "--save-txt") == 0
    assert asked == [0] and fake.released and len(fake.frames) == 2
    assert len(read_video(out / "camera0.mp4")) == 3
    assert len(list((out / "labels").glob("camera0_*.txt"))) == 3
    monkeypatch.setattr("detpipe.infer.sources.open_capture", lambda target: FakeCapture([], opened=False))
    assert run_cli("1", "--weights", weights, "--out", out) == 2
    assert "camera 1 could not be opened" in capsys.readouterr().err


def test_txt_round_trips_through_evaluate(weights, tiny_records, tmp_path):
    records = tiny_records[:6]
    images, gt = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    gt.mkdir()
    for r in records:
        name = Path(r.path).name
        (images / name).write_bytes(Path(r.path).read_bytes())
        (gt / (Path(name).stem + ".txt")).write_text("".join(
            f"{CLASSES[c]} {b[0]:g} {b[1]:g} {b[2]:g} {b[3]:g}{' difficult' if d else ''}\n"
            for b, c, d in zip(r.boxes, r.labels, r.difficult)))
    out = tmp_path / "pred"
    assert run_cli(images, "--weights", weights, "--out", out, "--save-txt", "--conf", "0.01") == 0
    assert evaluate_cli.main(["--gt", str(gt), "--det", str(out / "labels"), "--out", str(tmp_path / "eval"),
                              "--classes", ",".join(CLASSES)]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    dets = Predictor(weights, "cpu", conf=0.01)([load_rgb(r.path) for r in records])
    gts = [{"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult} for r in records]
    assert metrics["map50"] == pytest.approx(float(voc_map(gts, dets, len(CLASSES), 0.5).map), abs=1e-3)


def test_predict_stage_gives_the_cli_boxes(weights, tiny_records, tmp_path, monkeypatch):
    records = tiny_records[:5]
    params = tiny_params("unused")
    params["model"]["imgsz"] = IMGSZ
    params["predict"].update(batch_size=2, samples=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_lines(tmp_path / "test.txt", records)
    csv_path = tmp_path / "det.csv"
    monkeypatch.setattr(sys, "argv", ["predict.py", "--params", str(tmp_path / "params.yaml"), "--weights",
                                      str(weights), "--split", str(tmp_path / "test.txt"), "--out", str(csv_path),
                                      "--samples-dir", str(tmp_path / "samples"), "--summary",
                                      str(tmp_path / "summary.json")])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "stages" / "predict.py"), run_name="__main__")
    assert done.value.code == 0
    with open(csv_path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for r in records:
        (folder / Path(r.path).name).write_bytes(Path(r.path).read_bytes())
    conf, iou = params["map"]["confidence"], params["predict"]["nms_iou"]
    assert run_cli(folder, "--weights", weights, "--out", tmp_path / "cli", "--save-txt", "--no-save",
                   "--conf", conf, "--iou", iou, "--batch", "3") == 0
    for r in records:
        stage = [(row["class"], float(row["score"]), *(float(row[k]) for k in ("x1", "y1", "x2", "y2")))
                 for row in rows if row["image"] == r.path]
        cli = read_txt(tmp_path / "cli" / "labels" / (Path(r.path).stem + ".txt"))
        assert len(stage) == len(cli) > 0
        assert [s[0] for s in stage] == [c[0] for c in cli]
        np.testing.assert_allclose([s[1:] for s in stage], [c[1:] for c in cli], atol=0.011)
    # ... and both equal the training loop's evaluation of the same images
    model, _ = load_detector(weights)
    _, ref = evaluate(model, eval_loader(records, IMGSZ, 4, 0), torch.device("cpu"), IMGSZ, conf, iou, 100,
                      with_loss=False)
    mine = Predictor.from_model(model, CLASSES, IMGSZ, torch.device("cpu"), conf, iou, 100)(
        [load_rgb(r.path) for r in records], 2)
    for a, b in zip(ref, mine):
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-4)
        np.testing.assert_array_equal(a["labels"], b["labels"])


def test_fps_prints_every_part(weights, capsys):
    predictor = Predictor(weights, "cpu", conf=0.5)
    images = [np.zeros((30, 40, 3), np.uint8), np.full((50, 20, 3), 200, np.uint8)]
    r = time_parts(predictor, images, batch_size=3, runs=2, warmup=1)
    assert {"preprocess", "forward", "nms", "draw", "total", "images_per_s"} <= set(r)
    assert all(r[k] > 0 for k in ("preprocess", "forward", "nms", "draw"))
    assert r["total"] == pytest.approx(r["preprocess"] + r["forward"] + r["nms"] + r["draw"])
    assert fps_cli.main(["--weights", str(weights), "--batch", "1,2", "--images", "2", "--warmup", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "preprocess" in out and "decode+NMS" in out and "drawing" in out and "images/s" in out
    assert out.count("\n1 ") == 1 and out.count("\n2 ") == 1
