"""Who may run a command: the admin rule, written once for every cog.

Admin means the Manage Server permission or an owner id from the configuration.
:func:`admin_only` applies that as a runtime check (the source of truth, for ``!`` and ``/``) and
also declares it as the slash command's default permissions, so Discord hides admin commands
from members who cannot use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.config import BotSettings

F = TypeVar("F", bound=Callable[..., Any])


class NotAdmin(commands.CheckFailure):
    """The member lacks Manage Server and is not a configured owner."""

    def __init__(self) -> None:
        super().__init__("Only members with the Manage Server permission can do that.")


def is_admin(settings: BotSettings, user: discord.abc.User) -> bool:
    """Manage Server in this server, or an owner id from the configuration."""
    if user.id in settings.owner_ids:
        return True
    permissions = getattr(user, "guild_permissions", None)
    return bool(permissions is not None and permissions.manage_guild)


async def admin_check(ctx: commands.Context[Any]) -> bool:
    """The admin rule as a command check: in a server, by an admin."""
    if ctx.guild is None:
        raise commands.NoPrivateMessage()
    if not is_admin(ctx.bot.settings, ctx.author):
        raise NotAdmin()
    return True


def admin_only() -> Callable[[F], F]:
    """Require an admin at run time and hide the slash command from non-admins by default."""

    def decorator(func: F) -> F:
        func = commands.check(admin_check)(func)
        return app_commands.default_permissions(manage_guild=True)(func)

    return decorator
