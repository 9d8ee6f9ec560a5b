"""DoppeltweetBot: intents, no pings, the services it owns, restarts, and its error handler."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import discord
import pytest
import simcord
from discord.ext import commands
from discord_world import World, add_model, assemble_bot
from service_fakes import dead_pid

from bot.client import GENERIC_ERROR, DoppeltweetBot, create_bot, error_sentence
from bot.config import BotSettings
from bot.model_cache import ModelCache
from bot.store import Store
from training.errors import DataError, InputError
from training.handles import parse_handles


def test_the_bot_asks_for_exactly_the_intents_it_needs(bot_settings: BotSettings) -> None:
    bot = create_bot(bot_settings)
    expected = discord.Intents.none()
    expected.guilds = expected.guild_messages = expected.message_content = True
    assert bot.intents == expected
    assert not bot.intents.members and not bot.intents.presences


def test_the_bot_pings_nobody_by_default(bot_settings: BotSettings) -> None:
    bot = create_bot(bot_settings)
    assert bot.allowed_mentions is not None
    assert bot.allowed_mentions.to_dict() == {"parse": []}
    assert bot.command_prefix == "!"


async def test_a_bot_without_given_services_opens_and_closes_its_own(
    bot_settings: BotSettings,
) -> None:
    # Migrate first: under simcord the PRAGMA cursors of a fresh migration outlive their
    # statements and SQLite refuses the migration's COMMIT (outside simcord they are freed).
    await (await Store.open(bot_settings.db_file)).close()
    bot = create_bot(bot_settings)
    async with simcord.run(bot) as env:
        guild = env.create_guild()
        channel = guild.create_text_channel("general")
        alice = guild.add_member(env.create_user("alice"))
        await alice.send(channel, "!models")
        assert channel.last_message.content.startswith("This server has no models yet")
        assert isinstance(bot.store, Store) and isinstance(bot.cache, ModelCache)
    assert bot_settings.db_file.is_file()
    await bot.close()
    await bot.close()  # a signal handler and `async with bot` may both close it
    with pytest.raises(ValueError):  # the bot's own connection is closed
        await bot.store.list_models(1)


async def _restart(
    env: simcord.Env, store: Store, settings: BotSettings, fake_training: Path, generator: Any
) -> DoppeltweetBot:
    """A new bot process on the same database (the old one died without cleaning up)."""
    bot = assemble_bot(settings, store, generator=generator, python=fake_training)
    await env.restart_bot(bot)
    return bot


async def _left_running(store: Store, world: World, *, restarts: int) -> int:
    job = await store.create_job(
        world.guild.id, world.channel.id, world.alice.id, "jack",
        handles=parse_handles(["jack"]), sources=["bluesky"],
    )  # fmt: skip
    await store.mark_job_running(job.id, dead_pid())
    for _ in range(restarts):
        await store.requeue_job(job.id, count_restart=True)
        await store.mark_job_running(job.id, dead_pid())
    return job.id


async def test_after_a_restart_a_job_left_running_is_trained_again_and_reported(
    world: World,
    store: Store,
    bot_settings: BotSettings,
    simcord_env: simcord.Env,
    fake_training: Path,
    scripted_generator: Any,
) -> None:
    job_id = await _left_running(store, world, restarts=0)
    bot = await _restart(simcord_env, store, bot_settings, fake_training, scripted_generator)
    try:
        await simcord_env.settle()
        status, report = world.bot_messages()[0], world.bot_messages()[-1]
        assert status.content == f"**Job #{job_id} · jack** — Done"
        queued_edit = next(
            r.json for r in simcord_env.http_requests if r.method in ("POST", "PATCH")
        )
        assert (
            "The bot restarted while training; the job is queued again." in (queued_edit["content"])
        )
        assert report.content.startswith("**jack** is trained.")
        [job] = await store.recent_jobs(world.guild.id)
        assert (job.state, job.restarts) == ("succeeded", 1)
    finally:
        await bot.runner.stop()


async def test_after_a_second_restart_the_job_fails_with_one_sentence(
    world: World,
    store: Store,
    bot_settings: BotSettings,
    simcord_env: simcord.Env,
    fake_training: Path,
    scripted_generator: Any,
) -> None:
    job_id = await _left_running(store, world, restarts=1)
    bot = await _restart(simcord_env, store, bot_settings, fake_training, scripted_generator)
    try:
        # One status message says why (no second failure message).
        [status] = world.bot_messages()
        assert status.content == (
            f"**Job #{job_id} · jack** — Failed: The bot restarted while training; the job had "
            "already been restarted once, so start it again with !train."
        )
        # The restarted bot answers commands as before.
        await add_model(store, bot_settings, world.guild.id, "bob")
        await world.alice.send(world.channel, "!tweet")
        assert world.channel.last_message.embeds[0].footer.text.endswith("· bob")
    finally:
        await bot.runner.stop()


async def test_an_unexpected_error_is_logged_and_answered_with_a_generic_sentence(
    world: World,
    store: Store,
    bot_settings: BotSettings,
    scripted_generator: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await add_model(store, bot_settings, world.guild.id, "jack")
    scripted_generator.error = RuntimeError("the model code has a bug")
    with caplog.at_level(logging.ERROR, logger="bot.client"):
        await world.alice.send(world.channel, "!tweet")
    assert world.last_text() == GENERIC_ERROR
    assert world.handled_errors() == [RuntimeError]
    [record] = [r for r in caplog.records if r.name == "bot.client"]
    assert record.message == "command tweet failed"
    assert "the model code has a bug" in str(record.exc_info[1])


async def test_an_unknown_command_gets_no_answer(world: World) -> None:
    await world.alice.send(world.channel, "!dance")
    assert world.bot_messages() == []


class _Response:
    """What discord.HTTPException reads from an aiohttp response."""

    reason = "Bad Request"

    def __init__(self, status: int) -> None:
        self.status = status


class _Ctx:
    """The two attributes error_sentence reads from a Context."""

    clean_prefix = "!"

    def __init__(self, name: str) -> None:
        self.command = type("Command", (), {"qualified_name": name})()


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (
            InputError("Name at least one handle, e.g. @jack."),
            "Name at least one handle, e.g. @jack.",
        ),
        (
            commands.CommandInvokeError(DataError("Too few tweets are left.")),
            "Too few tweets are left.",
        ),
        (
            commands.CommandOnCooldown(commands.Cooldown(1, 10), 7.4, commands.BucketType.user),
            "Slow down: you can use `!tweet` again in 7 s.",
        ),
        (commands.NotOwner(), "Only the bot's owner can do that."),
        (commands.NoPrivateMessage(), "That command works only in a server."),
        (
            commands.MissingPermissions(["manage_guild"]),
            "You are missing Manage Server permission(s) to run this command.",
        ),
        (
            commands.BadArgument('Converting to "int" failed.'),
            'Converting to "int" failed; see `!help` for how to use `!tweet`.',
        ),
        (
            commands.CommandInvokeError(
                discord.HTTPException(_Response(400), {"message": "Bad", "code": 50035})
            ),
            "Discord refused one of my requests for `!tweet` (HTTP 400); anything the command "
            "did before that still stands.",
        ),
        (commands.CommandInvokeError(KeyError("oops")), None),
    ],
    ids=[
        "doppeltweet", "wrapped", "cooldown", "owner", "dm", "permissions", "bad-arg",
        "refused-reply", "bug",
    ],
)  # fmt: skip
def test_each_command_error_becomes_one_sentence(error: Exception, sentence: str | None) -> None:
    assert error_sentence(_Ctx("tweet"), error) == sentence  # type: ignore[arg-type]


def test_a_bad_argument_never_echoes_a_mention() -> None:
    error = commands.BadArgument("<@123456789012345678> is not a number")
    text = error_sentence(_Ctx("cancel"), error)  # type: ignore[arg-type]
    assert text is not None and "<@123456789012345678>" not in text


def test_an_error_sentence_quoting_user_input_never_mentions() -> None:
    error = InputError("“@everyone <@&1>” is not an X handle.")
    text = error_sentence(_Ctx("train"), error)  # type: ignore[arg-type]
    assert text is not None
    assert "@everyone" not in text and "<@&1>" not in text
