"""Tweets from a CSV, JSONL or JSON file with a text column — the spreadsheet path.

Such files come from anywhere (scrapers, data sets, old exports, Excel), so this module is defensive
about three things huggingtweets never met: the encoding (UTF-8 with or without a BOM, UTF-16, or a
legacy code page such as MacRoman or Windows-1252), mojibake baked into the text (UTF-8 read as the
wrong code page, sometimes twice, with the characters the code page lacked replaced by ``_``), and
column names that differ from file to file.
"""

from __future__ import annotations

import codecs
import csv
import functools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from training.errors import InputError
from training.handles import Handle
from training.sources.base import MAX_POST_CHARS, RawTweet
from training.sources.decoding import (
    SCORE_SAMPLE,
    bom_encoding,
    is_utf8,
    legacy_encoding,
    repair_mojibake,
)
from training.sources.formats import JSON_SUFFIXES, TABULAR_SUFFIXES
from training.sources.guards import check_input_size, unreadable

TEXT_COLUMNS = ("text", "full_text", "content", "tweet")
ID_COLUMNS = ("id", "id_str", "tweet_id")
DATE_COLUMNS = ("created_at", "createdat", "date", "timestamp", "time")
USER_COLUMNS = ("user", "screen_name", "username", "handle")
RETWEET_COLUMNS = ("is_retweet", "retweeted")


_TRUE = {"true", "t", "yes", "y", "1"}
_EMPTY = {"", "0", "none", "null", "nan", "false"}
_STATUS_URL = re.compile(r"/status(?:es)?/([0-9]+)")
_EPOCH = re.compile(r"[0-9]{9,13}(?:\.[0-9]+)?")
_DATE_FORMATS = (
    "%a %b %d %H:%M:%S %z %Y",  # X / API v1.1: "Thu Nov 03 08:50:26 +0000 2022"
    "%m/%d/%y %H:%M",  # FiveThirtyEight (Excel): "10/16/17 22:59"
    "%m/%d/%Y %H:%M",
    "%m/%d/%y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%m-%d-%Y %H:%M:%S",
    "%m-%d-%Y %H:%M",
    "%Y-%m-%d %H:%M:%S %z",
    "%Y-%m-%d",
)


class TabularSource:
    """A CSV/TSV, JSON Lines or JSON-array file of posts, filtered to one handle if it has users.

    The file is streamed: its encoding is chosen from a sample (and a UTF-8 check of the whole
    file, chunk by chunk), then rows are decoded, parsed and turned into posts one at a time, so
    memory grows with the posts kept, not with the file.
    """

    def __init__(self, path: Path, *, max_file_bytes: int, max_tweets: int = 1_000_000) -> None:
        self.path = Path(path)
        self.max_file_bytes = max_file_bytes
        self.max_tweets = max_tweets
        self.kind = _detect_kind(self.path)

    def fetch(self, handle: Handle) -> list[RawTweet]:
        """Read, decode, repair and filter the file; newest first when every row is dated."""
        name = self.path.name
        encoding, sample = self._encoding()
        try:
            with self.path.open("r", encoding=encoding, newline="") as stream:
                lines = _checked_lines(stream, name)
                if self.kind == "jsonl":
                    rows: Iterable[tuple[int, Mapping[str, Any]]] = _json_rows(
                        stream, lines, sample, name
                    )
                else:
                    rows = _csv_rows(lines, sample, name)
                return _to_tweets(rows, handle, self.kind, name, self.max_tweets)
        except UnicodeDecodeError as error:
            raise InputError(f"{name} mixes text encodings and cannot be read.") from error
        except OSError as error:
            raise unreadable(name, error) from error

    def _encoding(self) -> tuple[str, str]:
        """The file's encoding and its decoded first part (for the CSV delimiter)."""
        name = self.path.name
        try:
            if not self.path.is_file():
                raise InputError(f"{name} is not a file.")
            check_input_size(self.path.stat().st_size, self.max_file_bytes, name)
            with self.path.open("rb") as handle:
                sample = handle.read(SCORE_SAMPLE)
                utf8 = is_utf8(sample, handle, self.max_file_bytes, name)
        except OSError as error:
            raise unreadable(name, error) from error
        if not sample.strip():
            raise InputError(f"{name} is empty.")
        encoding = bom_encoding(sample) or ("utf-8" if utf8 else legacy_encoding(sample, name))
        text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample)
        if "\x00" in text:
            raise InputError(f"{name} is not a text file (it contains NUL bytes).")
        return encoding, text


