"""ArchiveSource: every shape of X archive, long posts, ownership, and hostile zips."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.errors import DoppeltweetError, InputError
from training.handles import parse_handle
from training.sources.archive import ArchiveSource, looks_like_archive

MB = 1024 * 1024
JACK = parse_handle("@jack")


def source(path: Path, *, max_file: int = 50 * MB, max_unpacked: int = 20 * MB) -> ArchiveSource:
    return ArchiveSource(path, max_file_bytes=max_file, max_uncompressed_bytes=max_unpacked)


@pytest.fixture
def three_tweets(archive_builder):
    builder = archive_builder(owner="jack")
    builder.add("oldest: coffee &amp; code all day", minutes_ago=30)
    builder.add("@bob thanks for the tip!", minutes_ago=20, reply_to="bob")
    builder.add("RT @alice: retweeted wisdom about the weather", minutes_ago=10)
    return builder


def test_zip_yields_every_tweet_newest_first_with_flags(tmp_path, three_tweets) -> None:
    tweets = source(three_tweets.write_zip(tmp_path / "twitter.zip")).fetch(JACK)

    assert [t.text for t in tweets] == [
        "RT @alice: retweeted wisdom about the weather",
        "@bob thanks for the tip!",
        "oldest: coffee &amp; code all day",
    ]
    assert [(t.is_retweet, t.is_reply) for t in tweets] == [
        (True, False),
        (False, True),
        (False, False),
    ]
    assert all(t.source == "x-archive" for t in tweets)
    assert tweets[0].created_at is not None and tweets[0].created_at.tzinfo is not None
    assert tweets[0].created_at > tweets[1].created_at > tweets[2].created_at
    assert tweets[2].id == "1580000000000000001"


def test_html_escaping_is_left_for_cleaning(tmp_path, three_tweets) -> None:
    tweets = source(three_tweets.write_zip(tmp_path / "a.zip")).fetch(JACK)
    assert "&amp;" in tweets[-1].text


def test_created_at_is_parsed_from_x_format(tmp_path, archive_builder) -> None:
    builder = archive_builder()
    builder.add("a tweet with a date", created_at=datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC))
    (tweet,) = source(builder.write_zip(tmp_path / "a.zip")).fetch(JACK)
    assert tweet.created_at == datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC)


def test_zip_inside_a_top_folder_is_found(tmp_path, three_tweets) -> None:
    path = three_tweets.write_zip(tmp_path / "a.zip", top="twitter-2024-01-01-abc")
    assert len(source(path).fetch(JACK)) == 3


def test_extracted_folder_and_its_data_folder_both_work(tmp_path, three_tweets) -> None:
    folder = three_tweets.write_folder(tmp_path / "twitter-2024")
    assert looks_like_archive(folder) and looks_like_archive(folder / "data")
    assert len(source(folder).fetch(JACK)) == 3
    assert len(source(folder / "data").fetch(JACK)) == 3


def test_bare_tweets_js_without_account_info_is_accepted(tmp_path, three_tweets) -> None:
    path = tmp_path / "tweets.js"
    path.write_bytes(three_tweets.files()["data/tweets.js"])
    assert looks_like_archive(path)
    assert len(source(path).fetch(parse_handle("anyone"))) == 3


def test_folder_of_uploaded_js_files_is_read(tmp_path, three_tweets) -> None:
    folder = tmp_path / "upload"
    folder.mkdir()
    for name, data in three_tweets.files().items():
        if name.endswith(".js"):
            (folder / Path(name).name).write_bytes(data)
    assert looks_like_archive(folder)
    assert len(source(folder).fetch(JACK)) == 3


def test_2020_layout_tweet_js_is_read(tmp_path, archive_builder) -> None:
    builder = archive_builder(layout="2020")
    builder.add("from the old days of tweet.js")
    files = builder.files()
    assert "data/tweet.js" in files and b"window.YTD.tweet.part0" in files["data/tweet.js"]
    (tweet,) = source(builder.write_zip(tmp_path / "old.zip")).fetch(JACK)
    assert tweet.text == "from the old days of tweet.js"


def test_2019_entries_without_tweet_wrapper_are_read(tmp_path, js_file) -> None:
    path = tmp_path / "tweet.js"
    path.write_bytes(js_file("YTD.tweet.part0", [{"id_str": "7", "full_text": "bare entry"}]))
    (tweet,) = source(path).fetch(JACK)
    assert (tweet.id, tweet.text, tweet.created_at) == ("7", "bare entry", None)


def test_split_archive_reads_every_part_listed_in_manifest(tmp_path, archive_builder) -> None:
    builder = archive_builder(parts=3)
    for i in range(9):
        builder.add(f"tweet number {i}")
    files = builder.files()
    assert {"data/tweets-part1.js", "data/tweets-part2.js", "data/tweets-part3.js"} <= set(files)
    tweets = source(builder.write_zip(tmp_path / "big.zip")).fetch(JACK)
    assert [t.text for t in tweets] == [f"tweet number {i}" for i in reversed(range(9))]


def test_split_parts_without_manifest_are_all_read(tmp_path, archive_builder) -> None:
    builder = archive_builder(parts=2, with_manifest=False)
    for i in range(4):
        builder.add(f"tweet number {i}")
    assert len(source(builder.write_folder(tmp_path / "arch")).fetch(JACK)) == 4


def test_part_listed_in_manifest_but_missing_is_reported(tmp_path, archive_builder) -> None:
    builder = archive_builder(parts=2)
    builder.add("one")
    builder.add("two")
    folder = builder.write_folder(tmp_path / "arch")
    (folder / "data" / "tweets-part2.js").unlink()
    with pytest.raises(InputError, match=r"tweets-part2\.js.*missing"):
        source(folder).fetch(JACK)


def test_long_post_gets_full_text_from_note_tweet_by_timestamp(tmp_path, archive_builder) -> None:
    builder = archive_builder()
    builder.add("a short one")
    long_text = "This is a long post. " * 30
    builder.add_long(long_text, seconds_off=1)
    tweets = source(builder.write_zip(tmp_path / "a.zip")).fetch(JACK)
    assert tweets[0].text == long_text
    assert tweets[1].text == "a short one"


def test_note_far_from_any_tweet_changes_nothing(tmp_path, archive_builder) -> None:
    builder = archive_builder()
    truncated = builder.add_long("Long words here. " * 30, seconds_off=3600)
    (tweet,) = source(builder.write_zip(tmp_path / "a.zip")).fetch(JACK)
    assert tweet.text == truncated["full_text"] and tweet.text.endswith("…")


def test_note_at_same_second_as_unrelated_tweet_is_not_applied(tmp_path, archive_builder) -> None:
    builder = archive_builder()
    tweet = builder.add("A different short tweet entirely")
    builder.notes.append(
        {
            "noteTweet": {
                "noteTweetId": "1",
                "createdAt": datetime.strptime(tweet["created_at"], "%a %b %d %H:%M:%S %z %Y")
                .astimezone(UTC)
                .strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "core": {"text": "Some other long post " * 20},
            }
        }
    )
    (got,) = source(builder.write_zip(tmp_path / "a.zip")).fetch(JACK)
    assert got.text == "A different short tweet entirely"


@pytest.mark.parametrize("where", ["account", "manifest", "both"])
def test_archive_of_someone_else_names_both_handles(tmp_path, archive_builder, where) -> None:
    builder = archive_builder(
        owner="Alice_1", with_account=where != "manifest", with_manifest=where != "account"
    )
    builder.add("hello")
    path = builder.write_zip(tmp_path / "a.zip")
    with pytest.raises(InputError, match=r"@Alice_1.*@jack"):
        source(path).fetch(JACK)
    assert len(source(path).fetch(parse_handle("@ALICE_1"))) == 1  # case-insensitive


def test_bluesky_handle_is_refused(tmp_path, three_tweets) -> None:
    with pytest.raises(InputError, match="X archive"):
        source(three_tweets.write_zip(tmp_path / "a.zip")).fetch(
            parse_handle("bluesky:alice.bsky.social")
        )


# --- hostile and broken input -------------------------------------------------------------------


@pytest.mark.parametrize("member", ["../evil.js", "data/../../evil.js", "/etc/evil.js", "C:/x.js"])
def test_zip_slip_member_is_refused(tmp_path, three_tweets, zip_writer, member) -> None:
    files = three_tweets.files()
    files[member] = b"window.YTD.tweets.part0 = []"
    path = zip_writer(tmp_path / "slip.zip", files)
    with pytest.raises(InputError, match="unsafe"):
        source(path).fetch(JACK)


def test_zip_bomb_is_refused_before_inflating(tmp_path, js_file) -> None:
    path = tmp_path / "bomb.zip"
    # 30 MB of spaces deflate ~1000:1; written in chunks so the test stays cheap.
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("data/tweets.js", "w", force_zip64=True) as member,
    ):
        member.write(b"window.YTD.tweets.part0 = [")
        chunk = b" " * MB
        for _ in range(30):
            member.write(chunk)
        member.write(b"]")
    assert path.stat().st_size < MB // 10
    with pytest.raises(InputError, match="zip bomb"):
        source(path, max_unpacked=1024 * MB).fetch(JACK)


def test_tweet_files_over_the_uncompressed_limit_are_refused(tmp_path, archive_builder) -> None:
    builder = archive_builder()
    for i in range(200):
        builder.add(f"tweet {i} " + "x" * 200)
    path = builder.write_zip(tmp_path / "a.zip")
    with pytest.raises(InputError, match="limit"):
        source(path, max_unpacked=10_000).fetch(JACK)


def _patch_declared_size(data: bytearray, name: bytes, new_size: int) -> None:
    """Rewrite a member's uncompressed size in its local and central headers."""
    encoded = new_size.to_bytes(4, "little")
    for signature, size_at, name_len_at, name_at in (
        (b"PK\x03\x04", 22, 26, 30),
        (b"PK\x01\x02", 24, 28, 46),
    ):
        start = data.find(signature)
        while start != -1:
            length = int.from_bytes(data[start + name_len_at : start + name_len_at + 2], "little")
            if data[start + name_at : start + name_at + length] == name:
                data[start + size_at : start + size_at + 4] = encoded
            start = data.find(signature, start + 4)


