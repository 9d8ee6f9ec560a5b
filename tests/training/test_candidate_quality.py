"""The degenerate-candidate rule: what no one would post is never returned, whatever the model."""

from __future__ import annotations

import pytest

from training.generation.text import is_degenerate, tidy_candidate


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
