"""The text rules that keep generated and training text whole (training/textrules.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.textrules import (
    collapse_punctuation,
    count_words,
    cut_graphemes,
    drop_broken_characters,
    drop_broken_emoji,
    fit_tweet,
    graphemes,
    is_unspaced,
    strip_link_residue,
    tidy_text,
    word_equivalents,
)

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl: 5 code points
THUMB_TONE = "\U0001f44d\U0001f3fd"  # thumbs up + medium skin tone
FLAG = "\U0001f1e9\U0001f1ea"  # DE


def test_graphemes_join_back_to_the_text() -> None:
    text = f"hi {FAMILY} {FLAG} cafe\u0301"
    assert "".join(graphemes(text)) == text
    assert FAMILY in graphemes(text)
    assert "e\u0301" in graphemes(text)


@pytest.mark.parametrize("limit", range(0, 12))
def test_a_cut_never_splits_a_grapheme(limit: int) -> None:
    text = f"ab {FAMILY} {FLAG}"
    cut = cut_graphemes(text, limit)
    assert len(cut) <= limit
    assert text.startswith(cut)
    assert "".join(graphemes(cut)) == cut
    assert graphemes(text)[: len(graphemes(cut))] == graphemes(cut)


def test_a_cut_inside_the_family_drops_the_whole_family() -> None:
    assert cut_graphemes(f"ab {FAMILY}", 5) == "ab "
    assert cut_graphemes(f"ab {FAMILY}", 8) == f"ab {FAMILY}"


def test_orphaned_emoji_parts_are_dropped_and_whole_emoji_kept() -> None:
    assert drop_broken_emoji("great \U0001f3fd work") == "great  work"
    assert drop_broken_emoji(f"great {THUMB_TONE} work") == f"great {THUMB_TONE} work"
    assert drop_broken_emoji(f"{FAMILY}!") == f"{FAMILY}!"
    assert drop_broken_emoji("end\u200d") == "end"
    assert drop_broken_emoji(f"{FLAG} \U0001f1e9") == f"{FLAG} "
    assert drop_broken_emoji("\u2764\ufe0f love") == "\u2764\ufe0f love"
    assert drop_broken_emoji("a\ufe0f") == "a"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("wait,,,,,, what", "wait, what"),
        ("yes!!!!!!!!", "yes!!!"),
        ("yes!!!", "yes!!!"),
        ("hmm...", "hmm..."),
        ("hmm.......", "hmm..."),
        ("a ;;; b", "a ; b"),
        ("x ,.,.,., y", "x , y"),
        ("a: b: c", "a: b: c"),
    ],
)
def test_degenerate_punctuation_runs_collapse(raw: str, expected: str) -> None:
    assert collapse_punctuation(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Read this:", "Read this"),
        ("Great read -", "Great read"),
        ("Great read —", "Great read"),
        ("Watch live (", "Watch live"),
        ("New post via", "New post"),
        ("Slides | ", "Slides"),
        ("Nothing dangling here", "Nothing dangling here"),
        ("a - b", "a - b"),
        ("-", "-"),
        ("I love it :)", "I love it :)"),
    ],
)
def test_link_residue_is_stripped(raw: str, expected: str) -> None:
    assert strip_link_residue(raw) == expected


def test_fit_prefers_a_sentence_end_then_a_word_boundary() -> None:
    text = "First sentence is here. Second one runs on and on past the limit"
    assert fit_tweet(text, 40) == "First sentence is here."
    assert fit_tweet("word " * 10, 12) == "word word"
    assert fit_tweet("short enough", 280) == "short enough"
    # A sentence end that keeps less than half of the limit loses to the word boundary.
    assert fit_tweet("Hi. " + "more words " * 10, 40) == "Hi. more words more words more words"
    # One long word: the grapheme cut is all there is.
    assert fit_tweet("a" * 50, 10) == "a" * 10


def test_fit_never_breaks_an_emoji_at_the_limit() -> None:
    text = "x" * 278 + FAMILY
    fitted = fit_tweet(text, 280)
    assert fitted == "x" * 278
    assert len(fit_tweet("y" * 279 + THUMB_TONE, 280)) == 279


def test_tidy_text_applies_every_rule() -> None:
    raw = "so good,,,,, \U0001f3fd read this:"
    assert tidy_text(raw, 280) == "so good, read this"


def test_residue_goes_only_where_a_link_was_removed() -> None:
    from training.cleaning import clean_tweet
    from training.textrules import strip_removed_link_residue

    raw = "Read the whole story: https://t.co/abc123"
    assert strip_removed_link_residue(raw, clean_tweet(raw)) == "Read the whole story"
    raw = "Great read - http://t.co/x "
    assert strip_removed_link_residue(raw, clean_tweet(raw)) == "Great read"
    kept = "My three wishes:"
    assert strip_removed_link_residue(kept, clean_tweet(kept)) == "My three wishes:"
    middle = "See https://t.co/x - then tell me"
    assert strip_removed_link_residue(middle, clean_tweet(middle)) == clean_tweet(middle)


def test_mentions_are_made_plain_but_look_the_same() -> None:
    from training.textrules import has_mentions, neutralise_mentions

    text = "@jack thanks, and cc @bob_2 — mail me at a@example.com #tbt"
    plain = neutralise_mentions(text)
    assert plain == "@\u200bjack thanks, and cc @\u200bbob_2 — mail me at a@example.com #tbt"
    assert plain.replace("\u200b", "") == text
    assert has_mentions(text) and not has_mentions(plain)
    assert not has_mentions("a@example.com and a lone @ sign")
    assert has_mentions("\uff20jack")  # X links the full-width at sign too


_TWITTER_TEXT_CASES = Path(__file__).parents[1] / "fixtures/twitter_text/extract_mentions.yml"


def _twitter_text_mention_cases() -> list[dict[str, Any]]:
    import yaml

    return yaml.safe_load(_TWITTER_TEXT_CASES.read_text(encoding="utf-8"))["tests"]["mentions"]


@pytest.mark.parametrize(
    "case", _twitter_text_mention_cases(), ids=lambda case: case["description"]
)
def test_x_mentions_follow_twitter_texts_conformance_cases(case: dict[str, Any]) -> None:
    from training.textrules import has_mentions, neutralise_mentions, x_mentions

    assert x_mentions(case["text"]) == case["expected"]
    plain = neutralise_mentions(case["text"])
    assert x_mentions(plain) == [] and not has_mentions(plain)


@pytest.mark.parametrize(
    ("text", "x", "mastodon"),
    [
        # Mastodon links an @ after another at sign; X does not.
        ("@@name", [], ["name"]),
        ("\uff20@name", [], ["name"]),
        ("so@@name", [], ["name"]),
        ("@@alice@mastodon.social", [], ["alice@mastodon.social"]),
        # X links after RT and after letters outside ASCII; Mastodon does not.
        ("RT@jack", ["jack"], []),
        ("日本語@jack", ["jack"], []),
        ("café@jack", ["jack"], []),
        # Neither links an address; Mastodon links no name glued to = or /, X does.
        ("mail a@example.com", [], []),
        ("key=@jack path/@jack", ["jack", "jack"], []),
        ("hi @jack and @bob@example.social", ["jack"], ["jack", "bob@example.social"]),
    ],
)
def test_each_networks_own_mention_rule_is_followed_and_neutralised(
    text: str, x: list[str], mastodon: list[str]
) -> None:
    from training.textrules import has_mentions, mastodon_mentions, neutralise_mentions, x_mentions

    assert x_mentions(text) == x and mastodon_mentions(text) == mastodon
    plain = neutralise_mentions(text)
    assert plain.replace("\u200b", "") == text
    assert x_mentions(plain) == [] and mastodon_mentions(plain) == []
    assert has_mentions(text) == bool(x or mastodon) and not has_mentions(plain)


# --- words per script, broken characters -------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("hello", 1.0),
        ("@bob", 1.0),
        ("!!!", 1.0),
        ("谢谢", 2 / 1.5),  # 2 ideographs at 1.5 a word
        ("今天天气很好", 4.0),  # 6 ideographs at 1.5 a word
        ("ありがとう", 2.0),  # 5 kana at 2.5 a word
        ("コーヒー", 4 / 2.5),  # the length mark "ー" is a kana letter too
        ("วันนี้อากาศดีมาก", 4.0),  # 12 Thai letters (marks not counted) at 3 a word
        ("用Python写", 1 / 1.5 * 2 + 1),  # two ideographs and a Latin word
    ],
)
def test_word_equivalents_count_each_script_its_own_way(token: str, words: float) -> None:
    assert word_equivalents(token) == pytest.approx(max(1.0, words))


def test_count_words_adds_the_tokens() -> None:
    assert count_words("谢谢") == pytest.approx(2 / 1.5)
    assert count_words("谢谢 你们") == pytest.approx(4 / 1.5)
    assert count_words("好") == 1.0  # a token is never worth less than one word
    assert count_words("lol ok") == 2.0
    assert count_words("") == 0.0


def test_is_unspaced_names_the_scripts_written_without_spaces() -> None:
    assert all(is_unspaced(ch) for ch in "漢かカกລកမ")
    assert not any(is_unspaced(ch) for ch in "aé한я1 。")


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("今天\ufffd很好", "今天很好"),  # half an ideograph from a byte token
        ("\u0e31\u0e49ok", "ok"),  # Thai marks with no consonant
        ("x \u0301y", "x y"),  # an accent after a space
        ("caf\u0065\u0301 ok", "caf\u0065\u0301 ok"),  # a decomposed é stays
        ("วันนี้", "วันนี้"),
        ("#\ufe0f\u20e3 keycap", "#\ufe0f\u20e3 keycap"),  # the emoji rule's concern
    ],
)
def test_drop_broken_characters(text: str, kept: str) -> None:
    assert drop_broken_characters(text) == kept
