"""What the fake Discord (``fake_discord.py``) speaks and records: API v10's routes and permission
bits, the requests it records and the refusals a test sets up, users and members as Discord sends
them, JSON replies, and one gateway session's framing (sequence numbers, the zlib stream).
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_PREFIX = "/api/v10"

#: Snowflakes count milliseconds from Discord's epoch (2015-01-01).
DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits (https://discord.com/developers/docs/topics/permissions).
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_APPLICATION_COMMANDS = 1 << 31
MANAGE_GUILD = 1 << 5
EVERYONE_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_APPLICATION_COMMANDS
)

MESSAGES_ROUTE = re.compile(r"^/channels/(\d+)/messages$")
MESSAGE_ROUTE = re.compile(r"^/channels/(\d+)/messages/(\d+)$")
TYPING_ROUTE = re.compile(r"^/channels/(\d+)/typing$")
CALLBACK_ROUTE = re.compile(r"^/interactions/(\d+)/([^/]+)/callback$")
FOLLOWUP_ROUTE = re.compile(r"^/webhooks/(\d+)/([^/]+)$")
WEBHOOK_MESSAGE_ROUTE = re.compile(r"^/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)$")

#: Interaction callback types that answer with a message (4: message, 5: deferred "thinking").
MESSAGE_CALLBACKS = (4, 5)
#: Slash-command option types for the Python values ``send_slash_command`` accepts.
OPTION_TYPES = {bool: 5, int: 4, str: 3}


class FakeDiscordError(AssertionError):
    """The client did something the fake cannot answer, or an expected request never came."""


@dataclass(frozen=True)
class RecordedFile:
    """One file part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class RecordedRequest:
    """One REST request as the client sent it; ``path`` is relative to ``/api/v10``."""

    method: str
    path: str
    json: Any
    files: tuple[RecordedFile, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Refusal:
    """REST requests the fake answers with ``status`` instead of serving them."""

    method: str
    path: re.Pattern[str]
    status: int
    when: Callable[[RecordedRequest], bool] | None = None
    #: How many more requests to refuse; None: every matching one.
    times: int | None = None
    #: The requests refused so far.
    refused: list[RecordedRequest] = field(default_factory=list)

    def applies(self, request: RecordedRequest) -> bool:
        """Whether ``request`` is refused now (and counted as such)."""
        if self.times is not None and self.times <= 0:
            return False
        if request.method != self.method or not self.path.fullmatch(request.path):
            return False
        if self.when is not None and not self.when(request):
            return False
        if self.times is not None:
            self.times -= 1
        self.refused.append(request)
        return True


@dataclass(frozen=True)
class FakeUser:
    """A user and, when in the guild, the ids of their roles there."""

    id: int
    username: str
    bot: bool = False
    role_ids: tuple[int, ...] = ()

    def payload(self) -> dict[str, Any]:
        """The user object as Discord sends it."""
        return {
            "id": str(self.id),
            "username": self.username,
            "global_name": self.username.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    def member_payload(self, *, with_user: bool = True) -> dict[str, Any]:
        """The guild member object (``with_user=False`` for a MESSAGE_CREATE's ``member``)."""
        member: dict[str, Any] = {
            "roles": [str(role) for role in self.role_ids],
            "nick": None,
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
        }
        if with_user:
            member["user"] = self.payload()
        return member


def json_reply(payload: Any, status: int = 200) -> web.Response:
    """A JSON reply whose content type is exactly what discord.py checks for."""
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )


def not_found(message: str, code: int = 0) -> web.Response:
    return json_reply({"message": message, "code": code}, status=404)


class GatewaySession:
    """One client websocket: sequence numbers and the optional zlib stream."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self.compressor = zlib.compressobj() if compress == "zlib-stream" else None
        self.sequence = 0
        self.lock = asyncio.Lock()

    async def send(self, op: int, data: Any, event: str | None = None) -> None:
        """Send one gateway payload; dispatches (op 0) get the next sequence number."""
        async with self.lock:
            payload: dict[str, Any] = {"op": op, "d": data, "s": None, "t": event}
            if op == 0:
                self.sequence += 1
                payload["s"] = self.sequence
            raw = json.dumps(payload).encode()
            if self.compressor is None:
                await self.ws.send_str(raw.decode())
            else:
                chunk = self.compressor.compress(raw) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(chunk)
