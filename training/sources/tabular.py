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
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import charset_normalizer
import ftfy
from charset_normalizer.md import mess_ratio

from training.errors import InputError
from training.handles import Handle
from training.sources.base import MAX_POST_CHARS, RawTweet
from training.sources.formats import JSON_SUFFIXES, TABULAR_SUFFIXES

TEXT_COLUMNS = ("text", "full_text", "content", "tweet")
ID_COLUMNS = ("id", "id_str", "tweet_id")
DATE_COLUMNS = ("created_at", "createdat", "date", "timestamp", "time")
USER_COLUMNS = ("user", "screen_name", "username", "handle")
RETWEET_COLUMNS = ("is_retweet", "retweeted")

#: Legacy code pages that spreadsheet exports use (Excel for Mac writes MacRoman, Windows
#: Excel writes Windows-1252); always tried next to whatever the detector guesses.
LEGACY_ENCODINGS = ("cp1252", "mac_roman")
#: How much of a legacy file the encoding candidates are scored on.
_SCORE_SAMPLE = 200_000
#: How much less messy a detector's guess must be to beat Windows-1252 and MacRoman.
_GUESS_MARGIN = 0.1

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
_FTFY = ftfy.TextFixerConfig(
    # Entities stay escaped: cleaning decodes them exactly once, like huggingtweets.
    unescape_html=False,
    uncurl_quotes=False,
    fix_character_width=False,
    fix_latin_ligatures=False,
    normalization="NFC",
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
            raise InputError(f"{name} cannot be read ({error.strerror or error}).") from error

    def _encoding(self) -> tuple[str, str]:
        """The file's encoding and its decoded first part (for the CSV delimiter)."""
        name = self.path.name
        try:
            if not self.path.is_file():
                raise InputError(f"{name} is not a file.")
            size = self.path.stat().st_size
            if size > self.max_file_bytes:
                raise InputError(
                    f"{name} is {_mb(size)} MB, over the {_mb(self.max_file_bytes)} MB limit "
                    "for input files."
                )
            with self.path.open("rb") as handle:
                sample = handle.read(_SCORE_SAMPLE)
                utf8 = _is_utf8(sample, handle, self.max_file_bytes, name)
        except OSError as error:
            raise InputError(f"{name} cannot be read ({error.strerror or error}).") from error
        if not sample.strip():
            raise InputError(f"{name} is empty.")
        encoding = _bom_encoding(sample) or ("utf-8" if utf8 else _legacy_encoding(sample, name))
        text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample)
        if "\x00" in text:
            raise InputError(f"{name} is not a text file (it contains NUL bytes).")
        return encoding, text


def _is_utf8(sample: bytes, handle: IO[bytes], max_bytes: int, name: str) -> bool:
    """Whether the whole file is strict UTF-8, checked chunk by chunk (nothing kept)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    total = len(sample)
    try:
        decoder.decode(sample)
        while chunk := handle.read(1 << 20):
            total += len(chunk)
            if total > max_bytes:
                raise InputError(f"{name} grew past the {_mb(max_bytes)} MB limit.")
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _checked_lines(stream: IO[str], name: str) -> Iterator[str]:
    """The file's lines as decoded; a NUL anywhere means it is not a text file."""
    for line in stream:
        if "\x00" in line:
            raise InputError(f"{name} is not a text file (it contains NUL bytes).")
        yield line


# --- encoding ---------------------------------------------------------------------------------


def decode_bytes(data: bytes, name: str) -> str:
    """Decode a text file whose encoding nobody told us, then repair mojibake inside it.

    A BOM wins; strict UTF-8 comes next (most files); otherwise the candidates are the
    detector's guesses plus MacRoman and Windows-1252, and the one whose text needs the least
    repair and looks least garbled wins. charset-normalizer alone is not enough: on the
    FiveThirtyEight CSVs (MacRoman) it picks cp775, cp852 or ISO-8859-15 depending on the sample.
    """
    text = _decode_with_bom(data)
    if text is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = _decode_legacy(data, name)
    if "\x00" in text:
        raise InputError(f"{name} is not a text file (it contains NUL bytes).")
    return text


def _bom_encoding(data: bytes) -> str | None:
    """The encoding a byte-order mark at the start names (a UTF-8 BOM is skipped)."""
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return encoding
    return None


