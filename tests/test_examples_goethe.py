"""examples/Goethe.csv and scripts/build_goethe_maximen.py: the German stand-in archive."""

from __future__ import annotations

import csv
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

# ``training`` is imported inside the tests: from tests/ it would resolve to tests/training.
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "Goethe.csv"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_goethe_maximen", ROOT / "scripts" / "build_goethe_maximen.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


build = _script()

# The transcription's shape: headers, unindented section labels, two-space-indented lines.
SAMPLE = (
    "1. Johann Wolfgang Goethe, Maximen und Reflexionen 1\r\n"
    "AUS DEN WAHLVERWANDTSCHAFTEN (1809 Ottiliens Tagebuch)\r\n"
    "  Man mag noch so eingezogen leben,\r\n"
    "  so wird man ein Schuldner.\r\n"
    "\r\n\r\n"
    "2. Goethe, Maximen und Reflexionen 2\r\n"
    "QUANTENTHEORIE\r\n"
    "  Die Sch\u00f6nheit: jede[?] milde\r\n"
    "Übereinstimmung.\r\n"
    "\r\n"
    "3. Goethe, Maximen und Reflexionen\r\n"
    "AUS KUNST UND ALTERTUM\r\n"
    "(1827  B r o c a r d i c o n)\r\n"
    "  ist keiner \u00fcber mich .. [bricht ab]\r\n"
    "\r\n"
    "1330. Goethe, Maximen und Reflexionen 1330\r\n"
    "  Left out by number.\r\n"
    "\r\n"
    "5. Goethe, Maximen und Reflexionen 5\r\n"
    f"  {'Lang ' * 60}\r\n"
    "\r\n"
    "6. Johann Wolfgang Goethe, Maximen und Reflexionen\r\n"
    "ZITATEN-NACHWEIS\r\n"
    "  Schriften der Goethe-Gesellschaft\r\n"
)


def test_parse_joins_lines_carries_sections_and_drops_tags_marks_and_the_citation() -> None:
    maxims = build.parse(SAMPLE)
    assert [m.number for m in maxims] == [1, 2, 3, 1330, 5]
    assert maxims[0].text == "Man mag noch so eingezogen leben, so wird man ein Schuldner."
    assert maxims[0].section == "AUS DEN WAHLVERWANDTSCHAFTEN (1809 Ottiliens Tagebuch)"
    # No label of its own: the section carries forward; the transcriber's tag is not text.
    assert maxims[1].section == maxims[0].section
    assert maxims[1].text == "Die Schönheit: jede milde Übereinstimmung."
    assert maxims[2].section == "AUS KUNST UND ALTERTUM (1827 B r o c a r d i c o n)"


def test_keep_leaves_out_fragments_long_maxims_and_the_excluded_number() -> None:
    kept = [m.number for m in build.parse(SAMPLE) if build.keep(m)]
    assert kept == [1, 2]


def test_main_writes_the_kept_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "sample.frt"
    source.write_bytes(SAMPLE.encode("cp1252"))
    out = tmp_path / "out.csv"
    assert build.main([str(source), str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [row["id"] for row in rows] == ["MuR-1", "MuR-2"]
    assert {row["user"] for row in rows} == {"Goethe"}
    assert "5 maxims read, 2 written" in capsys.readouterr().out


def test_main_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build.main([]) == 2
    assert build.main([str(tmp_path / "missing.frt"), str(tmp_path / "out.csv")]) == 1
    empty = tmp_path / "empty.frt"
    empty.write_bytes(b"no maxims here\r\n")
    assert build.main([str(empty), str(tmp_path / "out.csv")]) == 1
    err = capsys.readouterr().err
    assert "usage:" in err
    assert "missing.frt cannot be read" in err
    assert "empty.frt holds no maxims" in err
    assert not (tmp_path / "out.csv").exists()


def test_the_shipped_example_loads_as_one_german_voice_of_tweet_length_posts() -> None:
    from training.handles import parse_handle
    from training.sources.tabular import TabularSource

    posts = TabularSource(EXAMPLE, max_file_bytes=10 * 1024 * 1024).fetch(parse_handle("Goethe"))
    assert len(posts) == 1153
    ids = [post.id for post in posts]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"MuR-[0-9]+", post_id) for post_id in ids)
    assert "MuR-1330" not in ids
    assert all(0 < len(post.text) <= build.MAX_CHARS for post in posts)
    assert not any("[?]" in post.text or "[bricht ab]" in post.text for post in posts)
    assert not any(post.is_reply or post.is_retweet for post in posts)
    umlauts = sum(bool(re.search("[äöüßÄÖÜ]", post.text)) for post in posts)
    assert umlauts > len(posts) / 2
