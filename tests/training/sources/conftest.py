"""Builders for synthetic X archives in every shape X has delivered them (never downloaded)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

X_DATE = "%a %b %d %H:%M:%S %z %Y"
START = datetime(2022, 11, 3, 8, 50, 26, tzinfo=UTC)


def js(global_name: str, data: object) -> bytes:
    """A .js file as X writes it: JavaScript assigning pretty-printed JSON to a global."""
    return f"window.{global_name} = {json.dumps(data, indent=2, ensure_ascii=False)}".encode()


@dataclass
class ArchiveBuilder:
    """Collects tweets and long posts, then lays them out as an archive's files.

    ``layout="2022"`` writes ``data/tweets.js`` (``YTD.tweets``); ``"2020"`` writes
    ``data/tweet.js`` (``YTD.tweet``). ``parts`` > 1 splits the tweets into
    ``tweets-part1.js``… listed in the manifest, as X does for big archives.
    """

    owner: str | None = "jack"
    layout: str = "2022"
    parts: int = 1
    with_manifest: bool = True
    with_account: bool = True
    tweets: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)

    def add(
        self,
        text: str,
        *,
        minutes_ago: int | None = None,
        reply_to: str | None = None,
        created_at: datetime | None = None,
    ) -> dict:
        """Add a tweet; ids and timestamps count up unless given (older = more minutes ago)."""
        number = len(self.tweets) + 1
        when = created_at or START - timedelta(minutes=minutes_ago or (1000 - number))
        tweet = {
            "edit_info": {"initial": {"editTweetIds": [str(number)]}},
            "retweeted": False,
            "source": '<a href="https://mobile.twitter.com">Twitter Web App</a>',
            "entities": {"hashtags": [], "user_mentions": [], "urls": []},
            "display_text_range": ["0", str(len(text))],
            "favorite_count": "3",
            "id_str": str(1580000000000000000 + number),
            "truncated": False,
            "retweet_count": "0",
            "id": str(1580000000000000000 + number),
            "created_at": when.strftime(X_DATE),
            "favorited": False,
            "full_text": text,
            "lang": "en",
        }
        if reply_to:
            tweet["in_reply_to_status_id_str"] = "1570000000000000000"
            tweet["in_reply_to_user_id_str"] = "12"
            tweet["in_reply_to_screen_name"] = reply_to
        self.tweets.append({"tweet": tweet})
        return tweet

    def add_long(self, full_text: str, *, seconds_off: int = 1) -> dict:
        """A long post: truncated with "…" in tweets.js, full text in note-tweet.js."""
        tweet = self.add(full_text[:270] + "…")
        created = datetime.strptime(tweet["created_at"], X_DATE) + timedelta(seconds=seconds_off)
        self.notes.append(
            {
                "noteTweet": {
                    "noteTweetId": str(1690000000000000000 + len(self.notes)),
                    "updatedAt": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "lifecycle": {"value": "1", "name": "Active"},
                    "core": {"styletags": [], "urls": [], "text": full_text, "mentions": []},
                    "createdAt": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                }
            }
        )
        return tweet

    def files(self) -> dict[str, bytes]:
        """The archive's files, keyed by their path inside it (``data/tweets.js``…)."""
        kind = "tweets" if self.layout == "2022" else "tweet"
        out: dict[str, bytes] = {}
        chunks = [self.tweets[i :: self.parts] for i in range(self.parts)]
        names = (
            [f"data/{kind}.js"]
            if self.parts == 1
            else [f"data/{kind}-part{i + 1}.js" for i in range(self.parts)]
        )
        for number, (name, chunk) in enumerate(zip(names, chunks, strict=True)):
            out[name] = js(f"YTD.{kind}.part{number}", chunk)
        if self.notes:
            out["data/note-tweet.js"] = js("YTD.note_tweet.part0", self.notes)
        if self.with_account and self.owner:
            out["data/account.js"] = js(
                "YTD.account.part0",
                [{"account": {"username": self.owner, "accountId": "12", "email": "x@y.z"}}],
            )
        if self.with_manifest:
            config = {
                "userInfo": {"accountId": "12", "userName": self.owner, "displayName": "J"},
                "archiveInfo": {"sizeBytes": "1234", "generationDate": "2024-01-01T00:00:00Z"},
                "dataTypes": {
                    kind: {
                        "files": [
                            {
                                "fileName": name,
                                "globalName": f"YTD.{kind}.part{i}",
                                "count": str(len(chunk)),
                            }
                            for i, (name, chunk) in enumerate(zip(names, chunks, strict=True))
                        ]
                    },
                    "account": {"files": [{"fileName": "data/account.js", "count": "1"}]},
                },
            }
            if not self.owner:
                del config["userInfo"]
            out["data/manifest.js"] = (
                f"window.__THAR_CONFIG = {json.dumps(config, indent=2)}".encode()
            )
        out["Your archive.html"] = b"<html><body>Your archive</body></html>"
        out["data/tweets_media/1580000000000000001-abc.jpg"] = b"\xff\xd8\xff" + b"\x00" * 64
        return out

    def write_zip(self, path: Path, *, top: str | None = None) -> Path:
        """The archive as X delivers it (optionally inside a top folder)."""
        write_zip(path, self.files(), top=top)
        return path

    def write_folder(self, path: Path) -> Path:
        """The archive unpacked: ``path/data/tweets.js``…"""
        for name, data in self.files().items():
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return path


def write_zip(path: Path, files: dict[str, bytes], *, top: str | None = None) -> Path:
    """A deflated zip of ``files`` (names used verbatim, under ``top/`` if given)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"{top}/{name}" if top else name, data)
    return path


@pytest.fixture
def archive_builder() -> type[ArchiveBuilder]:
    """The ArchiveBuilder class: ``archive_builder(owner="jack", layout="2020", parts=3)``."""
    return ArchiveBuilder


@pytest.fixture
def zip_writer():
    """``write_zip(path, {name: bytes}, top=None)`` for hand-made (hostile) zips."""
    return write_zip


@pytest.fixture
def js_file():
    """``js(global_name, data) -> bytes``: an archive .js file's contents."""
    return js
