"""reports/data/split.json: each split's counts and how far val and test drift from train.

Distances are total variation (half the L1 distance of the two distributions: 0 identical,
1 disjoint). No wall time in it (the overfit and report stages read it).
"""
from __future__ import annotations

from .base import Artifact, Part


class ObjectScale(Part):
    """Median object size, √(w·h), as a fraction of its image's longer side: the letterbox scales
    that side to model.imgsz, so fraction × imgsz = the object's size in the pixels the model sees
    (no augmentation zoom). Over all objects and over COCO-small ones (area ≤ 32² on the original
    image); None when there are none."""

    objects: int                 # measured (objects of images whose size could be read)
    median: float | None
    small_objects: int
    median_small: float | None


class SplitStats(Part):
    images: int
    objects: int
    images_without_objects: int
    difficult: int
    class_objects: dict[str, int]    # class -> objects, in data.classes order
    class_images: dict[str, int]     # class -> images holding it
    box_sizes: dict[str, int]        # small | medium | large (COCO areas) -> boxes
    object_scale: ObjectScale


class SplitComparison(Part):
    """One split against train."""

    class_shift: float
    size_shift: float
    flagged: bool
    reason: str


class SplitReport(Artifact):
    WRITER = "split"

    method: str                              # hashed | imagesets
    seed: int
    fractions: dict[str, float]
    splits: dict[str, SplitStats]            # train, val, test
    comparison: dict[str, SplitComparison]   # val, test
    flagged: list[str]
    warnings: list[str]
