import numpy as np
import pytest

from detpipe.data.annotations import Record, format_line, parse_line, read_lines, write_lines


def _record(path, n=2, difficult=None):
    boxes = np.array([[1, 2, 30, 40], [5.5, 6.25, 70, 80]], dtype=float)[:n]
    return Record(path, boxes, np.array([0, 3])[:n],
                  np.array(difficult if difficult is not None else [False, True])[:n])


@pytest.mark.parametrize("path", ["data/img 1.jpg", "data/中文 目录/图像 01.JPG", "a  two  spaces.png",
                                  "data/x,y/1,2,3,4,5.jpg", "plain.jpg"])
def test_round_trip_paths(path):
    rec = _record(path)
    back = parse_line(format_line(rec))
    assert back.path == path
    np.testing.assert_array_equal(back.boxes, rec.boxes)
    np.testing.assert_array_equal(back.labels, rec.labels)
    np.testing.assert_array_equal(back.difficult, rec.difficult)


def test_format_is_the_tutorial_format():
    line = format_line(_record("img.jpg", difficult=[False, False]))
    assert line == "img.jpg 1,2,30,40,0 5.5,6.25,70,80,3"
    assert format_line(_record("img.jpg")).endswith(",3,1")


def test_image_without_objects_is_a_path_alone():
    rec = parse_line("data/background image.jpg\n")
    assert rec.path == "data/background image.jpg" and len(rec) == 0 and rec.boxes.shape == (0, 4)
    assert format_line(rec) == rec.path


def test_file_round_trip_and_errors(tmp_path):
    recs = [_record("a b.jpg"), _record("c.jpg", 0)]
    write_lines(tmp_path / "x.txt", recs)
    back = read_lines(tmp_path / "x.txt")
    assert [r.path for r in back] == ["a b.jpg", "c.jpg"]
    (tmp_path / "bad.txt").write_text("ok.jpg\n 1,2,3,4,0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt:2"):
        read_lines(tmp_path / "bad.txt")
