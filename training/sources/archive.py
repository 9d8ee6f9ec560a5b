"""Tweets from the X data archive: the free path (the API charges per post read).

Users hand over what X gave them in whatever shape it reached us: the zip (often gigabytes of media
around a few megabytes of tweets), the folder it unpacks to, its ``data/`` folder, or just the
``.js`` files. Every ``.js`` file is JavaScript assigning JSON to a global
(``window.YTD.tweets.part0 = [...]``); this module strips the assignment and reads the JSON.

A zip is untrusted input: it is never extracted. Only the few members we need are read, in
memory, after checking every member name (no ``../`` or absolute paths), the declared sizes against
the limits, and each member's compression ratio (zip bombs), and while reading, the real size
against the declared one.
"""

from __future__ import annotations

import bisect
import html
import json
import re
import zipfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from training.errors import InputError
from training.handles import Handle
from training.sources.base import RawTweet, newest_first
from training.sources.formats import TEXT_SUFFIXES, X_ARCHIVE_SUFFIXES
from training.sources.guards import (
    MAX_TOTAL_RATIO,
    TOTAL_RATIO_FLOOR,
    check_input_size,
    check_member,
    check_ratio,
    mb,
    member_name,
    read_zip_member,
    unreadable,
)

KIND = "x-archive"
#: Tweets, in every naming X has used: tweets.js, tweet.js (2020) and their split parts.
TWEET_FILE = re.compile(r"tweets?(?:-part(\d+))?\.js", re.IGNORECASE)
NOTE_FILE = re.compile(r"note-tweet(?:-part(\d+))?\.js", re.IGNORECASE)
MANIFEST = "manifest.js"
ACCOUNT = "account.js"
#: A note is matched against at most this many notes nearest in time to a tweet, so thousands
#: of notes stamped the same second cannot make matching quadratic.
NOTE_CANDIDATES = 8
#: How much of a long post is compared with its truncated tweet (tweets stop at 280).
_NOTE_HEAD_CHARS = 1000
#: Long posts' createdAt can differ from the tweet's created_at by a second or two.
NOTE_MATCH_SECONDS = 2.0

_ASSIGNMENT = re.compile(r"\s*window\.(?P<name>YTD\.[\w$.]+|__THAR_CONFIG)\s*=\s*")
_TWEET_DATE = "%a %b %d %H:%M:%S %z %Y"


def looks_like_archive(path: Path) -> bool:
    """Whether a path is (part of) an X archive: a zip, a ``.js`` file, or a folder of ``.js``."""
    path = Path(path)
    try:
        if path.is_file():
            suffix = path.suffix.lower()
            return suffix in X_ARCHIVE_SUFFIXES or (
                suffix not in TEXT_SUFFIXES and zipfile.is_zipfile(path)
            )
        if path.is_dir():
            return _find_data_dir(path) is not None or _has_js(path)
    except OSError:
        return False
    return False


