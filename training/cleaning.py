"""huggingtweets' cleaning rules, its data table and its data gates.

The rules are huggingtweets' own, in its order, so a model trained here saw the same kind of text a
huggingtweets model saw:

1. decode the three HTML entities X escapes (``&amp;`` ``&lt;`` ``&gt;``), once;
2. remove every URL (a ``http:`` or ``https:`` run up to the next whitespace);
3. collapse all whitespace, newlines included, to single spaces and strip.

@mentions, #hashtags and emojis stay. A tweet is *short* when fewer than three of its words are
"real" (contain none of ``http``, ``@``, ``#``). Words are whitespace-separated tokens, as
huggingtweets counted them, except in scripts written without spaces (Chinese, Japanese, Thai,
…), where a token's letters count as words (:func:`training.textrules.word_equivalents`), so a
Chinese sentence is not one word; text with spaces between words is counted as huggingtweets
counted it.
Retweets, short tweets and kept tweets are counted per handle in the seed's table, where
downloaded = retweets + short + kept always holds.

Two deliberate details: entities are decoded in a single pass, so ``&amp;lt;`` (an escaped literal
``&lt;``) becomes ``&lt;`` and not ``<``; and the URL scheme is matched case-insensitively
because schemes are case-insensitive (RFC 3986) — for the lower-case links X writes (all ``t.co``
links) this is byte-for-byte huggingtweets' result, and an ``HTTPS://`` link is removed too.
huggingtweets also cut a URL glued to a word (``(https://…)``); so do we.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import DataError, InputError
from training.handles import Handle, handle_from_name
from training.handles import model_name as _model_name
from training.sources.base import MAX_POST_CHARS, RawTweet
from training.textrules import strip_removed_link_residue, word_equivalents

#: Fewer characters kept than this (per handle) cannot make a model.
MIN_CHARS = 6_000
#: Fewer characters kept than this (per handle) make a poor model: we warn.
WARN_CHARS = 40_000
#: A tweet with fewer real words than this is short and dropped.
MIN_REAL_WORDS = 3

DATASET_FILE = "dataset.jsonl"
TABLE_FILE = "data_table.json"

_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">"}
_ENTITY_RE = re.compile("|".join(map(re.escape, _ENTITIES)))
_URL_RE = re.compile(r"https?:\S*", re.IGNORECASE)
_NOT_REAL = ("http", "@", "#")
_COUNT_FIELDS = ("tweets_downloaded", "retweets", "short_tweets", "tweets_kept")
_ROW_LABELS = {
    "tweets_downloaded": "Tweets downloaded",
    "retweets": "Retweets",
    "short_tweets": "Short tweets",
    "tweets_kept": "Tweets kept",
}
#: Rows only sources that leave posts out by rule have (both Mastodon sources): posts read but
#: not imported, outside "Tweets downloaded". Tables of other sources never show them.
SKIP_FIELDS = ("content_warned", "not_public")
SKIP_LABELS = {
    "content_warned": "Content-warned (skipped)",
    "not_public": "Not public (skipped)",
}


def clean_tweet(text: str) -> str:
    """Clean one tweet as huggingtweets did (see the module docstring for the exact rules)."""
    decoded = _ENTITY_RE.sub(lambda match: _ENTITIES[match.group(0)], text)
    without_urls = _URL_RE.sub(" ", decoded)
    return " ".join(without_urls.split())


def is_short(cleaned: str) -> bool:
    """Whether a cleaned tweet has too few real words (``@bob @alice thanks!`` has one; ``谢谢``
    is worth 1.3) to keep."""
    real = [w for w in cleaned.split() if not any(bad in w.lower() for bad in _NOT_REAL)]
    return sum(word_equivalents(w) for w in real) < MIN_REAL_WORDS


@dataclass
class HandleData:
    """One handle's column of the data table plus the cleaned tweets it kept (newest first)."""

    handle: Handle
    tweets_downloaded: int
    retweets: int
    short_tweets: int
    kept: list[str] = field(default_factory=list)
    #: Posts that came twice (the same id: overlapping files or parts) and were counted once.
    duplicates: int = 0
    #: Posts longer than MAX_POST_CHARS that were cut to it at the source boundary.
    cut: int = 0
    #: Posts the source read but left out, by reason (:data:`SKIP_FIELDS`); None for sources
    #: that leave nothing out by rule, whose tables keep the seed's four rows.
    skipped: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.tweets_downloaded != self.retweets + self.short_tweets + self.tweets_kept:
            raise DataError(
                f"The counts for {self.handle} do not add up: {self.tweets_downloaded} "
                f"downloaded is not {self.retweets} retweets + {self.short_tweets} short + "
                f"{self.tweets_kept} kept."
            )

    @property
    def tweets_kept(self) -> int:
        """How many cleaned tweets are left to train on."""
        return len(self.kept)

    @property
    def chars_kept(self) -> int:
        """Characters left to train on: the quantity the data gates and oversampling use."""
        return sum(len(t) for t in self.kept)

    def counts(self) -> dict[str, int]:
        """The four numbers of the seed's table, keyed as in ``--json``, then the skipped
        counts of a source that has them."""
        counts = {name: getattr(self, name) for name in _COUNT_FIELDS}
        if self.skipped is not None:
            counts.update({name: self.skipped.get(name, 0) for name in SKIP_FIELDS})
        return counts


