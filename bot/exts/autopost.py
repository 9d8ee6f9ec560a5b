"""``!autopost``: admins schedule generated tweets in a channel (and optionally on X, Bluesky
and Mastodon).

``!autopost @handle #channel every 6h`` or ``… at 09:00 mon,thu`` with ``--to-x``,
``--to-bluesky``, ``--to-mastodon``, ``--no-ai-label``, ``--jitter 10m``, ``--tz Europe/Berlin``
and ``--prompt words…``; ``!autopost list``, ``pause ID``, ``resume ID``, ``remove ID``,
``timezone [NAME]``; and ``!post [x] [bluesky] [mastodon]``, which puts the channel's latest
``!tweet`` on those networks. The cog resolves the model and the channel and checks the bot may post
there; the schedule language belongs to :mod:`bot.schedule_grammar`, the storage and runs to
:mod:`bot.scheduler`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import admin_check, admin_only
from bot.exts import parse_handle_text, require_guild_id
from bot.formatting import NO_MENTIONS, escape_user_text
from bot.posters import NETWORKS, configured
from bot.posters.crosspost import fit_for, post_everywhere
from bot.schedule_grammar import describe, parse_schedule
from bot.scheduler import AutoPoster
from training.errors import InputError
from training.textrules import has_mentions

if TYPE_CHECKING:
    from bot.client import DoppeltweetBot

_CHANNEL_MENTION = re.compile(r"<#(\d+)>")


def resolve_channel(guild: discord.Guild, text: str) -> discord.TextChannel:
    """A text channel of this server from ``#name``, a channel mention or an id."""
    token = text.strip().strip("`")
    match = _CHANNEL_MENTION.fullmatch(token)
    channel: Any = None
    if match or token.isdigit():
        channel_id = int(match.group(1) if match else token)
        channel = guild.get_channel(channel_id)
        if channel is None:
            raise InputError("That channel is not in this server; pick one of its text channels.")
    else:
        name = token.removeprefix("#").lower()
        channel = discord.utils.find(lambda c: c.name.lower() == name, guild.text_channels)
        if channel is None:
            raise InputError(f"This server has no text channel #{escape_user_text(name[:50])}.")
    if not isinstance(channel, discord.TextChannel):
        raise InputError(f"#{escape_user_text(channel.name)} is not a text channel.")
    return channel


def check_can_post(channel: discord.TextChannel) -> None:
    """Refuse a channel the bot cannot post embeds in, naming the missing permissions."""
    me = channel.guild.me
    permissions = channel.permissions_for(me)
    # Without View Channel Discord denies everything else, without Send Messages embeds too,
    # so the first missing one is the one to grant.
    for label, granted in (
        ("View Channel", permissions.view_channel),
        ("Send Messages", permissions.send_messages),
        ("Embed Links", permissions.embed_links),
    ):
        if not granted:
            raise InputError(
                f"I cannot post in #{escape_user_text(channel.name)}; give me the {label} "
                "permission there."
            )


def parse_post_networks(text: str) -> tuple[tuple[str, ...], bool]:
    """The networks (keys, in posting order) and the AI-label choice of a ``!post`` command."""
    chosen: set[str] = set()
    ai_label = True
    for word in text.lower().split():
        word = word.removeprefix("--to-")
        if word == "--no-ai-label":
            ai_label = False
        elif word in NETWORKS:
            chosen.add(word)
        else:
            names = ", ".join(NETWORKS)
            raise InputError(
                f"{escape_user_text(word[:30])!s} is not a network I post to; name {names} "
                "(or none for every configured one)."
            )
    return tuple(key for key in NETWORKS if key in chosen), ai_label


