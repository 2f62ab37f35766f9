"""Regenerate the generated part of docs/parameters.md from the parameter declarations."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from virtlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- BEGIN GENERATED: virtlab params --markdown -->"
END = "<!-- END GENERATED -->"


def update() -> None:
    """Rewrite the block between the markers."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main(["params", "--markdown"])
    page_path = ROOT / "docs" / "parameters.md"
    page = page_path.read_text(encoding="utf-8")
    head, rest = page.split(BEGIN)
    _, tail = rest.split(END)
    page_path.write_text(f"{head}{BEGIN}\n{buffer.getvalue().strip()}\n{END}{tail}",
                         encoding="utf-8")


if __name__ == "__main__":
    update()
