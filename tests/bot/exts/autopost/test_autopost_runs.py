"""The auto-poster's runs in virtual time: restarts and missed runs, what gets posted, Discord
refusing, and a model that runs out of new tweets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import simcord
from autopost_world import HOUR, autopost, posts, texts
from discord_world import World, add_trained_model, assemble_bot
from model_fakes import RecordingGenerator

from bot.client import DoppeltweetBot
from bot.config import BotSettings
from bot.formatting import escape_user_text
from bot.store import Store

# -- restarts and missed runs -------------------------------------------------------------------


async def _restart(
    env: simcord.Env,
    settings: BotSettings,
    fake_training: Path,
    generator: Any,
    old: DoppeltweetBot,
) -> tuple[DoppeltweetBot, Store]:
    """Stop the bot's scheduler, then start a new bot on a freshly opened store."""
    await old.autoposter.stop()
    store = await Store.open(settings.db_file)
    bot = assemble_bot(settings, store, generator=generator, python=fake_training)
    await env.restart_bot(bot)
    return bot, store


@pytest.fixture
async def restarted() -> AsyncIterator[list[tuple[DoppeltweetBot, Store]]]:
    """Bots started by a test; their services are stopped afterwards."""
    started: list[tuple[DoppeltweetBot, Store]] = []
    yield started
    for bot, store in started:
        await bot.autoposter.stop()
        await bot.runner.stop()
        await bot.cache.close()
        await store.close()


async def test_a_schedule_survives_a_restart_and_keeps_its_times(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    bot_settings: BotSettings,
    fake_training: Path,
    scripted_generator: RecordingGenerator,
    restarted: list[tuple[DoppeltweetBot, Store]],
) -> None:
    start = simcord_env.now()
    await autopost(world, "@jack #general every 6h")
    await simcord_env.advance_time(6 * HOUR)
    assert len(posts(world)) == 1
    await simcord_env.advance_time(HOUR)
    old = simcord_env.bot
    assert isinstance(old, DoppeltweetBot)
    restarted.append(
        await _restart(simcord_env, bot_settings, fake_training, scripted_generator, old)
    )
    new_bot, _ = restarted[-1]
    assert new_bot is not old
    assert new_bot.autoposter.job_ids() == {1}
    assert new_bot.autoposter.next_run(1) == start + timedelta(hours=12)
    await simcord_env.advance_time(5 * HOUR)
    assert [m.created_at - start for m in posts(world)] == [
        timedelta(hours=6),
        timedelta(hours=12),
    ]
    # The restored schedule keeps excluding what the first bot posted.
    assert len(set(m.embeds[0].description for m in posts(world))) == 2


async def test_an_unreadable_stored_schedule_is_paused_instead_of_stopping_the_start(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    bot_settings: BotSettings,
    fake_training: Path,
    scripted_generator: RecordingGenerator,
    restarted: list[tuple[DoppeltweetBot, Store]],
) -> None:
    broken = await store.add_schedule(
        world.guild.id, "jack", world.channel.id, kind="cron", spec="9 o'clock",
        timezone="UTC", created_by=1,
    )  # fmt: skip
    await autopost(world, "@jack #general every 1h")
    old = simcord_env.bot
    assert isinstance(old, DoppeltweetBot)
    restarted.append(
        await _restart(simcord_env, bot_settings, fake_training, scripted_generator, old)
    )
    new_bot, new_store = restarted[-1]
    assert new_bot.autoposter.job_ids() == {broken.id + 1}
    restored = await new_store.schedule_by_id(broken.id)
    assert restored is not None and restored.paused
    assert restored.paused_reason == "Its schedule could not be read; remove it and add it again."


async def test_runs_missed_while_down_coalesce_into_one_post(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    bot_settings: BotSettings,
    fake_training: Path,
    scripted_generator: RecordingGenerator,
    restarted: list[tuple[DoppeltweetBot, Store]],
) -> None:
    start = simcord_env.now()
    await autopost(world, "@jack #general every 1h")
    old = simcord_env.bot
    assert isinstance(old, DoppeltweetBot)
    await old.autoposter.stop()
    # Down for 3.5 hours: the runs at 1h, 2h and 3h are missed; 3h is within the grace time.
    await simcord_env.advance_time(3.5 * HOUR)
    assert posts(world) == []
    restarted.append(
        await _restart(simcord_env, bot_settings, fake_training, scripted_generator, old)
    )
    await simcord_env.settle()
    [catch_up] = posts(world)
    assert catch_up.created_at - start == timedelta(hours=3.5)
    await simcord_env.advance_time(HOUR)
    assert [m.created_at - start for m in posts(world)] == [
        timedelta(hours=3.5),
        timedelta(hours=4),
    ]


