"""TabularSource: columns, users, dates, encodings, mojibake, and the real FiveThirtyEight CSVs."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.errors import DoppeltweetError, InputError
from training.handles import parse_handle
from training.sources.base import RawTweet
from training.sources.tabular import TabularSource, parse_date, repair_mojibake

FIXTURES = Path(__file__).parents[2] / "fixtures" / "fivethirtyeight"
MB = 1024 * 1024
JACK = parse_handle("jack")


def source(path: Path, *, max_file: int = 10 * MB) -> TabularSource:
    return TabularSource(path, max_file_bytes=max_file)


def write_csv(path: Path, rows: list[list[str]], *, encoding: str = "utf-8") -> Path:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


# --- the real FiveThirtyEight files -------------------------------------------------------------

MOJIBAKE = re.compile(r"‰Û|â€|Ÿ‡|‰Ï|‰Â|_Ÿ")
_FETCHED: dict[str, list[RawTweet]] = {}


def fivethirtyeight(name: str) -> list[RawTweet]:
    """The file's tweets for its own handle, read once per test session (a second each)."""
    if name not in _FETCHED:
        _FETCHED[name] = source(FIXTURES / f"{name}.csv").fetch(parse_handle(name))
    return _FETCHED[name]


@pytest.mark.parametrize(
    ("name", "rows", "retweets"),
    [("BarackObama", 3207, 351), ("realDonaldTrump", 3232, 354)],
)
def test_fivethirtyeight_csv_reads_every_row_readably(name, rows, retweets) -> None:
    tweets = fivethirtyeight(name)

    assert len(tweets) == rows
    assert sum(t.is_retweet for t in tweets) == retweets
    garbled = [t.text for t in tweets if MOJIBAKE.search(t.text)]
    assert garbled == []
    assert all(t.source == "csv" for t in tweets)
    dates = [t.created_at for t in tweets]
    assert all(d is not None for d in dates)
    assert dates == sorted(dates, reverse=True)


def test_fivethirtyeight_obama_mojibake_becomes_real_punctuation() -> None:
    tweets = fivethirtyeight("BarackObama")
    texts = {t.id: t.text for t in tweets}
    # Raw bytes: "Join us a\xe4\xf3_ https://..." (… mangled twice, its last byte lost).
    assert texts["912724426709504000"].endswith("Join us a… https://t.co/gkrp1RwXR4")
    assert "because they’ve done nothing wrong" in texts["905141484386750469"]
    assert "Coding is important – and fun" in texts["909871642423197696"]
    newest = tweets[0]
    assert newest.id == "920061541986250758"
    assert newest.created_at == datetime(2017, 10, 16, 22, 59, tzinfo=UTC)
    assert "&amp;" in texts["914832655170011137"]  # entities are left for cleaning


def test_fivethirtyeight_trump_emoji_flags_are_restored() -> None:
    tweets = fivethirtyeight("realDonaldTrump")
    joined = "\n".join(t.text for t in tweets)
    assert joined.count("🇺🇸") > 100
    assert "Shinzō Abe" in joined
    assert "Élysée Palace" in joined


def test_fivethirtyeight_file_for_another_handle_lists_its_user() -> None:
    with pytest.raises(InputError, match=r"no posts by @jack.*@BarackObama"):
        source(FIXTURES / "BarackObama.csv").fetch(JACK)


# --- mojibake repair ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbled", "fixed"),
    [
        ("Join us a‰Û_ https://t.co/x", "Join us a… https://t.co/x"),
        ("they‰Ûªve", "they’ve"),
        ("change‰ÛÓand", "change—and"),
        ("Crooked Hillaryâ€™s plan", "Crooked Hillary’s plan"),
        ("#USA_Ÿ‡º_Ÿ‡¸ great", "#USA🇺🇸 great"),
        ("cafÃ© au lait", "café au lait"),
    ],
)
def test_repair_mojibake_undoes_known_patterns(garbled, fixed) -> None:
    assert repair_mojibake(garbled) == fixed