class ArchiveSource:
    """An X data archive as a zip, its (``data/``) folder or bare ``.js`` files."""

    kind = KIND

    def __init__(
        self,
        path: Path,
        *,
        max_file_bytes: int,
        max_uncompressed_bytes: int,
        max_tweets: int = 1_000_000,
    ) -> None:
        self.path = Path(path)
        self.max_file_bytes = max_file_bytes
        self.max_uncompressed_bytes = max_uncompressed_bytes
        self.max_tweets = max_tweets

    def fetch(self, handle: Handle) -> list[RawTweet]:
        """Every post in the archive, long posts expanded, newest first; checks the owner."""
        if handle.platform != "x":
            raise InputError(f"An X archive holds X posts, so it cannot stand in for {handle}.")
        with self._open() as files:
            # Sizes and ratios of everything we may read are checked before reading any of it.
            files.check_total([name for name in files.names() if _is_needed(name)])
            manifest = files.script(MANIFEST) if files.has(MANIFEST) else None
            account = files.script(ACCOUNT) if files.has(ACCOUNT) else None
            _check_owner(handle, manifest, account)
            names = _tweet_files(files, manifest)
            tweets: list[RawTweet] = []
            for name in names:
                for tweet in _parse_tweets(files.script(name), name):
                    tweets.append(tweet)
                    if len(tweets) > self.max_tweets:
                        raise self._too_many(files.label)
            notes: list[tuple[datetime, str]] = []
            for name in _note_files(files):
                for note in _parse_notes(files, name):
                    notes.append(note)
                    if len(notes) > self.max_tweets:
                        raise self._too_many(files.label)
        tweets = _expand_long_posts(tweets, notes)
        return newest_first(tweets)

    def _too_many(self, label: str) -> InputError:
        return InputError(
            f"{label} holds more than {self.max_tweets:,} posts, the limit set by "
            "DOPPELTWEET_MAX_TWEETS."
        )

    def _open(self) -> _Files:
        path = self.path
        try:
            if path.is_dir():
                return _FolderFiles(path, self.max_file_bytes, self.max_uncompressed_bytes)
            if not path.is_file():
                raise InputError(f"{path.name} is neither a file nor a folder.")
            size = path.stat().st_size
        except OSError as error:
            raise unreadable(path.name, error) from error
        check_input_size(size, self.max_file_bytes, path.name)
        if path.suffix.lower() == ".js":
            return _SingleFile(path, self.max_file_bytes)
        return _ZipFiles(path, self.max_file_bytes, self.max_uncompressed_bytes)


# --- where the files are ------------------------------------------------------------------------


class _Files:
    """The archive's data folder, whatever holds it; names are bare file names (``tweets.js``)."""

    label: str

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def has(self, name: str) -> bool:
        return name.lower() in {n.lower() for n in self.names()}

    def actual(self, name: str) -> str:
        """The stored spelling of a name (archives from Windows tools may change the case)."""
        for stored in self.names():
            if stored.lower() == name.lower():
                return stored
        raise InputError(f"{self.label} has no {name}.")

    def script(self, name: str) -> tuple[str, Any]:
        return _parse_script(self.read(self.actual(name)), name)

    def check_total(self, names: list[str]) -> None:
        return None

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _SingleFile(_Files):
    """One ``.js`` file the user picked: treated as the tweets file whatever its name."""

    def __init__(self, path: Path, max_file_bytes: int) -> None:
        self.path = path
        self.label = path.name
        self.max_file_bytes = max_file_bytes

    def names(self) -> list[str]:
        return [self.path.name]

    def size(self, name: str) -> int:
        return self.path.stat().st_size

    def read(self, name: str) -> bytes:
        return _read_file(self.path, self.max_file_bytes, self.path.name)


class _FolderFiles(_Files):
    """An unpacked archive, its ``data/`` folder, or a folder of the ``.js`` files."""

    def __init__(self, path: Path, max_file_bytes: int, max_uncompressed_bytes: int) -> None:
        data_dir = _find_data_dir(path)
        if data_dir is None:
            raise InputError(
                f"{path.name} holds no X archive: there is no tweets.js or tweet.js in it "
                "or in its data folder."
            )
        self.dir = data_dir
        self.label = path.name
        self.max_file_bytes = max_file_bytes
        self.max_uncompressed_bytes = max_uncompressed_bytes
        self._names = sorted(p.name for p in data_dir.iterdir() if p.is_file())

    def names(self) -> list[str]:
        return self._names

    def _path(self, name: str) -> Path:
        # Only names listed from the folder reach here, so no path is built from file contents.
        if name not in self._names:
            raise InputError(f"{self.label} has no {name}.")
        return self.dir / name

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except OSError as error:
            raise unreadable(name, error) from error

    def read(self, name: str) -> bytes:
        return _read_file(self._path(name), self.max_file_bytes, name)

    def check_total(self, names: list[str]) -> None:
        total = sum(self.size(name) for name in names)
        if total > self.max_uncompressed_bytes:
            raise InputError(
                f"The tweet files in {self.label} add up to {mb(total)} MB, over the "
                f"{mb(self.max_uncompressed_bytes)} MB limit."
            )