async def test_runs_missed_longer_ago_than_the_grace_time_are_skipped(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    bot_settings: BotSettings,
    fake_training: Path,
    scripted_generator: RecordingGenerator,
    restarted: list[tuple[DoppeltweetBot, Store]],
) -> None:
    start = simcord_env.now()
    await autopost(world, "@jack #general at 09:00")
    old = simcord_env.bot
    assert isinstance(old, DoppeltweetBot)
    await old.autoposter.stop()
    # Down from midnight to 12:00: the 09:00 post is three hours late, beyond the 1 h grace.
    await simcord_env.advance_time(12 * HOUR)
    restarted.append(
        await _restart(simcord_env, bot_settings, fake_training, scripted_generator, old)
    )
    await simcord_env.settle()
    assert posts(world) == []
    await simcord_env.advance_time(21 * HOUR)
    [post] = posts(world)
    assert post.created_at - start == timedelta(hours=33)


# -- what gets posted ---------------------------------------------------------------------------


async def test_posts_never_repeat_and_are_logged(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    scripted_tweets: list[str],
    scripted_generator: RecordingGenerator,
) -> None:
    # A model that can only ever write three different tweets.
    scripted_tweets[:] = ["the first tweet here", "the second one now", "and a third one"]
    await autopost(world, "@jack #general every 1h")
    await simcord_env.advance_time(5 * HOUR)
    descriptions = [m.embeds[0].description for m in posts(world)]
    assert descriptions == scripted_tweets
    # The fourth run has nothing new: the schedule pauses (no fifth run).
    assert [len(e) for e in scripted_generator.excludes] == [0, 1, 2, 3]
    assert scripted_generator.excludes[3] == frozenset(scripted_tweets)
    logged = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert [(t.text, t.schedule_id, t.channel_id, t.x_post_id) for t in reversed(logged)] == [
        (text, 1, world.channel.id, None) for text in scripted_tweets
    ]
    [schedule] = await store.list_schedules(world.guild.id)
    assert schedule.last_run_at == simcord_env.now() - timedelta(hours=2)
    assert schedule.paused


