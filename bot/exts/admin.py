"""Server admin commands (``!retrain``, ``!delete``) and the owner's ``!sync``.

Admin means the Manage Server permission or an owner id from the configuration. :func:`admin_only`
applies that as a runtime check (the source of truth, for ``!`` and ``/``) and also declares it as
the slash command's default permissions, so Discord hides ``/delete`` from members who cannot use
it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import NO_MENTIONS
from bot.exts import parse_handle_text, require_guild_id
from bot.formatting import escape_user_text
from bot.own_messages import OWN_MODEL_SUFFIX
from training.errors import InputError

if TYPE_CHECKING:
    from bot.client import DoppeltweetBot

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: A member's own model named directly (``alice+discord``, see
#: :func:`bot.own_messages.own_model_name`).
_OWN_MODEL = re.compile(rf"@?([a-z0-9_]{{1,15}}){re.escape(OWN_MODEL_SUFFIX)}", re.IGNORECASE)


class NotAdmin(commands.CheckFailure):
    """The member lacks Manage Server and is not a configured owner."""

    def __init__(self) -> None:
        super().__init__("Only members with the Manage Server permission can do that.")


def is_admin(bot: DoppeltweetBot, user: discord.abc.User) -> bool:
    """Manage Server in this server, or an owner id from the configuration."""
    if user.id in bot.settings.owner_ids:
        return True
    permissions = getattr(user, "guild_permissions", None)
    return bool(permissions is not None and permissions.manage_guild)


def admin_only() -> Callable[[F], F]:
    """Require an admin at run time and hide the slash command from non-admins by default."""

    async def predicate(ctx: commands.Context[Any]) -> bool:
        if ctx.guild is None:
            raise commands.NoPrivateMessage()
        if not is_admin(ctx.bot, ctx.author):
            raise NotAdmin()
        return True

    def decorator(func: F) -> F:
        func = commands.check(predicate)(func)
        return app_commands.default_permissions(manage_guild=True)(func)

    return decorator


class Admin(commands.Cog):
    """Admin commands: retrain and delete models, sync slash commands."""

    def __init__(self, bot: DoppeltweetBot) -> None:
        self.bot = bot

    async def _model_name(self, ctx: commands.Context[Any], text: str) -> str:
        """The model an admin names: a member's mention names that member's own model (by their
        id), ``alice+discord`` names that own model, and a handle names the handle's own model,
        else the latest one it is part of."""
        guild_id = require_guild_id(ctx)
        tweeting = self.bot.get_cog("Tweeting")
        if tweeting is None:
            raise RuntimeError("the Tweeting cog is not loaded")
        token = text.strip().strip("`")
        member_model = await tweeting.member_model(guild_id, token)  # type: ignore[attr-defined]
        if member_model is not None:
            return str(member_model.name)
        own = _OWN_MODEL.fullmatch(token)
        if own is not None:
            name = own.group(1).lower() + OWN_MODEL_SUFFIX
            record = await self.bot.store.get_model(guild_id, name)
            if record is None:
                raise InputError(
                    f"This server has no model {escape_user_text(name)}; a member makes their "
                    f"own with `{self.bot.settings.prefix}train me`."
                )
            return record.name
        model = await tweeting.find_model(guild_id, parse_handle_text(text))  # type: ignore[attr-defined]
        return str(model.name)

    @commands.hybrid_command(name="retrain")
    @app_commands.guild_only()
    @app_commands.describe(
        handle="The model to train again: a handle such as @jack, or a member's own: alice+discord"
    )
    @admin_only()
    async def retrain(self, ctx: commands.Context[Any], handle: str) -> None:
        """Train a model again from the same sources as last time (API and Bluesky refreshed)."""
        training = self.bot.get_cog("Training")
        if training is None:
            raise RuntimeError("the Training cog is not loaded")
        name = await self._model_name(ctx, handle)
        await training.retrain_model(ctx, name)  # type: ignore[attr-defined]

    @commands.hybrid_command(name="delete")
    @app_commands.guild_only()
    @app_commands.describe(
        handle="The model to delete: a handle such as @jack, or a member's own: alice+discord"
    )
    @admin_only()
    async def delete(self, ctx: commands.Context[Any], handle: str) -> None:
        """Delete a model of this server: its files, its record and its cached copy."""
        guild_id = require_guild_id(ctx)
        name = await self._model_name(ctx, handle)
        record = await self.bot.runner.delete_model(guild_id, name)
        self.bot.cache.invalidate(record.path)
        await ctx.send(
            f"Deleted the model **{escape_user_text(record.name)}**.",
            allowed_mentions=NO_MENTIONS,
        )

    @commands.hybrid_command(name="sync")
    @commands.is_owner()
    async def sync(self, ctx: commands.Context[Any]) -> None:
        """Publish the slash commands to Discord (owner only; Discord rate-limits this)."""
        synced = await self.bot.tree.sync()
        log.info("synced %d slash commands", len(synced))
        await ctx.send(f"Synced {len(synced)} slash commands.", allowed_mentions=NO_MENTIONS)


async def setup(bot: DoppeltweetBot) -> None:
    """Load the admin cog."""
    await bot.add_cog(Admin(bot))
