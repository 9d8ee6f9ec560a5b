"""Every table in the README and docs/*.md renders as a table: a header row, a separator row,
and the same number of cells in every row (a table without its header renders as plain text)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_SEPARATOR_CELL = re.compile(r"\s*:?-{3,}:?\s*")
_CELL_BORDER = re.compile(r"(?<!\\)\|")


def cells(line: str) -> list[str]:
    """The cells of a table row, as GFM splits them (on pipes not escaped with a backslash)."""
    inner = line.strip()
    inner = inner.removeprefix("|")
    if inner.endswith("|") and not inner.endswith("\\|"):
        inner = inner[:-1]
    return _CELL_BORDER.split(inner)


def tables_and_stray_rows(text: str) -> tuple[list[list[str]], list[tuple[int, str]]]:
    """The tables the Markdown renders (their source lines) and the lines that look like table
    rows but render as text (outside code blocks), with their line numbers."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    lines = text.splitlines()
    in_table: set[int] = set()
    in_code: set[int] = set()
    tables: list[list[str]] = []
    for token in tokens:
        if token.map is None:
            continue
        start, end = token.map
        if token.type == "table_open":
            tables.append(lines[start:end])
            in_table.update(range(start, end))
        elif token.type in ("fence", "code_block", "html_block"):
            in_code.update(range(start, end))
    stray = [
        (number + 1, line)
        for number, line in enumerate(lines)
        if line.lstrip().startswith("|") and number not in in_table and number not in in_code
    ]
    return tables, stray


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_has_a_header_and_consistent_rows(path: Path) -> None:
    tables, stray = tables_and_stray_rows(path.read_text(encoding="utf-8"))
    assert not stray, f"{path.name}:{stray[0][0]} looks like a table row but is not in a table"
    for table in tables:
        header, separator, *rows = table
        width = len(cells(header))
        assert not all(_SEPARATOR_CELL.fullmatch(c) for c in cells(header)), (
            f"{path.name}: a table starts with its separator row, so it has no header: {header}"
        )
        assert all(_SEPARATOR_CELL.fullmatch(c) for c in cells(separator)), separator
        assert len(cells(separator)) == width, f"{path.name}: separator width: {separator}"
        for row in rows:
            assert len(cells(row)) == width, f"{path.name}: {width} columns expected: {row[:80]}"


def test_the_check_catches_a_table_without_its_header_row() -> None:
    broken = "Intro.\n\n| --- | --- |\n| `!help` | everyone |\n"
    tables, stray = tables_and_stray_rows(broken)
    assert tables == [] and [n for n, _ in stray] == [3, 4]
    fine = "| A | B |\n| --- | --- |\n| 1 | 2 \\| 3 |\n"
    tables, stray = tables_and_stray_rows(fine)
    assert stray == [] and len(tables) == 1
    assert [len(cells(row)) for row in tables[0]] == [2, 2, 2]
