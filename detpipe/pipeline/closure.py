"""The library code a script runs: the import closure of a file inside the `detpipe` package.

Read statically from the source (every `import`, also those inside functions, which run lazily but
still decide results), so it needs nothing imported and sees exactly what a reader of the code sees.
Package `__init__.py` files count: importing `detpipe.metrics.voc` runs `detpipe/metrics/__init__.py`.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "detpipe"


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of module `dotted` under `root` (a module or a package's __init__), or None."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(root: Path, path: Path) -> str:
    """Dotted package a file belongs to (for resolving relative imports)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    else:
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> set[str]:
    """Dotted names of the `detpipe` modules `path` imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    inside = path.resolve().is_relative_to((root / PACKAGE).resolve())
    package = _package_of(root, path) if inside else ""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in base_parts if p)
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            # `from detpipe import accel` imports the submodule detpipe.accel
            names.update(f"{module}.{a.name}" for a in node.names if a.name != "*")
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


def _with_parents(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def code_closure(script: str | Path, root: str | Path) -> list[str]:
    """Repo-relative POSIX paths of `script` and every detpipe file it imports, directly or not, sorted."""
    root = Path(root).resolve()
    start = (root / script).resolve()
    seen: set[Path] = {start}
    todo = [start]
    while todo:
        for dotted in imported_modules(todo.pop(), root):
            for name in _with_parents(dotted):
                found = _module_file(root, name)
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return sorted(p.relative_to(root).as_posix() for p in seen)
