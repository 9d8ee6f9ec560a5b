"""Server admin commands (``!delete``) and the owner's ``!sync``.

Who counts as an admin is :mod:`bot.checks`'s rule.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from discord import app_commands
from discord.ext import commands

from bot.checks import admin_only
from bot.exts import model_named, require_guild_id
from bot.formatting import NO_MENTIONS, escape_user_text

if TYPE_CHECKING:
    from bot.client import DoppeltweetBot

log = logging.getLogger(__name__)


class Admin(commands.Cog):
    """Admin commands: delete models, sync slash commands."""

    def __init__(self, bot: DoppeltweetBot) -> None:
        self.bot = bot

    @commands.hybrid_command(name="delete")
    @app_commands.guild_only()
    @app_commands.describe(
        handle="The model to delete: a handle such as @jack, or a member's own: alice+discord"
    )
    @admin_only()
    async def delete(self, ctx: commands.Context[Any], handle: str) -> None:
        """Delete a model of this server: its files, its record and its cached copy."""
        guild_id = require_guild_id(ctx)
        named = await model_named(self.bot.models, guild_id, handle)
        record = await self.bot.models.delete(guild_id, named)
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
