"""The admin rule: Manage Server in the server, or an owner id from the configuration."""

from __future__ import annotations

from dataclasses import dataclass

from bot.checks import is_admin
from bot.config import BotSettings


@dataclass
class Permissions:
    manage_guild: bool


@dataclass
class Member:
    id: int
    guild_permissions: Permissions


@dataclass
class User:
    id: int


def test_manage_server_or_a_configured_owner_is_an_admin(bot_settings: BotSettings) -> None:
    assert is_admin(bot_settings, Member(1, Permissions(manage_guild=True)))  # type: ignore[arg-type]
    assert not is_admin(bot_settings, Member(1, Permissions(manage_guild=False)))  # type: ignore[arg-type]
    assert is_admin(bot_settings, User(42))  # type: ignore[arg-type]  # owner_ids="42"
    assert not is_admin(bot_settings, User(7))  # type: ignore[arg-type]
