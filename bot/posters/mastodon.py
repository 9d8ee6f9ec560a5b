"""Posting to a Mastodon server over its REST API (opt-in, per schedule).

An access token of the posting account (Preferences → Development → New application, with the
``write:statuses`` scope) posts with ``POST /api/v1/statuses``. Each server sets its own length
limit, read once from ``GET /api/v2/instance`` (``configuration.statuses.max_characters``; 500,
Mastodon's default, when the server does not say). Mastodon counts graphemes. Every post carries
an ``Idempotency-Key``, so a retried request cannot post twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import requests

from bot.config import BotSettings
from bot.posters.base import (
    REQUEST_TIMEOUT_S,
    BadCredentials,
    Posted,
    PostError,
    Unreachable,
    grapheme_length,
    post_json,
    short_detail,
    status_error,
)
from training.errors import InputError

log = logging.getLogger(__name__)

#: Mastodon's own default limit, for servers that do not state theirs.
DEFAULT_MAX_CHARACTERS = 500
NETWORK = "Mastodon"
CREDENTIALS = "MASTODON_INSTANCE and MASTODON_ACCESS_TOKEN"
MISSING_CREDENTIALS = (
    "Posting to Mastodon needs MASTODON_INSTANCE and MASTODON_ACCESS_TOKEN in the bot's "
    "configuration."
)


def instance_url(instance: str) -> str:
    """``https://mastodon.social`` from ``mastodon.social`` or a full address (no path)."""
    text = instance.strip().rstrip("/")
    if not text.startswith(("http://", "https://")):
        text = "https://" + text
    return text


class MastodonPoster:
    """Posts to a Mastodon server as the account the access token belongs to."""

    network = NETWORK
    key = "mastodon"

    def __init__(
        self,
        instance: str,
        access_token: str,
        *,
        visibility: str = "public",
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.instance = instance_url(instance)
        self._token = access_token
        self.visibility = visibility
        self._timeout = timeout
        self._http = requests.Session()
        self._max_characters: int | None = None

    def __repr__(self) -> str:
        return f"MastodonPoster({self.instance!r}, credentials hidden)"

    @classmethod
    def from_settings(cls, settings: BotSettings) -> MastodonPoster:
        """The poster for the configured account; InputError when a setting is missing."""
        if not settings.mastodon_posting_configured:
            raise InputError(MISSING_CREDENTIALS)
        assert settings.mastodon_instance is not None
        assert settings.mastodon_access_token is not None
        return cls(
            settings.mastodon_instance,
            settings.mastodon_access_token.get_secret_value().strip(),
            visibility=settings.mastodon_visibility,
        )

    def length(self, text: str) -> int:
        """Graphemes, as Mastodon counts a status (links and mentions never occur here)."""
        return grapheme_length(text)

    async def max_length(self) -> int:
        """The server's limit, asked once (500 when it does not say or cannot be asked)."""
        if self._max_characters is None:
            found = await asyncio.to_thread(self._instance_limit)
            if found is None:
                return DEFAULT_MAX_CHARACTERS
            self._max_characters = found
        return self._max_characters

    def _instance_limit(self) -> int | None:
        """``configuration.statuses.max_characters`` of ``/api/v2/instance``; None if unknown."""
        try:
            response = self._http.get(f"{self.instance}/api/v2/instance", timeout=self._timeout)
        except requests.RequestException as error:
            log.warning("could not ask Mastodon for its limit: %s", type(error).__name__)
            return None
        if response.status_code == 404:
            return DEFAULT_MAX_CHARACTERS  # a server older than 4.0 has no v2 instance
        if response.status_code >= 400:
            return None
        try:
            value = response.json()["configuration"]["statuses"]["max_characters"]
        except (ValueError, KeyError, TypeError):
            return DEFAULT_MAX_CHARACTERS
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return DEFAULT_MAX_CHARACTERS
        return value

    async def post(self, text: str) -> Posted:
        """Post ``text`` as it is (in a worker thread: the HTTP call blocks)."""
        return await asyncio.to_thread(self.post_blocking, text)

    def post_blocking(self, text: str) -> Posted:
        """Create the status; :class:`PostError` when the server refuses it."""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Idempotency-Key": uuid.uuid4().hex,
        }
        body = {"status": text, "visibility": self.visibility}
        status, payload = post_json(
            self._http,
            NETWORK,
            f"{self.instance}/api/v1/statuses",
            body,
            headers=headers,
            timeout=self._timeout,
        )
        if status >= 400:
            raise self._error(status, payload)
        status_id = payload.get("id") if isinstance(payload, dict) else None
        if not status_id:
            raise Unreachable("Mastodon accepted the post but sent back no id.", network=NETWORK)
        url = payload.get("url") or payload.get("uri")
        return Posted(NETWORK, str(status_id), str(url) if url else None)

    def _error(self, status: int, payload: Any) -> PostError:
        detail = short_detail(payload.get("error") if isinstance(payload, dict) else "")
        log.warning("Mastodon refused a post with %s %s", status, detail)
        if status == 403:
            # "This action is outside the authorized scopes": a token without write:statuses.
            return BadCredentials(
                f"Mastodon refused the post (403 Forbidden)"
                f"{f' (Mastodon said: {detail})' if detail else ''}; give the access token in "
                "MASTODON_ACCESS_TOKEN the write:statuses scope.",
                network=NETWORK,
                status=status,
            )
        return status_error(NETWORK, status, detail, credentials=CREDENTIALS)


#: The poster class of this network (:func:`bot.posters.poster_for`).
POSTER = MastodonPoster