def _legacy_encoding(sample: bytes, name: str) -> str:
    """The legacy code page of a file that is not UTF-8, chosen on its first part."""
    if _looks_binary(sample):
        raise InputError(f"{name} is not a text file: it looks like binary data.")
    legacy = [_score(sample, encoding) for encoding in LEGACY_ENCODINGS]
    best = min((s for s in legacy if s is not None), key=lambda s: s[:2], default=None)
    # The detector's guesses (Cyrillic, Greek, CJK code pages…) must be clearly less messy than
    # the Western code pages spreadsheets use: on Western text it often guesses Baltic or
    # Central European pages that turn "è" into "č".
    for match in list(charset_normalizer.from_bytes(sample))[:3]:
        guess = _score(sample, match.encoding)
        if guess is not None and (
            best is None or guess[0] < best[0] or guess[1] < best[1] - _GUESS_MARGIN
        ):
            best = guess
    if best is None:
        raise InputError(f"{name} is not text in any encoding we recognise.")
    return best[2]


def _decode_with_bom(data: bytes) -> str | None:
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                return None
    return None


def _decode_legacy(data: bytes, name: str) -> str:
    encoding = _legacy_encoding(data[:_SCORE_SAMPLE], name)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:  # the sample decoded but the rest does not
        raise InputError(f"{name} mixes text encodings and cannot be read.") from error


def _score(sample: bytes, encoding: str) -> tuple[int, float, str] | None:
    """(runs left garbled minus runs repaired, mess ratio, encoding): lower is better."""
    try:
        # Incremental, so a multi-byte character cut off by the sample's end is not an error.
        text = codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
    except (LookupError, UnicodeDecodeError):
        return None
    _, fixed, garbled = _repair_runs(text, finish=False)
    return garbled - fixed, mess_ratio(text[:20_000], 1.0), encoding


def _looks_binary(data: bytes) -> bool:
    sample = data[:65536]
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return b"\x00" in sample or controls > len(sample) // 100


# --- mojibake -----------------------------------------------------------------------------------

# Undefined in Windows-1252: converters pass these bytes through unchanged.
_CP1252_UNDEFINED = frozenset({0x81, 0x8D, 0x8F, 0x90, 0x9D})
#: The cost of leaving a character of a suspicious run as it is rather than decoding it.
_KEEP_COST = 4.0
#: Longer runs are not mojibake of a few characters; leave them (and the search stays cheap).
_MAX_RUN = 48


def _one_round_preimages() -> dict[int, list[tuple[int, float]]]:
    """For each MacRoman byte, the bytes one "read as Windows-1252, save as MacRoman" came from.

    The cost says how much of a guess each is: 0 for a certain origin, more for the bytes that
    MacRoman could not store and the converter replaced with ``_`` (information lost; ``…``'s
    last byte and an emoji's first byte are by far the commonest such losses in tweets).
    """
    pre: dict[int, list[tuple[int, float]]] = {b: [] for b in range(256)}
    for x in range(256):
        if x < 0x80 or x in _CP1252_UNDEFINED:
            pre[x].append((x, 0.0))
            continue
        char = bytes([x]).decode("cp1252")
        try:
            pre[char.encode("mac_roman")[0]].append((x, 0.0))
        except UnicodeEncodeError:
            pre[ord("_")].append((x, 0.9 if x in (0xA6, 0xF0) else 1.0))
    return pre


