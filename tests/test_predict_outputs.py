"""Where `detpipe predict` writes: names from files never leave --out, two inputs never share an
output, symlink loops are walked once, list files are sources."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detpipe.model import checkpoint as ckpt
from detpipe.cli import predict as predict_cli
from detpipe.data.images import load_rgb
from detpipe.infer.predictor import Predictor
from detpipe.model.detector import Detector, ModelConfig
from detpipe.safe_names import MAX_BYTES, UniqueNames, safe_name, unique_safe_names
from detpipe.infer.sources import open_source
from detpipe.data.walk import glob_files, walk_files
from tests.test_predict_cli import make_weights, read_txt

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HOSTILE = ["../../x", "/abs", "C:\\win", "a\x00b", "nul", "CON.txt", "..", ".", "", " ", "a/b", "a_b", "A_B",
           "lpt1", "猫 cat", "x" * 300, "é" * 150, ".hidden", "trailing. ", "tab\tname"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("w") / "tiny.pt")


def image(path: Path, seed: int, size=(80, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_safe_name_keeps_every_name_one_component_inside_the_folder(tmp_path):
    rng = random.Random(0)
    alphabet = "./\\\x00:*?<>|\" aé猫\t\n"
    names = HOSTILE + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(2000)]
    for name in names:
        safe = safe_name(name)
        assert safe and safe not in (".", "..") and not set(safe) & set("/\\\x00:*?<>|\"\t\n"), (name, safe)
        assert not safe.startswith((".", " ")) and not safe.endswith((".", " "))
        assert safe.split(".")[0].lower() not in ("con", "prn", "aux", "nul", "com1", "lpt1")
        assert len(safe.encode()) <= MAX_BYTES
        assert (tmp_path / safe).resolve().parent == tmp_path.resolve()
    assert safe_name("猫 cat") == "猫 cat" and safe_name("circle") == "circle"
    dirs = unique_safe_names(["a/b", "a_b", "A_B", "a b"])
    assert len({d.casefold() for d in dirs}) == 4 and dirs[0] == "a_b"


def test_unique_names_use_the_alternative_then_numbers():
    pool = UniqueNames()
    assert [pool.claim("one", "one.jpg"), pool.claim("one", "one.png", alternative="one_png"),
            pool.claim("ONE", "ONE.gif", alternative="ONE_gif"), pool.claim("one", "x", alternative="one_png")] == \
        ["one", "one_png", "ONE_gif", "one_png_2"]
    assert pool.renamed == {"one.png": "one_png", "ONE.gif": "ONE_gif", "x": "one_png_2"}


def crafted_weights(path: Path, names: list[str]) -> Path:
    """A model file whose metadata names classes like an attacker would."""
    torch.manual_seed(0)
    config = ModelConfig(len(names), "shufflenet_v2_x0_5", 16)
    model = Detector(config).eval()
    for branch in model.head.cls:
        torch.nn.init.zeros_(branch[-1].bias)  # every class scores ~0.5: crops of every class
    state = model.state_dict()
    ckpt.save_atomic({"model": state, "ema": state, "model_config": config.to_dict(), "class_names": names,
                      "imgsz": 64}, path)
    return path


def test_crafted_class_names_never_leave_out(tmp_path, capsys):
    names = ["../../escaped", "/abs_escaped", "a\x00b", "nul", "a/b", "a_b"]
    weights = crafted_weights(tmp_path / "evil.pt", names)
    image(tmp_path / "in" / "p.jpg", 0)
    out = tmp_path / "work" / "out"
    before = files_under(tmp_path)
    assert predict_cli.main([str(tmp_path / "in"), "--weights", str(weights), "--out", str(out), "--save-crop",
                             "--save-txt", "--conf", "0.3"]) == 0
    written = files_under(tmp_path) - before
    assert written and all(out.resolve() in p.resolve().parents for p in written)
    assert not list(Path("/").glob("abs_escaped*")) and not (tmp_path / "escaped").exists()
    crop_dirs = {p.parent.name for p in (out / "crops").rglob("*.jpg")}
    assert crop_dirs <= set(unique_safe_names(names)) and len(crop_dirs) == len(names)
    capsys.readouterr()


def test_crafted_onnx_metadata_never_leaves_out(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from detpipe.infer.onnx_export import export_onnx
    names = ["../../escaped", "/abs_escaped", "nul", "a/b"]
    onnx_path = export_onnx(crafted_weights(tmp_path / "evil.pt", names), tmp_path / "evil.onnx")
    image(tmp_path / "in" / "p.jpg", 0)
    out = tmp_path / "work" / "out"
    before = files_under(tmp_path)
    assert predict_cli.main([str(tmp_path / "in"), "--weights", str(onnx_path), "--out", str(out), "--save-crop",
                             "--conf", "0.3"]) == 0
    written = files_under(tmp_path) - before
    assert written and all(out.resolve() in p.resolve().parents for p in written)
    assert {p.parent.name for p in (out / "crops").rglob("*.jpg")} == set(unique_safe_names(names))
    capsys.readouterr()


def test_colliding_inputs_get_distinct_outputs(weights, tmp_path, capsys):
    src = tmp_path / "in"
    paths = {"one.jpg": image(src / "one.jpg", 1), "one.png": image(src / "one.png", 2),
             "sub/a.jpg": image(src / "sub" / "a.jpg", 3), "sub__a.jpg": image(src / "sub__a.jpg", 4),
             "labels/z.jpg": image(src / "labels" / "z.jpg", 5)}
    out = tmp_path / "out"
    assert predict_cli.main([str(src), "--weights", str(weights), "--out", str(out), "--save-txt", "--save-crop"]) == 0
    printed = capsys.readouterr().out
    assert "one.png -> one.png (txt/crops: one_png)" in printed and "sub__a.jpg -> sub__a.jpg (txt/crops: sub__a_jpg)" in printed
    stems = {"one.jpg": "one", "one.png": "one_png", "sub/a.jpg": "sub__a", "sub__a.jpg": "sub__a_jpg",
             "labels/z.jpg": "labels__z"}
    predictor = Predictor(weights, "cpu", conf=0.001)
    for rel, stem in stems.items():
        det = predictor([load_rgb(paths[rel])])[0]
        rows = read_txt(out / "labels" / f"{stem}.txt")
        np.testing.assert_allclose([r[1] for r in rows], det["scores"], atol=1e-6)  # each file holds its own image's boxes
    assert (out / "labels_input" / "z.jpg").is_file() and not (out / "labels" / "z.jpg").exists()
    crops = [p.name for p in (out / "crops").rglob("*.jpg")]
    assert len(crops) == len(set(crops)) and {c.rsplit("_", 1)[0] for c in crops} == set(stems.values())


def test_drawn_names_differing_only_in_case_do_not_collide(weights, tmp_path, capsys):
    src = tmp_path / "in"
    image(src / "A.jpg", 1)
    image(src / "a.jpg", 2)
    out = tmp_path / "out"
    assert predict_cli.main([str(src), "--weights", str(weights), "--out", str(out), "--save-txt"]) == 0
    assert {p.name for p in out.glob("*.jpg")} == {"A.jpg", "a_jpg.jpg"}
    assert {p.name for p in (out / "labels").iterdir()} == {"A.txt", "a_jpg.txt"}
    assert "a.jpg -> a_jpg.jpg" in capsys.readouterr().out


def loop_tree(root: Path) -> Path:
    """in/a/x.jpg, in/a/up -> .. (a loop), in/a/again -> ../a (a second loop), in/ext -> ../elsewhere."""
    image(root / "in" / "a" / "x.jpg", 1)
    image(root / "elsewhere" / "y.jpg", 2)
    os.symlink("..", root / "in" / "a" / "up")
    os.symlink("../a", root / "in" / "a" / "again")
    os.symlink("../elsewhere", root / "in" / "ext")
    return root / "in"


@pytest.mark.timeout(60)
def test_symlink_loops_are_walked_once(tmp_path, monkeypatch):
    src = loop_tree(tmp_path)
    assert [p.relative_to(src).as_posix() for p in walk_files(src)] == ["a/x.jpg", "ext/y.jpg"]
    assert [p.name for p in glob_files(str(src / "**" / "*.jpg"))] == ["x.jpg", "y.jpg"]
    assert open_source(str(src)).files == walk_files(src)
    monkeypatch.chdir(tmp_path)
    assert [p.as_posix() for p in open_source("in/**/*.jpg").files] == ["in/a/x.jpg", "in/ext/y.jpg"]
    assert [p.as_posix() for p in open_source("in/*/*.jpg").files] == ["in/a/x.jpg", "in/ext/y.jpg"]
    assert open_source("in/a/*.jpg").files == [Path("in/a/x.jpg")]


def test_glob_rules_match_pythons_glob(tmp_path, monkeypatch):
    """On a tree without loops the walk gives exactly what glob.glob(recursive=True) gives."""
    import glob
    for rel in ("a.jpg", "b.PNG", ".hidden.jpg", "d/c.jpg", "d/e/f.jpg", ".h/g.jpg", "d/.i/j.jpg", "k[1].jpg"):
        image(tmp_path / rel, 0, (8, 8))
    monkeypatch.chdir(tmp_path)
    for pattern in ("*.jpg", "**/*.jpg", "d/**/*.jpg", "d/*", "**/*", "*/*.jpg", "**", "?.jpg", "[ab].*", "d/**"):
        want = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        assert sorted(str(p) for p in glob_files(pattern)) == want, pattern


def test_list_file_source(weights, tmp_path, capsys, monkeypatch):
    image(tmp_path / "imgs" / "p.jpg", 1)
    image(tmp_path / "imgs" / "q.jpg", 2)
    (tmp_path / "list.txt").write_text("imgs/p.jpg\n# a comment\n\nimgs/q.jpg\nimgs/missing.jpg\nimgs/p.jpg\n")
    monkeypatch.chdir(tmp_path / "imgs")  # paths resolve relative to the list's folder too
    src = open_source(str(tmp_path / "list.txt"))
    assert src.kind == "list" and [p.name for p in src.files] == ["p.jpg", "q.jpg"] and src.truth is None
    assert predict_cli.main([str(tmp_path / "list.txt"), "--weights", str(weights), "--out", str(tmp_path / "o"),
                             "--save-txt"]) == 0
    captured = capsys.readouterr()
    assert "list.txt:5: no such file" in captured.err
    assert {p.name for p in (tmp_path / "o" / "labels").iterdir()} == {"p.txt", "q.txt"}
    assert not (tmp_path / "o" / "gt").exists()  # bare paths carry no ground truth


def test_weights_default_is_models_best_pt(weights, tmp_path, monkeypatch, capsys):
    from detpipe.cli import export, fps, summary
    image(tmp_path / "p.jpg", 1)
    monkeypatch.chdir(tmp_path)
    for main, args in ((predict_cli.main, ["p.jpg"]), (fps.main, ["--batch", "1", "--images", "1"]),
                       (export.main, []), (summary.main, ["--params", "nope.yaml"])):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("--weights" in err or "--params" in err), err
    assert predict_cli.main(["p.jpg", "--weights", "nope.pt"]) == 2
    assert "--weights nope.pt: no such file" in capsys.readouterr().err
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "best.pt").write_bytes(weights.read_bytes())
    assert predict_cli.main(["p.jpg", "--out", "o"]) == 0
    assert "models/best.pt" in capsys.readouterr().out
    assert summary.main([]) == 0 and capsys.readouterr().out.startswith("models/best.pt:")
