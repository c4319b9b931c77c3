"""The Markdown pages render: no table is cut in two by a stray blank line.

A Markdown table is a header row, a delimiter row (``|---|---|``) and body rows, all
contiguous. A row after a blank line starts a new table, which needs its own header and
delimiter; without them the row renders as a paragraph of pipes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
DELIMITER = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def stray_rows(text: str) -> list[int]:
    """Line numbers (1-based) of table rows that follow a blank line without being the
    header of a new table; fenced code blocks are skipped."""
    lines = text.splitlines()
    found, fenced = [], False
    for index, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        starts_table = (
            not fenced and line.startswith("|") and (index == 0 or not lines[index - 1].strip())
        )
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if starts_table and not DELIMITER.match(following):
            found.append(index + 1)
    return found


def test_the_check_finds_a_row_cut_off_by_a_blank_line() -> None:
    table = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert stray_rows(table) == []
    assert stray_rows(table + "\n| 3 | 4 |\n") == [5]
    assert stray_rows("text\n\n" + table + "\n" + table) == []  # two whole tables
    assert stray_rows("```\n\n| not | a table |\n```\n") == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_table_is_cut_by_a_blank_line(page: Path) -> None:
    assert stray_rows(page.read_text()) == [], page
