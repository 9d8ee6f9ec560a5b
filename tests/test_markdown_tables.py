"""Every Markdown table in the README and docs/ renders as a table: a header row, a separator row,
and the same number of cells in every row (a table without its header renders as plain text)."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "benchmarks" / "README.md"]
)


def _cells(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    cells, current, in_code = [], "", False
    for index, char in enumerate(body):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code and (index == 0 or body[index - 1] != "\\"):
            cells.append(current.strip())
            current = ""
        else:
            current += char
    cells.append(current.strip())
    return cells


def _table_blocks(text: str) -> list[list[str]]:
    """Runs of lines starting with ``|`` outside fenced code blocks."""
    blocks: list[list[str]] = []
    current: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.lstrip().startswith("|"):
            current.append(line)
            continue
        if current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_has_a_header_a_separator_and_even_rows(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    blocks = _table_blocks(text)
    for block in blocks:
        header, *rest = block
        assert rest, f"{path.name}: a table of one line: {header[:60]}"
        separator = _cells(rest[0])
        assert all(set(c) <= set(":-") and "-" in c for c in separator), (
            f"{path.name}: the table starting {header[:60]!r} has no header row"
        )
        assert not all(set(c) <= set(":-") and c for c in _cells(header)), (
            f"{path.name}: the table starting {header[:60]!r} starts with its separator"
        )
        width = len(_cells(header))
        for row in rest:
            assert len(_cells(row)) == width, f"{path.name}: {row[:60]!r} has a different width"
    # And a Markdown parser agrees: each block renders as one table.
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    assert sum(t.type == "table_open" for t in tokens) == len(blocks), path.name


def test_a_table_without_its_header_is_caught() -> None:
    broken = "Intro\n\n| --- | --- |\n| `!x` | does x |\n"
    [block] = _table_blocks(broken)
    assert all(set(c) <= set(":-") for c in _cells(block[0]))
    tokens = MarkdownIt("commonmark").enable("table").parse(broken)
    assert sum(t.type == "table_open" for t in tokens) == 0
