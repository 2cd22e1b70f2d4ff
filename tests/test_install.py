"""Installs are reproducible: every package the README's install puts in the venv is pinned in
constraints.txt, the install command uses it, and what is installed is what it pins."""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_requirement_and_what_it_pulls_in_is_pinned():
    pins = _pins()
    reqs = [Requirement(ln.split("#")[0]) for ln in (REPO / "requirements.txt").read_text().splitlines()
            if ln.split("#")[0].strip()]
    todo, seen = [r.name for r in reqs], set()
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        assert name in pins, f"{name} is installed by requirements.txt but not pinned in constraints.txt"
        for dep in metadata.requires(name) or []:
            req = Requirement(dep)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)


def test_installed_versions_are_the_pinned_ones():
    wrong = {name: (metadata.version(name), v) for name, v in _pins().items()
             if metadata.version(name) != v}
    assert not wrong, f"installed (got, pinned): {wrong}; reinstall with -c constraints.txt"


def test_install_commands_use_the_constraints():
    for path in ("README.md", ".ci/run"):
        text = (REPO / path).read_text(encoding="utf-8")
        assert "-r requirements.txt -c constraints.txt" in text, path
