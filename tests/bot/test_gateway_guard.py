"""guard_parsers and first_connection_error: what discord.py 2.7.1 would die of, as log lines and
sentences. The loopback smoke tests show both on a real connection."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from discord.state import ConnectionState

from bot.client import create_bot
from bot.config import BotSettings
from bot.gateway_guard import GatewayError, first_connection_error, guard_parsers


def _parsers(seen: list[Any]) -> dict[str, Any]:
    def good(data: Any) -> None:
        seen.append(data)

    def bad(data: Any) -> None:
        int(data["member"]["roles"][0])  # a role object where discord.py expects an id

    return {"MESSAGE_CREATE": good, "MESSAGE_UPDATE": bad, "GUILD_UPDATE": bad}


def test_a_failing_parser_is_skipped_and_logged_once_per_event_type_without_the_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Any] = []
    parsers = _parsers(seen)
    failures = guard_parsers(parsers)
    payload = {"token": "interaction-secret", "member": {"roles": [{"id": "1", "name": "x"}]}}

    with caplog.at_level(logging.DEBUG, logger="bot.gateway_guard"):
        for _ in range(3):
            parsers["MESSAGE_UPDATE"](payload)
        parsers["GUILD_UPDATE"](payload)
        parsers["MESSAGE_CREATE"]({"id": "1"})

    assert failures == {"MESSAGE_UPDATE": 3, "GUILD_UPDATE": 1}
    assert seen == [{"id": "1"}]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert errors[0].startswith("Skipped a MESSAGE_UPDATE gateway event")
    assert "TypeError at test_gateway_guard.py:" in errors[0] and "in bad" in errors[0]
    assert errors[1].startswith("Skipped a GUILD_UPDATE gateway event")
    assert "interaction-secret" not in caplog.text
    assert "'name'" not in caplog.text  # nor the error's text, which quotes the payload
    assert all(r.exc_info is None for r in caplog.records)


def test_guarding_twice_wraps_each_parser_once() -> None:
    parsers = _parsers([])
    guard_parsers(parsers)
    wrapped = dict(parsers)
    guard_parsers(parsers)
    assert parsers == wrapped


def test_the_bot_guards_the_parsers_discord_py_dispatches_through(
    bot_settings: BotSettings,
) -> None:
    """discord.py hands ``_connection.parsers`` itself to the gateway: that dict is guarded."""
    bot = create_bot(bot_settings)
    state: ConnectionState = bot._connection
    assert "MESSAGE_UPDATE" in state.parsers and "INTERACTION_CREATE" in state.parsers
    assert all(type(p).__name__ == "_GuardedParser" for p in state.parsers.values())
    state.parsers["MESSAGE_UPDATE"]({"id": "1"})  # far too little to read: skipped
    assert bot.skipped_events == {"MESSAGE_UPDATE": 1}


def _handshake_error(status: int) -> aiohttp.WSServerHandshakeError:
    return aiohttp.WSServerHandshakeError(
        None,  # type: ignore[arg-type]
        (),
        status=status,
        message="Invalid response status",
    )


def test_a_gateway_that_answers_http_is_one_sentence_naming_the_setting() -> None:
    sentence = first_connection_error(
        _handshake_error(200), "ws://127.0.0.1:8080/gateway", custom=True
    )
    assert sentence == (
        "The gateway at DISCORD_GATEWAY_URL (ws://127.0.0.1:8080/gateway) answered HTTP 200 "
        "instead of accepting a websocket connection; set DISCORD_GATEWAY_URL to the server's "
        "websocket gateway (ws:// or wss://), or leave it empty for Discord's."
    )


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (
            ConnectionRefusedError(111, "Connection refused"),
            "could not be reached (Connection refused)",
        ),
        (TimeoutError(), "did not answer within 60 s"),
        (aiohttp.ServerDisconnectedError(), "could not be reached (ServerDisconnectedError)"),
    ],
)
def test_discord_own_gateway_unreachable_is_one_sentence(error: Exception, why: str) -> None:
    sentence = first_connection_error(error, "wss://gateway.discord.gg/", custom=False)
    assert sentence is not None
    assert sentence.startswith(f"Discord's gateway (wss://gateway.discord.gg/) {why}")
    assert sentence.endswith(".") and "\n" not in sentence


def test_an_error_that_is_no_failed_connection_gets_no_sentence() -> None:
    assert first_connection_error(KeyError("x"), "ws://h/", custom=True) is None


def test_a_gateway_error_exits_like_a_bad_setting() -> None:
    assert GatewayError("x").exit_code == 2


async def test_the_bot_against_a_gateway_answering_http_200_raises_the_sentence_quietly(
    bot_settings: BotSettings, caplog: pytest.LogCaptureFixture
) -> None:
    from fake_discord import FakeDiscord

    from bot.endpoints import apply_discord_endpoints

    async with FakeDiscord() as fake:
        fake.gateway_answers_http = True
        apply_discord_endpoints(fake.api_base, fake.gateway_url)
        bot = create_bot(bot_settings)
        try:
            with caplog.at_level(logging.INFO), pytest.raises(GatewayError) as caught:
                await asyncio.wait_for(bot.start(fake.token), timeout=60)
        finally:
            await bot.close()
            apply_discord_endpoints(None, None)
    assert str(caught.value).startswith(
        f"The gateway at DISCORD_GATEWAY_URL ({fake.gateway_url}) answered HTTP 200 "
    )
    assert caught.value.__cause__ is None
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"
    assert not [r for r in caplog.records if "Attempting a reconnect" in r.getMessage()]
    assert logging.getLogger("discord.client").filters == []
