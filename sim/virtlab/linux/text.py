"""Output that teaches: numbered steps that say what and why before showing the result.

Every real-system command prints through a :class:`Teller`, so the demos read the same way:
a step announces what is about to happen and why it is needed, the call is shown as code, and
only then comes what was observed. Tests pass their own ``out`` to capture the text.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

__all__ = ["Teller", "table"]

WIDTH = 100


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format a plain-text table with columns sized to their contents."""
    cells = [[str(cell) for cell in headers], *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


class Teller:
    """Prints numbered, explained steps.

    Parameters
    ----------
    out:
        Where lines go (default :func:`print`).

    """

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.out = out
        self.number = 0

    def title(self, text: str, intro: str = "") -> None:
        """Print the command's headline and a paragraph on what it shows."""
        self.out(text)
        self.out("=" * len(text))
        if intro:
            self.para(intro)

    def step(self, what: str, why: str = "") -> None:
        """Announce the next step: what it does, then why."""
        self.number += 1
        self.out("")
        self.out(f"Step {self.number}. {what}")
        if why:
            self.para(why, indent="   ")

    def code(self, *lines: str) -> None:
        """Show the calls being made."""
        for line in lines:
            self.out(f"     >>> {line}")

    def show(self, label: str, value: object) -> None:
        """One observed value."""
        self.out(f"   {label}: {value}")

    def para(self, text: str, indent: str = "") -> None:
        """Print a wrapped paragraph."""
        self.out(textwrap.fill(" ".join(text.split()), WIDTH, initial_indent=indent,
                               subsequent_indent=indent))

    def block(self, text: str) -> None:
        """Pre-formatted lines (a table), indented."""
        for line in text.splitlines():
            self.out(f"   {line}")
