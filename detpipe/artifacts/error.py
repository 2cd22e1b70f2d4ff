"""The one error of every artifact reader (its own module: the CSV readers need no pydantic)."""
from __future__ import annotations


class ArtifactError(ValueError):
    """An artifact file is missing, malformed or of another layout; one line naming the file and the fix."""