@pytest.mark.parametrize(
    "clean",
    [
        "Café crème brûlée, señor — “quotes” and naïve façades…",
        "snake_case and @user_name stay as they are",
        "Привет мир, 你好, emoji 🎉 stay",
        "&amp; stays escaped",
        "’… «Ça va?» Straße über àé ßü",
    ],
)
def test_repair_mojibake_leaves_clean_text_alone(clean) -> None:
    assert repair_mojibake(clean) == clean


# --- encodings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "mac_roman", "cp1252"])
def test_encodings_are_detected(tmp_path, encoding) -> None:
    rows = [["text"], ["Café crème brûlée is très bon, señor"], ["naïve façade déjà vu"]] * 5
    path = write_csv(tmp_path / "t.csv", rows, encoding=encoding)
    tweets = source(path).fetch(JACK)
    assert [t.text for t in tweets[:2]] == [
        "Café crème brûlée is très bon, señor",
        "naïve façade déjà vu",
    ]


def test_utf8_bom_does_not_hide_the_text_column(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbfText,User\nhello world,jack\n")
    assert [t.text for t in source(path).fetch(JACK)] == ["hello world"]


# --- columns, users, flags, dates ---------------------------------------------------------------


@pytest.mark.parametrize("column", ["text", "Full_Text", "CONTENT", "tweet"])
def test_text_column_is_found_whatever_its_name(tmp_path, column) -> None:
    path = write_csv(tmp_path / "t.csv", [["id", column], ["1", "hello there friends"]])
    (tweet,) = source(path).fetch(JACK)
    assert (tweet.id, tweet.text) == ("1", "hello there friends")


def test_missing_text_column_lists_the_columns(tmp_path) -> None:
    path = write_csv(tmp_path / "t.csv", [["id", "body", "when"], ["1", "hi", "x"]])
    with pytest.raises(InputError, match=r"no text column.*found id, body, when"):
        source(path).fetch(JACK)


@pytest.mark.parametrize("column", ["user", "screen_name", "username", "handle"])
def test_user_column_keeps_only_the_handles_rows(tmp_path, column) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        [["text", column], ["mine one", "Jack"], ["theirs", "alice"], ["mine two", "@jack"]],
    )
    assert [t.text for t in source(path).fetch(JACK)] == ["mine one", "mine two"]


def test_no_rows_for_handle_lists_users_found(tmp_path) -> None:
    path = write_csv(tmp_path / "t.csv", [["text", "user"], ["a", "alice"], ["b", "bob"]])
    with pytest.raises(InputError, match=r"no posts by @jack; the users in it are @alice, @bob"):
        source(path).fetch(JACK)


def test_retweets_and_replies_are_flagged(tmp_path) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        [
            ["text", "retweeted", "in_reply_to_status_id"],
            ["RT @bob: something", "false", ""],
            ["a quote", "True", ""],
            ["@bob yes indeed", "false", "12345"],
            ["plain words here", "false", ""],
        ],
    )
    flags = [(t.is_retweet, t.is_reply) for t in source(path).fetch(JACK)]
    assert flags == [(True, False), (True, False), (False, True), (False, False)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Thu Nov 03 08:50:26 +0000 2022", datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC)),
        ("2022-11-03T08:50:26Z", datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC)),
        ("2022-11-03 10:50:26+02:00", datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC)),
        ("2022-11-03 08:50:26", datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC)),
        ("10/16/17 22:59", datetime(2017, 10, 16, 22, 59, tzinfo=UTC)),
        ("11-03-2022 08:50:26", datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC)),
        ("1667465426", datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC)),
        ("1667465426000", datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC)),
        ("not a date", None),
        ("²", None),  # a digit to str.isdigit, not to float()
        ("2022", None),
    ],
)
def test_dates_in_common_formats_are_parsed(value, expected) -> None:
    assert parse_date(value) == expected


