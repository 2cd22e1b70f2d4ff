"""Synthetic datasets for measuring detpipe on data its defaults were not tuned on (issue #19):
`aerial` (many objects under 16 px), `photo` (photo-like pictures of shaded solids) and `solids`
(the photo world with other classes, a pretraining source). scripts/make_realdata.py writes them."""
from __future__ import annotations

from .aerial import WORLD as AERIAL
from .common import World
from .photo import PHOTO, SOLIDS

WORLDS: dict[str, World] = {w.name: w for w in (AERIAL, PHOTO, SOLIDS)}
