"""reports/data/annotate.json: what the annotate stage (and `detpipe check-data --report`) found.

The books balance: images in = kept + skipped by reason, objects likewise. No wall time in it: an
unchanged dataset leaves the file unchanged, so nothing after it reruns.
"""
from __future__ import annotations

from pydantic import Field

from .base import Artifact, Part


class Issue(Part):
    """A warning or error about one file: `kind` is a short name, `message` says what and the fix."""

    file: str
    kind: str
    message: str


class ImageCounts(Part):
    in_: int = Field(alias="in")
    kept: int
    skipped: dict[str, int]      # by reason
    without_objects: int


class ObjectCounts(Part):
    in_: int = Field(alias="in")
    kept: int
    skipped: dict[str, int]      # by reason


class ClassCounts(Part):
    objects: int
    images: int
    difficult: int


class AnnotateReport(Artifact):
    WRITER = "annotate"

    source: dict[str, str]                   # type (voc | coco | yolo) and where it was read
    classes: list[str]
    images: ImageCounts
    objects: ObjectCounts
    per_class: dict[str, ClassCounts]
    images_without_objects: list[str]        # their paths
    image_modes: dict[str, int]              # PIL mode -> images
    warning_counts: dict[str, int]           # kind -> warnings
    warnings: list[Issue]
    errors: list[Issue]
