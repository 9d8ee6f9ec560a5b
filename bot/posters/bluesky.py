"""Posting to Bluesky over its XRPC HTTP API (opt-in, per schedule).

The account logs in with its handle and an app password (Settings → Privacy and security → App
passwords) through ``com.atproto.server.createSession``; the session's access token then creates an
``app.bsky.feed.post`` record with ``com.atproto.repo.createRecord``. The session is kept and
made again once when the server says it expired, so a post costs one request (logins are rate
limited more tightly than posts).

A post's text may have at most 300 graphemes and 3,000 UTF-8 bytes; :meth:`BlueskyPoster.length`
counts both in one number against 300. Mentions need facets to become links, and the auto-poster
neutralises them anyway, so posts carry no facets.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import requests

from bot.config import BotSettings
from bot.posters.base import (
    REQUEST_TIMEOUT_S,
    BadCredentials,
    ContentRejected,
    Posted,
    PostError,
    Unreachable,
    grapheme_length,
    post_json,
    short_detail,
    status_error,
    utf8_tenths,
)
from training.errors import InputError

log = logging.getLogger(__name__)

#: Bluesky's limit for a post's text, in graphemes.
BLUESKY_MAX_GRAPHEMES = 300
#: Where accounts hosted by Bluesky log in (their own PDS is reached through it).
DEFAULT_SERVICE = "https://bsky.social"
NETWORK = "Bluesky"
CREDENTIALS = "BLUESKY_HANDLE and BLUESKY_APP_PASSWORD"
MISSING_CREDENTIALS = (
    "Posting to Bluesky needs BLUESKY_HANDLE and BLUESKY_APP_PASSWORD in the bot's configuration."
)
#: Errors of a session that must be made again, not of the account.
_SESSION_ERRORS = ("ExpiredToken", "InvalidToken")


def _rkey(uri: str) -> str:
    """The record key at the end of ``at://did/app.bsky.feed.post/rkey``."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


class BlueskyPoster:
    """Posts to Bluesky as the account of the configured handle and app password."""

    network = NETWORK
    key = "bluesky"

    def __init__(
        self,
        handle: str,
        app_password: str,
        *,
        service: str = DEFAULT_SERVICE,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.handle = handle.strip().lstrip("@")
        self._password = app_password
        self.service = service.rstrip("/")
        self._timeout = timeout
        self._http = requests.Session()
        self._session: dict[str, str] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BlueskyPoster({self.handle!r}, credentials hidden)"

    @classmethod
    def from_settings(cls, settings: BotSettings) -> BlueskyPoster:
        """The poster for the configured account; InputError when a credential is missing."""
        if not settings.bluesky_posting_configured:
            raise InputError(MISSING_CREDENTIALS)
        assert settings.bluesky_handle is not None and settings.bluesky_app_password is not None
        return cls(
            settings.bluesky_handle,
            settings.bluesky_app_password.get_secret_value().strip(),
            service=settings.bluesky_service,
        )

    def length(self, text: str) -> int:
        """Graphemes, or a tenth of the UTF-8 bytes when that is more (both capped at 300)."""
        return max(grapheme_length(text), utf8_tenths(text))

    async def max_length(self) -> int:
        """Bluesky's 300 graphemes."""
        return BLUESKY_MAX_GRAPHEMES

    async def post(self, text: str) -> Posted:
        """Post ``text`` as it is (in a worker thread: the HTTP calls block)."""
        return await asyncio.to_thread(self.post_blocking, text)

    # -- HTTP ---------------------------------------------------------------------------------

    def _call(self, method: str, body: dict[str, Any], token: str | None = None) -> Any:
        """POST one XRPC procedure; the JSON answer, or the answer's status and error."""
        status, payload = post_json(
            self._http,
            NETWORK,
            f"{self.service}/xrpc/{method}",
            body,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=self._timeout,
        )
        if status >= 400:
            return status, payload if isinstance(payload, dict) else {}
        if not isinstance(payload, dict):
            raise Unreachable(
                f"Bluesky answered {method} with something that is not JSON; the next post "
                "will try again.",
                network=NETWORK,
            )
        return payload

    def _error(self, status: int, payload: dict[str, Any]) -> PostError:
        code = str(payload.get("error") or "")
        detail = short_detail(payload.get("message") or code)
        log.warning("Bluesky refused a request with %s %s", status, code)
        if status == 400 and code in ("AuthFactorTokenRequired", "AccountTakedown"):
            return BadCredentials(
                f"Bluesky refused to log in ({detail}); use an app password of an active "
                "account in BLUESKY_APP_PASSWORD.",
                network=NETWORK,
                status=status,
            )
        return status_error(NETWORK, status, detail, credentials=CREDENTIALS)

    def _login(self) -> dict[str, str]:
        answer = self._call(
            "com.atproto.server.createSession",
            {"identifier": self.handle, "password": self._password},
        )
        if isinstance(answer, tuple):
            status, payload = answer
            if status in (400, 401) and payload.get("error") in (
                "AuthenticationRequired",
                "InvalidRequest",
            ):
                # Bluesky answers a wrong password with 401 AuthenticationRequired (older
                # servers: 400 InvalidRequest "Invalid identifier or password").
                raise BadCredentials(
                    "Bluesky rejected the handle or app password "
                    f"({short_detail(payload.get('message') or payload.get('error'))}); check "
                    f"{CREDENTIALS}.",
                    network=NETWORK,
                    status=status,
                )
            raise self._error(status, payload)
        token, did = answer.get("accessJwt"), answer.get("did")
        if not isinstance(token, str) or not isinstance(did, str):
            raise Unreachable(
                "Bluesky's login answer had no session; the next post will try again.",
                network=NETWORK,
            )
        return {"token": token, "did": did, "handle": str(answer.get("handle") or self.handle)}

    def post_blocking(self, text: str) -> Posted:
        """Log in if needed and create the post record; :class:`PostError` if Bluesky refuses."""
        with self._lock:
            for attempt in range(2):  # a second try only after an expired session
                if self._session is None:
                    self._session = self._login()
                session = self._session
                record = {
                    "$type": "app.bsky.feed.post",
                    "text": text,
                    "createdAt": datetime.now(UTC)
                    .isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
                }
                answer = self._call(
                    "com.atproto.repo.createRecord",
                    {"repo": session["did"], "collection": "app.bsky.feed.post", "record": record},
                    session["token"],
                )
                if isinstance(answer, tuple):
                    status, payload = answer
                    if attempt == 0 and payload.get("error") in _SESSION_ERRORS:
                        self._session = None
                        continue
                    if status == 401:
                        self._session = None
                    raise self._error(status, payload)
                uri = answer.get("uri")
                if not isinstance(uri, str) or not uri.startswith("at://"):
                    raise Unreachable(
                        "Bluesky accepted the post but sent back no record address.",
                        network=NETWORK,
                    )
                url = f"https://bsky.app/profile/{session['handle']}/post/{_rkey(uri)}"
                return Posted(NETWORK, uri, url)
        raise ContentRejected(  # pragma: no cover - the loop returns or raises
            "Bluesky refused the post twice.", network=NETWORK
        )


#: The poster class of this network (:func:`bot.posters.poster_for`).
POSTER = BlueskyPoster
