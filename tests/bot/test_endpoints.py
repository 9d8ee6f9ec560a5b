"""apply_discord_endpoints: discord.py's REST base and gateway URL, validated before use."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import discord
import pytest
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.endpoints import (
    DISCORD_API_BASE,
    DISCORD_GATEWAY_URL,
    apply_discord_endpoints,
    current_discord_endpoints,
    log_discord_endpoints,
    uses_custom_gateway,
)
from training.errors import InputError


@pytest.fixture(autouse=True)
def _restore_discord_endpoints() -> Iterator[None]:
    """The endpoints are process-wide class attributes: put discord.com back after every test."""
    yield
    apply_discord_endpoints(None, None)


def test_defaults_are_discord_py_own_endpoints() -> None:
    assert DISCORD_API_BASE == "https://discord.com/api/v10"
    assert str(DISCORD_GATEWAY_URL) == "wss://gateway.discord.gg/"


def test_overrides_set_route_base_and_default_gateway() -> None:
    apply_discord_endpoints("http://127.0.0.1:8080/api/v10/", "ws://127.0.0.1:8080/gateway")

    assert Route.BASE == "http://127.0.0.1:8080/api/v10"
    assert Route("GET", "/users/@me").url == "http://127.0.0.1:8080/api/v10/users/@me"
    assert yarl.URL("ws://127.0.0.1:8080/gateway") == DiscordWebSocket.DEFAULT_GATEWAY
    assert isinstance(DiscordWebSocket.DEFAULT_GATEWAY, yarl.URL)
    assert current_discord_endpoints() == (
        "http://127.0.0.1:8080/api/v10",
        "ws://127.0.0.1:8080/gateway",
    )


def test_gateway_query_is_built_by_discord_py_on_the_override() -> None:
    """discord.py appends v/encoding/compress itself, so the override must come without a query."""
    apply_discord_endpoints(None, "wss://gw.example.org/gateway")
    url = DiscordWebSocket.DEFAULT_GATEWAY.with_query(v=10, encoding="json")
    assert str(url) == "wss://gw.example.org/gateway?v=10&encoding=json"


def test_interaction_routes_share_the_overridden_base() -> None:
    """Slash-command responses go through discord.webhook's Route, which is the same class."""
    apply_discord_endpoints("https://discord.example.org/api/v10", None)
    assert discord.webhook.async_.Route is Route
    assert Route.BASE == "https://discord.example.org/api/v10"


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_none_or_blank_restores_discord_com(blank: str | None) -> None:
    apply_discord_endpoints("http://127.0.0.1:1/api/v10", "ws://127.0.0.1:1/")
    apply_discord_endpoints(blank, blank)
    assert current_discord_endpoints() == (
        "https://discord.com/api/v10",
        "wss://gateway.discord.gg/",
    )


@pytest.mark.parametrize(
    ("api_base", "message"),
    [
        ("ws://127.0.0.1:8080/api/v10", "DISCORD_API_BASE must start with http:// or https://"),
        ("discord.example.org/api/v10", "DISCORD_API_BASE must start with http:// or https://"),
        ("http:///api/v10", "DISCORD_API_BASE has no host name"),
        ("http://127.0.0.1:99999/api", "DISCORD_API_BASE is not a valid URL"),
        ("http://user:pw@127.0.0.1/api/v10", "DISCORD_API_BASE must not carry a user name"),
        ("http://127.0.0.1/api/v10?x=1", "DISCORD_API_BASE must not have a query"),
    ],
)
def test_bad_api_base_is_refused_with_one_sentence(api_base: str, message: str) -> None:
    with pytest.raises(InputError, match="^" + message) as caught:
        apply_discord_endpoints(api_base, None)
    text = str(caught.value)
    assert text.endswith(".") and "\n" not in text
    assert "pw" not in text


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ("http://127.0.0.1:8080/gateway", "DISCORD_GATEWAY_URL must start with ws:// or wss://"),
        ("ws://", "DISCORD_GATEWAY_URL has no host name"),
        ("ws://[::1", "DISCORD_GATEWAY_URL is not a valid URL"),
        ("ws://127.0.0.1:8080/?v=10&encoding=json", "DISCORD_GATEWAY_URL must not have a query"),
        ("ws://127.0.0.1:8080/#top", "DISCORD_GATEWAY_URL must not have a query or fragment"),
    ],
)
def test_bad_gateway_url_is_refused_with_one_sentence(gateway: str, message: str) -> None:
    with pytest.raises(InputError, match="^" + message.replace("?", r"\?")):
        apply_discord_endpoints(None, gateway)


def test_a_bad_value_leaves_both_endpoints_untouched() -> None:
    apply_discord_endpoints("http://127.0.0.1:1/api/v10", "ws://127.0.0.1:1/gateway")
    with pytest.raises(InputError):
        apply_discord_endpoints("http://127.0.0.1:2/api/v10", "http://not-a-websocket/")
    assert current_discord_endpoints() == (
        "http://127.0.0.1:1/api/v10",
        "ws://127.0.0.1:1/gateway",
    )


@pytest.mark.parametrize(
    ("variable", "value", "sentence"),
    [
        (
            "DISCORD_GATEWAY_URL",
            "https://gateway.example.org/",
            "DISCORD_GATEWAY_URL must start with ws:// or wss://, e.g. ws://127.0.0.1:8080/gateway.",
        ),
        (
            "DISCORD_API_BASE",
            "127.0.0.1:8080/api/v10",
            "DISCORD_API_BASE must start with http:// or https://, e.g. "
            "http://127.0.0.1:8080/api/v10.",
        ),
    ],
)
def test_doppeltweet_bot_refuses_a_bad_endpoint_before_connecting(
    variable: str,
    value: str,
    sentence: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bot.cli import main

    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("DISCORD_API_BASE", "DISCORD_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISCORD_TOKEN", "not-a-real-token")
    monkeypatch.setenv(variable, value)

    assert main([]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {sentence}\n"
    assert "not-a-real-token" not in err
    assert current_discord_endpoints() == (DISCORD_API_BASE, str(DISCORD_GATEWAY_URL))


def test_the_endpoints_are_logged_only_when_not_discord_com(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`doppeltweet bot` logs them once logging is set up; applying them logs nothing."""
    with caplog.at_level(logging.INFO, logger="bot.endpoints"):
        apply_discord_endpoints(None, None)
        log_discord_endpoints()
        apply_discord_endpoints(None, "ws://127.0.0.1:8080/gateway")
        applied = len(caplog.records)
        log_discord_endpoints()
    assert applied == 0
    [record] = caplog.records
    assert record.getMessage() == (
        "Using a Discord-compatible server: REST https://discord.com/api/v10, "
        "gateway ws://127.0.0.1:8080/gateway"
    )
    assert uses_custom_gateway()
    apply_discord_endpoints(None, None)
    assert not uses_custom_gateway()