def test_rows_are_sorted_newest_first_when_dated(tmp_path) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        [
            ["text", "created_at"],
            ["middle", "2022-01-02"],
            ["old", "2022-01-01"],
            ["new", "2022-01-03"],
        ],
    )
    assert [t.text for t in source(path).fetch(JACK)] == ["new", "middle", "old"]


def test_file_order_is_kept_without_dates(tmp_path) -> None:
    path = write_csv(tmp_path / "t.csv", [["text"], ["first"], ["second"], ["third"]])
    assert [t.text for t in source(path).fetch(JACK)] == ["first", "second", "third"]


def test_tab_separated_file_is_read(tmp_path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("id\ttext\n1\thello, with a comma\n")
    assert [t.text for t in source(path).fetch(JACK)] == ["hello, with a comma"]


# --- JSON lines and arrays ----------------------------------------------------------------------


def test_jsonl_rows_follow_the_same_column_rules(tmp_path) -> None:
    path = tmp_path / "t.jsonl"
    lines = [
        {"id": 2, "full_text": "RT @x: shared", "user": {"screen_name": "jack"}},
        {"id": 1, "full_text": "my own words", "user": {"screen_name": "jack"}},
        {"id": 3, "full_text": "not mine", "user": {"screen_name": "alice"}},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    src = source(path)
    tweets = src.fetch(JACK)
    assert src.kind == "jsonl"
    assert [(t.id, t.text, t.is_retweet, t.source) for t in tweets] == [
        ("2", "RT @x: shared", True, "jsonl"),
        ("1", "my own words", False, "jsonl"),
    ]


def test_json_array_file_is_accepted(tmp_path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"text": "one two three"}, {"text": "four five six"}]))
    assert [t.text for t in source(path).fetch(JACK)] == ["one two three", "four five six"]


def test_kind_is_sniffed_from_content_without_extension(tmp_path) -> None:
    path = tmp_path / "export"
    path.write_text('{"text": "hello"}\n')
    assert source(path).kind == "jsonl"
    other = tmp_path / "export2"
    other.write_text("text\nhello\n")
    assert source(other).kind == "csv"


def test_bad_jsonl_line_is_named(tmp_path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok too"}\n{"text": broken\n')
    with pytest.raises(InputError, match=r"^Line 3 of t\.jsonl is not valid JSON"):
        source(path).fetch(JACK)


def test_jsonl_line_that_is_not_an_object_is_named(tmp_path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"^Line 2 .* not a JSON object"):
        source(path).fetch(JACK)


# --- bad files ----------------------------------------------------------------------------------


def test_empty_file_is_refused(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"t\.csv is empty"):
        source(path).fetch(JACK)


def test_header_only_file_is_refused(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,user\n")
    with pytest.raises(InputError, match="no rows"):
        source(path).fetch(JACK)


def test_binary_garbage_is_refused(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(InputError, match=r"not a text file|binary"):
        source(path).fetch(JACK)


def test_file_over_the_size_limit_is_refused(tmp_path) -> None:
    path = write_csv(tmp_path / "t.csv", [["text"], ["x" * 500]])
    with pytest.raises(InputError, match=r"over the .* limit"):
        source(path, max_file=100).fetch(JACK)


def test_errors_are_one_sentence(tmp_path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("{\n")
    with pytest.raises(InputError) as caught:
        source(path).fetch(JACK)
    message = str(caught.value)
    assert message.endswith(".") and "\n" not in message


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".csv", ".jsonl", ".json", ""]))
def test_arbitrary_bytes_never_crash(tmp_path, data, suffix) -> None:
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    with contextlib.suppress(DoppeltweetError):
        tweets = source(path).fetch(JACK)
        assert all(isinstance(t.text, str) and t.text for t in tweets)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=300))
def test_arbitrary_text_rows_never_crash(tmp_path, text) -> None:
    path = write_csv(tmp_path / "t.csv", [["text", "created_at"], [text, text]])
    with contextlib.suppress(DoppeltweetError):
        source(path).fetch(JACK)