def test_member_whose_real_size_differs_from_declared_is_refused(tmp_path, three_tweets) -> None:
    path = three_tweets.write_zip(tmp_path / "a.zip")
    with zipfile.ZipFile(path) as archive:
        size = archive.getinfo("data/tweets.js").file_size
    data = bytearray(path.read_bytes())
    _patch_declared_size(data, b"data/tweets.js", size // 2)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="damaged"):
        source(path).fetch(JACK)


def test_file_over_size_limit_is_refused_before_reading(tmp_path, three_tweets) -> None:
    path = three_tweets.write_zip(tmp_path / "a.zip")
    with pytest.raises(InputError, match=r"over the .* limit"):
        source(path, max_file=100).fetch(JACK)


def test_not_a_zip_at_all(tmp_path) -> None:
    path = tmp_path / "archive.zip"
    path.write_bytes(b"this is not a zip file, just text pretending")
    with pytest.raises(InputError, match="not a readable zip"):
        source(path).fetch(JACK)


def test_empty_zip(tmp_path) -> None:
    path = tmp_path / "empty.zip"
    zipfile.ZipFile(path, "w").close()
    with pytest.raises(InputError, match="empty zip"):
        source(path).fetch(JACK)


def test_zip_without_tweets_file(tmp_path, zip_writer) -> None:
    path = zip_writer(tmp_path / "a.zip", {"data/like.js": b"window.YTD.like.part0 = []"})
    with pytest.raises(InputError, match=r"no data/tweets\.js"):
        source(path).fetch(JACK)


def test_truncated_json_is_reported(tmp_path, three_tweets) -> None:
    path = tmp_path / "tweets.js"
    data = three_tweets.files()["data/tweets.js"]
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or garbled"):
        source(path).fetch(JACK)


def test_unrelated_js_file_is_reported(tmp_path) -> None:
    path = tmp_path / "tweets.js"
    path.write_text("function hello() { return 42; }\n")
    with pytest.raises(InputError, match="not an X archive file"):
        source(path).fetch(JACK)


def test_other_archive_file_in_place_of_tweets(tmp_path, js_file) -> None:
    path = tmp_path / "like.js"
    path.write_bytes(js_file("YTD.like.part0", [{"like": {"tweetId": "1"}}]))
    with pytest.raises(InputError, match="not tweets"):
        source(path).fetch(JACK)


def test_entry_without_text_is_reported(tmp_path, js_file) -> None:
    path = tmp_path / "tweets.js"
    path.write_bytes(js_file("YTD.tweets.part0", [{"tweet": {"id_str": "1"}}]))
    with pytest.raises(InputError, match="Entry 1"):
        source(path).fetch(JACK)


def test_folder_without_archive_is_reported(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    assert not looks_like_archive(tmp_path)


def test_csv_is_not_taken_for_an_archive(tmp_path) -> None:
    path = tmp_path / "tweets.csv"
    path.write_text("text\nhello\n")
    assert not looks_like_archive(path)


def test_errors_are_one_sentence(tmp_path) -> None:
    path = tmp_path / "tweets.js"
    path.write_text("window.YTD.tweets.part0 = [{")
    with pytest.raises(InputError) as caught:
        source(path).fetch(JACK)
    message = str(caught.value)
    assert message.endswith(".") and "\n" not in message


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_as_js_never_crash(tmp_path, data) -> None:
    path = tmp_path / "tweets.js"
    path.write_bytes(data)
    with contextlib.suppress(DoppeltweetError):
        source(path).fetch(JACK)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_as_zip_never_crash(tmp_path, data) -> None:
    path = tmp_path / "archive.zip"
    path.write_bytes(data)
    with contextlib.suppress(DoppeltweetError):
        source(path).fetch(JACK)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=512), name=st.sampled_from(["tweets.js", "account.js", "manifest.js"])
)
def test_arbitrary_member_inside_real_zip_never_crashes(tmp_path, body, name) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if name != "tweets.js":
            archive.writestr("data/tweets.js", b"window.YTD.tweets.part0 = []")
        archive.writestr(f"data/{name}", b"window.YTD.x.part0 = " + body)
    path = tmp_path / "a.zip"
    path.write_bytes(buffer.getvalue())
    with contextlib.suppress(DoppeltweetError):
        source(path).fetch(JACK)