class Autopost(commands.Cog):
    """Scheduled generated tweets."""

    def __init__(self, bot: DoppeltweetBot) -> None:
        self.bot = bot

    @property
    def poster(self) -> AutoPoster:
        return self.bot.autoposter

    @commands.hybrid_group(name="autopost", fallback="add", invoke_without_command=True)
    @app_commands.guild_only()
    @app_commands.describe(
        handle="Whose model posts, e.g. @jack",
        channel="Where it posts, e.g. #general",
        schedule="e.g. `every 6h --to-bluesky`, `at 09:00 mon,thu --prompt My dream is`",
    )
    @admin_only()
    async def autopost(
        self, ctx: commands.Context[Any], handle: str, channel: str, *, schedule: str = ""
    ) -> None:
        """Post generated tweets of a model in a channel on a schedule (admins)."""
        guild_id = require_guild_id(ctx)
        assert ctx.guild is not None
        parsed = parse_handle_text(handle)
        target = resolve_channel(ctx.guild, channel)
        request = parse_schedule(schedule)
        model = await self.bot.models.find(guild_id, parsed)
        check_can_post(target)
        created = await self.poster.create(
            guild_id, model.name, target.id, request, created_by=ctx.author.id
        )
        prefix = self.bot.settings.prefix
        await ctx.send(
            f"Auto-post #{created.id}: **{escape_user_text(model.name)}** in {target.mention} "
            f"{describe(created, quote=escape_user_text)}{self._next_text(created.id)}. "
            f"Stop it with `{prefix}autopost pause {created.id}`.",
            allowed_mentions=NO_MENTIONS,
        )

    def _next_text(self, schedule_id: int) -> str:
        when = self.poster.next_run(schedule_id)
        return "" if when is None else f"; next post <t:{int(when.timestamp())}:f>"

    @autopost.command(name="list")
    @commands.check(admin_check)
    async def list_(self, ctx: commands.Context[Any]) -> None:
        """List this server's auto-post schedules."""
        guild_id = require_guild_id(ctx)
        schedules = await self.bot.store.list_schedules(guild_id)
        prefix = self.bot.settings.prefix
        if not schedules:
            await ctx.send(
                f"This server has no auto-posts; add one with "
                f"`{prefix}autopost @handle #channel every 6h`.",
                allowed_mentions=NO_MENTIONS,
            )
            return
        lines = [f"**Auto-posts in this server** ({len(schedules)}):"]
        for s in schedules:
            state = (
                f"paused: {escape_user_text(s.paused_reason or 'by an admin')}"
                if s.paused
                else f"active{self._next_text(s.id)}"
            )
            lines.append(
                f"• #{s.id} **{escape_user_text(s.model_name)}** in <#{s.channel_id}> "
                f"{describe(s, quote=escape_user_text)} — {state}"
            )
        await ctx.send("\n".join(lines)[:2000], allowed_mentions=NO_MENTIONS)

    @autopost.command(name="pause")
    @app_commands.describe(schedule_id="The number `autopost list` shows")
    @commands.check(admin_check)
    async def pause(self, ctx: commands.Context[Any], schedule_id: int) -> None:
        """Pause an auto-post schedule."""
        guild_id = require_guild_id(ctx)
        schedule = await self.poster.pause(
            guild_id, schedule_id, f"Paused by {ctx.author.display_name}."
        )
        await ctx.send(
            f"Paused auto-post #{schedule.id}; resume it with "
            f"`{self.bot.settings.prefix}autopost resume {schedule.id}`.",
            allowed_mentions=NO_MENTIONS,
        )

    @autopost.command(name="resume")
    @app_commands.describe(schedule_id="The number `autopost list` shows")
    @commands.check(admin_check)
    async def resume(self, ctx: commands.Context[Any], schedule_id: int) -> None:
        """Resume a paused auto-post schedule at its next regular time."""
        guild_id = require_guild_id(ctx)
        schedule = await self.poster.resume(guild_id, schedule_id)
        await ctx.send(
            f"Resumed auto-post #{schedule.id}{self._next_text(schedule.id)}.",
            allowed_mentions=NO_MENTIONS,
        )

    @autopost.command(name="remove")
    @app_commands.describe(schedule_id="The number `autopost list` shows")
    @commands.check(admin_check)
    async def remove(self, ctx: commands.Context[Any], schedule_id: int) -> None:
        """Delete an auto-post schedule."""
        guild_id = require_guild_id(ctx)
        schedule = await self.poster.remove(guild_id, schedule_id)
        await ctx.send(f"Removed auto-post #{schedule.id}.", allowed_mentions=NO_MENTIONS)

    @autopost.command(name="timezone")
    @app_commands.describe(name="An IANA time zone such as Europe/Berlin (empty: show the current)")
    @commands.check(admin_check)
    async def timezone(self, ctx: commands.Context[Any], name: str = "") -> None:
        """Show or set the time zone of new `at 09:00` schedules in this server."""
        guild_id = require_guild_id(ctx)
        if not name.strip():
            zone = await self.poster.timezone_for(guild_id)
            await ctx.send(
                f"New auto-posts in this server use the time zone {zone}.",
                allowed_mentions=NO_MENTIONS,
            )
            return
        zone = await self.poster.set_timezone(guild_id, name)
        await ctx.send(
            f"New auto-posts in this server use the time zone {zone}; existing ones keep theirs.",
            allowed_mentions=NO_MENTIONS,
        )

    @commands.hybrid_command(name="post")
    @app_commands.guild_only()
    @app_commands.describe(networks="e.g. `bluesky mastodon` (default: every configured network)")
    @admin_only()
    async def post(self, ctx: commands.Context[Any], *, networks: str = "") -> None:
        """Post this channel's latest !tweet on X, Bluesky or Mastodon (admins)."""
        guild_id = require_guild_id(ctx)
        keys, ai_label = parse_post_networks(networks)
        if not keys:
            keys = tuple(key for key in NETWORKS if configured(self.bot.settings, key))
            if not keys:
                raise InputError(
                    "No network is set up for posting; set the X, Bluesky or Mastodon posting "
                    "settings (see docs/autopost.md)."
                )
        self.poster.check_targets(keys)
        prefix = self.bot.settings.prefix
        tweet = await self.bot.store.latest_shown_tweet(guild_id, ctx.channel.id)
        if tweet is None:
            raise InputError(
                f"There is no tweet to post in this channel yet; make one with `{prefix}tweet`."
            )
        done = [NETWORKS[key] for key in keys if key in tweet.posted_to]
        if done:
            raise InputError(f"That tweet is already on {' and '.join(done)}.")
        if self.bot.settings.public_mentions == "skip" and has_mentions(tweet.text):
            raise InputError(
                "That tweet names accounts, and this bot does not post such tweets publicly; "
                f"make another with `{prefix}tweet`."
            )
        posters = [self.poster.poster(key) for key in keys]
        async with ctx.typing():
            text = await fit_for(tweet.text, posters, ai_label=ai_label)
            posted_to, refused, transient = await post_everywhere(text, posters, ai_label=ai_label)
        if posted_to:
            await self.bot.store.add_posted_to(tweet.id, posted_to)
        lines = [
            f"Posted to {NETWORKS[key]}: <{where}>"
            if where.startswith("https://")
            else f"Posted to {NETWORKS[key]} (id {escape_user_text(where)})."
            for key, where in posted_to.items()
        ]
        if posted_to and text != tweet.text:
            lines.append("It was shortened to fit the strictest network's limit.")
        lines.extend(escape_user_text(problem) for problem in refused + transient)
        await ctx.send("\n".join(lines)[:2000], allowed_mentions=NO_MENTIONS)

    @commands.Cog.listener()
    async def on_command_completion(self, ctx: commands.Context[Any]) -> None:
        """A deleted model takes its schedules with it (in the store); drop their jobs too."""
        if ctx.command is not None and ctx.command.qualified_name == "delete":
            await self.poster.prune()


async def setup(bot: DoppeltweetBot) -> None:
    """Load the auto-posting cog."""
    await bot.add_cog(Autopost(bot))
