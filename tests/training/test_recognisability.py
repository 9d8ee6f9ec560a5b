"""The recognisability figure: a classifier that knows the person and a panel of others."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.errors import DataError
from training.recognisability import (
    PANEL_FILE,
    PANEL_POSTS,
    AuthorClassifier,
    build_panel,
    load_panel,
    recognisability,
    recognisability_sentence,
)

ROOT = Path(__file__).resolve().parents[2]

SAILOR = [
    f"the {w} sea was {m} today, we set sail at dawn and the wind held"
    for w in ("grey", "calm", "wild", "blue")
    for m in ("rough", "kind", "still", "loud", "cold")
]
BAKER = [
    f"fresh {b} out of the oven at six, {t} crust and a soft crumb"
    for b in ("rye", "sourdough", "brioche", "baguettes")
    for t in ("dark", "crisp", "golden", "thin", "thick")
]
POET = [
    f"月光{a}，{b}的夜里我想起故乡"
    for a in ("如水", "很亮", "照在窗前", "静静地")
    for b in ("安静", "寒冷", "漫长", "温柔", "孤独")
]


def test_the_classifier_tells_authors_apart_in_any_script() -> None:
    classifier = AuthorClassifier.fit({"sailor": SAILOR[:15], "baker": BAKER[:15], "poet": POET})
    assert classifier.predict(SAILOR[15:]) == ["sailor"] * 5
    assert classifier.predict(BAKER[15:]) == ["baker"] * 5
    assert classifier.predict(["窗前的月光"]) == ["poet"]


def test_one_author_is_refused() -> None:
    with pytest.raises(DataError, match="two"):
        AuthorClassifier.fit({"sailor": SAILOR, "baker": []})


def test_the_figure_counts_the_person_among_generated_and_held_out_posts() -> None:
    panel = {"baker": BAKER, "poet": POET}
    generated = [*SAILOR[15:18], BAKER[0]]
    figure = recognisability(["sailor"], SAILOR[:15], SAILOR[15:], generated, panel)
    assert figure is not None
    assert figure["generated_pct"] == 75.0 and figure["generated"] == 4
    assert figure["held_out_pct"] == 100.0 and figure["held_out"] == 5
    assert figure["panel"] == ["baker", "poet"]


def test_the_persons_own_panel_account_is_left_out() -> None:
    panel = {"Sailor": SAILOR, "baker": BAKER}
    figure = recognisability(["sailor"], SAILOR[:15], SAILOR[15:], SAILOR[15:], panel)
    assert figure is not None and figure["panel"] == ["baker"]
    # With nobody else left there is no figure.
    assert recognisability(["sailor"], SAILOR, [], SAILOR, {"SAILOR": SAILOR}) is None
    assert recognisability(["sailor"], SAILOR, [], [], {"baker": BAKER}) is None


def test_the_sentence_a_fan_understands() -> None:
    figure = {"generated_pct": 83.0, "held_out_pct": 91.0, "panel": ["a", "b", "c"]}
    assert recognisability_sentence(figure, "@x") == (
        "A classifier that knows @x's real posts and those of 3 other public accounts picks @x "
        "for 83 % of this model's tweets (and for 91 % of @x's own held-out posts)."
    )
    one = {"generated_pct": 50, "held_out_pct": None, "panel": ["a"]}
    assert recognisability_sentence(one, "@x") == (
        "A classifier that knows @x's real posts and those of 1 other public account picks @x "
        "for 50 % of this model's tweets."
    )
    assert recognisability_sentence({"panel": []}, "@x") is None


def test_the_bundled_panel_is_built_from_the_examples(tmp_path: Path) -> None:
    examples = {p.stem: p for p in (ROOT / "examples").glob("*.csv")}
    written = build_panel(examples, tmp_path / "panel.jsonl")
    assert (tmp_path / "panel.jsonl").read_text("utf-8") == PANEL_FILE.read_text("utf-8")
    panel = load_panel()
    assert sorted(panel) == sorted(examples)
    assert sum(map(len, panel.values())) == written
    assert all(0 < len(posts) <= PANEL_POSTS for posts in panel.values())


def test_a_missing_or_damaged_panel_is_empty(tmp_path: Path) -> None:
    assert load_panel(tmp_path / "none.jsonl") == {}
    damaged = tmp_path / "panel.jsonl"
    damaged.write_text('not json\n{"handle": 1}\n{"handle": "a", "text": "hi"}\n', "utf-8")
    assert load_panel(damaged) == {"a": ["hi"]}
