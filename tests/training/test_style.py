"""The style table: how like the person a model's tweets are (training/style.py)."""

from __future__ import annotations

from training.style import (
    UNDETERMINED,
    StyleStats,
    broken_emoji_pct,
    language_of,
    main_languages,
    style_gap,
    style_rows,
    style_stats,
)

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


def _stats(**overrides: object) -> StyleStats:
    values = {
        "tweets": 10,
        "mean_chars": 100.0,
        "replies_pct": 10.0,
        "mentions_pct": 20.0,
        "hashtags_pct": 30.0,
        "emoji_pct": 5.0,
        "lowercase_pct": 0.0,
        "languages": {"en": 100.0},
    }
    values.update(overrides)
    return StyleStats(**values)  # type: ignore[arg-type]


def test_the_style_gap_is_zero_for_the_same_style_and_averages_seven_distances() -> None:
    assert style_gap(_stats(), _stats()) == 0.0
    # 40 points more lower-case tweets alone: 40 / 7.
    assert style_gap(_stats(), _stats(lowercase_pct=40.0)) == round(40 / 7, 1)
    # Half the tweets in another language: a total variation distance of 50 %.
    assert style_gap(_stats(), _stats(languages={"en": 50.0, "de": 50.0})) == round(50 / 7, 1)
    # Twice the length counts 100 %, and never more.
    assert style_gap(_stats(), _stats(mean_chars=300.0)) == round(100 / 7, 1)


def test_broken_emoji_are_counted_per_tweet() -> None:
    whole = ["thumbs up \U0001f44d\U0001f3fd", "flag \U0001f1e9\U0001f1ea", "plain text"]
    assert broken_emoji_pct(whole) == 0.0
    broken = [*whole, "a lone skin tone \U0001f3fd here", "half a flag \U0001f1e9 here"]
    assert broken_emoji_pct(broken) == 40.0
    assert broken_emoji_pct([]) == 0.0


def test_languages_written_without_spaces_are_called() -> None:
    assert language_of("今天天气很好，我们下午去公园散步吧。") == "zh"
    assert language_of("今日はいい天気ですね。散歩に行ってきます") == "ja"
    assert language_of("วันนี้อากาศดีมาก ไปเดินเล่นกันไหม") == "th"
    assert language_of("오늘 날씨가 정말 좋네요") == "ko"
    # Too short to call in any script.
    assert language_of("谢谢") == "und"
    assert language_of("ขอบคุณครับ") == "und"


def test_a_mixed_script_account_has_both_languages() -> None:
    stats = style_stats(
        [
            "Shipping the new release of our library today",
            "新しいバージョンをリリースしました。ぜひ使ってみてください",
            "Thanks to everyone who sent a patch this month",
            "今日はいい天気ですね。散歩に行ってきます",
        ]
    )
    assert stats.languages == {"en": 50.0, "ja": 50.0}


def test_main_languages_are_the_shares_of_tweets_whose_language_is_told() -> None:
    tweets = [
        "今天天气很好，我们下午去公园散步吧。",
        "刚看完一部电影，结局让人很感动。",
        "终于把论文写完了，今晚好好睡一觉。",
        "Finally finished the paper, sleeping well tonight",
        "谢谢",  # too short to tell: not counted
    ]
    assert main_languages(tweets) == {"zh": 75.0, "en": 25.0}
    assert main_languages(["ok", "谢谢"]) == {}
    # A language in fewer than a fifth of the tweets is not a main one.
    mostly = ["Shipping the new release of our library today"] * 9 + ["今天天气很好，我们去散步。"]
    assert main_languages(mostly) == {"en": 90.0}
