"""reports/train/recipe.json: the settings the training resolved from its inputs (each `auto` of
params.yaml), with the value used and the reason, for the report page (detpipe.recipe)."""
from __future__ import annotations

from ..recipe import Choice
from .base import Artifact


class TrainRecipe(Artifact):
    WRITER = "train_unfrozen"

    choices: list[Choice]