class _ZipFiles(_Files):
    """The zip as X delivers it, possibly inside a top folder; never extracted to disk."""

    def __init__(self, path: Path, max_file_bytes: int, max_uncompressed_bytes: int) -> None:
        self.label = path.name
        self.max_uncompressed_bytes = max_uncompressed_bytes
        try:
            self.archive_bytes = path.stat().st_size
            self.zip = zipfile.ZipFile(path)
        except OSError as error:
            raise unreadable(path.name, error) from error
        except Exception as error:  # zipfile raises many types on hostile bytes; all mean "bad zip"
            raise InputError(f"{path.name} is not a readable zip archive.") from error
        try:
            self._members = self._index()
        except BaseException:
            self.zip.close()
            raise

    def _index(self) -> dict[str, zipfile.ZipInfo]:
        infos = self.zip.infolist()
        for info in infos:
            check_member(info.filename, self.label)
        files = [info for info in infos if not info.is_dir()]
        # The data folder is the one holding the tweets; a top folder around it is fine.
        by_dir: dict[str, list[zipfile.ZipInfo]] = {}
        for info in files:
            parent = str(PurePosixPath(info.filename.replace("\\", "/")).parent)
            by_dir.setdefault(parent, []).append(info)
        candidates = [
            (sum(1 for i in members if _is_tweet_file(member_name(i.filename))), -d.count("/"), d)
            for d, members in by_dir.items()
        ]
        candidates = [c for c in candidates if c[0] > 0]
        if not candidates:
            if not files:
                raise InputError(f"{self.label} is an empty zip archive.")
            raise InputError(
                f"{self.label} is not an X archive: it has no data/tweets.js or data/tweet.js."
            )
        chosen = max(candidates)[2]
        return {member_name(info.filename): info for info in by_dir[chosen]}

    def names(self) -> list[str]:
        return sorted(self._members)

    def size(self, name: str) -> int:
        return self._members[name].file_size

    def check_total(self, names: list[str]) -> None:
        infos = [self._members[name] for name in names]
        for info in infos:
            check_ratio(info, self.label)
        total = sum(info.file_size for info in infos)
        if total > self.max_uncompressed_bytes:
            raise InputError(
                f"The tweet files in {self.label} would unpack to {mb(total)} MB, over the "
                f"{mb(self.max_uncompressed_bytes)} MB limit."
            )
        # Each member may be small, but together they must not be a bomb either.
        if total > max(TOTAL_RATIO_FLOOR, MAX_TOTAL_RATIO * self.archive_bytes):
            raise InputError(
                f"{self.label} looks like a zip bomb: its tweet files would unpack to "
                f"{total // max(self.archive_bytes, 1):,} times the archive's size."
            )

    def read(self, name: str) -> bytes:
        info = self._members[name]
        check_ratio(info, self.label)
        if info.file_size > self.max_uncompressed_bytes:
            raise InputError(
                f"{name} in {self.label} would unpack to {mb(info.file_size)} MB, over the "
                f"{mb(self.max_uncompressed_bytes)} MB limit."
            )
        return read_zip_member(self.zip, info, name, self.label)

    def __exit__(self, *exc: object) -> None:
        self.zip.close()


def _find_data_dir(path: Path) -> Path | None:
    """The folder holding tweets.js/tweet.js: the path, its data/, or data/ of its one subfolder."""
    options = [path / "data", path]
    subfolders = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subfolders) == 1:
        options += [subfolders[0] / "data", subfolders[0]]
    for option in options:
        if option.is_dir() and any(
            p.is_file() and _is_tweet_file(p.name) for p in option.iterdir()
        ):
            return option
    return None


def _has_js(path: Path) -> bool:
    """A folder of uploaded .js files, or one with a data/ folder of them."""
    folders = [path, path / "data"]
    return any(
        folder.is_dir() and any(p.suffix.lower() == ".js" for p in folder.iterdir())
        for folder in folders
    )


def _is_needed(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered in (MANIFEST, ACCOUNT)
        or _is_tweet_file(name)
        or NOTE_FILE.fullmatch(lowered) is not None
    )