@pytest.mark.simcord(settle_timeout=60)
async def test_the_real_tiny_model_never_repeats_a_post(
    world: World,
    simcord_env: simcord.Env,
    store: Store,
    virtual_clock: Any,
    scripted_generator: RecordingGenerator,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    from training.generation import TweetGenerator

    folder = await add_trained_model(store, world.guild.id, tiny_model_dir, tmp_path / "alice")
    scripted_generator.delegate = TweetGenerator.load(folder)
    await autopost(world, "@alice #general every 10m")
    for _ in range(4):
        await simcord_env.advance_time(10 * 60)
    descriptions = [m.embeds[0].description for m in posts(world)]
    assert len(descriptions) >= 2
    assert len(set(descriptions)) == len(descriptions)
    sizes = [len(e) for e in scripted_generator.excludes]
    assert sizes == sorted(sizes) and sizes[-1] >= len(descriptions) - 1
    posted = await store.posted_texts(world.guild.id, "alice")
    # The log keeps the tweets as written; the embeds show them escaped (a tweet may open
    # with "# ", a Markdown heading).
    assert sorted(escape_user_text(t) for t in posted) == sorted(descriptions)


async def test_a_schedule_removed_while_its_post_is_made_still_logs_the_post(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    scripted_generator: RecordingGenerator,
) -> None:
    loop = asyncio.get_running_loop()
    plain = RecordingGenerator(["a post made while the schedule went away"])

    class RemovesItsSchedule:
        def generate(self, *args: Any, **kwargs: Any) -> Any:
            removal = store.delete_schedule(world.guild.id, 1)
            assert asyncio.run_coroutine_threadsafe(removal, loop).result(timeout=5)
            return plain.generate(*args, **kwargs)

    scripted_generator.delegate = RemovesItsSchedule()
    await autopost(world, "@jack #general every 1h")
    await simcord_env.advance_time(HOUR)
    assert len(posts(world)) == 1
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert (logged.text, logged.schedule_id) == ("a post made while the schedule went away", None)
    await simcord_env.advance_time(2 * HOUR)
    assert len(posts(world)) == 1
    assert simcord_env.bot.autoposter.job_ids() == set()  # type: ignore[attr-defined]


async def test_generated_mentions_in_a_post_ping_nobody(
    world: World, jack: Path, simcord_env: simcord.Env, scripted_tweets: list[str]
) -> None:
    scripted_tweets[:] = ["@everyone <@&1> <@2> wake up"]
    await autopost(world, "@jack #general every 1h")
    await simcord_env.advance_time(HOUR)
    [request] = [
        r
        for r in simcord_env.http_requests
        if r.method == "POST"
        and r.path == f"/channels/{world.channel.id}/messages"
        and r.json.get("embeds")
    ]
    assert request.json["allowed_mentions"] == {"parse": []}
    [post] = posts(world)
    assert post.mentions == [] and post.role_mentions == [] and not post.mention_everyone


# -- Discord errors -----------------------------------------------------------------------------


async def test_missing_permissions_pause_the_schedule_and_tell_the_channel_once(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store
) -> None:
    await autopost(world, "@jack #general every 1h")
    simcord_env.inject_error(
        "POST", f"/channels/{world.channel.id}/messages", status=403, code=50013,
        message="Missing Permissions", times=1,
    )  # fmt: skip
    await simcord_env.advance_time(4 * HOUR)
    assert posts(world) == []
    notices = [t for t in texts(world) if "is paused:" in t]
    assert notices == [
        "Auto-post #1 of **jack** is paused: I may not post in #general any more (missing "
        "permissions). An admin can resume it with `!autopost resume 1`."
    ]
    [schedule] = await store.list_schedules(world.guild.id)
    assert schedule.paused


async def test_a_deleted_channel_pauses_the_schedule(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store
) -> None:
    await autopost(world, "@jack #general every 1h")
    simcord_env.inject_error(
        "POST", f"/channels/{world.channel.id}/messages", status=404, code=10003,
        message="Unknown Channel", times=None,
    )  # fmt: skip
    await simcord_env.advance_time(3 * HOUR)
    [schedule] = await store.list_schedules(world.guild.id)
    assert (schedule.paused, schedule.paused_reason) == (True, "Its channel was deleted.")
    posts_tried = [
        r
        for r in simcord_env.http_requests
        if r.method == "POST" and r.path == f"/channels/{world.channel.id}/messages"
    ]
    assert len(posts_tried) == 2  # the command's reply and one post attempt, then nothing


async def test_a_broken_model_pauses_the_schedule_with_its_sentence(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    scripted_generator: RecordingGenerator,
) -> None:
    from training.errors import ModelError

    class Broken:
        def generate(self, *args: Any, **kwargs: Any) -> Any:
            raise ModelError("The model in jack has no usable tokenizer files; train it again.")

    scripted_generator.delegate = Broken()
    await autopost(world, "@jack #general every 1h")
    await simcord_env.advance_time(3 * HOUR)
    notices = [t for t in texts(world) if "is paused:" in t]
    assert notices == [
        "Auto-post #1 of **jack** is paused: The model in jack has no usable tokenizer files; "
        "train it again. An admin can resume it with `!autopost resume 1`."
    ]


# -- a model that runs out of new tweets -------------------------------------------------------


@pytest.mark.simcord(settle_timeout=600)
@pytest.mark.timeout(900)
async def test_two_hundred_runs_of_the_real_tiny_model_post_two_hundred_distinct_tweets(
    world: World,
    simcord_env: simcord.Env,
    store: Store,
    virtual_clock: Any,
    scripted_generator: RecordingGenerator,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    from training.generation import TweetGenerator

    folder = await add_trained_model(store, world.guild.id, tiny_model_dir, tmp_path / "alice")
    scripted_generator.delegate = TweetGenerator.load(folder)
    await autopost(world, "@alice #general every 10m")
    for _ in range(200):
        await simcord_env.advance_time(10 * 60)
    descriptions = [m.embeds[0].description for m in posts(world)]
    assert len(descriptions) == 200
    assert len(set(descriptions)) == 200
    [schedule] = await store.all_schedules()
    assert not schedule.paused


async def test_a_model_with_nothing_new_to_say_pauses_and_says_so_once(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    scripted_tweets: list[str],
) -> None:
    scripted_tweets[:] = ["the only thing I ever say", "and the other thing I say"]
    await autopost(world, "@jack #general every 1h")
    for _ in range(6):
        await simcord_env.advance_time(HOUR)
    assert [m.embeds[0].description for m in posts(world)] == scripted_tweets
    notices = [t for t in texts(world) if "is paused" in t]
    assert len(notices) == 1
    assert "could not write a tweet it has not posted before" in notices[0]
    assert "`!autopost resume 1`" in notices[0]
    [schedule] = await store.all_schedules()
    assert schedule.paused
