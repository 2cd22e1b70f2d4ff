"""Shared fixtures: a tiny generated VOC dataset and params small enough to train in seconds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from detpipe.data.annotations import Record
from detpipe.data.dataset_check import check_dataset
from detpipe.params import DataParams
from scripts.synth import generate
from scripts.tiny_repo import tiny_params  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "triangle", "star")


@pytest.fixture(scope="session", autouse=True)
def private_onnx_cache(tmp_path_factory):
    """The onnxruntime backend's exported graphs go to a cache of the session's own (subprocesses
    inherit it), not the user's."""
    os.environ["DETPIPE_CACHE"] = str(tmp_path_factory.mktemp("detpipe-cache"))


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """Each test ends with torch's thread count as it began: the commands run in-process here set it
    (`fps --threads`; predict, fps and the predict stage leave onnxruntime the cores), and a later
    test's float tolerances may depend on it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module's tests (tiny models run faster and steadier on a shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory) -> Path:
    """A 24-image VOC dataset (VOCdevkit/VOC2007 under the returned folder)."""
    out = tmp_path_factory.mktemp("voc")
    generate(out, n_images=24, seed=3, style="shapes", min_size=64, max_size=128)
    return out


@pytest.fixture(scope="session")
def tiny_records(tiny_voc) -> list[Record]:
    """Records of the tiny dataset, as the annotate stage builds them (absolute paths)."""
    data = DataParams(root=str(tiny_voc / "VOCdevkit" / "VOC2007"), classes=CLASSES)
    result = check_dataset(data, base=Path("/"), workers=0)
    assert not result.errors
    return [Record("/" + r.path, r.boxes, r.labels, r.difficult) for r in result.records]
