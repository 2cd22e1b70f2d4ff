"""The txt-folder reader (`detpipe.metrics.txt`) against a line-by-line reference written here,
on odd but valid files and on bad ones; and the class warnings of `read_txt_dirs`."""
from __future__ import annotations

import re

import numpy as np
import pytest

from detpipe.metrics.io import InputError
from detpipe.metrics.txt import read_txt_dirs, read_txt_files

FLAGS = {"difficult": True, "1": True, "0": False}


def reference(paths, kind):
    """Plain Python: decode (BOM dropped), split lines at CR, LF or CRLF, numbers from the end."""
    rows = []
    n = 4 if kind == "gt" else 5
    for f, p in enumerate(paths):
        text = open(p, "rb").read().decode("utf-8-sig")
        for number, line in enumerate(re.split(r"\r\n|\r|\n", text), 1):
            tok = line.split()
            if not tok:
                continue
            flag = False
            if kind == "gt" and len(tok) >= 6 and tok[-1].lower() in FLAGS:
                try:
                    [float(t) for t in tok[-5:-1]]
                    flag, tok = FLAGS[tok[-1].lower()], tok[:-1]
                except ValueError:
                    pass
            rows.append((f, number, " ".join(tok[:-n]), [float(t) for t in tok[-n:]], flag))
    return rows


def as_rows(r):
    return [(int(f), int(line), r.names[c], list(v), bool(fl))
            for f, line, c, v, fl in zip(r.file, r.line, r.cls, r.values, r.flag)]


def write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


ODD_DET = [
    b"cat 0.9 1 2 3 4\r\ndog 0.5 5 6 7 8\r\n",             # CRLF
    b"cat 0.9 1 2 3 4\rdog 0.5 5 6 7 8\r",                  # old Mac CR
    b"\n\ncat 0.9 1 2 3 4\n   \n\t\ndog 0.5 5 6 7 8\n\n",   # blank and whitespace-only lines
    b"cat 0.9 1 2 3 4   \ndog\t0.5\t5  6 7 8 \t\n",        # trailing blanks, tabs, runs
    b"cat 9e-1 1e0 2.0E+0 +3 4.\ndog .5 5 6 7 8",           # scientific, '+', '4.', '.5', no final newline
    b"\xef\xbb\xbfcat 0.9 1 2 3 4\n",                       # UTF-8 BOM
    b"traffic light 0.9 1 2 3 4\ntraffic   light 0.8 1 2 3 4\n",  # class name with spaces
    "chat noir \u00e9t\u00e9 0.9 1 2 3 4\n\u732b 0.5 1 2 3 4\n".encode(),  # non-ASCII names
    b"",                                                     # empty file
    b"0 0.9 1 2 3 4\n17 0.1 0 0 0 0\n",                     # numeric class names, zero-size box
]


@pytest.mark.parametrize("data", ODD_DET, ids=range(len(ODD_DET)))
def test_odd_detection_files_match_reference(tmp_path, data):
    paths = [write(tmp_path, "a.txt", data), write(tmp_path, "b.txt", b"cat 0.25 1 1 2 2\n")]
    assert as_rows(read_txt_files(paths, "det")) == reference(paths, "det")


ODD_GT = [
    b"cat 1 2 3 4\ndog 5 6 7 8 difficult\nbird 1 1 2 2 Difficult\n",
    b"cat 1 2 3 4 1\ndog 5 6 7 8 0\r\n",
    b"big cat 1 2 3 4\nbig cat 1 2 3 4 difficult\n",          # spaces and a flag
    b"cat 1 2 3 4 5\n",                                        # 'cat 1' with box 2 3 4 5: no flag
    b"\xef\xbb\xbfcat 1 2 3 4\n\n",
]


@pytest.mark.parametrize("data", ODD_GT, ids=range(len(ODD_GT)))
def test_odd_ground_truth_files_match_reference(tmp_path, data):
    paths = [write(tmp_path, "a.txt", data)]
    got = read_txt_files(paths, "gt")
    assert as_rows(got) == reference(paths, "gt")
    assert "\ufeffcat" not in got.names


def test_random_files_match_reference_bitwise(tmp_path):
    """Random valid files mixing every oddity; values must equal float() to the last bit."""
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "traffic light", "a", "\u732b", "x" * 70]
    seps = [" ", "  ", "\t", " \t "]
    ends = ["\n", "\r\n", "\r"]
    for side in ("det", "gt"):
        paths = []
        for i in range(30):
            lines = []
            for _ in range(rng.integers(0, 25)):
                if rng.random() < 0.1:
                    lines.append(" " * int(rng.integers(0, 3)))
                    continue
                nums = [f"{v:.{rng.integers(0, 8)}f}" if rng.random() < 0.8 else f"{v:.6e}"
                        for v in rng.random(4) * 1000]
                if side == "det":
                    nums = [f"{rng.random():.{rng.integers(1, 17)}g}"] + nums
                elif rng.random() < 0.2:
                    nums.append(str(rng.choice(["difficult", "1", "0", "DIFFICULT"])))
                sep = seps[rng.integers(len(seps))]
                lines.append(sep.join([str(rng.choice(names))] + nums) + " " * int(rng.integers(0, 2)))
            text = "".join(line + ends[rng.integers(len(ends))] for line in lines)
            if rng.random() < 0.2:
                text = "\ufeff" + text
            paths.append(write(tmp_path, f"{side}{i:03d}.txt", text.encode()))
        assert as_rows(read_txt_files(paths, side)) == reference(paths, side)


