"""``!help``: every command the bot has, with its usage."""

from __future__ import annotations

import simcord
from discord_world import World

from bot.exts.meta import COMMANDS


async def test_help_lists_every_command_with_its_usage(world: World) -> None:
    await world.alice.send(world.channel, "!help")
    embed = world.channel.last_message.embeds[0]
    text = "\n".join(field.value for field in embed.fields)
    assert "`!train @handle [@handle2 @handle3]`" in text
    assert "`!tweet [@handle] [prompt]`" in text
    assert [field.name for field in embed.fields] == [
        "Commands",
        "Admins (Manage Server)",
        "Your X archive",
    ]


async def test_help_says_which_archive_files_to_attach_before_the_limit_bites(
    world: World,
) -> None:
    await world.alice.send(world.channel, "!help")
    archive = world.channel.last_message.embeds[0].fields[-1].value
    assert "at most 10 MB each" in archive
    for name in ("`data/`", "`tweets.js`", "`note-tweet.js`", "`tweets-part1.js`"):
        assert name in archive
    assert "`!train @handle`" in archive


async def test_help_documents_exactly_the_registered_commands(simcord_env: simcord.Env) -> None:
    documented = {usage.split()[0] for usage, _, _ in COMMANDS}
    registered = {command.name for command in simcord_env.bot.commands}  # type: ignore[attr-defined]
    assert documented == registered


async def test_commands_table_in_the_docs_matches_the_help(simcord_env: simcord.Env) -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "commands.md").read_text(encoding="utf-8")
    for usage, _, _ in COMMANDS:
        assert f"`!{usage.split()[0]}" in doc, usage