def clean_handle(
    handle: Handle,
    tweets: Sequence[RawTweet],
    *,
    cut: int = 0,
    skipped: dict[str, int] | None = None,
) -> HandleData:
    """Count retweets and short tweets; keep the rest, cleaned, newest first as given.

    A post whose id came before (``tweets.js`` next to ``tweet.js``, overlapping parts, a zip
    with a member twice) is counted once; :attr:`HandleData.duplicates` says how many were dropped.
    """
    retweets = short = duplicates = 0
    kept: list[str] = []
    seen: set[str] = set()
    unique: list[RawTweet] = []
    for tweet in tweets:
        if tweet.id in seen:
            duplicates += 1
            continue
        seen.add(tweet.id)
        unique.append(tweet)
    for tweet in unique:
        if tweet.is_retweet:
            retweets += 1
            continue
        cleaned = clean_tweet(tweet.text)
        if is_short(cleaned):
            short += 1
        else:
            # Counted as huggingtweets counts; what is trained on loses the separator a removed
            # link left dangling ("Read this:"), so the model never learns to end on it.
            kept.append(strip_removed_link_residue(tweet.text, cleaned))
    return HandleData(
        handle,
        len(unique),
        retweets,
        short,
        kept,
        duplicates,
        cut,
        None if skipped is None else {name: skipped.get(name, 0) for name in SKIP_FIELDS},
    )


class TooLittleData(DataError):
    """Too few characters survived cleaning; ``table`` is kept so callers can still show it."""

    def __init__(self, message: str, table: DataTable) -> None:
        super().__init__(message)
        self.table = table


