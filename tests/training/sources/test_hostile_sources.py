"""Hostile inputs the sources must survive with bounded work and one sentence each.

Every input here is built by the test: zip bombs made of many small members, archives with more
posts than allowed, lone surrogates and control characters, posts over X's 25,000 characters,
JSON nested a million deep, files bigger than one read, duplicate ids, Bluesky servers that send
too much or drip bytes.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from training.cleaning import clean_handle
from training.config import TrainingSettings
from training.errors import InputError, SourceError
from training.handles import Handle, parse_handle
from training.pipeline import collect, fetch_checked
from training.sources.archive import ArchiveSource, _expand_long_posts
from training.sources.base import MAX_POST_CHARS, RawTweet, at_boundary, repair_text
from training.sources.bluesky import FEED_ENDPOINT, BlueskySource
from training.sources.tabular import TabularSource

MB = 1024 * 1024
JACK = parse_handle("@jack")
ALICE = Handle("alice.bsky.social", "bluesky")


def archive(path: Path, **limits: int) -> ArchiveSource:
    return ArchiveSource(
        path,
        max_file_bytes=limits.get("max_file", 50 * MB),
        max_uncompressed_bytes=limits.get("max_unpacked", 200 * MB),
        max_tweets=limits.get("max_tweets", 1_000_000),
    )


# --------------------------------------------------------------------------- bounded work


def test_a_zip_bomb_of_many_small_members_is_refused_before_reading(tmp_path: Path) -> None:
    # Each member is under the per-member ratio check's floor, but together they inflate
    # hundreds of times over the zip's own size.
    part = b"window.YTD.tweets.part0 = [" + b" " * (900 * 1024) + b"]"
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bomb:
        for number in range(1, 13):
            bomb.writestr(f"data/tweets-part{number}.js", part)
    assert path.stat().st_size * 100 < 12 * len(part)

    with pytest.raises(InputError, match=r"^bomb\.zip looks like a zip bomb: its tweet files"):
        archive(path).fetch(JACK)


def test_a_small_honest_zip_is_not_mistaken_for_a_bomb(tmp_path: Path, archive_builder) -> None:
    builder = archive_builder()
    for number in range(200):
        builder.add(f"an honest tweet number {number} about the weather and coffee")
    tweets = archive(builder.write_zip(tmp_path / "a.zip")).fetch(JACK)
    assert len(tweets) == 200


def test_posts_past_the_configured_cap_are_refused_with_the_setting_named(
    tmp_path: Path, archive_builder
) -> None:
    builder = archive_builder()
    for number in range(30):
        builder.add(f"tweet {number} with enough words in it")
    path = builder.write_zip(tmp_path / "a.zip")

    assert len(archive(path, max_tweets=30).fetch(JACK)) == 30
    with pytest.raises(InputError, match=r"more than 29 posts.*DOPPELTWEET_MAX_TWEETS"):
        archive(path, max_tweets=29).fetch(JACK)


def test_csv_and_jsonl_rows_past_the_cap_are_refused(tmp_path: Path) -> None:
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("text\n" + "".join(f"row {i} has words\n" for i in range(12)), "utf-8")
    jsonl_path = tmp_path / "t.jsonl"
    jsonl_path.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(12)))
    for path in (csv_path, jsonl_path):
        assert len(TabularSource(path, max_file_bytes=MB, max_tweets=12).fetch(JACK)) == 12
        with pytest.raises(InputError, match="more than 11 posts"):
            TabularSource(path, max_file_bytes=MB, max_tweets=11).fetch(JACK)


def test_the_cap_holds_for_a_source_that_does_not_cap_itself(
    fake_source_factory, make_training_settings: Callable[..., TrainingSettings]
) -> None:
    many = [RawTweet(str(i), None, f"post {i}", False, False, "test") for i in range(6)]
    source = fake_source_factory({"jack": many})
    with pytest.raises(InputError, match="more than 5 posts"):
        fetch_checked(source, JACK, make_training_settings(max_tweets=5))


def _tweet(number: int, when: datetime, text: str) -> RawTweet:
    return RawTweet(str(number), when, text, False, False, "x-archive")


def test_long_post_matching_picks_the_right_note_among_near_ones() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    tweets, notes = [], []
    for number in range(3000):
        when = start + timedelta(seconds=number)
        full = f"long post number {number:05d} " + "and it goes on " * 30
        tweets.append(_tweet(number, when, full[:270] + "…"))
        notes.append((when + timedelta(seconds=1), full))
    expanded = _expand_long_posts(tweets, list(reversed(notes)))
    assert [t.text for t in expanded] == [text for _, text in notes]


def test_thousands_of_notes_in_one_second_end_without_a_false_match() -> None:
    # The hostile case of the quadratic matcher: every tweet and every note in the same second.
    when = datetime(2024, 1, 1, tzinfo=UTC)
    tweets = [_tweet(n, when, f"short tweet {n} says hello to everyone") for n in range(4000)]
    notes = [(when, f"an unrelated long post {n} " * 20) for n in range(4000)]
    expanded = _expand_long_posts(tweets, notes)
    assert [t.text for t in expanded] == [t.text for t in tweets]


def test_a_post_over_25000_characters_is_cut_and_counted(
    tmp_path: Path, make_training_settings: Callable[..., TrainingSettings]
) -> None:
    long_text = "word " * 10_000  # 50,000 characters
    path = tmp_path / "t.jsonl"
    rows = [{"id": "1", "text": long_text}, {"id": "2", "text": "a normal short post here"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")

    table = collect([JACK], [str(path)], make_training_settings())

    (data,) = table.handles
    assert data.cut == 1
    assert max(len(text) for text in data.kept) <= MAX_POST_CHARS
    assert any("longer than 25,000 characters" in w for w in table.notes())


def test_a_csv_post_over_the_cap_is_cut_too(
    tmp_path: Path, make_training_settings: Callable[..., TrainingSettings]
) -> None:
    path = tmp_path / "t.csv"
    path.write_text('text\n"' + "x" * 30_000 + '"\nsecond post with words\n', "utf-8")
    tweets, cut = fetch_checked(
        TabularSource(path, max_file_bytes=MB), JACK, make_training_settings()
    )
    assert cut == 1 and len(tweets[0].text) == MAX_POST_CHARS


def test_a_large_csv_is_streamed_across_reads_with_characters_split_between_them(
    tmp_path: Path,
) -> None:
    # Far more than one read chunk; emoji and accents fall on every kind of boundary.
    rows = [f"post {i} café 🎉 naïve über {'é' * (i % 7)}" for i in range(20_000)]
    path = tmp_path / "big.csv"
    path.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(rows)), "utf-8")
    tweets = TabularSource(path, max_file_bytes=64 * MB).fetch(JACK)
    assert [t.text for t in tweets] == rows


def test_a_json_array_is_read_item_by_item_across_reads(tmp_path: Path) -> None:
    items = [{"id": str(i), "text": f"post {i} " + "🎉" * (i % 5)} for i in range(20_000)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1), "utf-8")
    tweets = TabularSource(path, max_file_bytes=64 * MB).fetch(JACK)
    assert [t.text for t in tweets] == [item["text"] for item in items]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[{"text": "ok post"}, {"text": "cut', r"^t\.json is not valid JSON \(item 2"),
        ('[{"text": "ok post"} {"text": "b"}]', r"after item 1, expected , or \]"),
        ('[{"text": "ok post"}, 3]', r"^Item 2 of t\.json is not a JSON object"),
        ("[", r"ends inside item 1"),
    ],
)
def test_a_broken_json_array_is_one_sentence(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(body, "utf-8")
    with pytest.raises(InputError, match=message):
        TabularSource(path, max_file_bytes=MB).fetch(JACK)


def test_a_late_legacy_byte_after_the_sample_still_decodes(tmp_path: Path) -> None:
    # ASCII for the whole sample, then one Windows-1252 "é": not UTF-8 after all.
    head = "".join(f"ascii post number {i} with words\n" for i in range(12_000)).encode()
    path = tmp_path / "t.csv"
    path.write_bytes(b"text\n" + head + "caf\xe9 au lait with friends\n".encode("latin-1"))
    tweets = TabularSource(path, max_file_bytes=64 * MB).fetch(JACK)
    assert tweets[-1].text == "café au lait with friends"


# --------------------------------------------------------------------------- one sentence


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_json_nested_a_million_deep_is_one_sentence(
    tmp_path: Path, suffix: str, opener: str
) -> None:
    path = tmp_path / f"deep{suffix}"
    path.write_text(opener * 1_000_000, "utf-8")
    with pytest.raises(InputError, match="nests its JSON too deeply"):
        TabularSource(path, max_file_bytes=64 * MB).fetch(JACK)


def test_repair_text_joins_pairs_and_drops_lone_surrogates_and_controls() -> None:
    assert repair_text("cut inside an emoji \ud83d") == "cut inside an emoji "
    assert repair_text("a pair \ud83d\ude00 stays") == "a pair 😀 stays"
    assert repair_text("\x1b[31mred\x00 and\x07 bell\x7f\x9b") == "[31mred and bell"
    assert repair_text("tabs\tand\nnewlines stay") == "tabs\tand\nnewlines stay"
    plain = "nothing to do here"
    assert repair_text(plain) is plain


def test_every_source_goes_through_the_boundary_repair(
    fake_source_factory, make_training_settings: Callable[..., TrainingSettings]
) -> None:
    # Whatever source delivered them (X API, Bluesky, a new one), collect's boundary repairs.
    hostile = RawTweet("1", None, "lone \ud83d and \x00nul \x1besc", False, False, "any")
    tweets, _ = fetch_checked(
        fake_source_factory({"jack": [hostile]}), JACK, make_training_settings()
    )
    assert tweets[0].text == "lone  and nul esc"
    tweets[0].text.encode("utf-8")  # never raises again


def test_an_archive_with_surrogates_and_control_characters_cleans_to_safe_text(
    tmp_path: Path,
    archive_builder,
    zip_writer,
    make_training_settings: Callable[..., TrainingSettings],
) -> None:
    builder = archive_builder()
    builder.add("a tweet cut inside an emoji @SURROGATE@ at its very end")
    builder.add("terminal \x1b[2J escapes and a \x00 NUL inside this tweet")
    files = builder.files()
    # As old exports wrote it: a JSON escape of half an emoji, which json.loads turns into a
    # lone surrogate in the str.
    files["data/tweets.js"] = files["data/tweets.js"].replace(b"@SURROGATE@", b"\\ud83d")
    path = zip_writer(tmp_path / "a.zip", files)
    table = collect([JACK], [str(path)], make_training_settings())
    kept = table.handles[0].kept
    assert "a tweet cut inside an emoji at its very end" in kept
    assert "terminal [2J escapes and a NUL inside this tweet" in kept
    for text in kept:
        text.encode("utf-8")
        assert not any(ord(ch) < 32 for ch in text)


# --------------------------------------------------------------------------- duplicates


def test_a_folder_with_both_tweets_js_and_tweet_js_counts_each_post_once(
    tmp_path: Path, archive_builder, make_training_settings: Callable[..., TrainingSettings]
) -> None:
    builder = archive_builder(with_manifest=False)
    for number in range(5):
        builder.add(f"tweet number {number} with a few words")
    folder = builder.write_folder(tmp_path / "archive")
    data = folder / "data"
    (data / "tweet.js").write_bytes(
        (data / "tweets.js").read_bytes().replace(b"YTD.tweets.", b"YTD.tweet.")
    )

    table = collect([JACK], [str(folder)], make_training_settings())

    (column,) = table.handles
    assert column.tweets_downloaded == 5 and column.duplicates == 5
    assert any("5 duplicate posts by @jack" in w for w in table.notes())


def test_overlapping_parts_and_duplicate_zip_members_count_once(
    tmp_path: Path,
    archive_builder,
    js_file,
    make_training_settings: Callable[..., TrainingSettings],
) -> None:
    builder = archive_builder(with_manifest=False)
    for number in range(6):
        builder.add(f"tweet number {number} with a few words")
    entries = builder.tweets
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zipped, pytest.warns(UserWarning, match="Duplicate"):
        zipped.writestr("data/tweets-part1.js", js_file("YTD.tweets.part0", entries[:4]))
        zipped.writestr("data/tweets-part2.js", js_file("YTD.tweets.part1", entries[2:]))
        zipped.writestr("data/tweets-part2.js", js_file("YTD.tweets.part1", entries[2:]))

    table = collect([JACK], [str(path)], make_training_settings())

    (column,) = table.handles
    assert column.tweets_downloaded == 6
    assert column.duplicates == 2


def test_clean_handle_keeps_the_first_of_each_id() -> None:
    tweets = [RawTweet("1", None, "first words of this", False, False, "t")] * 3
    data = clean_handle(JACK, tweets)
    assert (data.tweets_downloaded, data.duplicates, data.kept) == (1, 2, ["first words of this"])


# --------------------------------------------------------------------------- Bluesky


class _RawServer:
    """A loopback HTTP server whose answer is written by ``respond(socket)``."""

    def __init__(self, respond) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._respond = respond
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    self._respond(conn, self._stop)
                except OSError:
                    pass

    def __enter__(self) -> _RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()


@pytest.fixture
def dripping_server() -> Iterator[_RawServer]:
    def drip(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        conn.sendall(b"Content-Length: 100000\r\n\r\n")
        for _ in range(400):  # bounded: at most 40 s of drips, far past the deadline
            if stop.is_set():
                return
            conn.sendall(b" ")
            time.sleep(0.1)

    with _RawServer(drip) as server:
        yield server


def test_a_server_dripping_bytes_is_stopped_by_the_overall_deadline(
    dripping_server: _RawServer,
) -> None:
    source = BlueskySource(
        allow_private_servers=True, base_url=dripping_server.base_url, timeout=5, deadline_s=0.5
    )
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"longer than 0\.5 seconds.*BLUESKY_DEADLINE_S"):
        source.fetch(ALICE)
    assert time.monotonic() - started < 10  # a drip every 0.1 s would otherwise go on


@pytest.fixture
def flooding_server() -> Iterator[_RawServer]:
    def flood(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        conn.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b" " * 65536
        for _ in range(200):  # 12.5 MB at most, well past the 1 MB cap below
            if stop.is_set():
                return
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.sendall(b"0\r\n\r\n")

    with _RawServer(flood) as server:
        yield server


def test_a_response_over_the_size_cap_is_one_sentence(flooding_server: _RawServer) -> None:
    source = BlueskySource(
        allow_private_servers=True, base_url=flooding_server.base_url, max_response_bytes=MB
    )
    with pytest.raises(SourceError, match=r"over 1 MB.*BLUESKY_MAX_RESPONSE_MB"):
        source.fetch(ALICE)


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    def declare(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n{}")

    with _RawServer(declare) as server:
        source = BlueskySource(
            allow_private_servers=True, base_url=server.base_url, max_response_bytes=MB
        )
        with pytest.raises(SourceError, match="over 1 MB"):
            source.fetch(ALICE)


def test_the_bluesky_bounds_come_from_the_settings(
    make_training_settings: Callable[..., TrainingSettings],
) -> None:
    from training.pipeline import open_source

    source = open_source(
        "bluesky", ALICE, make_training_settings(bluesky_max_response_mb=2, bluesky_deadline_s=30)
    )
    assert isinstance(source, BlueskySource)
    assert (source.max_response_bytes, source.deadline_s) == (2 * MB, 30)
    assert FEED_ENDPOINT.startswith("/xrpc/")


def test_at_boundary_reports_what_it_cut() -> None:
    tweets = [RawTweet("1", None, "y" * (MAX_POST_CHARS + 5), False, False, "t")]
    repaired, cut = at_boundary(tweets)
    assert cut == 1 and len(repaired[0].text) == MAX_POST_CHARS
