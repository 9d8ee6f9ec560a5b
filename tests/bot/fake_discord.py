"""A minimal fake Discord (REST + gateway) on 127.0.0.1 for full-stack tests of the real client.

Just enough of Discord's API v10 for discord.py 2.7.1 to log in, connect, see one guild and answer
messages:

* REST under ``/api/v10``: ``GET /users/@me``, ``GET /oauth2/applications/@me``, ``GET /gateway``,
  ``GET /gateway/bot``, ``POST /channels/{id}/messages`` (JSON or multipart with files),
  ``GET``/``PATCH``/``DELETE /channels/{id}/messages/{id}``, ``POST /channels/{id}/typing``, and for
  slash commands the interaction callback, follow-ups and ``@original`` edits; every other route
  answers 404 with a JSON error (a 5xx would make discord.py retry). Every JSON reply carries
  exactly ``Content-Type: application/json``, which discord.py needs to parse it.
* Attachment downloads under ``/attachments/...`` for files the test attaches to a user message and
  for files the bot uploads.
* The gateway at ``/gateway``: HELLO (op 10) → IDENTIFY (op 2) → READY + GUILD_CREATE (guild, text
  channel, roles, members) → whatever the test dispatches (``send_user_message`` makes a
  MESSAGE_CREATE, ``send_slash_command`` an INTERACTION_CREATE); heartbeats (op 1) get ACKs
  (op 11), member requests (op 8) get one GUILD_MEMBERS_CHUNK, a RESUME (op 6) gets
  INVALID_SESSION so the client identifies again.
  ``compress=zlib-stream`` is honoured (one zlib stream per connection, each message ending with a
  Z_SYNC_FLUSH), as discord.py always asks for it when no zstd module is installed.

A test can make the fake answer badly: ``refuse(method, path, status=...)`` answers matching REST
requests with an error (every time, or the next ``times``; optionally only those a predicate
picks), ``dispatch`` injects any gateway event (a malformed one too), and
``gateway_answers_http = True`` makes ``/gateway`` answer a plain HTTP 200 instead of upgrading,
and ``echo_edits`` dispatches every message edit back as a MESSAGE_UPDATE in the shape it makes.

Every request is recorded (``requests``), so a test asserts the exact wire payloads, e.g.
``allowed_mentions == {"parse": []}``. Waiting is always bounded by a timeout, and ``close()`` ends
every websocket, so nothing outlives the test. The shapes it records and sends live in
``discord_wire.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Self

from aiohttp import WSMsgType, web
from discord_wire import (
    API_PREFIX,
    CALLBACK_ROUTE,
    DISCORD_EPOCH_MS,
    EVERYONE_PERMISSIONS,
    FOLLOWUP_ROUTE,
    MANAGE_GUILD,
    MESSAGE_CALLBACKS,
    MESSAGE_ROUTE,
    MESSAGES_ROUTE,
    OPTION_TYPES,
    TYPING_ROUTE,
    WEBHOOK_MESSAGE_ROUTE,
    FakeDiscordError,
    FakeUser,
    GatewaySession,
    RecordedFile,
    RecordedRequest,
    Refusal,
    json_reply,
    not_found,
)


class FakeDiscord:
    """A one-guild Discord on an ephemeral loopback port; use as ``async with FakeDiscord() as d``.

    The guild has ``@everyone`` (view, send, embed, attach, history, app commands), an ``admins``
    role with Manage Server, one text channel ``#general``, the bot, ``alice`` (a plain member) and
    ``root`` (admin, guild owner and the application's owner).
    """

    def __init__(self, *, token: str = "fake-token", heartbeat_interval_ms: int = 41_250) -> None:
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._ids = itertools.count(1)
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.admin_role_id = self.snowflake()
        self.application_id = self.snowflake()
        self.bot_user = FakeUser(self.application_id, "doppeltweet", bot=True)
        self.alice = FakeUser(self.snowflake(), "alice")
        self.root = FakeUser(self.snowflake(), "root", role_ids=(self.admin_role_id,))

        self.requests: list[RecordedRequest] = []
        #: Requests answered 404 (unknown routes, channels or messages).
        self.unknown_requests: list[RecordedRequest] = []
        self.identifies: list[dict[str, Any]] = []
        self.gateway_payloads: list[dict[str, Any]] = []
        self.gateway_queries: list[dict[str, str]] = []
        #: What the fake could not handle (the ``fake`` fixtures assert this stays empty).
        self.errors: list[str] = []
        self.messages: dict[int, dict[str, Any]] = {}
        #: Interaction token → the id of its original response message (once answered).
        self._originals: dict[str, int | None] = {}
        self._blobs: dict[str, tuple[str, bytes]] = {}
        self._sessions: list[GatewaySession] = []
        self._refusals: list[Refusal] = []
        #: When true, ``/gateway`` answers a plain HTTP 200 page instead of a websocket upgrade.
        self.gateway_answers_http = False
        #: When set, every message edit is dispatched as MESSAGE_UPDATE, as Discord does, after
        #: this function has shaped the payload (a test makes it malformed).
        self.echo_edits: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port."""
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{key}/{filename}", self._attachment)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self._port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Close every websocket, then the server."""
        for session in list(self._sessions):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.ws.close(code=1001), timeout=2.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------------------- addresses
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._port is None:
            raise RuntimeError("the fake Discord is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        """The value for ``DISCORD_API_BASE``."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """The value for ``DISCORD_GATEWAY_URL``."""
        return f"ws://127.0.0.1:{self._port}/gateway"

    # ----------------------------------------------------------------------------- model
    def snowflake(self) -> int:
        """A fresh, time-ordered snowflake."""
        now_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (now_ms << 22) | (next(self._ids) & 0x3FFFFF)

    @property
    def members(self) -> list[FakeUser]:
        return [self.bot_user, self.alice, self.root]

    def guild_payload(self) -> dict[str, Any]:
        """The GUILD_CREATE payload of the one guild."""
        return {
            "id": str(self.guild_id),
            "name": "Fake Guild",
            "icon": None,
            "owner_id": str(self.root.id),
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [
                {
                    "id": str(self.guild_id),
                    "name": "@everyone",
                    "permissions": str(EVERYONE_PERMISSIONS),
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                },
                {
                    "id": str(self.admin_role_id),
                    "name": "admins",
                    "permissions": str(EVERYONE_PERMISSIONS | MANAGE_GUILD),
                    "position": 1,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": True,
                    "flags": 0,
                },
            ],
            "channels": [
                {
                    "id": str(self.channel_id),
                    "type": 0,
                    "name": "general",
                    "position": 0,
                    "permission_overwrites": [],
                    "nsfw": False,
                    "parent_id": None,
                    "topic": None,
                    "rate_limit_per_user": 0,
                    "last_message_id": None,
                }
            ],
            "members": [user.member_payload() for user in self.members],
            "member_count": len(self.members),
            "large": False,
            "unavailable": False,
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
        }

    def application_payload(self) -> dict[str, Any]:
        """``GET /oauth2/applications/@me``."""
        return {
            "id": str(self.application_id),
            "name": "doppeltweet",
            "description": "",
            "icon": None,
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.root.payload(),
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
            "summary": "",
        }

    def _stored_attachment(self, filename: str, data: bytes, content_type: str) -> dict[str, Any]:
        attachment_id = self.snowflake()
        key = str(attachment_id)
        self._blobs[key] = (content_type, data)
        url = f"{self.base_url}/attachments/{key}/{filename}"
        return {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    def _message_payload(
        self,
        *,
        author: FakeUser,
        content: str,
        channel_id: int,
        embeds: list[dict[str, Any]] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        reference: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": str(self.snowflake()),
            "type": 19 if reference else 0,
            "channel_id": str(channel_id),
            "guild_id": str(self.guild_id),
            "author": author.payload(),
            "member": author.member_payload(with_user=False),
            "content": content,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "pinned": False,
            "flags": 0,
            "components": [],
        }
        if reference:
            message["message_reference"] = reference
        return message

    # ----------------------------------------------------------------------------- test API
    def refuse(
        self,
        method: str,
        path: str,
        *,
        status: int,
        when: Callable[[RecordedRequest], bool] | None = None,
        times: int | None = None,
    ) -> Refusal:
        """Answer ``method`` requests whose path (relative to ``/api/v10``) fully matches the
        regular expression ``path`` with ``status`` and a JSON error, instead of serving them.

        ``when`` picks among those requests; ``times`` limits how many are refused (default:
        all). A 5xx makes discord.py retry the request (five tries in all, about 25 s of
        backoff), so every try is refused while the refusal lasts. Refusals are checked in the
        order they were made; the first that applies answers.
        """
        refusal = Refusal(method.upper(), re.compile(path), status, when, times)
        self._refusals.append(refusal)
        return refusal

    def messages_path(self, channel_id: int | None = None) -> str:
        """``/channels/{id}/messages`` as a regular expression for :meth:`refuse`."""
        return re.escape(f"/channels/{channel_id or self.channel_id}/messages")

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH (op 0) to every connected client."""
        if not self._sessions:
            raise FakeDiscordError(f"no client is connected to receive {event}")
        for session in list(self._sessions):
            await session.send(0, data, event)

    async def send_user_message(
        self,
        content: str,
        *,
        author: FakeUser | None = None,
        files: dict[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """A user posts ``content`` (and ``files``) in ``#general``: stored and dispatched."""
        attachments = [
            self._stored_attachment(name, data, "application/octet-stream")
            for name, data in (files or {}).items()
        ]
        message = self._message_payload(
            author=author or self.alice,
            content=content,
            channel_id=self.channel_id,
            attachments=attachments,
        )
        self.messages[int(message["id"])] = message
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def send_slash_command(
        self,
        name: str,
        options: dict[str, str | int | bool] | None = None,
        *,
        author: FakeUser | None = None,
    ) -> dict[str, Any]:
        """A user runs ``/name`` in ``#general``: an INTERACTION_CREATE (application command).

        discord.py resolves the command by name in its local tree, so this works before any sync.
        """
        user = author or self.alice
        permissions = EVERYONE_PERMISSIONS | (
            MANAGE_GUILD if self.admin_role_id in user.role_ids else 0
        )
        token = f"interaction-token-{next(self._ids)}"
        interaction = {
            "id": str(self.snowflake()),
            "application_id": str(self.application_id),
            "type": 2,
            "token": token,
            "version": 1,
            "data": {
                "id": str(self.snowflake()),
                "name": name,
                "type": 1,
                "options": [
                    {"name": key, "type": OPTION_TYPES[type(value)], "value": value}
                    for key, value in (options or {}).items()
                ],
            },
            "guild_id": str(self.guild_id),
            "channel_id": str(self.channel_id),
            "channel": {
                "id": str(self.channel_id),
                "type": 0,
                "name": "general",
                "guild_id": str(self.guild_id),
                "position": 0,
                "permissions": str(permissions),
            },
            "member": dict(user.member_payload(), permissions=str(permissions)),
            "app_permissions": str(EVERYONE_PERMISSIONS),
            "attachment_size_limit": 10 * 1024 * 1024,
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
        }
        self._originals[token] = None
        await self.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    def interaction_requests(self, interaction: dict[str, Any]) -> list[RecordedRequest]:
        """Every callback, follow-up and edit the bot sent for one interaction, in order."""
        token = interaction["token"]
        return [
            r
            for r in self.requests
            if r.path.startswith((f"/interactions/{interaction['id']}/{token}/", "/webhooks/"))
            and f"/{token}" in r.path
        ]

    async def wait_for(
        self, predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "a condition"
    ) -> Any:
        """Wait (at most ``timeout`` seconds) until ``predicate()`` is truthy; return its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._changed:
            while not (result := predicate()):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise FakeDiscordError(
                        f"timed out after {timeout:.0f}s waiting for {what}; "
                        f"requests so far: {[(r.method, r.path) for r in self.requests]}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=remaining)
        return result

    async def wait_until_identified(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the client's IDENTIFY and return its ``d``."""
        return await self.wait_for(
            lambda: self.identifies[-1] if self.identifies else None,
            timeout=timeout,
            what="IDENTIFY",
        )

    def sent_messages(self, channel_id: int | None = None) -> list[RecordedRequest]:
        """Every ``POST /channels/{id}/messages`` so far (in ``#general`` unless told)."""
        path = f"/channels/{channel_id or self.channel_id}/messages"
        return [r for r in self.requests if r.method == "POST" and r.path == path]

    async def wait_for_sent_messages(
        self, count: int, *, timeout: float = 10.0
    ) -> list[RecordedRequest]:
        """Wait until the bot has posted at least ``count`` messages in ``#general``."""
        return await self.wait_for(
            lambda: self.sent_messages() if len(self.sent_messages()) >= count else None,
            timeout=timeout,
            what=f"{count} message(s) posted in #general",
        )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ----------------------------------------------------------------------------- REST
    async def _read_body(self, request: web.Request) -> tuple[Any, tuple[RecordedFile, ...]]:
        if request.content_type.startswith("multipart/"):
            payload: Any = None
            files: list[RecordedFile] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                data = await part.read()  # type: ignore[union-attr]
                name = part.name or ""  # type: ignore[union-attr]
                if name == "payload_json":
                    payload = json.loads(data)
                else:
                    files.append(
                        RecordedFile(
                            field=name,
                            filename=part.filename or "",  # type: ignore[union-attr]
                            content_type=part.headers.get("Content-Type", ""),
                            data=bytes(data),
                        )
                    )
            return payload, tuple(files)
        raw = await request.read()
        return (json.loads(raw) if raw else None), ()

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        try:
            payload, files = await self._read_body(request)
        except (ValueError, UnicodeDecodeError) as error:
            # A 4xx, never a 5xx: discord.py would retry a 5xx several times with backoff.
            self.errors.append(f"{request.method} {path}: unreadable body ({error})")
            await self._notify()
            return json_reply({"message": "400: Bad Request", "code": 50109}, status=400)
        recorded = RecordedRequest(
            method=request.method,
            path=path,
            json=payload,
            files=files,
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
        )
        self.requests.append(recorded)
        try:
            # Interaction callbacks and webhooks are authorised by the token in their path.
            webhook = path.startswith(("/interactions/", "/webhooks/"))
            if not webhook and request.headers.get("Authorization") != f"Bot {self.token}":
                return json_reply({"message": "401: Unauthorized", "code": 0}, status=401)
            for refusal in self._refusals:
                if refusal.applies(recorded):
                    return json_reply(
                        {"message": f"{refusal.status}: refused by the test", "code": 0},
                        status=refusal.status,
                    )
            try:
                response = self._route(request.method, path, payload, files)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                self.errors.append(f"{request.method} {path}: the fake cannot answer ({error!r})")
                return json_reply({"message": "400: Bad Request", "code": 50035}, status=400)
            if response.status == 404:
                self.unknown_requests.append(recorded)
            elif self.echo_edits is not None and request.method == "PATCH" and self._sessions:
                edited = json.loads(response.body)  # type: ignore[arg-type]
                await self.dispatch("MESSAGE_UPDATE", self.echo_edits(edited))
            return response
        finally:
            await self._notify()

    def _route(
        self, method: str, path: str, payload: Any, files: tuple[RecordedFile, ...]
    ) -> web.Response:
        if method == "GET" and path == "/users/@me":
            return json_reply(self.bot_user.payload())
        if method == "GET" and path == "/oauth2/applications/@me":
            return json_reply(self.application_payload())
        if method == "GET" and path == "/gateway":
            return json_reply({"url": self.gateway_url})
        if method == "GET" and path == "/gateway/bot":
            return json_reply(
                {
                    "url": self.gateway_url,
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 1000,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if method == "POST" and (match := TYPING_ROUTE.match(path)):
            return web.Response(status=204)
        if method == "POST" and (match := MESSAGES_ROUTE.match(path)):
            return self._create_message(int(match[1]), payload or {}, files)
        if match := MESSAGE_ROUTE.match(path):
            message = self.messages.get(int(match[2]))
            if message is None or message["channel_id"] != match[1]:
                return not_found("Unknown Message", code=10008)
            if method == "GET":
                return json_reply(message)
            if method == "PATCH":
                return json_reply(self._edit_message(message, payload or {}, files))
            if method == "DELETE":
                del self.messages[int(match[2])]
                return web.Response(status=204)
        if method == "POST" and (match := CALLBACK_ROUTE.match(path)):
            return self._interaction_callback(match[2], payload or {}, files)
        if method == "POST" and (match := FOLLOWUP_ROUTE.match(path)):
            if match[1] != str(self.application_id) or match[2] not in self._originals:
                return not_found("Unknown Webhook", code=10015)
            message = self._interaction_message(payload or {}, files, author=self.bot_user)
            return json_reply(message)
        if match := WEBHOOK_MESSAGE_ROUTE.match(path):
            token, which = match[2], match[3]
            message_id = self._originals.get(token) if which == "@original" else int(which)
            message = self.messages.get(message_id) if message_id is not None else None
            if match[1] != str(self.application_id) or message is None:
                return not_found("Unknown Message", code=10008)
            if method == "GET":
                return json_reply(message)
            if method == "PATCH":
                return json_reply(self._edit_message(message, payload or {}, files))
            if method == "DELETE":
                del self.messages[int(message["id"])]
                return web.Response(status=204)
        return not_found("404: Not Found")

    def _interaction_message(
        self, data: dict[str, Any], files: tuple[RecordedFile, ...], *, author: FakeUser
    ) -> dict[str, Any]:
        message = self._message_payload(
            author=author,
            content=data.get("content") or "",
            channel_id=self.channel_id,
            embeds=data.get("embeds") or [],
            attachments=[
                self._stored_attachment(f.filename, f.data, f.content_type) for f in files
            ],
        )
        message["webhook_id"] = str(self.application_id)
        message["flags"] = int(data.get("flags") or 0)
        self.messages[int(message["id"])] = message
        return message

    def _interaction_callback(
        self, token: str, payload: dict[str, Any], files: tuple[RecordedFile, ...]
    ) -> web.Response:
        if token not in self._originals:
            return not_found("Unknown interaction", code=10062)
        if self._originals[token] is not None:
            return json_reply(
                {"message": "Interaction has already been acknowledged.", "code": 40060},
                status=400,
            )
        kind = int(payload.get("type", 0))
        response: dict[str, Any] = {
            "interaction": {
                "id": str(self.snowflake()),
                "type": 2,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(
                    int((payload.get("data") or {}).get("flags") or 0) & 64
                ),
            }
        }
        if kind in MESSAGE_CALLBACKS:
            data = dict(payload.get("data") or {})
            if kind == 5:
                data["flags"] = int(data.get("flags") or 0) | 128  # "thinking…"
            message = self._interaction_message(data, files, author=self.bot_user)
            self._originals[token] = int(message["id"])
            response["interaction"]["response_message_id"] = message["id"]
            response["resource"] = {"type": kind, "message": message}
        else:
            self._originals[token] = 0
        return json_reply(response)

    def _create_message(
        self, channel_id: int, payload: dict[str, Any], files: tuple[RecordedFile, ...]
    ) -> web.Response:
        if channel_id != self.channel_id:
            return not_found("Unknown Channel", code=10003)
        reference = payload.get("message_reference")
        message = self._message_payload(
            author=self.bot_user,
            content=payload.get("content") or "",
            channel_id=channel_id,
            embeds=payload.get("embeds") or [],
            attachments=[
                self._stored_attachment(f.filename, f.data, f.content_type) for f in files
            ],
            reference=dict(reference, channel_id=str(channel_id)) if reference else None,
        )
        self.messages[int(message["id"])] = message
        return json_reply(message)

    def _edit_message(
        self, message: dict[str, Any], payload: dict[str, Any], files: tuple[RecordedFile, ...]
    ) -> dict[str, Any]:
        for key in ("content", "embeds"):
            if key in payload:
                message[key] = (
                    payload[key] if payload[key] is not None else ([] if key == "embeds" else "")
                )
        if "attachments" in payload or files:
            kept = {str(a.get("id")) for a in payload.get("attachments") or []}
            message["attachments"] = [a for a in message["attachments"] if a["id"] in kept] + [
                self._stored_attachment(f.filename, f.data, f.content_type) for f in files
            ]
        message["edited_timestamp"] = datetime.now(UTC).isoformat()
        return message

    async def _attachment(self, request: web.Request) -> web.Response:
        blob = self._blobs.get(request.match_info["key"])
        if blob is None:
            return not_found("Unknown Attachment")
        content_type, data = blob
        return web.Response(body=data, headers={"Content-Type": content_type})

    # ----------------------------------------------------------------------------- gateway
    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        self.gateway_queries.append(dict(request.query))
        if self.gateway_answers_http:  # a web server where a websocket gateway should be
            await self._notify()
            return web.Response(text="<html><body>Hello</body></html>", content_type="text/html")
        compress = request.query.get("compress")
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        if compress not in (None, "zlib-stream"):
            self.errors.append(f"the client asked for {compress} compression, not zlib-stream")
            await ws.close(code=4000, message=b"unsupported compression")
            return ws
        session = GatewaySession(ws, compress)
        self._sessions.append(session)
        try:
            await session.send(10, {"heartbeat_interval": self.heartbeat_interval_ms})
            async for frame in ws:  # ends when either side closes the socket
                if frame.type is not WSMsgType.TEXT:
                    continue
                payload = json.loads(frame.data)
                self.gateway_payloads.append(payload)
                await self._on_gateway_payload(session, payload)
                await self._notify()
        finally:
            self._sessions.remove(session)
            await self._notify()
        return ws

    async def _on_gateway_payload(self, session: GatewaySession, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            await session.send(11, None)
        elif op == 2:
            self.identifies.append(data)
            if data.get("token") != self.token:
                await session.ws.close(code=4004, message=b"Authentication failed.")
                return
            await session.send(
                0,
                {
                    "v": 10,
                    "user": self.bot_user.payload(),
                    "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                    "session_id": f"fake-session-{len(self.identifies)}",
                    "resume_gateway_url": self.gateway_url,
                    "application": {"id": str(self.application_id), "flags": 0},
                },
                "READY",
            )
            await session.send(0, self.guild_payload(), "GUILD_CREATE")
        elif op == 6:
            await session.send(9, False)
        elif op == 8:
            await session.send(
                0,
                {
                    "guild_id": str(self.guild_id),
                    "members": [user.member_payload() for user in self.members],
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "nonce": data.get("nonce"),
                },
                "GUILD_MEMBERS_CHUNK",
            )