_JSON_KEYS = st.sampled_from(
    [
        "tweet",
        "full_text",
        "id_str",
        "created_at",
        "in_reply_to_status_id_str",
        "noteTweet",
        "core",
        "text",
        "createdAt",
        "userInfo",
        "userName",
        "dataTypes",
        "tweets",
        "files",
        "fileName",
        "account",
        "username",
    ]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_JSON_KEYS, inner, max_size=5),
    max_leaves=30,
)
_GLOBALS = {
    "tweets.js": "window.YTD.tweets.part0 = ",
    "account.js": "window.YTD.account.part0 = ",
    "manifest.js": "window.__THAR_CONFIG = ",
    "note-tweet.js": "window.YTD.note_tweet.part0 = ",
}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_JSON, name=st.sampled_from(sorted(_GLOBALS)))
def test_well_formed_js_with_unexpected_shapes_never_crashes(tmp_path, value, name) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if name != "tweets.js":
            archive.writestr(
                "data/tweets.js",
                'window.YTD.tweets.part0 = [{"tweet": {"id_str": "1", "full_text": "hi", '
                '"created_at": "Thu Nov 03 08:50:26 +0000 2022"}}]',
            )
        archive.writestr(f"data/{name}", _GLOBALS[name] + json.dumps(value))
    path = tmp_path / "a.zip"
    path.write_bytes(buffer.getvalue())
    with contextlib.suppress(DoppeltweetError):
        tweets = source(path).fetch(JACK)
        assert all(isinstance(t.text, str) for t in tweets)
