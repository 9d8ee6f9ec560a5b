"""The style table: how like the person a model's tweets are (training/style.py)."""

from __future__ import annotations

from training.style import UNDETERMINED, language_of, style_rows, style_stats

REAL = [
    "@Jake yes, i will bring the cake tomorrow",
    "shipping the new release today #python",
    "Hola a todos, hoy es un gran día para aprender algo nuevo",
    "what a morning \U0001f600 coffee and code",
]


def test_each_measure_counts_its_tweets() -> None:
    stats = style_stats(REAL)
    assert stats.tweets == 4
    assert stats.mean_chars == round(sum(map(len, REAL)) / 4, 1)
    assert stats.replies_pct == 25.0
    assert stats.mentions_pct == 25.0
    assert stats.hashtags_pct == 25.0
    assert stats.emoji_pct == 25.0
    # Lower-case: the reply (its @Handle aside), the release and the morning tweet.
    assert stats.lowercase_pct == 75.0
    assert sum(stats.languages.values()) == 100.0


def test_an_email_address_is_not_a_mention_nor_a_hex_colour_a_hashtag() -> None:
    stats = style_stats(["write to me at bob@example.com please", "colour is a#fff ok"])
    assert stats.mentions_pct == 0.0
    assert stats.hashtags_pct == 0.0


def test_languages_are_called_only_when_clear() -> None:
    assert language_of("Hola a todos, hoy es un gran día para aprender algo nuevo") == "es"
    assert language_of("Ich habe heute leider keine Zeit für so etwas") == "de"
    assert language_of("I think this is the best thing I have read all week") == "en"
    assert language_of("@jake yes!") == UNDETERMINED
    assert language_of("\U0001f600\U0001f600 #tbt") == UNDETERMINED


def test_no_tweets_give_zeros() -> None:
    stats = style_stats([])
    assert stats.tweets == 0
    assert stats.mean_chars == 0.0
    assert stats.languages == {}


def test_rows_are_a_markdown_table_with_the_copy_rate() -> None:
    real = style_stats(REAL)
    generated = style_stats(["@amy sounds good to me", "another day another line of code"])
    rows = style_rows(real, generated, copy_rate_pct=0.0)
    assert rows[0] == "| Style | Real tweets | Generated |"
    assert rows[1] == "| --- | --- | --- |"
    assert all(row.count("|") == 4 for row in rows)
    assert "| Replies (start with @) | 25 % | 50 % |" in rows
    assert rows[-1] == "| Copies of training tweets | — | 0 % |"
    languages = next(row for row in rows if row.startswith("| Languages"))
    assert "en" in languages
    assert len(style_rows(real, generated)) == len(rows) - 1
    assert real.as_dict()["tweets"] == 4
