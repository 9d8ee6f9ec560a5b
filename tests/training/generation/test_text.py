"""Tidying a candidate, the copy filter (with invisible characters and look-alike letters) and
the degenerate-candidate rule: training.generation.text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.generation import CopyFilter, fold_lookalikes, normalize, tidy_candidate
from training.generation.text import is_degenerate


def test_tidy_candidate_keeps_only_the_first_line() -> None:
    assert tidy_candidate("first line here\nsecond line") == "first line here"
    assert tidy_candidate("a\r\nb") == "a"


def test_tidy_candidate_strips_urls_and_collapses_whitespace() -> None:
    text = "read  this https://t.co/abc123 and\tthat http://x.y www.example.com now"
    assert tidy_candidate(text) == "read this and that now"


def test_tidy_candidate_cuts_long_text_at_a_word_boundary() -> None:
    words = " ".join(f"word{i}" for i in range(100))
    tidy = tidy_candidate(words, 50)
    assert len(tidy) <= 50
    assert words.startswith(tidy + " ")


def test_tidy_candidate_cuts_a_single_overlong_word_hard() -> None:
    assert tidy_candidate("x" * 400) == "x" * 280


def test_tidy_candidate_drops_control_and_replacement_characters() -> None:
    assert tidy_candidate("ok\x00 then\x18 fine \ufffd") == "ok then fine"


def test_normalize_ignores_case_whitespace_and_punctuation() -> None:
    assert normalize("Hello,   WORLD!! #yes @bob") == normalize("hello world yes bob")


def test_copy_filter_rejects_a_training_tweet_up_to_case_and_punctuation() -> None:
    guard = CopyFilter(["I love my dog so much"])
    assert guard.is_copy("i LOVE my dog... so much!")


def test_copy_filter_rejects_a_shared_run_of_eight_words() -> None:
    guard = CopyFilter(["yesterday the whole team shipped the new release to every user at last"])
    candidate = "wow the whole team shipped the new release to every user and i cried"
    assert guard.is_copy(candidate)


def test_copy_filter_keeps_short_common_phrases() -> None:
    guard = CopyFilter(["thank you so much for coming to the show last night everyone"])
    assert not guard.is_copy("thank you so much for the flowers mom")
    assert not guard.is_copy("thank you so much")


def test_copy_filter_rejects_a_short_tweet_copied_with_one_word_changed() -> None:
    guard = CopyFilter(["the ocean was calm and blue this morning"])
    assert guard.is_copy("the ocean was calm and blue this evening")


def test_copy_filter_keeps_a_seven_word_tweet_sharing_only_five_words() -> None:
    guard = CopyFilter(["the ocean was calm and blue this morning"])
    assert not guard.is_copy("the ocean was calm and angry again")


def _reference_is_copy(texts: list[str], candidate: str) -> bool:
    """The copy rule spelled out with plain string sets (what CopyFilter stores as digests)."""
    from training.generation import normalized_words

    def grams(words: list[str], k: int) -> set[str]:
        return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}

    words = normalized_words(candidate)
    if not words:
        return False
    known = [normalized_words(t) for t in texts]
    if any(words == k for k in known):
        return True
    run = min(8, max(6, -(-4 * len(words) // 5)))
    return len(words) >= run and any(grams(words, run) & grams(k, run) for k in known)


def test_copy_filter_digests_decide_exactly_as_string_sets_would() -> None:
    import random

    rng = random.Random(7)
    vocab = [
        "a",
        "an",
        "the",
        "dog",
        "cat",
        "sun",
        "sea",
        "rain",
        "tea",
        "code",
        "ship",
        "blue",
        "calm",
        "very",
    ]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(1, 14))) for _ in range(300)]
    guard = CopyFilter(texts)
    candidates = [" ".join(rng.choices(vocab, k=rng.randint(0, 12))) for _ in range(600)]
    candidates += [t.upper() + "!" for t in texts[:50]]
    decisions = [guard.is_copy(c) for c in candidates]
    assert decisions == [_reference_is_copy(texts, c) for c in candidates]
    assert any(decisions) and not all(decisions)


def test_copy_filter_costs_eight_bytes_per_distinct_n_gram_and_word() -> None:
    words = [f"w{i}" for i in range(20_000)]
    texts = [" ".join(words[i : i + 20]) for i in range(0, 20_000, 20)]  # 1,000 distinct tweets
    guard = CopyFilter(texts)
    grams = 1_000 * ((20 - 6 + 1) + (20 - 7 + 1) + (20 - 8 + 1))
    assert guard.nbytes == 8 * (1_000 + grams + 20_000)
    assert guard.knows_word("W7") and not guard.knows_word("w7 w8") and not guard.knows_word("w")
    assert len(guard) == 1_000
    assert CopyFilter([]).nbytes == 0 and not CopyFilter([]).is_copy("anything at all here")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("great game \U0001f3fd tonight", "great game tonight"),  # a skin tone without its emoji
        ("wait,,,,,, what", "wait, what"),
        ("read the full story here: https://t.co/abc", "read the full story here"),
        ("new blog post - http://example.com", "new blog post"),
        ("all good \U0001f44d\U0001f3fd", "all good \U0001f44d\U0001f3fd"),
    ],
)
def test_candidates_lose_broken_emoji_punctuation_runs_and_link_residue(
    raw: str, expected: str
) -> None:
    assert tidy_candidate(raw) == expected


def test_a_long_candidate_ends_at_a_sentence_and_never_inside_an_emoji() -> None:
    sentence = "This first sentence is long enough to keep on its own, so it stays whole. "
    text = sentence * 3 + "and then a clause that runs on and on past the limit of the tweet"
    tidied = tidy_candidate(text, max_chars=280)
    assert tidied.endswith(".") and len(tidied) <= 280
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert tidy_candidate("x" * 277 + " " + family, max_chars=280) == "x" * 277


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
    Path(__file__).parents[2] / "fixtures/twitter_text/extract_urls_without_protocol.yml"
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


@pytest.mark.parametrize(
    "candidate",
    [
        "President",  # a single word
        "()).SOTU",  # a single word, mostly brackets
        "#SOTU",
        "🔥",
        "2016 2017",  # no letter
        "!!! ... ???",
        "🔥 🔥 🔥",  # emoji only: no letter
        "() SOTU",  # one word that holds a letter, the rest punctuation
        "SOTU --- !!!",
        "",
        "   ",
    ],
)
def test_degenerate_candidates_are_recognised(candidate: str) -> None:
    assert is_degenerate(candidate)


@pytest.mark.parametrize(
    "tweet",
    [
        "Thank you, America.",
        "Congrats 🎉",  # a word and an emoji
        "Happy 4th!",
        "@POTUS agreed",
        "their vote today! Get out there",  # opening in lower case is the person's style, kept
        "2016: a year",
        "Über alles",
    ],
)
def test_real_tweets_pass(tweet: str) -> None:
    assert not is_degenerate(tweet)


def test_the_rule_reads_the_tidied_text() -> None:
    # A link is removed first; what is left is one word, so the candidate is degenerate.
    assert is_degenerate(tidy_candidate("Watch https://t.co/abc"))
    assert not is_degenerate(tidy_candidate("Watch this https://t.co/abc"))


def _dataset(folder: Path, texts: list[str]) -> list[str]:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"handle": "alice", "text": text}) for text in texts]
    (folder / "dataset.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return texts


FOLDER_TWEETS = [
    "yesterday the whole team shipped the new release to every user at last",
    "thank you so much for coming to the show last night everyone",
    "the ocean was calm and blue this morning",
]
CANDIDATES = [
    *FOLDER_TWEETS,
    "the whole team shipped the new release to every user today",
    "a slow green turtle naps under the tree",
    "thank you so much for coming",
]


def _same_rule(one: CopyFilter, other: CopyFilter) -> bool:
    return [one.is_copy(t) for t in CANDIDATES] == [other.is_copy(t) for t in CANDIDATES] and (
        len(one) == len(other) and one.nbytes == other.nbytes
    )


def test_a_model_folder_digests_its_tweets_once_and_reads_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.generation import text

    texts = _dataset(tmp_path / "alice", FOLDER_TWEETS)
    made = CopyFilter.for_folder(tmp_path / "alice", texts)
    assert (tmp_path / "alice" / "copy_filter.npz").is_file()
    assert _same_rule(made, CopyFilter(texts))
    assert not list((tmp_path / "alice").glob(".*tmp"))  # nothing half-written left

    def no_digesting(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the saved digests should have been read")

    monkeypatch.setattr(text.CopyFilter, "__init__", no_digesting)
    read = CopyFilter.for_folder(tmp_path / "alice", texts)
    assert _same_rule(read, made) and read.knows_word("ocean")


def test_digests_of_another_dataset_or_a_damaged_file_are_made_again(tmp_path: Path) -> None:
    import os

    import numpy as np

    folder = tmp_path / "alice"
    texts = _dataset(folder, FOLDER_TWEETS)
    CopyFilter.for_folder(folder, texts)
    saved = folder / "copy_filter.npz"
    # Retrained on other tweets: the old digests must not judge the new model's candidates.
    other = _dataset(folder, ["a slow green turtle naps under the tree by the old stone wall"])
    os.utime(folder / "dataset.jsonl", ns=(1, 1))
    fresh = CopyFilter.for_folder(folder, other)
    assert fresh.is_copy("a slow green turtle naps under the tree by the old stone wall")
    assert not fresh.is_copy(FOLDER_TWEETS[0])
    stamp = str(np.load(saved)["stamp"])
    good = {name: np.load(saved)[name] for name in np.load(saved).files}
    damaged = {
        "garbage": lambda: saved.write_bytes(b"not a zip file at all"),
        "unsorted": lambda: np.savez(
            saved.open("wb"), **{**good, "run6": good["run6"][::-1].copy()}
        ),
        "wrong type": lambda: np.savez(
            saved.open("wb"), **{**good, "words": good["words"].astype(np.float64)}
        ),
        "a run missing": lambda: np.savez(
            saved.open("wb"), **{k: v for k, v in good.items() if k != "run7"}
        ),
        "objects": lambda: np.savez(
            saved.open("wb"), **{**good, "exact": np.array([object()], dtype=object)}
        ),
        "another rule": lambda: np.savez(
            saved.open("wb"), **{**good, "shape": np.array([10**9, 6])}
        ),
        "a link": lambda: (saved.unlink(), saved.symlink_to(folder / "dataset.jsonl")),
    }
    for name, damage in damaged.items():
        damage()
        again = CopyFilter.for_folder(folder, other)
        assert _same_rule(again, fresh), name
        with np.load(saved) as rewritten:  # and written whole again
            assert str(rewritten["stamp"]) == stamp, name
            assert sorted(rewritten.files) == sorted(good), name
            assert all(np.array_equal(rewritten[k], good[k]) for k in good), name
    assert not saved.is_symlink()
    assert (folder / "dataset.jsonl").read_text(encoding="utf-8").startswith('{"handle"')


def test_a_folder_that_cannot_be_written_still_gets_its_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path as RealPath

    texts = _dataset(tmp_path / "alice", FOLDER_TWEETS)

    def refuse(self: RealPath, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "x" in mode:
            raise PermissionError("read-only")
        return original(self, mode, *args, **kwargs)

    original = RealPath.open
    monkeypatch.setattr(RealPath, "open", refuse)
    made = CopyFilter.for_folder(tmp_path / "alice", texts)
    assert _same_rule(made, CopyFilter(texts))
    assert [p.name for p in (tmp_path / "alice").iterdir()] == ["dataset.jsonl"]
    # A folder without its dataset file is digested from the texts given, nothing saved.
    (tmp_path / "bob").mkdir()
    assert CopyFilter.for_folder(tmp_path / "bob", texts).is_copy(FOLDER_TWEETS[1])
    assert list((tmp_path / "bob").iterdir()) == []
