"""models/pretrained.json: which starting weights `model.pretrained` names, a file by its content.

The frozen training phase depends on this record, so it reruns exactly when the weights changed.
"""
from __future__ import annotations

from pydantic import model_serializer

from .base import Artifact


class PretrainedRecord(Artifact):
    WRITER = "pretrained"

    pretrained: str                  # none | imagenet | coco | the path of a detpipe checkpoint
    backbone: str
    sha256: str | None = None        # a file's: its content
    bytes: int | None = None

    @model_serializer(mode="wrap")
    def _without_absent(self, handler):
        # A keyword start has no file: the record then holds only the two keys.
        return {k: v for k, v in handler(self).items() if v is not None}