@pytest.mark.parametrize("gt_text, det_text, message", [
    ("cat 0 0 10 10\n", "cat nan 0 0 10 10\n", "det/a.txt:1: score nan is not finite"),
    ("cat 0 0 10 10\n\n\ncat 5 0 1 10\n", "", "gt/a.txt:4: box [5, 0, 1, 10] has a negative width"),
    ("cat 0 0 10 10\n", "cat 0.5 0 0 1_0 10\n", "det/a.txt:1: coordinate '1_0' is not a number"),
    ("cat 0 0 10 10\n", "cat 0.5 0 0 0x10 10\n", "det/a.txt:1: coordinate '0x10' is not a number"),
    ("cat 0 0 10 10\n", "0.5 0 0 10 10\n", "det/a.txt:1: expected 'class score x1 y1 x2 y2'"),
    ("cat 0 0 10 10\n", b"\xff\xfe 0.5 0 0 10 10\n", "det/a.txt:1: class name b'/xff/xfe' is not UTF-8 text; save the file as UTF-8"),  # \\ shown as /
    ("cat 0 0 10\n", "", "gt/a.txt:1: expected 'class x1 y1 x2 y2 [difficult]'"),
])
def test_bad_lines_name_file_and_line(tmp_path, gt_text, det_text, message):
    for side, text in (("gt", gt_text), ("det", det_text)):
        (tmp_path / side).mkdir()
        (tmp_path / side / "a.txt").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError) as err:
        read_txt_dirs(tmp_path / "gt", tmp_path / "det")
    assert message in str(err.value).replace("\\", "/")
    assert "\n" not in str(err.value)


def test_infinite_coordinate_line_number_counts_crlf_and_blank_lines(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "det").mkdir()
    (tmp_path / "gt" / "a.txt").write_text("cat 0 0 10 10\n")
    (tmp_path / "det" / "a.txt").write_bytes(b"cat 0.5 0 0 10 10\r\n\r\n  \r\ncat 0.5 0 0 inf 10\r\n")
    with pytest.raises(InputError, match=r"a\.txt:4: x2 inf is not finite"):
        read_txt_dirs(tmp_path / "gt", tmp_path / "det")


def test_empty_detection_files_are_no_detections(tmp_path):
    # A model with no box above `detpipe predict --txt-conf` writes empty files: mAP 0, not a traceback.
    gt, det = _dirs(tmp_path, {"a.txt": "cat 0 0 10 10\n"}, {"a.txt": ""})
    data, names, _ = read_txt_dirs(gt, det)
    assert data.num_images == 1 and len(data.g_lab) == 1 and len(data.d_score) == 0 and names == ["cat"]


def _dirs(tmp_path, gt: dict, det: dict):
    for side, files in (("gt", gt), ("det", det)):
        (tmp_path / side).mkdir()
        for name, text in files.items():
            (tmp_path / side / name).write_text(text, encoding="utf-8")
    return tmp_path / "gt", tmp_path / "det"


def test_class_only_in_detections_warns_with_the_nearest_name(tmp_path):
    gt, det = _dirs(tmp_path, {"a.txt": "cat 0 0 10 10\ndog 20 20 40 40\n"},
                    {"a.txt": "Cat 0.9 0 0 10 10\ndog 0.8 20 20 40 40\nzebra 0.3 1 1 5 5\n"})
    data, names, warnings = read_txt_dirs(gt, det)
    assert names == ["cat", "dog"] and len(data.d_score) == 1
    text = "\n".join(warnings)
    assert "class 'Cat': 1 detection(s) of a class absent from the ground truth, not scored; did you mean 'cat'?" in text
    assert "class 'zebra'" in text and "did you mean" not in text.split("zebra")[1].split("\n")[0]
    assert "class 'cat': 1 ground-truth object(s) and no detection, AP 0; detections have 'Cat'" in text


def test_bom_makes_no_phantom_class(tmp_path):
    gt, det = _dirs(tmp_path, {"a.txt": "\ufeffcat 0 0 10 10\n"}, {"a.txt": "\ufeffcat 0.9 0 0 10 10\n"})
    data, names, warnings = read_txt_dirs(gt, det)
    assert names == ["cat"] and warnings == [] and len(data.d_score) == 1


def test_given_classes_are_strict_and_suggest(tmp_path):
    gt, det = _dirs(tmp_path, {"a.txt": "cat 0 0 10 10\n"}, {"a.txt": "\n\nCat 0.9 0 0 10 10\n"})
    with pytest.raises(InputError, match=r"det/a\.txt:3: class 'Cat' is not in --classes \(cat, dog\); "
                                         r"did you mean 'cat'\?"):
        read_txt_dirs(gt, det, ["cat", "dog"])
