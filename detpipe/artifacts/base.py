"""The base of every JSON artifact: a frozen pydantic model with `write(path)` and a strict `read(path)`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import Self  # typing.Self from Python 3.11

from .. import atomic
from .error import ArtifactError

Scalar = bool | int | float | str | None  # a figure of a report's evidence


class Part(BaseModel):
    """A nested record of an artifact: every field required, no unknown field, no coercion."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)


class Artifact(Part):
    """A JSON file one stage writes and others read. `WRITER` names that stage (for the fix)."""

    WRITER: ClassVar[str] = ""

    def to_json(self) -> dict:
        """The file's content (by field order, aliases as in the file)."""
        return self.model_dump(mode="json", by_alias=True)

    def write(self, path: str | Path) -> None:
        """Write atomically (a kill leaves the old file or the new), UTF-8, 2-space indent."""
        atomic.write_text(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """The file as this model; an ArtifactError (one line) when it is missing or does not fit."""
        fix = f"rerun the {cls.WRITER} stage (dvc repro / snakemake)"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc}); {fix}") from None
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "the file"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ArtifactError(f"{path}: {where}: {err['msg']}{more}; not a {cls.__name__} as this "
                                f"detpipe writes it: {fix}") from None
