"""reports/data/split.json: each split's counts and how far val and test drift from train.

Distances are total variation (half the L1 distance of the two distributions: 0 identical,
1 disjoint). No wall time in it (the overfit and report stages read it).
"""
from __future__ import annotations

from .base import Artifact, Part


class SplitStats(Part):
    images: int
    objects: int
    images_without_objects: int
    difficult: int
    class_objects: dict[str, int]    # class -> objects, in data.classes order
    class_images: dict[str, int]     # class -> images holding it
    box_sizes: dict[str, int]        # small | medium | large (COCO areas) -> boxes


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
