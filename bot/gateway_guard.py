"""Two gateway failures discord.py 2.7.1 does not survive, and how the bot survives them.

* An event its parser cannot read: discord.py calls ``ConnectionState.parsers[event]`` (the dict
  ``DiscordWebSocket.from_client`` hands the websocket as ``_discord_parsers``) inside
  ``received_message``, and an exception there ends ``Client.connect``. :func:`guard_parsers`
  wraps each entry: the event is skipped and logged once per event type, with the error's class
  and place but never the payload or the error's text (which may quote it).
* A first handshake that fails: ``Client.connect`` then reads ``self.ws.sequence`` while
  ``self.ws`` is None and dies with an ``AttributeError`` (discord.py issue #10520).
  :func:`first_connection_explained` turns that into one sentence naming DISCORD_GATEWAY_URL.

Both rest on internals of the pinned ``discord.py==2.7.1``; tests/bot/test_gateway_guard.py and
the loopback smoke tests check them against the installed version.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import aiohttp
import discord

from bot.endpoints import current_discord_endpoints, uses_custom_gateway
from training.errors import DoppeltweetError

log = logging.getLogger(__name__)

Parser = Callable[[Any], None]


class GatewayError(DoppeltweetError):
    """The gateway refused the bot's first connection; ``doppeltweet bot`` prints the sentence."""

    exit_code = 2


class _GuardedParser:
    """One event's parser; a failure is logged (once per event type) and the event skipped."""

    def __init__(self, event: str, parser: Parser, failures: dict[str, int]) -> None:
        self.event = event
        self.parser = parser
        self.failures = failures

    def __call__(self, data: Any) -> None:
        try:
            self.parser(data)
        except Exception as error:
            count = self.failures.get(self.event, 0) + 1
            self.failures[self.event] = count
            if count == 1:
                log.error(
                    "Skipped a %s gateway event that discord.py could not read (%s at %s); "
                    "the bot carries on, and logs further ones at debug level.",
                    self.event,
                    type(error).__name__,
                    _where(error),
                )
            else:
                log.debug(
                    "Skipped another unreadable %s gateway event (%d so far).", self.event, count
                )


def guard_parsers(parsers: MutableMapping[str, Parser]) -> dict[str, int]:
    """Wrap every gateway event parser in ``parsers`` (a ``ConnectionState.parsers``) in place.

    Returns the live count of skipped events per event type (for logs and tests).
    """
    failures: dict[str, int] = {}
    for event, parser in list(parsers.items()):
        if isinstance(parser, _GuardedParser):  # guarding twice wraps once
            continue
        parsers[event] = _GuardedParser(event, parser, failures)
    return failures


def _where(error: BaseException) -> str:
    """``member.py:123 in _update_roles`` — the innermost frame, which names no payload value."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "an unknown place"
    frame = frames[-1]
    file_name = frame.filename.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{file_name}:{frame.lineno} in {frame.name}"


def first_connection_error(error: BaseException, gateway: str, *, custom: bool) -> str | None:
    """One sentence for a first gateway connection that failed with ``error``, or None when
    ``error`` is not a failed connection.

    ``gateway`` is the URL discord.py dialled (without its query), ``custom`` whether it came from
    DISCORD_GATEWAY_URL rather than being discord.com's own.
    """
    if isinstance(error, aiohttp.WSServerHandshakeError):
        why = f"answered HTTP {error.status} instead of accepting a websocket connection"
    elif isinstance(error, TimeoutError):  # before OSError, of which it is a kind
        why = "did not answer within 60 s"
    elif isinstance(error, aiohttp.ClientError | OSError):
        detail = error.strerror if isinstance(error, OSError) else None
        why = f"could not be reached ({detail or type(error).__name__})"
    else:
        return None
    if custom:
        return (
            f"The gateway at DISCORD_GATEWAY_URL ({gateway}) {why}; set DISCORD_GATEWAY_URL to "
            "the server's websocket gateway (ws:// or wss://), or leave it empty for Discord's."
        )
    return (
        f"Discord's gateway ({gateway}) {why}; check the network, or set DISCORD_GATEWAY_URL "
        "when the bot uses a Discord-compatible server."
    )


class _QuietBeforeFirstConnection(logging.Filter):
    """Drops discord.py's "Attempting a reconnect" traceback while ``client`` has never been
    connected: that failure ends in a :class:`GatewayError` sentence instead."""

    def __init__(self, client: discord.Client) -> None:
        super().__init__()
        self.client = client

    def filter(self, record: logging.LogRecord) -> bool:
        never_connected = self.client.ws is None
        return not (never_connected and str(record.msg).startswith("Attempting a reconnect"))


@contextlib.contextmanager
def first_connection_explained(client: discord.Client) -> Iterator[None]:
    """Around ``Client.connect``: a failed first handshake raises :class:`GatewayError`."""
    quiet = _QuietBeforeFirstConnection(client)
    client_log = logging.getLogger("discord.client")
    client_log.addFilter(quiet)
    try:
        yield
    except AttributeError as error:
        # discord.py's AttributeError comes while handling the handshake's own error.
        cause = error.__context__
        if client.ws is not None or cause is None:
            raise
        _, gateway = current_discord_endpoints()
        sentence = first_connection_error(cause, gateway, custom=uses_custom_gateway())
        if sentence is None:
            raise
        raise GatewayError(sentence) from None
    finally:
        client_log.removeFilter(quiet)
