"""Markdown tables: the one layout every results table of the project is written in.

A leaf module (no project imports), so evaluation code, text2pose, scripts and benchmarks can
all share it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def md_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table, its lines joined by newlines (no newline after the last).

    Cells are written with ``str`` as they are: a caller escapes ``|`` where a cell may hold
    one.
    """
    lines = [_line(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [_line(cells) for cells in rows]
    return "\n".join(lines)


def _line(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
