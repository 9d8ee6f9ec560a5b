"""Posts from a Mastodon archive: the zip (older servers: ``.tar.gz``) a server sends on request.

The archive holds ``outbox.json`` (an ActivityStreams ``OrderedCollection``) and ``actor.json``.
Only public and unlisted posts are ever read: the archive also holds direct messages and
followers-only posts, which are dropped here, before anything else sees them. Posts behind a
content warning (or marked sensitive) are skipped by default and counted in :attr:`skipped`;
both counts become rows of the data table (:meth:`MastodonArchiveSource.skip_counts`). The rules
and the HTML-to-text conversion are shared with the public API source
(:mod:`training.sources.fediverse`).

Like the X archive, the file is untrusted: it is never extracted; only ``outbox.json`` and
``actor.json`` are read, in memory, after checking every member name, the declared sizes and the
compression ratio (the X archive source's guards are reused). A tarball must be compressed the way
its name says, and everything it unpacks, members skipped included, counts against one budget
(:class:`~training.sources.guards.InflationBudget`).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from training.errors import InputError
from training.handles import Handle
from training.sources.base import RawTweet, newest_first
from training.sources.fediverse import SkipCounts, html_to_text, is_content_warned, parse_time
from training.sources.formats import TAR_SUFFIXES
from training.sources.guards import (
    MAX_TOTAL_RATIO,
    TOTAL_RATIO_FLOOR,
    InflationBudget,
    check_input_size,
    check_member,
    mb,
    member_name,
    read_zip_member,
    unreadable,
)

KIND = "mastodon-archive"
OUTBOX = "outbox.json"
ACTOR = "actor.json"
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
_PUBLIC_FORMS = frozenset({PUBLIC, "as:Public", "Public"})


def looks_like_mastodon_archive(path: Path) -> bool:
    """A zip or tarball whose members include ``outbox.json`` (names only; nothing is read)."""
    name = path.name.lower()
    try:
        if name.endswith(".zip") and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(member_name(n) == OUTBOX for n in archive.namelist())
        if name.endswith(TAR_SUFFIXES):
            return True
    except (OSError, zipfile.BadZipFile):
        return False
    return False


class MastodonArchiveSource:
    """A Mastodon archive; ``skipped`` counts the posts left out for a content warning,
    ``private`` the followers-only posts and direct messages never read."""

    kind = KIND

    def __init__(
        self,
        path: Path,
        *,
        max_file_bytes: int,
        max_uncompressed_bytes: int,
        include_sensitive: bool = False,
    ) -> None:
        self.path = Path(path)
        self.max_file_bytes = max_file_bytes
        self.max_uncompressed_bytes = max_uncompressed_bytes
        self.include_sensitive = include_sensitive
        self.skipped = 0
        self.private = 0

    def fetch(self, handle: Handle) -> list[RawTweet]:
        """Public and unlisted posts and boosts, newest first; the owner is checked first."""
        if handle.platform == "bluesky":
            raise InputError(
                f"A Mastodon archive holds Mastodon posts, so it cannot stand in for {handle}."
            )
        members = self._read_members()
        if OUTBOX not in members:
            raise InputError(f"{self.path.name} is not a Mastodon archive: it has no outbox.json.")
        if ACTOR in members:
            _check_owner(handle, _load_json(members[ACTOR], ACTOR))
        outbox = _load_json(members[OUTBOX], OUTBOX)
        self.skipped = self.private = 0
        posts: list[RawTweet] = []
        for item in _ordered_items(outbox):
            post = self._post(item)
            if post is not None:
                posts.append(post)
        return newest_first(posts)

    def skip_counts(self) -> SkipCounts:
        """What the last :meth:`fetch` left out, for the data table."""
        return SkipCounts(content_warned=self.skipped, not_public=self.private)

    def _post(self, item: Any) -> RawTweet | None:
        if not isinstance(item, dict):
            return None
        kind = item.get("type")
        if kind not in ("Create", "Announce"):
            return None
        note = item.get("object")
        visible = is_public_or_unlisted(item) if kind == "Announce" else _visible(item, note)
        if not visible:
            self.private += 1
            return None
        ident = str(item.get("id") or "")
        published = parse_time(item.get("published"))
        if kind == "Announce":
            return RawTweet(ident, published, "", True, False, KIND)
        if not isinstance(note, dict) or note.get("type") != "Note":
            return None
        warned = is_content_warned(note.get("summary"), note.get("sensitive"))
        if warned and not self.include_sensitive:
            self.skipped += 1
            return None
        content = note.get("content")
        if not isinstance(content, str):
            content_map = note.get("contentMap")
            values = list(content_map.values()) if isinstance(content_map, dict) else []
            content = next((v for v in values if isinstance(v, str)), "")
        return RawTweet(
            str(note.get("id") or ident),
            parse_time(note.get("published")) or published,
            html_to_text(content),
            False,
            bool(note.get("inReplyTo")),
            KIND,
        )

    def _read_members(self) -> dict[str, bytes]:
        path = self.path
        try:
            size = path.stat().st_size
        except OSError as error:
            raise unreadable(path.name, error) from error
        check_input_size(size, self.max_file_bytes, path.name)
        if path.name.lower().endswith(TAR_SUFFIXES):
            return self._read_tar()
        return self._read_zip()

    def _read_zip(self) -> dict[str, bytes]:
        label = self.path.name
        try:
            archive = zipfile.ZipFile(self.path)
        except Exception as error:  # hostile bytes raise many types; all mean "bad zip"
            raise InputError(f"{label} is not a readable zip archive.") from error
        with archive:
            infos = archive.infolist()
            for info in infos:
                check_member(info.filename, label)
            wanted = _shallowest(
                [i for i in infos if not i.is_dir() and member_name(i.filename) in (OUTBOX, ACTOR)],
                lambda i: i.filename,
            )
            self._check_total(sum(i.file_size for i in wanted.values()))
            result: dict[str, bytes] = {}
            for name, info in wanted.items():
                result[name] = read_zip_member(archive, info, name, label)
        return result

    def _read_tar(self) -> dict[str, bytes]:
        """``outbox.json`` and ``actor.json`` from a tarball, read as one stream.

        The compression must be the one the name says (a ``.tar.gz`` holding bzip2 is refused),
        every byte decompressed counts against a budget (members skipped too), and reading stops
        as soon as both files were found at the top of the archive.
        """
        label = self.path.name
        budget = max(TOTAL_RATIO_FLOOR, MAX_TOTAL_RATIO * self.path.stat().st_size)
        result: dict[str, bytes] = {}
        depth: dict[str, int] = {}
        try:
            with self.path.open("rb") as raw:
                stream: BinaryIO = raw
                if _compression(raw, label) == "gzip":
                    stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
                counted = io.BufferedReader(InflationBudget(stream, budget, label))
                with tarfile.open(fileobj=counted, mode="r|") as archive:
                    for info in archive:
                        check_member(info.name, label)
                        name = member_name(info.name)
                        level = info.name.replace("\\", "/").strip("/").count("/")
                        if not info.isfile() or name not in (OUTBOX, ACTOR):
                            continue
                        if name in depth and depth[name] <= level:
                            continue
                        self._check_total(
                            info.size + sum(len(v) for k, v in result.items() if k != name)
                        )
                        extracted = archive.extractfile(info)
                        if extracted is None:
                            continue
                        result[name], depth[name] = extracted.read(info.size), level
                        if depth.get(OUTBOX) == depth.get(ACTOR) == 0:
                            break  # nothing shallower can follow: the rest is never unpacked
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
            raise InputError(f"{label} is not a readable .tar.gz archive.") from error
        return result

    def _check_total(self, total: int) -> None:
        if total > self.max_uncompressed_bytes:
            raise InputError(
                f"The post files in {self.path.name} would unpack to {mb(total)} MB, over the "
                f"{mb(self.max_uncompressed_bytes)} MB limit."
            )


#: How each compression a tarball may come in begins.
_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x5d\x00\x00": "lzma",
}


def _compression(raw: BinaryIO, label: str) -> str:
    """``gzip`` for a ``.tar.gz``/``.tgz`` holding gzip data, ``none`` for a ``.tar`` holding a
    plain tarball; a file whose bytes are another compression than its name says is refused."""
    head = raw.read(8)
    raw.seek(0)
    found = next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), "none")
    wanted = "none" if label.lower().endswith(".tar") else "gzip"
    if found != wanted:
        shown = "uncompressed" if found == "none" else f"{found}-compressed"
        raise InputError(
            f"{label} holds {shown} data, not the "
            f"{'plain tar' if wanted == 'none' else 'gzip'} its name says."
        )
    return found


def is_public_or_unlisted(activity: Any) -> bool:
    """Public (``to`` holds the Public collection) or unlisted (``cc`` does); nothing else."""
    if not isinstance(activity, dict):
        return False
    addressed = [*_as_list(activity.get("to")), *_as_list(activity.get("cc"))]
    return any(isinstance(a, str) and a in _PUBLIC_FORMS for a in addressed)


def _visible(create: dict[str, Any], note: Any) -> bool:
    """Public or unlisted by every addressing present (the Create's and the Note's)."""
    carriers = [x for x in (create, note) if isinstance(x, dict) and ("to" in x or "cc" in x)]
    return bool(carriers) and all(is_public_or_unlisted(x) for x in carriers)


def _ordered_items(outbox: Any) -> Iterator[Any]:
    if not isinstance(outbox, dict):
        raise InputError("outbox.json is not a Mastodon outbox: it is not a JSON object.")
    items = outbox.get("orderedItems")
    if not isinstance(items, list):
        raise InputError("outbox.json is not a Mastodon outbox: it has no orderedItems list.")
    yield from items


def _load_json(data: bytes, name: str) -> Any:
    try:
        # A real outbox.json repeats "orderedItems" ([] first, then the list): json keeps the last.
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise InputError(f"{name} is not UTF-8 text.") from error
    except json.JSONDecodeError as error:
        raise InputError(
            f"{name} is truncated or garbled: its JSON breaks at line {error.lineno}."
        ) from error
    except RecursionError as error:
        raise InputError(f"{name} is garbled: its JSON nests too deeply.") from error


def _check_owner(handle: Handle, actor: Any) -> None:
    """The archive's owner (``preferredUsername``) must be the handle's user.

    Only the user part is compared for a Mastodon handle: a server may serve its accounts under
    another domain than the one in their handles, so ``actor.json``'s host proves nothing.
    """
    username = actor.get("preferredUsername") if isinstance(actor, dict) else None
    if isinstance(username, str) and username and username.lower() != handle.user.lower():
        raise InputError(f"This Mastodon archive belongs to @{username}, not {handle}.")


def _shallowest(infos: list[Any], name_of: Any) -> dict[str, Any]:
    """Per wanted base name, the member nearest the archive's top."""
    chosen: dict[str, Any] = {}
    for info in sorted(infos, key=lambda i: name_of(i).replace("\\", "/").count("/")):
        chosen.setdefault(member_name(name_of(info)), info)
    return chosen


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value is not None else []
