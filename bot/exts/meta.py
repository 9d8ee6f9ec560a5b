"""``!help``: what the bot can do, in one message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.formatting import NO_MENTIONS

if TYPE_CHECKING:
    from bot.client import DoppeltweetBot

#: (usage, what it does, admin only) — the order ``!help`` and docs/commands.md show them in.
COMMANDS: tuple[tuple[str, str, bool], ...] = (
    (
        "train @handle [@handle2 @handle3]",
        "Train a model from your attached X archive (zip, or the .js files from its data/ "
        "folder), a Mastodon archive, a CSV, JSONL or .txt file (one post per line), from "
        "bluesky:name.bsky.social or mastodon:@name@server handles, or add `api` to read the "
        "paid X API.",
        False,
    ),
    (
        "train me",
        "Train a model of yourself from your own messages in this server's channels.",
        False,
    ),
    (
        "forgetme",
        "Delete your own `train me` model and every copy of your messages the bot kept.",
        False,
    ),
    ("tweet [@handle] [prompt]", "Generate a tweet with a model of this server.", False),
    ("models", "List this server's models.", False),
    (
        "jobs",
        "Show the running jobs and your queued ones with when they are expected to start.",
        False,
    ),
    ("jobs all", "Show every queued job of this server with when it is expected to start.", True),
    ("cancel [job id]", "Cancel your queued or running training job (admins: any job).", False),
    ("help", "Show this message.", False),
    ("retrain @handle", "Train a model again from the same sources as last time.", True),
    ("delete @handle", "Delete a model of this server.", True),
    ("trainme on|off", "Allow or forbid `train me` in this server (on by default).", True),
    (
        "autopost @handle #channel every 6h",
        "Post generated tweets on a schedule (`at 09:00 mon,thu`, `--to-x`, `--jitter 10m`, "
        "`--tz Europe/Berlin`); `autopost list`, `pause ID`, `resume ID`, `remove ID`, "
        "`timezone [NAME]`.",
        True,
    ),
    (
        "post [x] [bluesky] [mastodon]",
        "Post this channel's latest `tweet` on those networks (default: every configured one; "
        "`--no-ai-label`).",
        True,
    ),
    ("sync", "Publish the slash commands to Discord (bot owner only).", True),
)


def archive_help(prefix: str, max_attachment_mb: float) -> str:
    """Which files of an X archive to attach, for the archives over the upload limit."""
    return (
        f"Discord attachments here are at most {max_attachment_mb:g} MB each, and a whole X "
        "archive with media is bigger. Unzip it, open its `data/` folder and attach `tweets.js` "
        "(2020 archives: `tweet.js`), plus `note-tweet.js` and any `tweets-part1.js`… files, "
        f"together to one `{prefix}train @handle` message."
    )


def help_embed(prefix: str, max_attachment_mb: float = 10) -> discord.Embed:
    """Every command with its usage; the same text works for ``!`` and ``/`` commands."""
    embed = discord.Embed(
        title="doppeltweet",
        description="Learns to tweet like a person. Every command also works as a slash command.",
        colour=discord.Colour.blurple(),
    )
    for admin in (False, True):
        lines = [
            f"`{prefix}{usage}` — {text}" for usage, text, is_admin in COMMANDS if is_admin is admin
        ]
        embed.add_field(
            name="Admins (Manage Server)" if admin else "Commands",
            value="\n".join(lines),
            inline=False,
        )
    embed.add_field(
        name="Your X archive", value=archive_help(prefix, max_attachment_mb), inline=False
    )
    embed.set_footer(text="Generated tweets are AI-generated and marked as such.")
    return embed


class Meta(commands.Cog):
    """Commands about the bot itself."""

    def __init__(self, bot: DoppeltweetBot) -> None:
        self.bot = bot

    @commands.hybrid_command(name="help")
    async def help(self, ctx: commands.Context[Any]) -> None:
        """Show what the bot can do."""
        settings = self.bot.settings
        await ctx.send(
            embed=help_embed(settings.prefix, settings.max_attachment_mb),
            allowed_mentions=NO_MENTIONS,
        )


async def setup(bot: DoppeltweetBot) -> None:
    """Load the meta cog."""
    await bot.add_cog(Meta(bot))
