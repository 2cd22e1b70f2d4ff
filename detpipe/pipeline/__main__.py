"""`python -m detpipe.pipeline [--check]`: write dvc.yaml from the stage table (or check it is current)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .dvcfile import render


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", default=".", help="repo root (default: the current folder)")
    ap.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml is not what the table gives")
    args = ap.parse_args(argv)
    path = Path(args.root) / "dvc.yaml"
    text = render(args.root)
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if args.check:
        if current != text:
            print(f"{path} is out of date with detpipe/pipeline/table.py and the code's imports; "
                  "run `python -m detpipe.pipeline` to regenerate it", file=sys.stderr)
            return 1
        print(f"{path} is current")
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}" + (" (unchanged)" if current == text else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
