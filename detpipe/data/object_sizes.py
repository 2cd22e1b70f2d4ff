"""How big the labelled objects are once letterboxed: what `model.imgsz: auto` reads (detpipe.recipe)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .annotations import Record
from .images import PixelLimit, inspect_image


def relative_short_sides(records: Sequence[Record], pixel_limit: PixelLimit) -> np.ndarray:
    """float64 [objects]: each box's shorter side / its image's longer side, in the displayed (EXIF-turned)
    frame the boxes are drawn in. Times an input size S it is the side in pixels after letterboxing to S,
    which scales the longer image side to S. Reads each image's header (decodes non-JPEGs)."""
    sides = []
    for r in records:
        if len(r):
            info = inspect_image(r.path, verify=False, pixel_limit=pixel_limit)
            wh = r.boxes[:, 2:] - r.boxes[:, :2]
            sides.append(wh.min(axis=1) / max(info.width, info.height))
    return np.concatenate(sides) if sides else np.zeros(0)
