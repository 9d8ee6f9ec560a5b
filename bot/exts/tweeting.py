"""``!tweet`` and ``!models``: generate from this server's models and list them.

Generation runs in the model cache, off the event loop. The generated text is shown in a
tweet-style embed, escaped, sent with ``AllowedMentions.none()``, and logged to the store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from discord import app_commands
from discord.ext import commands

from bot.exts import HandleArg, reject_mentions, require_guild_id
from bot.formatting import NO_MENTIONS, escape_user_text, tweet_embed
from bot.store import ModelRecord
from training.errors import ModelError
from training.generation import DEFAULT_PROMPT
from training.generation.llamacpp_build import engine_line

if TYPE_CHECKING:
    from bot.client import DoppeltweetBot

log = logging.getLogger(__name__)


def _tweet_cooldown(ctx: commands.Context[Any]) -> commands.Cooldown | None:
    """One ``!tweet`` per user every ``tweet_cooldown_s`` seconds (0 disables the cooldown)."""
    per = ctx.bot.settings.tweet_cooldown_s
    return commands.Cooldown(1, per) if per > 0 else None


def _handles_text(model: ModelRecord) -> str:
    return " ".join(escape_user_text(h.display) for h in model.handles)


class Tweeting(commands.Cog):
    """Generate tweets with this server's models."""

    def __init__(self, bot: DoppeltweetBot) -> None:
        self.bot = bot

    @commands.hybrid_command(name="tweet")
    @app_commands.guild_only()
    @app_commands.describe(
        handle="Whose model, e.g. @jack (default: this server's most recent model)",
        prompt="How the tweet starts, e.g. “My dream is” (default: the model opens it)",
    )
    @commands.dynamic_cooldown(_tweet_cooldown, commands.BucketType.user)
    async def tweet(
        self,
        ctx: commands.Context[Any],
        handle: HandleArg | None = None,  # type: ignore[valid-type]
        *,
        prompt: str = "",
    ) -> None:
        """Generate a tweet in the style of a model trained in this server."""
        guild_id = require_guild_id(ctx)
        model = None
        if prompt.strip().startswith("<@"):
            # A member's mention names their own `train me` model, found by their id.
            first, _, rest = prompt.strip().partition(" ")
            model = await self.bot.models.member_model(guild_id, first)
            if model is None:
                reject_mentions(first)
            else:
                prompt = rest
        if model is None:
            model = await self.bot.models.find(guild_id, handle)
        text_prompt = prompt.strip() or DEFAULT_PROMPT
        async with ctx.typing():
            result = await self.bot.cache.generate(model.path, text_prompt, n=1)
        if not result.tweets:
            raise ModelError(
                "The model wrote nothing usable for that prompt this time; try again or "
                "try another prompt."
            )
        text = result.tweets[0]
        shown = model.handles[0] if handle is None or handle not in model.handles else handle
        embed = tweet_embed(
            text,
            display_name=" & ".join(h.name for h in model.handles),
            handle=shown.name,
            model=model.name,
        )
        await ctx.send(embed=embed, allowed_mentions=NO_MENTIONS)
        await self.bot.store.log_tweet(
            guild_id,
            model.name,
            text,
            kind="command",
            prompt=text_prompt,
            user_id=ctx.author.id,
            channel_id=ctx.channel.id,
        )

    @commands.hybrid_command(name="models")
    @app_commands.guild_only()
    async def models(self, ctx: commands.Context[Any]) -> None:
        """List the models trained in this server, most recent first."""
        guild_id = require_guild_id(ctx)
        records = await self.bot.store.list_models(guild_id)
        prefix = self.bot.settings.prefix
        if not records:
            await ctx.send(
                f"This server has no models yet; train one with `{prefix}train @handle`.",
                allowed_mentions=NO_MENTIONS,
            )
            return
        lines = [f"**Models in this server** ({len(records)}):"]
        folder = self.bot.settings.guild_models_dir(guild_id)
        engines = await asyncio.to_thread(
            lambda: [engine_line(folder / record.name) for record in records]
        )
        for record, engine in zip(records, engines, strict=True):
            trained = record.updated_at.strftime("%Y-%m-%d %H:%M UTC")
            lines.append(
                f"• **{escape_user_text(record.name)}** — {_handles_text(record)} · "
                f"{escape_user_text(record.base_model)}{' (LoRA)' if record.lora else ''} · "
                f"trained {trained} · served by {engine}"
            )
        await ctx.send("\n".join(lines)[:2000], allowed_mentions=NO_MENTIONS)


async def setup(bot: DoppeltweetBot) -> None:
    """Load the tweeting cog."""
    await bot.add_cog(Tweeting(bot))
