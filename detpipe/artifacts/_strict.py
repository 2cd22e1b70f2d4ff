"""The base of the JSON contracts: frozen dataclasses whose reader refuses missing, unknown and
mistyped fields.

Standard library only (no pydantic): `detpipe evaluate` reads and writes these files and must
stay a numpy-and-stdlib command (tests/test_metrics_cli.py).
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from .. import atomic
from .error import ArtifactError

T = TypeVar("T", bound="StrictJson")


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fail(where: str, msg: str) -> None:
    raise _Mismatch(f"{where or '(top level)'}: {msg}")


class _Mismatch(Exception):
    pass


def _convert(tp: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) as type `tp`, or _Mismatch naming the first field that does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            _fail(where, f"expected an object, got {type(value).__name__}")
        names = [f.name for f in dataclasses.fields(tp)]
        missing = [n for n in names if n not in value]
        unknown = [k for k in value if k not in names]
        if missing:
            _fail(where, f"missing field {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        if unknown:
            _fail(where, f"unknown field {unknown[0]!r}")
        hints = _hints(tp)
        return tp(**{n: _convert(hints[n], value[n], f"{where}.{n}".lstrip(".")) for n in names})
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is dict:
        if not isinstance(value, dict):
            _fail(where, f"expected an object, got {type(value).__name__}")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            _fail(where, f"expected a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            _fail(where, f"expected a number, got {value!r}")
        return float(value)
    if tp in (int, bool, str):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            _fail(where, f"expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"contract type {tp!r} at {where} is not supported")


@dataclasses.dataclass(frozen=True)
class StrictJson:
    """A whole JSON file. Subclasses set WRITER, what to rerun to get a good file."""

    WRITER: ClassVar[str] = "the stage that writes it"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | Path) -> Path:
        """Write the file atomically (a kill leaves the old file or the new one)."""
        atomic.write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return Path(path)

    @classmethod
    def from_dict(cls: type[T], data: Any, where: str = "") -> T:
        try:
            return _convert(cls, data, "")
        except _Mismatch as exc:
            raise ArtifactError(f"{where or cls.__name__}: {exc}; the file is not what {cls.__name__} expects "
                                f"(written by another version?): rerun {cls.WRITER}") from None

    @classmethod
    def read(cls: type[T], path: str | Path) -> T:
        """The file's content, checked field by field; ArtifactError (one line) when it does not fit."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ArtifactError(f"{path}: not JSON ({exc}); rerun {cls.WRITER}") from None
        return cls.from_dict(data, str(path))