_PREIMAGES = _one_round_preimages()
# A run of non-ASCII characters and underscores (``_`` marks a byte the converter lost).
_SUSPECT_RUN = re.compile(r"[^\x00-\x5e\x60-\x7f]*[^\x00-\x7f][^\x00-\x5e\x60-\x7f]*")


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 text that was read as Windows-1252 and saved as MacRoman, once or twice.

    The FiveThirtyEight CSVs show both: ``…`` became ``â€_`` (one round, the ``¦`` lost to
    ``_``) or ``‰Û_`` (two rounds). ftfy fixes ordinary mojibake but not these, because of the
    lost bytes and the second round; here each run of suspicious characters is mapped back
    through the rounds, filling the ``_`` gaps with whatever makes valid UTF-8, and kept only if
    it then decodes. ftfy then repairs anything else.
    """
    if text.isascii():
        return text  # nothing to repair, and most tweets are ASCII: skip ftfy's work
    return _repair_runs(text)[0]


def _repair_runs(text: str, *, finish: bool = True) -> tuple[str, int, int]:
    """The repaired text, how many suspicious runs were repaired and how many stay garbled."""
    fixed = garbled = 0

    def repair(match: re.Match[str]) -> str:
        nonlocal fixed, garbled
        run = match.group()
        result = _repair_run(run)
        if result != run:
            fixed += 1
        elif sum(1 for ch in run if not ch.isascii()) >= 2:
            garbled += 1
        return result

    repaired = _SUSPECT_RUN.sub(repair, text)
    return (ftfy.fix_text(repaired, _FTFY) if finish else repaired), fixed, garbled


def _repair_run(run: str) -> str:
    if not 2 <= len(run) <= _MAX_RUN:
        return run
    try:
        raw = run.encode("mac_roman")
    except UnicodeEncodeError:
        return run
    options = [[(b, 0.0)] for b in raw]
    best: tuple[float, str] | None = None
    for _round in range(2):
        options = [_expand(opts) for opts in options]
        decoded = _best_utf8(options, run)
        if decoded is not None and (best is None or decoded[0] < best[0]):
            best = decoded
    return run if best is None else best[1]


def _expand(options: list[tuple[int, float]]) -> list[tuple[int, float]]:
    best: dict[int, float] = {}
    for byte, cost in options:
        for origin, extra in _PREIMAGES[byte]:
            total = cost + extra
            if total < best.get(origin, float("inf")):
                best[origin] = total
    return sorted(best.items(), key=lambda item: item[1])


def _best_utf8(options: list[list[tuple[int, float]]], run: str) -> tuple[float, str] | None:
    """The cheapest reading of the run as UTF-8 (one byte choice per position), if any decodes.

    A character may also stay as it was, at a cost, so one undecodable spot does not block the
    rest of the run. ``None`` when nothing at all decodes to a non-ASCII character.
    """
    n = len(options)
    # best[i] = (cost, text, decoded anything) for the cheapest reading of positions i..n-1.
    best: list[tuple[float, str, bool]] = [(0.0, "", False)] * (n + 1)
    for i in range(n - 1, -1, -1):
        rest = best[i + 1]
        found = (rest[0] + _KEEP_COST, run[i] + rest[1], rest[2])
        for lead, lead_cost in options[i]:
            length = _utf8_length(lead)
            if length == 0 or i + length > n:
                continue
            rest = best[i + length]
            for tail in _tails(options[i + 1 : i + length]):
                try:
                    char = bytes([lead, *(b for b, _ in tail)]).decode("utf-8")
                except UnicodeDecodeError:
                    continue
                cost = lead_cost + sum(c for _, c in tail) + rest[0] + _rarity(char)
                if cost < found[0]:
                    found = (cost, char + rest[1], rest[2] or not char.isascii())
        best[i] = found
    cost, text, decoded = best[0]
    return (cost, text) if decoded else None


# Blocks that tweets actually use: accented letters, punctuation, arrows, symbols, emoji.
_COMMON_BLOCKS = (
    (0x00A0, 0x024F),
    (0x0370, 0x04FF),
    (0x2000, 0x206F),
    (0x20A0, 0x20CF),
    (0x2100, 0x21FF),
    (0x231A, 0x231B),
    (0x23E9, 0x23FA),
    (0x2460, 0x27BF),
    (0x2900, 0x297F),
    (0x2B00, 0x2BFF),
    (0x3000, 0x303F),
    (0x1F000, 0x1F6FF),
    (0x1F910, 0x1F96F),
)


def _rarity(char: str) -> float:
    """A small charge for characters tweets rarely hold, to break ties between lost bytes."""
    if char.isascii():
        return 0.0
    if not unicodedata.name(char, ""):
        return 3.0  # unassigned: never what someone typed
    code = ord(char)
    return 0.0 if any(low <= code <= high for low, high in _COMMON_BLOCKS) else 0.5


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _tails(positions: list[list[tuple[int, float]]]) -> Iterator[list[tuple[int, float]]]:
    if not positions:
        yield []
        return
    continuations = [(b, c) for b, c in positions[0] if 0x80 <= b <= 0xBF]
    for choice in continuations:
        for rest in _tails(positions[1:]):
            yield [choice, *rest]


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


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):,.1f}".rstrip("0").rstrip(".")
