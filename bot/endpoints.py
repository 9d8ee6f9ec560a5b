"""Point discord.py at a Discord-compatible server instead of discord.com.

discord.py 2.7.1 has no constructor option for its endpoints; it reads two class attributes:

* ``discord.http.Route.BASE`` — the REST base that every route path is appended to as a string
  (``BASE + "/users/@me"``). Interaction responses (slash commands) go through the same ``Route``
  class, so one attribute covers them too.
* ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` — the websocket URL a non-sharded client
  dials directly (it never asks ``GET /gateway``). discord.py replaces the URL's query with
  ``?v=10&encoding=json&compress=zlib-stream`` (``zstd-stream`` where a zstd module is installed),
  so a query of our own would be dropped silently; we refuse one instead. A sharded client asks
  ``GET /gateway/bot`` on the REST base and uses the ``url`` it answers; after READY, resumes use
  the server's ``resume_gateway_url``.

Both are process-wide, which is why this is applied once, from ``doppeltweet bot``, before the bot
connects. Passing ``None`` (or a blank string, as an empty ``.env`` entry gives) restores
discord.com.
"""

from __future__ import annotations

import logging

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from training.errors import InputError

log = logging.getLogger(__name__)

#: discord.py's own endpoints, captured before anything here changes them.
DISCORD_API_BASE: str = Route.BASE
DISCORD_GATEWAY_URL: yarl.URL = DiscordWebSocket.DEFAULT_GATEWAY


def _parse(value: str, *, what: str, schemes: tuple[str, str], example: str) -> yarl.URL:
    """Parse and check one endpoint URL; every refusal is one sentence naming the variable."""
    try:
        url = yarl.URL(value.strip())
    except (ValueError, TypeError) as error:
        raise InputError(f"{what} is not a valid URL ({error}); use e.g. {example}.") from None
    if url.scheme not in schemes:
        raise InputError(
            f"{what} must start with {schemes[0]}:// or {schemes[1]}://, e.g. {example}."
        )
    if not url.host:
        raise InputError(f"{what} has no host name; use e.g. {example}.")
    if url.user is not None or url.password is not None:
        raise InputError(f"{what} must not carry a user name or password; the bot token is enough.")
    if url.query_string or url.fragment:
        raise InputError(
            f"{what} must not have a query or fragment, since discord.py builds its own; "
            f"use e.g. {example}."
        )
    return url


def parse_api_base(value: str) -> str:
    """Check a REST base (``http(s)://host[:port]/api/v10``); returned without a trailing slash."""
    url = _parse(
        value,
        what="DISCORD_API_BASE",
        schemes=("http", "https"),
        example="http://127.0.0.1:8080/api/v10",
    )
    return str(url).rstrip("/")


def parse_gateway_url(value: str) -> yarl.URL:
    """Check a gateway websocket URL (``ws(s)://host[:port][/path]``); returned as a yarl URL."""
    return _parse(
        value,
        what="DISCORD_GATEWAY_URL",
        schemes=("ws", "wss"),
        example="ws://127.0.0.1:8080/gateway",
    )


def apply_discord_endpoints(api_base: str | None, gateway_url: str | None) -> None:
    """Make discord.py talk to ``api_base`` (REST) and ``gateway_url`` (websocket).

    ``None`` or a blank string means discord.com for that endpoint, so calling this with the
    settings' values is always right. Both values are checked before either is applied, so a bad
    value leaves discord.py untouched.
    """
    base = parse_api_base(api_base) if api_base and api_base.strip() else DISCORD_API_BASE
    gateway = (
        parse_gateway_url(gateway_url)
        if gateway_url and gateway_url.strip()
        else DISCORD_GATEWAY_URL
    )
    Route.BASE = base
    DiscordWebSocket.DEFAULT_GATEWAY = gateway


def current_discord_endpoints() -> tuple[str, str]:
    """The REST base and gateway URL discord.py will use now (for logs and tests)."""
    return Route.BASE, str(DiscordWebSocket.DEFAULT_GATEWAY)


def uses_custom_gateway() -> bool:
    """Whether discord.py dials a gateway set by DISCORD_GATEWAY_URL instead of Discord's."""
    return DiscordWebSocket.DEFAULT_GATEWAY != DISCORD_GATEWAY_URL


def log_discord_endpoints() -> None:
    """Log which server the bot talks to when it is not discord.com (call it once logging is
    configured: :func:`apply_discord_endpoints` runs before, to refuse a bad value first)."""
    base, gateway = current_discord_endpoints()
    if base != DISCORD_API_BASE or uses_custom_gateway():
        log.info("Using a Discord-compatible server: REST %s, gateway %s", base, gateway)