@dataclass
class DataTable:
    """The cleaned data of one model (1–3 handles): the seed's table and the tweets to train on."""

    handles: list[HandleData]
    #: The name to store the model under instead of the handles' (the bot's own-messages models).
    name: str | None = None

    def __post_init__(self) -> None:
        self.handles = sorted(self.handles, key=lambda data: data.handle)
        names = [data.handle.name for data in self.handles]
        if len(set(names)) != len(names):
            raise DataError("Each handle may appear only once in a data table.")

    def __iter__(self) -> Iterator[HandleData]:
        return iter(self.handles)

    @property
    def model_name(self) -> str:
        """The name given, else huggingtweets' name: the handles, sorted, joined with ``-``."""
        return self.name or _model_name(data.handle for data in self.handles)

    def to_dict(self) -> dict[str, dict[str, int]]:
        """The ``--json`` shape: ``{"<handle>": {"tweets_downloaded": N, ...}}``."""
        return {data.handle.name: data.counts() for data in self.handles}

    def to_markdown(self) -> str:
        """The seed model card's *Training data* table, one column per handle."""
        lines = [
            "| Data | " + " | ".join(data.handle.name for data in self.handles) + " |",
            "| --- | " + " | ".join("---" for _ in self.handles) + " |",
        ]
        for name in _COUNT_FIELDS:
            values = " | ".join(str(getattr(data, name)) for data in self.handles)
            lines.append(f"| {_ROW_LABELS[name]} | {values} |")
        for label, cells in self.skip_rows():
            values = " | ".join("-" if cell is None else str(cell) for cell in cells)
            lines.append(f"| {label} | {values} |")
        return "\n".join(lines)

    def skip_rows(self) -> list[tuple[str, list[int | None]]]:
        """The skipped-post rows (label, one count per handle) when any handle's source counted
        them, None for a handle whose source leaves nothing out; no rows for other tables."""
        if all(data.skipped is None for data in self.handles):
            return []
        return [
            (
                SKIP_LABELS[name],
                [
                    None if data.skipped is None else data.skipped.get(name, 0)
                    for data in self.handles
                ],
            )
            for name in SKIP_FIELDS
        ]

    def check(self) -> list[str]:
        """Apply huggingtweets' gates: raise :class:`TooLittleData` or return warning sentences."""
        for data in self.handles:
            if data.chars_kept < MIN_CHARS:
                raise TooLittleData(
                    f"Only {data.chars_kept:,} characters of tweets by {data.handle} are left "
                    f"after cleaning, and a model needs at least {MIN_CHARS:,}: "
                    + (
                        "add more tweets, such as your full X archive."
                        if data.handle.platform == "x"
                        else "this account needs more posts of its own."
                    ),
                    self,
                )
        return self.notes() + [
            f"Only {data.chars_kept:,} characters of tweets by {data.handle} are left after "
            f"cleaning (under {WARN_CHARS:,}), so the model will imitate them poorly."
            for data in self.handles
            if data.chars_kept < WARN_CHARS
        ]

    def notes(self) -> list[str]:
        """What the source boundary changed: duplicate posts dropped, over-long posts cut."""
        notes = []
        for data in self.handles:
            if data.duplicates:
                many = data.duplicates != 1
                notes.append(
                    f"{data.duplicates:,} duplicate post{'s' if many else ''} by {data.handle} "
                    f"(an id the input held twice) {'were' if many else 'was'} dropped, so each "
                    "post counts once."
                )
            if data.cut:
                many = data.cut != 1
                notes.append(
                    f"{data.cut:,} post{'s' if many else ''} by {data.handle} "
                    f"{'were' if many else 'was'} longer than {MAX_POST_CHARS:,} characters "
                    "(X's longest posts) and cut to that length."
                )
        return notes

    def iter_records(self) -> Iterator[dict[str, str]]:
        """Every kept tweet as a ``{"handle", "text"}`` record, handle by handle, newest first."""
        for data in self.handles:
            for text in data.kept:
                yield {"handle": data.handle.name, "text": text}

    def write_dataset(self, path: Path) -> None:
        """Write the cleaned tweets as JSONL; the file appears only once complete."""
        lines = (json.dumps(record, ensure_ascii=False) + "\n" for record in self.iter_records())
        _write_atomically(Path(path), "".join(lines))

    def save(self, folder: Path) -> None:
        """Write ``dataset.jsonl`` and ``data_table.json`` into ``folder``, each atomically."""
        folder = Path(folder)
        self.write_dataset(folder / DATASET_FILE)
        _write_atomically(folder / TABLE_FILE, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> DataTable:
        """Read back what :meth:`save` wrote; anything missing or inconsistent is one sentence."""
        folder = Path(folder)
        table_path, dataset_path = folder / TABLE_FILE, folder / DATASET_FILE
        counts = _read_counts(table_path)
        kept: dict[str, list[str]] = {name: [] for name in counts}
        for number, record in _read_records(dataset_path):
            if record["handle"] not in kept:
                raise InputError(
                    f"Line {number} of {_label(dataset_path)} names @{record['handle']}, "
                    f"which is not in {table_path.name}."
                )
            kept[record["handle"]].append(record["text"])
        handles = []
        for name, numbers in counts.items():
            if numbers["tweets_kept"] != len(kept[name]):
                raise InputError(
                    f"{_label(table_path)} says @{name} kept {numbers['tweets_kept']} tweets but "
                    f"{dataset_path.name} holds {len(kept[name])}."
                )
            handle = handle_from_name(name)
            has_skips = any(field in numbers for field in SKIP_FIELDS)
            try:
                handles.append(
                    HandleData(
                        handle,
                        numbers["tweets_downloaded"],
                        numbers["retweets"],
                        numbers["short_tweets"],
                        kept[name],
                        skipped={f: numbers.get(f, 0) for f in SKIP_FIELDS} if has_skips else None,
                    )
                )
            except DataError as error:
                raise InputError(f"{_label(table_path)} is inconsistent: {error}") from error
        return cls(handles)


def _read_counts(path: Path) -> dict[str, dict[str, int]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{_label(path)} does not exist, so there is no saved data table."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InputError(f"{_label(path)} is not a readable data table ({_why(error)}).") from error
    ok = isinstance(raw, dict) and all(
        isinstance(name, str)
        and isinstance(numbers, dict)
        and all(isinstance(numbers.get(f), int) and numbers[f] >= 0 for f in _COUNT_FIELDS)
        and all(
            isinstance(numbers[f], int) and numbers[f] >= 0 for f in SKIP_FIELDS if f in numbers
        )
        for name, numbers in raw.items()
    )
    if not ok or not raw:
        raise InputError(
            f"{_label(path)} is not a data table: expected "
            '{"<handle>": {"tweets_downloaded": N, "retweets": N, "short_tweets": N, '
            '"tweets_kept": N}}.'
        )
    return raw


def _read_records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{_label(path)} does not exist, so there are no saved tweets.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{_label(path)} is not a readable UTF-8 file ({_why(error)}).") from error
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            record = None
        if not (
            isinstance(record, dict)
            and isinstance(record.get("handle"), str)
            and isinstance(record.get("text"), str)
        ):
            raise InputError(
                f"Line {number} of {_label(path)} is not a "
                '{"handle": ..., "text": ...} JSON object.'
            )
        yield number, record


def _label(path: Path) -> str:
    """A saved file as sentences name it: the model's folder name and the file, never the full
    path (these sentences can reach Discord)."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _why(error: Exception) -> str:
    """An error's reason without the path an OSError's text repeats."""
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    if isinstance(error, RecursionError):
        return "its JSON nests too deeply"
    return str(error)


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it over, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
