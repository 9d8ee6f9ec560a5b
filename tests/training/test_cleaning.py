"""huggingtweets' cleaning rules, the data table and the data gates."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from training.cleaning import (
    DATASET_FILE,
    MIN_CHARS,
    TABLE_FILE,
    WARN_CHARS,
    DataTable,
    HandleData,
    TooLittleData,
    clean_handle,
    clean_tweet,
    is_short,
)
from training.errors import DataError, InputError
from training.handles import Handle, parse_handle

# --- clean_tweet -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("Fish &amp; chips", "Fish & chips"),
        ("1 &lt; 2 &gt; 0", "1 < 2 > 0"),
        ("&amp;lt; stays escaped once", "&lt; stays escaped once"),
        ("&amp;amp;", "&amp;"),
        ("&quot;other entities&quot; &#39;stay&#39;", "&quot;other entities&quot; &#39;stay&#39;"),
    ],
)
def test_clean_tweet_decodes_exactly_three_entities_once(raw: str, cleaned: str) -> None:
    assert clean_tweet(raw) == cleaned


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("https://t.co/abc look at this", "look at this"),
        ("look at this https://t.co/abc", "look at this"),
        ("look at this\nhttps://t.co/abc", "look at this"),
        ("first line\nhttps://t.co/abc\nlast line", "first line last line"),
        ("a http://example.com/x?y=1 b", "a b"),
        ("two links https://t.co/a https://t.co/b done", "two links done"),
        ("shouting HTTPS://T.CO/ABC link", "shouting link"),
        ("glued (https://t.co/abc) link", "glued ( link"),
        ("https://t.co/only", ""),
    ],
)
def test_clean_tweet_removes_urls_anywhere(raw: str, cleaned: str) -> None:
    assert clean_tweet(raw) == cleaned


def test_clean_tweet_keeps_words_that_merely_mention_http() -> None:
    assert clean_tweet("httpbin and https are protocols") == "httpbin and https are protocols"


def test_clean_tweet_collapses_newlines_tabs_and_runs_of_spaces() -> None:
    assert clean_tweet("  one\n\ntwo\t three   four\r\n ") == "one two three four"


def test_clean_tweet_keeps_mentions_hashtags_and_emoji() -> None:
    text = "@bob loved the #PyCon talk 🎉🐍 thanks"
    assert clean_tweet(text) == text


def test_clean_tweet_decodes_entities_before_collapsing_whitespace() -> None:
    assert clean_tweet("a &amp;\n\nb") == "a & b"


@given(st.text())
def test_clean_tweet_is_idempotent_on_entity_free_text(text: str) -> None:
    once = clean_tweet(text.replace("&", ""))
    assert clean_tweet(once) == once
    assert once == once.strip()
    assert "  " not in once and "\n" not in once


# --- is_short ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cleaned", "short"),
    [
        ("@bob @alice thanks!", True),
        ("", True),
        ("two words", True),
        ("three real words", False),
        ("#one #two #three", True),
        ("see httpbin for HTTP details", False),  # 3 real words: see, for, details
        ("see httpbin HTTPS docs", True),  # "HTTPS" contains http case-insensitively
        ("mail me at bob@example.com today", False),
        ("🎉 🎉 🎉", False),
    ],
)
def test_is_short_counts_words_without_http_at_or_hash(cleaned: str, short: bool) -> None:
    assert is_short(cleaned) is short


# --- clean_handle / HandleData -----------------------------------------------------------------


def test_clean_handle_counts_retweets_short_and_kept_newest_first(make_tweet) -> None:
    tweets = [
        make_tweet("newest tweet here &amp; now https://t.co/x"),
        make_tweet("RT @someone: this is a retweet of a long tweet", is_retweet=True),
        make_tweet("@bob @alice thanks!"),
        make_tweet("https://t.co/onlyalink"),
        make_tweet("a reply counts like any tweet", is_reply=True),
        make_tweet("oldest tweet in the list"),
    ]
    data = clean_handle(Handle("mert"), tweets)
    assert (data.tweets_downloaded, data.retweets, data.short_tweets, data.tweets_kept) == (
        6,
        1,
        2,
        3,
    )
    assert data.kept == [
        "newest tweet here & now",
        "a reply counts like any tweet",
        "oldest tweet in the list",
    ]
    assert data.chars_kept == sum(len(t) for t in data.kept)


@given(
    st.lists(
        st.tuples(st.text(alphabet=st.sampled_from("ab @#h&tp:/\n;"), max_size=30), st.booleans())
    )
)
def test_clean_handle_counts_always_add_up(items: list[tuple[str, bool]]) -> None:
    from training.sources.base import RawTweet

    tweets = [RawTweet(str(i), None, t, rt, False, "test") for i, (t, rt) in enumerate(items)]
    data = clean_handle(Handle("x"), tweets)
    assert data.tweets_downloaded == data.retweets + data.short_tweets + data.tweets_kept
    assert data.tweets_downloaded == len(items)
    assert all(not is_short(t) for t in data.kept)


def test_handle_data_refuses_counts_that_do_not_add_up() -> None:
    with pytest.raises(DataError, match="do not add up"):
        HandleData(Handle("x"), tweets_downloaded=5, retweets=1, short_tweets=1, kept=["a b c"])


# --- DataTable ---------------------------------------------------------------------------------


def _handle_data(name: str, chars: int, *, retweets: int = 0, short: int = 0) -> HandleData:
    """A handle whose kept tweets hold exactly ``chars`` characters (in 100-character tweets)."""
    tweet = ("word " * 20)[:100]
    full, rest = divmod(chars, 100)
    kept = [tweet] * full + ([tweet[:rest]] if rest else [])
    handle = parse_handle(name)
    return HandleData(handle, retweets + short + len(kept), retweets, short, kept)


def test_data_table_sorts_handles_and_names_the_model() -> None:
    table = DataTable([_handle_data("zed", 100), _handle_data("Alice", 100)])
    assert [d.handle.name for d in table.handles] == ["alice", "zed"]
    assert table.model_name == "alice-zed"


def test_data_table_refuses_a_handle_twice() -> None:
    with pytest.raises(DataError, match="only once"):
        DataTable([_handle_data("bob", 100), _handle_data("bob", 200)])


def test_to_dict_is_the_json_shape() -> None:
    table = DataTable([_handle_data("mert", 1002 * 100, retweets=181, short=373)])
    assert table.to_dict() == {
        "mert": {
            "tweets_downloaded": 1556,
            "retweets": 181,
            "short_tweets": 373,
            "tweets_kept": 1002,
        }
    }


def test_to_markdown_is_the_seed_table() -> None:
    table = DataTable([_handle_data("mert", 1002 * 100, retweets=181, short=373)])
    assert table.to_markdown() == (
        "| Data | mert |\n"
        "| --- | --- |\n"
        "| Tweets downloaded | 1556 |\n"
        "| Retweets | 181 |\n"
        "| Short tweets | 373 |\n"
        "| Tweets kept | 1002 |"
    )


def test_to_markdown_has_one_column_per_handle() -> None:
    table = DataTable([_handle_data("b", 300, retweets=1), _handle_data("a", 200, short=2)])
    lines = table.to_markdown().splitlines()
    assert lines[0] == "| Data | a | b |"
    assert lines[1] == "| --- | --- | --- |"
    assert lines[2] == "| Tweets downloaded | 4 | 4 |"
    assert lines[5] == "| Tweets kept | 2 | 3 |"


def test_check_refuses_one_character_under_the_minimum_and_keeps_the_table() -> None:
    table = DataTable([_handle_data("big", WARN_CHARS), _handle_data("small", MIN_CHARS - 1)])
    with pytest.raises(TooLittleData) as caught:
        table.check()
    assert caught.value.table is table
    assert isinstance(caught.value, DataError)
    message = str(caught.value)
    assert "@small" in message and "5,999" in message and "6,000" in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_check_accepts_the_minimum_with_a_warning() -> None:
    warnings = DataTable([_handle_data("small", MIN_CHARS)]).check()
    assert len(warnings) == 1 and "@small" in warnings[0] and "40,000" in warnings[0]


def test_check_warns_one_character_under_the_warning_level() -> None:
    assert len(DataTable([_handle_data("a", WARN_CHARS - 1)]).check()) == 1


def test_check_is_silent_at_the_warning_level() -> None:
    assert (
        DataTable([_handle_data("a", WARN_CHARS), _handle_data("b", WARN_CHARS + 7)]).check() == []
    )


def test_save_and_load_round_trip(tmp_path) -> None:
    table = DataTable(
        [
            HandleData(
                parse_handle("bluesky:alice.bsky.social"), 3, 1, 0, ["héllo 🎉 world", "b c d"]
            ),
            HandleData(parse_handle("jack"), 2, 0, 1, ['quote "this" \\ please']),
        ]
    )
    table.save(tmp_path)
    assert json.loads((tmp_path / TABLE_FILE).read_text()) == table.to_dict()
    records = [json.loads(line) for line in (tmp_path / DATASET_FILE).read_text().splitlines()]
    assert records[0] == {"handle": "alice.bsky.social", "text": "héllo 🎉 world"}
    assert len(records) == 3
    assert DataTable.load(tmp_path) == table
    assert set(os.listdir(tmp_path)) == {DATASET_FILE, TABLE_FILE}  # no temporary files left


def test_save_replaces_existing_files_whole(tmp_path) -> None:
    DataTable([HandleData(Handle("a"), 2, 0, 0, ["one two three", "four five six"])]).save(tmp_path)
    smaller = DataTable([HandleData(Handle("b"), 1, 0, 0, ["seven eight nine"])])
    smaller.save(tmp_path)
    assert DataTable.load(tmp_path) == smaller


def test_load_without_files_is_one_sentence(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        DataTable.load(tmp_path)


@pytest.mark.parametrize(
    ("table_text", "dataset_text", "message"),
    [
        ("{not json", "", "not a readable data table"),
        ('{"a": {"tweets_downloaded": 1}}', "", "not a data table"),
        ("[]", "", "not a data table"),
        (
            '{"a": {"tweets_downloaded": 1, "retweets": 0, "short_tweets": 0, "tweets_kept": 1}}',
            '{"handle": "a", "text": "x y z"}\n{"truncated',
            "Line 2",
        ),
        (
            '{"a": {"tweets_downloaded": 1, "retweets": 0, "short_tweets": 0, "tweets_kept": 1}}',
            '{"handle": "zz", "text": "x y z"}\n',
            "not in data_table.json",
        ),
        (
            '{"a": {"tweets_downloaded": 2, "retweets": 0, "short_tweets": 0, "tweets_kept": 2}}',
            '{"handle": "a", "text": "x y z"}\n',
            "holds 1",
        ),
        (
            '{"a": {"tweets_downloaded": 5, "retweets": 0, "short_tweets": 0, "tweets_kept": 1}}',
            '{"handle": "a", "text": "x y z"}\n',
            "inconsistent",
        ),
        (
            '{"../etc": {"tweets_downloaded": 1, "retweets": 0, "short_tweets": 0, '
            '"tweets_kept": 1}}',
            '{"handle": "../etc", "text": "x y z"}\n',
            "not a Bluesky handle",
        ),
    ],
)
def test_load_rejects_broken_files_with_one_sentence(
    tmp_path, table_text: str, dataset_text: str, message: str
) -> None:
    (tmp_path / TABLE_FILE).write_text(table_text)
    (tmp_path / DATASET_FILE).write_text(dataset_text)
    with pytest.raises(InputError, match=message):
        DataTable.load(tmp_path)


def test_write_dataset_leaves_no_file_when_writing_fails(tmp_path, monkeypatch) -> None:
    target = tmp_path / "out.jsonl"

    def broken_replace(src, dst) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        DataTable([HandleData(Handle("a"), 1, 0, 0, ["one two three"])]).write_dataset(target)
    assert list(tmp_path.iterdir()) == []


def test_too_little_data_on_bluesky_does_not_suggest_an_x_archive() -> None:
    with pytest.raises(TooLittleData, match="needs more posts of its own") as caught:
        DataTable([_handle_data("bluesky:alice.bsky.social", 10)]).check()
    assert "archive" not in str(caught.value)


def test_training_text_loses_the_separator_a_removed_link_left(make_tweet) -> None:
    tweets = [
        make_tweet("Read the whole story here: https://t.co/abc"),
        make_tweet("Great read on the economy - https://t.co/def"),
        make_tweet("My three wishes for the new year:"),
        make_tweet("Big - news https://t.co/x today"),
        make_tweet("Slides - https://t.co/y"),  # 2 real words once the link and "-" go
    ]
    data = clean_handle(Handle("mert"), tweets)
    # Counted exactly as huggingtweets counts ("Slides -" has 2 real words: short either way).
    assert (data.tweets_downloaded, data.short_tweets, data.tweets_kept) == (5, 1, 4)
    assert data.kept == [
        "Read the whole story here",
        "Great read on the economy",
        "My three wishes for the new year:",  # no link was removed: the colon is the person's
        "Big - news today",
    ]


# --- scripts written without spaces ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "今天天气很好，我们下午去公园散步吧。",  # Chinese: a sentence is one whitespace token
        "终于把论文写完了，今晚好好睡一觉",
        "今日はいい天気ですね。散歩に行ってきます",  # Japanese: kanji and kana
        "新しいカメラを買いました！",
        "วันนี้อากาศดีมาก ไปเดินเล่นกัน",  # Thai
        "오늘 날씨가 정말 좋네요",  # Korean writes spaces: three words, as huggingtweets counts
    ],
)
def test_a_sentence_in_any_script_is_not_short(text: str) -> None:
    assert not is_short(clean_tweet(text))


@pytest.mark.parametrize(
    "text",
    [
        "谢谢",  # "thanks"
        "好的！",  # "OK!"
        "@lihua 哈哈",  # a mention and a laugh
        "ありがとう",  # "thank you"
        "了解です",
        "ขอบคุณครับ",  # Thai "thank you" with the polite particle
        "สวัสดีครับ https://t.co/x",
        "감사합니다 ㅎㅎ",  # Korean: two words
    ],
)
def test_a_short_reply_in_any_script_is_still_short(text: str) -> None:
    assert is_short(clean_tweet(text))


def test_a_chinese_archive_keeps_its_sentences_and_drops_its_replies(make_tweet) -> None:
    """The rule that lost a real Chinese archive's posts: sentences kept, two-character replies
    and retweets still counted as huggingtweets counts them."""
    tweets = [
        make_tweet("今天天气很好，我们下午去公园散步吧。"),
        make_tweet("谢谢"),
        make_tweet("RT @wang: 转发一下这个消息", is_retweet=True),
        make_tweet("刚看完一部电影，结局让人很感动 https://t.co/abc"),
        make_tweet("@zhang 好的"),
    ]
    data = clean_handle(Handle("li"), tweets)
    assert data.counts() == {
        "tweets_downloaded": 5,
        "retweets": 1,
        "short_tweets": 2,
        "tweets_kept": 2,
    }
    assert data.kept == ["今天天气很好，我们下午去公园散步吧。", "刚看完一部电影，结局让人很感动"]


def test_a_mixed_script_account_counts_each_post_by_its_own_script(make_tweet) -> None:
    tweets = [
        make_tweet("Shipping the new release today"),
        make_tweet("新しいバージョンをリリースしました"),
        make_tweet("今天用Python写了一个小工具"),
        make_tweet("nice work"),
        make_tweet("すごい"),
        make_tweet("Python 好"),
    ]
    data = clean_handle(Handle("dev"), tweets)
    assert data.kept == [
        "Shipping the new release today",
        "新しいバージョンをリリースしました",
        "今天用Python写了一个小工具",
    ]
    assert data.short_tweets == 3


@given(st.lists(st.text(alphabet="abcxyz@#:/. ", max_size=12), max_size=8))
def test_text_with_spaces_between_words_is_counted_exactly_as_huggingtweets(
    words: list[str],
) -> None:
    cleaned = clean_tweet(" ".join(words))
    real = [w for w in cleaned.split() if not any(bad in w.lower() for bad in ("http", "@", "#"))]
    assert is_short(cleaned) == (len(real) < 3)
