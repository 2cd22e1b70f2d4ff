"""A stage's view of params: the keys the stage table declares for it, and nothing else.

DVC and Snakemake rerun a stage when one of its declared params changes. A stage that read an
undeclared key would silently escape that rule, so the view raises on any other key: the
end-to-end tests run every stage through it, and a new read without a table entry fails there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class UndeclaredParamError(AttributeError):
    """A stage read a params key its stage-table entry does not list."""


class ParamsView:
    """Attribute access to `obj` restricted to the dotted keys in `allowed` (and everything under them)."""

    __slots__ = ("_obj", "_prefix", "_allowed", "_stage")

    def __init__(self, obj: Any, allowed: tuple[str, ...], stage: str, prefix: str = "") -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_allowed", tuple(allowed))
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        path = self._prefix + name
        value = getattr(self._obj, name)
        if path in self._allowed:
            return value
        if any(a.startswith(path + ".") for a in self._allowed):
            return ParamsView(value, self._allowed, self._stage, path + ".")
        raise UndeclaredParamError(
            f"stage {self._stage} reads params key {path!r}, which its entry in detpipe/pipeline/table.py "
            f"does not declare (declared: {', '.join(self._allowed) or 'none'}); add it there and run "
            "`python -m detpipe.pipeline` to regenerate dvc.yaml")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are read-only")

    def __repr__(self) -> str:
        return f"ParamsView({self._stage}: {', '.join(self._allowed)})"

    def replace(self, **sections: Any) -> "ParamsView":
        """The same view of a validated copy with whole top-level `sections` replaced (resolved settings)."""
        if self._prefix:
            raise AttributeError("replace works on a stage's whole params view")
        return ParamsView(self._obj.replace(**sections), self._allowed, self._stage)

    def declared(self) -> dict[str, Any]:
        """The declared keys under this view as a nested plain dict (what the stage depends on)."""
        from ..params import to_dict  # params is below pipeline; imported here to keep this module light

        out: dict[str, Any] = {}
        for key in self._allowed:
            if not key.startswith(self._prefix):
                continue
            node, parts = self._obj, key[len(self._prefix):].split(".")
            for part in parts:
                node = getattr(node, part)
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = _plain(node, to_dict)
        return out


def _plain(value: Any, to_dict) -> Any:
    if isinstance(value, tuple):
        return [_plain(v, to_dict) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return to_dict(value)


def load_stage_params(path: str | Path, keys: tuple[str, ...], stage: str) -> ParamsView:
    """Load and validate the whole params file (a bad value ends the process with its one-line
    error), then hand the stage only its declared `keys`."""
    from ..params import load_params_or_exit

    return ParamsView(load_params_or_exit(path), keys, stage)


def as_dict(params: Any) -> dict[str, Any]:
    """Plain-dict params for checkpoints and fingerprints: a view's declared keys, or all of a Params."""
    if isinstance(params, ParamsView):
        return params.declared()
    from ..params import to_dict

    return to_dict(params)