def _is_tweet_file(name: str) -> bool:
    return TWEET_FILE.fullmatch(name.lower()) is not None


def _read_file(path: Path, max_bytes: int, name: str) -> bytes:
    try:
        check_input_size(path.stat().st_size, max_bytes, name)
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise unreadable(name, error) from error
    if len(data) > max_bytes:
        raise InputError(f"{name} grew past the {mb(max_bytes)} MB limit while being read.")
    return data


# --- what the files say -------------------------------------------------------------------------


def _parse_script(data: bytes, name: str) -> tuple[str, Any]:
    """``window.YTD.x.part0 = <JSON>`` → (``YTD.x.part0``, the parsed JSON)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{name} is not an X archive file: it is not UTF-8 text.") from error
    match = _ASSIGNMENT.match(text)
    if match is None:
        raise InputError(
            f"{name} is not an X archive file: it does not start with window.YTD.… = [...]."
        )
    body = text[match.end() :].strip().rstrip(";").rstrip()
    try:
        return match.group("name"), json.loads(body)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{name} is truncated or garbled: its JSON breaks at line {error.lineno}."
        ) from error
    except RecursionError as error:
        raise InputError(f"{name} is garbled: its JSON nests too deeply.") from error


def _check_owner(
    handle: Handle, manifest: tuple[str, Any] | None, account: tuple[str, Any] | None
) -> None:
    owners: set[str] = set()
    if manifest is not None:
        user_info = _get(manifest[1], "userInfo")
        name = _get(user_info, "userName")
        if isinstance(name, str) and name:
            owners.add(name)
    if account is not None:
        entries = account[1] if isinstance(account[1], list) else [account[1]]
        for entry in entries:
            name = _get(_get(entry, "account"), "username")
            if isinstance(name, str) and name:
                owners.add(name)
    if owners and handle.name.lower() not in {owner.lower().lstrip("@") for owner in owners}:
        owner = sorted(owners)[0].lstrip("@")
        raise InputError(f"This archive belongs to @{owner}, not {handle}.")


def _tweet_files(files: _Files, manifest: tuple[str, Any] | None) -> list[str]:
    """The tweet files in order: as the manifest lists them, else every tweets*.js present."""
    if isinstance(files, _SingleFile):
        return files.names()  # the one file the user picked is the tweets, whatever its name
    listed: list[str] = []
    if manifest is not None:
        data_types = _get(manifest[1], "dataTypes")
        for key in ("tweets", "tweet"):
            for entry in _as_list(_get(_get(data_types, key), "files")):
                file_name = _get(entry, "fileName")
                if isinstance(file_name, str) and _is_tweet_file(member_name(file_name)):
                    listed.append(member_name(file_name))
    if listed:
        missing = [name for name in listed if not files.has(name)]
        if missing:
            raise InputError(
                f"{files.label} is incomplete: its manifest lists {missing[0]}, which is missing."
            )
        return list(dict.fromkeys(files.actual(name) for name in listed))
    present = [name for name in files.names() if _is_tweet_file(name)]
    if not present:
        raise InputError(f"{files.label} has no tweets.js or tweet.js.")
    return sorted(present, key=_part_number)


def _note_files(files: _Files) -> list[str]:
    return sorted((n for n in files.names() if NOTE_FILE.fullmatch(n.lower())), key=_part_number)


def _part_number(name: str) -> tuple[int, str]:
    match = re.search(r"-part(\d+)\.js$", name, re.IGNORECASE)
    return (int(match.group(1)) if match else 0, name)


def _parse_tweets(script: tuple[str, Any], name: str) -> Iterator[RawTweet]:
    global_name, data = script
    if not re.fullmatch(r"YTD\.tweets?\.part\d+", global_name):
        raise InputError(f"{name} holds {global_name}, not tweets.")
    if not isinstance(data, list):
        raise InputError(f"{name} is garbled: it should hold a list of tweets.")
    for index, item in enumerate(data, start=1):
        tweet = item.get("tweet", item) if isinstance(item, dict) else None
        if not isinstance(tweet, dict):
            raise InputError(f"Entry {index} of {name} is not a tweet.")
        text = tweet.get("full_text", tweet.get("text"))
        tweet_id = tweet.get("id_str", tweet.get("id"))
        if not isinstance(text, str) or not isinstance(tweet_id, str | int):
            raise InputError(f"Entry {index} of {name} has no id_str or full_text.")
        reply = any(
            tweet.get(key) not in (None, "", "0")
            for key in ("in_reply_to_status_id_str", "in_reply_to_user_id_str")
        )
        yield RawTweet(
            id=str(tweet_id),
            created_at=_parse_date(tweet.get("created_at")),
            text=text,
            is_retweet=text.startswith("RT @"),
            is_reply=reply,
            source=KIND,
        )


def _parse_notes(files: _Files, name: str) -> Iterator[tuple[datetime, str]]:
    _, data = files.script(name)
    if not isinstance(data, list):
        raise InputError(f"{name} is garbled: it should hold a list of long posts.")
    for item in data:
        note = _get(item, "noteTweet")
        text = _get(_get(note, "core"), "text")
        created = _get(note, "createdAt")
        if not isinstance(text, str) or not isinstance(created, str):
            continue
        try:
            when = datetime.fromisoformat(created)
        except ValueError:
            continue
        yield (when if when.tzinfo else when.replace(tzinfo=UTC)), text


def _expand_long_posts(tweets: list[RawTweet], notes: list[tuple[datetime, str]]) -> list[RawTweet]:
    """Give truncated long posts their full text, matching notes by timestamp (ids differ).

    The notes are sorted by time once and each tweet looks only at the few nearest within
    ``NOTE_MATCH_SECONDS`` (binary search), so matching is N log N, not N × notes.
    """
    if not notes:
        return tweets
    ordered = sorted(notes, key=lambda note: note[0])
    index = _NoteIndex(
        [when.timestamp() for when, _ in ordered],
        [text for _, text in ordered],
    )
    expanded = []
    for tweet in tweets:
        note = index.match(tweet) if tweet.created_at is not None else None
        expanded.append(tweet if note is None else _replace_text(tweet, note))
    return expanded


class _NoteIndex:
    """Long posts sorted by time, with each one's comparable head computed once."""

    def __init__(self, times: list[float], texts: list[str]) -> None:
        self.times = times
        self.texts = texts
        self._heads: dict[int, str] = {}

    def head(self, position: int) -> str:
        if position not in self._heads:
            self._heads[position] = _comparable(self.texts[position][:_NOTE_HEAD_CHARS])
        return self._heads[position]

    def match(self, tweet: RawTweet) -> str | None:
        assert tweet.created_at is not None
        when = tweet.created_at.timestamp()
        low = bisect.bisect_left(self.times, when - NOTE_MATCH_SECONDS)
        high = bisect.bisect_right(self.times, when + NOTE_MATCH_SECONDS)
        if low == high:
            return None
        # The few nearest in time: outward from the tweet's own position.
        middle = bisect.bisect_left(self.times, when, low, high)
        near = sorted(
            range(max(low, middle - NOTE_CANDIDATES), min(high, middle + NOTE_CANDIDATES)),
            key=lambda i: abs(self.times[i] - when),
        )[:NOTE_CANDIDATES]
        head = _comparable(tweet.text.split("…", 1)[0])
        best_score, best = max(
            ((_common_prefix(head, self.head(i)), i) for i in near), key=lambda item: item[0]
        )
        truncated = "…" in tweet.text
        if best_score >= min(20, len(head)) and (truncated or best_score >= 20):
            return self.texts[best]
        return None


def _comparable(text: str) -> str:
    return " ".join(html.unescape(text).split())


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _replace_text(tweet: RawTweet, text: str) -> RawTweet:
    return RawTweet(
        id=tweet.id,
        created_at=tweet.created_at,
        text=text,
        is_retweet=tweet.is_retweet,
        is_reply=tweet.is_reply,
        source=tweet.source,
    )


def _parse_date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip(), _TWEET_DATE).astimezone(UTC)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
