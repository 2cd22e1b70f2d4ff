"""reports/predict.json: what the predict stage did on the test split, and how long it took."""
from __future__ import annotations

from .base import Artifact


class PredictSummary(Artifact):
    WRITER = "predict"

    images: int
    detections: int                  # rows of the detections CSV
    confidence_for_csv: float        # map.confidence
    confidence_for_samples: float    # predict.confidence
    samples: int
    ms_per_image: float
    device: str
    seconds: float
