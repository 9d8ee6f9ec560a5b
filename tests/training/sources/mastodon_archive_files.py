"""A Mastodon export for tests: ``outbox.json`` (one post of each kind: public, unlisted with a
link, direct, followers-only, content-warned, a reply with a mention, a boost) and ``actor.json``,
built from ActivityStreams' documented structure, zipped as Mastodon delivers it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.training.sources.mastodon_server import LINK, MENTION
from training.sources.mastodon_archive import PUBLIC

ACTOR_ID = "https://social.example/users/alice"
FOLLOWERS = ACTOR_ID + "/followers"


def create(n: int, content: str, *, to: list[str], cc: list[str], **note: object) -> dict:
    return {
        "id": f"{ACTOR_ID}/statuses/{n}/activity",
        "type": "Create",
        "actor": ACTOR_ID,
        "published": f"2024-01-{n:02d}T10:00:00Z",
        "to": to,
        "cc": cc,
        "object": {
            "id": f"{ACTOR_ID}/statuses/{n}",
            "type": "Note",
            "summary": None,
            "inReplyTo": None,
            "published": f"2024-01-{n:02d}T10:00:00Z",
            "content": content,
            "to": to,
            "cc": cc,
            "sensitive": False,
            **note,
        },
    }


def items() -> list[dict]:
    return [
        create(1, "<p>public post about &amp; tea time today</p>", to=[PUBLIC], cc=[FOLLOWERS]),
        create(2, f"<p>unlisted with a link {LINK}</p>", to=[FOLLOWERS], cc=[PUBLIC]),
        create(3, "<p>SECRET direct message to bob</p>", to=["https://x.example/users/bob"], cc=[]),
        create(4, "<p>SECRET followers only thoughts</p>", to=[FOLLOWERS], cc=[]),
        create(
            5, "<p>spoiler behind a content warning</p>", to=[PUBLIC], cc=[], summary="spoilers"
        ),
        create(
            6,
            f"<p>{MENTION} thanks for the tip</p><p>second paragraph<br>next line</p>",
            to=[PUBLIC],
            cc=[],
            inReplyTo="https://social.example/users/bob/statuses/9",
        ),
        {
            "id": f"{ACTOR_ID}/statuses/7/activity",
            "type": "Announce",
            "published": "2024-01-07T10:00:00Z",
            "to": [PUBLIC],
            "cc": [FOLLOWERS],
            "object": "https://other.example/statuses/1",
        },
    ]


def outbox_bytes(entries: list[dict]) -> bytes:
    # The real file's quirk: "orderedItems" appears twice, [] first, then the list.
    head = '{"@context": "https://www.w3.org/ns/activitystreams", "type": "OrderedCollection", '
    body = f'"orderedItems": [], "totalItems": {len(entries)}, '
    return (head + body + '"orderedItems": ' + json.dumps(entries) + "}").encode()


def actor_bytes(name: str = "alice") -> bytes:
    return json.dumps({"type": "Person", "id": ACTOR_ID, "preferredUsername": name}).encode()


def write_zip(path: Path, *, owner: str = "alice", extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("outbox.json", outbox_bytes(items()))
        archive.writestr("actor.json", actor_bytes(owner))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path