def _checked_lines(stream: IO[str], name: str) -> Iterator[str]:
    """The file's lines as decoded; a NUL anywhere means it is not a text file."""
    for line in stream:
        if "\x00" in line:
            raise InputError(f"{name} is not a text file (it contains NUL bytes).")
        yield line


# --- rows ----------------------------------------------------------------------------------------


def _detect_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        return "jsonl"
    if suffix in TABULAR_SUFFIXES or suffix == ".txt":
        return "csv"
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return "csv"
    return "jsonl" if head[:1] in (b"{", b"[") else "csv"


def _csv_rows(
    lines: Iterator[str], sample: str, name: str
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    first_line = sample.lstrip("\ufeff").split("\n", 1)[0]
    delimiter = max(",\t;", key=first_line.count)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header or not any(cell.strip() for cell in header):
            raise InputError(f"{name} has no header row naming its columns.")
        columns = [cell.strip().lstrip("\ufeff") for cell in header]
        for number, record in enumerate(reader, start=2):
            if not any(cell.strip() for cell in record):
                continue
            yield number, dict(zip(columns, record, strict=False))
    except csv.Error as error:
        raise InputError(
            f"{name} is not a readable CSV file (line {reader.line_num}: {error})."
        ) from error


#: One item of a JSON array may be at most this large (a post with its metadata is a few KB).
MAX_JSON_ITEM_CHARS = 8 * 1024 * 1024


def _json_rows(
    stream: IO[str], lines: Iterator[str], sample: str, name: str
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    if sample.lstrip("\ufeff \t\r\n").startswith("["):
        yield from _json_array(stream, name)
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"Line {number} of {name} is not valid JSON ({error.msg}).") from error
        except RecursionError as error:
            raise InputError(f"Line {number} of {name} nests its JSON too deeply.") from error
        if not isinstance(item, dict):
            raise InputError(f"Line {number} of {name} is not a JSON object.")
        yield number, item


def _json_array(stream: IO[str], name: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """The objects of a ``[{...}, {...}]`` file, parsed one at a time as the file is read."""
    decoder = json.JSONDecoder()
    buffer, position, eof = "", 0, False

    def more(at_least: int) -> bool:
        nonlocal buffer, position, eof
        if eof:
            return False
        chunk = stream.read(max(1 << 16, at_least))
        buffer, position = buffer[position:] + chunk, 0
        eof = not chunk
        return bool(chunk)

    def skip_space() -> str:
        nonlocal position
        while True:
            while position < len(buffer) and buffer[position] in "\ufeff \t\r\n":
                position += 1
            if position < len(buffer):
                return buffer[position]
            if not more(0):
                return ""

    def broken(why: str) -> InputError:
        return InputError(f"{name} is not valid JSON ({why}).")

    if skip_space() != "[":
        raise broken("it should start with [")
    position += 1
    index = 0
    if skip_space() == "]":
        return
    while True:
        index += 1
        if not skip_space():
            raise broken(f"it ends inside item {index}")
        while True:
            try:
                item, end = decoder.raw_decode(buffer, position)
            except json.JSONDecodeError as error:
                if len(buffer) - position > MAX_JSON_ITEM_CHARS:
                    raise InputError(
                        f"Item {index} of {name} is over {MAX_JSON_ITEM_CHARS // 1024 // 1024} "
                        "MB of JSON, too large to be a post."
                    ) from error
                if more(len(buffer) - position):  # an item cut by the chunk's end: read on
                    continue
                raise broken(f"item {index}: {error.msg}") from error
            except RecursionError as error:
                raise InputError(f"Item {index} of {name} nests its JSON too deeply.") from error
            break
        position = end
        if not isinstance(item, dict):
            raise InputError(f"Item {index} of {name} is not a JSON object.")
        yield index, item
        following = skip_space()
        if following == "]":
            return
        if following != ",":
            raise broken(f"after item {index}, expected , or ]")
        position += 1


def _pick(columns: Iterable[str], wanted: tuple[str, ...]) -> str | None:
    keys = tuple(columns)
    try:
        return _pick_among(keys, wanted)
    except TypeError:  # a key that cannot be hashed cannot come from JSON or CSV, but be safe
        return _pick_among.__wrapped__(keys, wanted)


@functools.lru_cache(maxsize=1024)
def _pick_among(columns: tuple[str, ...], wanted: tuple[str, ...]) -> str | None:
    # Every row of a file has the same columns: the lookup is made once per file, not per row.
    lowered = {column.lower(): column for column in columns if isinstance(column, str)}
    for name in wanted:
        if name in lowered:
            return lowered[name]
    return None


def _to_tweets(
    rows: Iterable[tuple[int, Mapping[str, Any]]],
    handle: Handle,
    kind: str,
    name: str,
    max_tweets: int = 1_000_000,
) -> list[RawTweet]:
    tweets: list[RawTweet] = []
    users: Counter[str] = Counter()
    seen_rows = 0
    text_key: str | None = None
    for number, row in rows:
        seen_rows += 1
        if seen_rows > max_tweets:
            raise InputError(
                f"{name} holds more than {max_tweets:,} posts, the limit set by "
                "DOPPELTWEET_MAX_TWEETS."
            )
        if text_key is None or text_key not in row:
            text_key = _pick(row.keys(), TEXT_COLUMNS)
            if text_key is None:
                shown = ", ".join(str(key) for key in list(row.keys())[:12]) or "none"
                raise InputError(
                    f"{name} has no text column (looked for {', '.join(TEXT_COLUMNS)}; "
                    f"found {shown})."
                )
        user = _user(row)
        if user:
            users[user] += 1
            if user.lower() != handle.name.lower():
                continue
        text = row.get(text_key)
        if not isinstance(text, str) or not text.strip():
            continue
        # One character over the cap, so the source boundary still counts the cut.
        text = repair_mojibake(text[: MAX_POST_CHARS + 1])
        tweets.append(
            RawTweet(
                id=_row_id(row, number),
                created_at=_row_date(row),
                text=text,
                is_retweet=_row_is_retweet(row, text),
                is_reply=_row_is_reply(row),
                source=kind,
            )
        )
    if seen_rows == 0:
        raise InputError(f"{name} has no rows of tweets.")
    if not tweets and users:
        found = ", ".join(f"@{user}" for user, _ in users.most_common(5))
        raise InputError(f"{name} has no posts by {handle}; the users in it are {found}.")
    if tweets and all(tweet.created_at is not None for tweet in tweets):
        tweets.sort(key=lambda tweet: tweet.created_at or datetime.min, reverse=True)
    return tweets


def _field(row: Mapping[str, Any], wanted: tuple[str, ...]) -> Any:
    key = _pick(row.keys(), wanted)
    return None if key is None else row[key]


def _user(row: Mapping[str, Any]) -> str:
    value = _field(row, USER_COLUMNS)
    if isinstance(value, Mapping):  # API v1.1 JSON: "user": {"screen_name": ...}
        value = _field(value, ("screen_name", "username"))
    return value.strip().lstrip("@") if isinstance(value, str) else ""


def _row_id(row: Mapping[str, Any], number: int) -> str:
    value = _field(row, ID_COLUMNS)
    if isinstance(value, int | str) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()
    url = _field(row, ("url", "link", "tweet_url"))
    if isinstance(url, str) and (found := _STATUS_URL.search(url)):
        return found.group(1)
    return f"row-{number}"


def _row_date(row: Mapping[str, Any]) -> datetime | None:
    value = _field(row, DATE_COLUMNS)
    return parse_date(value) if isinstance(value, str | int | float) else None


def parse_date(value: str | int | float) -> datetime | None:
    """A timestamp in any of the formats tweet exports use, as an aware UTC datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or _EPOCH.fullmatch(value.strip()):
        number = float(value)
        if number > 1e11:  # milliseconds
            number /= 1000
        try:
            return datetime.fromtimestamp(number, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    text = value.strip()
    if not text:
        return None
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return isinstance(value, str) and value.strip().lower() in _TRUE


def _row_is_retweet(row: Mapping[str, Any], text: str) -> bool:
    # Archives and most exports always say retweeted=false, so the text is the real signal.
    if text.startswith("RT @"):
        return True
    if isinstance(row.get("retweeted_status"), Mapping):
        return True
    return _truthy(_field(row, RETWEET_COLUMNS))


def _row_is_reply(row: Mapping[str, Any]) -> bool:
    if _truthy(_field(row, ("is_reply",))):
        return True
    for key, value in row.items():
        if isinstance(key, str) and key.lower().startswith("in_reply_to"):
            if value is None or isinstance(value, bool):
                continue
            if str(value).strip().lower() not in _EMPTY:
                return True
    return False
