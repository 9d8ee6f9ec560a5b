"""Invisible characters and look-alike letters do not get a link or a copy past the filters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.generation import CopyFilter, fold_lookalikes, normalize, tidy_candidate

TRAINING = ["the quick brown fox jumps over the lazy dog near the river bank today"]


@pytest.mark.parametrize(
    "link",
    [
        "h\u200bttps://evil.example/x",
        "https\u2060://evil.example/x",
        "\u0068ttps\u200c://evil.example",
        "\u04bbttps://evil.example",  # Cyrillic shha
        "ww\u200bw.evil.example",
        "\uff48\uff54\uff54\uff50\uff53://evil.example",  # full-width letters
    ],
)
def test_url_filter_sees_through_invisible_and_lookalike_characters(link: str) -> None:
    assert tidy_candidate(f"read this {link} now") == "read this now"


@pytest.mark.parametrize(
    "link", ["bit.ly/3xYzAbC", "WH.gov/health", "irs-refund-now.com/login", "ＷＨ.gov", "t.co"]
)
def test_url_filter_removes_domains_x_links_without_a_scheme(link: str) -> None:
    assert tidy_candidate(f"read this {link} now") == "read this now"


def test_url_filter_keeps_what_x_does_not_link() -> None:
    text = "it was late.So I left, e.g. main.py and foo.jp, mail a@example.com or foo.baz"
    assert tidy_candidate(text) == text


_TWITTER_TEXT_URLS = (
    Path(__file__).parents[1] / "fixtures/twitter_text/extract_urls_without_protocol.yml"
)


def _twitter_text_url_cases() -> list[dict[str, Any]]:
    import yaml

    return yaml.safe_load(_TWITTER_TEXT_URLS.read_text(encoding="utf-8"))["tests"]["urls"]


@pytest.mark.parametrize("case", _twitter_text_url_cases(), ids=lambda case: case["description"])
def test_domains_without_a_scheme_follow_twitter_texts_conformance_cases(
    case: dict[str, Any],
) -> None:
    from training.textrules import bare_links

    # The cases list whole links; a link without a scheme is found by its domain.
    expected = [url.split("/")[0] for url in case["expected"] if "://" not in url]
    assert bare_links(case["text"]) == expected


def test_url_filter_keeps_ordinary_words_and_emoji_joiners() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert tidy_candidate(f"my {family} says hi") == f"my {family} says hi"


@pytest.mark.parametrize(
    "disguised",
    [
        "the\u200bquick\u200bbrown\u200bfox\u200bjumps\u200bover\u200bthe\u200blazy dog",
        "the quick br\u200bown fox jumps over the lazy dog near the river",
        "the quick brown fox jumps \u043ever the l\u0430zy dog near the river bank today",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG NEAR THE RIVER BANK TODAY",
        "the quick brown fox jumps\u00ad over the lazy dog near the river bank today",
    ],
)
def test_copy_filter_sees_through_invisible_and_lookalike_characters(disguised: str) -> None:
    assert CopyFilter(TRAINING).is_copy(disguised)


def test_copy_filter_still_passes_new_text() -> None:
    assert not CopyFilter(TRAINING).is_copy("a slow green turtle naps under the tree")


def test_fold_is_for_matching_only() -> None:
    assert fold_lookalikes("p\u0430y\u200bpal") == "pay pal"
    assert fold_lookalikes("p\u0430y\u200bpal", joined=True) == "paypal"
    assert normalize("Hello,\u200bWorld!") == "hello world"


def test_a_cjk_character_cut_between_byte_tokens_is_dropped(tmp_path) -> None:
    """A byte-level tokenizer spells a rare ideograph in byte tokens; a row cut after the first
    of them decodes to U+FFFD, which no tweet keeps."""
    from transformers import AutoTokenizer

    from training.basemodels import build_tiny_model

    texts = ["今天天气很好 我们去公园散步吧"] * 3
    folder = build_tiny_model(texts, tmp_path / "tiny", vocab_size=300)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("好 龘", add_special_tokens=False)["input_ids"]  # 龘: three UTF-8 bytes
    cut = tokenizer.decode(ids[:-1])
    assert "\ufffd" in cut
    assert tidy_candidate(cut) == "好"
    assert tidy_candidate("今天\ufffd\ufffd很好 \u0e31\u0e49ok") == "今天很好 ok"
