"""The one table ``make bench`` prints: every figure with its reference and their ratio."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO


@dataclass(frozen=True)
class Row:
    """One figure. ``ratio`` is value / reference (both in the same unit, same run);
    ``target`` says what the ratio (or the value) must be, ``met`` whether it is."""

    section: str
    name: str
    value: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        # Each figure is also shown as it is made: the full run takes minutes.
        sys.stderr.write(f"bench: {row.section} / {row.name}: {row.value}  {row.ratio}\n")

    def print(self, out: TextIO = sys.stdout) -> None:
        head = ("figure", "value", "reference", "ratio", "target", "")
        cells = [
            (
                f"  {r.name}",
                r.value,
                r.reference,
                r.ratio,
                r.target,
                "" if r.met is None else ("met" if r.met else "NOT MET"),
            )
            for r in self.rows
        ]
        widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]

        def line(c: tuple[str, ...]) -> str:
            return "  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip() + "\n"

        out.write(line(head))
        out.write("  ".join("-" * w for w in widths) + "\n")
        section = None
        for row, c in zip(self.rows, cells, strict=True):
            if row.section != section:
                section = row.section
                out.write(f"{section}\n")
            out.write(line(c))
        out.flush()


def ratio(value: float, reference: float, target: float | None = None) -> tuple[str, bool | None]:
    """``value / reference`` as text, and whether it is at most ``target``."""
    if reference <= 0:
        return "n/a", None
    r = value / reference
    return f"{r:.2f}x", None if target is None else r <= target
