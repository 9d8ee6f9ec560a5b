"""``!autopost`` and the auto-poster against a simulated Discord, in virtual time.

simcord runs the bot's timers on a virtual clock (``env.advance_time``). APScheduler reads the wall
clock (``datetime.now``) to decide which jobs are due, so the ``virtual_clock`` fixture points it,
and the store's and scheduler's timestamps, at simcord's clock: the real ``AsyncIOScheduler`` with
the real triggers then decides when to post, and a test only moves time forward.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import discord
import pytest
import responses
import simcord
import vcr
from discord_world import World, add_model, add_trained_model
from fake_networks import FakeNetwork, bluesky, mastodon, serve
from pydantic import SecretStr

from bot.client import DoppeltweetBot, create_bot
from bot.config import BotSettings
from bot.jobs import JobRunner
from bot.model_cache import ModelCache
from bot.store import Store

HOUR = 3600
CASSETTES = Path(__file__).resolve().parents[2] / "fixtures" / "tweepy_cassettes"
X_TWEETS_URL = "https://api.twitter.com/2/tweets"


class _VirtualDatetimeMeta(type):
    """Makes the stand-in class behave like ``datetime`` for everything but ``now``."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, datetime)

    def __getattr__(cls, name: str) -> Any:
        return getattr(datetime, name)

    def __call__(cls, *args: Any, **kwargs: Any) -> datetime:
        return datetime(*args, **kwargs)


def virtual_datetime(env: simcord.Env) -> type:
    """A ``datetime`` whose ``now`` is simcord's virtual instant."""

    class VirtualDatetime(metaclass=_VirtualDatetimeMeta):
        @staticmethod
        def now(tz: Any = None) -> datetime:
            current = env.now()
            return current.astimezone(tz) if tz is not None else current.replace(tzinfo=None)

    return VirtualDatetime


@pytest.fixture
def virtual_clock(simcord_env: simcord.Env, monkeypatch: pytest.MonkeyPatch) -> simcord.Env:
    """APScheduler, the store and the scheduler tell time by simcord's virtual clock."""
    import apscheduler.executors.base
    import apscheduler.schedulers.base

    import bot.scheduler
    import bot.store

    clock = virtual_datetime(simcord_env)
    for module in (
        apscheduler.schedulers.base,
        apscheduler.executors.base,
        bot.store,
        bot.scheduler,
    ):
        monkeypatch.setattr(module, "datetime", clock)
    return simcord_env


class RecordingGenerator:
    """A model that writes the first scripted tweet not excluded, recording every ``exclude``.

    With ``delegate`` set (a real TweetGenerator) it generates with that model instead.
    """

    memory_bytes = 1

    def __init__(self, tweets: list[str]) -> None:
        self.tweets = tweets
        self.excludes: list[frozenset[str]] = []
        self.prompts: list[str] = []
        self.delegate: Any = None

    def generate(
        self, prompt: str, *, n: int = 1, seed: int | None = None, exclude: Collection[str] = ()
    ) -> Any:
        from training.generate import GenerationResult

        self.excludes.append(frozenset(exclude))
        self.prompts.append(prompt)
        if self.delegate is not None:
            return self.delegate.generate(prompt, n=n, seed=seed, exclude=exclude)
        fresh = [t for t in self.tweets if t not in set(exclude)]
        return GenerationResult(
            prompt=prompt,
            tweets=fresh[:n],
            candidates=len(self.tweets),
            rejected=len(self.tweets) - len(fresh),
        )


@pytest.fixture
def scripted_tweets() -> list[str]:
    return [f"tweet number {i} about the moon" for i in range(1, 9)]


@pytest.fixture
def scripted_generator(scripted_tweets: list[str]) -> RecordingGenerator:
    return RecordingGenerator(scripted_tweets)


@pytest.fixture
def bot_settings(tmp_path: Path) -> BotSettings:
    """The bot's test settings with (fake) X posting credentials."""
    return BotSettings(
        _env_file=None,
        data_dir=tmp_path / "data",
        owner_ids="42",
        cancel_grace_s=2,
        progress_edit_interval_s=1,
        x_consumer_key="consumer-key",
        x_consumer_secret="consumer-secret",
        x_access_token="access-token",
        x_access_token_secret="access-token-secret",
    )


@pytest.fixture
async def jack(world: World, store: Store, bot_settings: BotSettings, virtual_clock: Any) -> Path:
    """A model of @jack in the test server (recorded at the virtual time)."""
    return await add_model(store, bot_settings, world.guild.id, "jack")


def posts(world: World) -> list[discord.Message]:
    """The bot's tweet-style posts in the channel."""
    return [m for m in world.bot_messages() if m.embeds]


def texts(world: World) -> list[str]:
    return [m.content for m in world.bot_messages() if not m.embeds]


async def autopost(world: World, args: str) -> str:
    await world.admin.send(world.channel, f"!autopost {args}")
    return world.last_text()


# -- creating schedules -------------------------------------------------------------------------


async def test_a_six_hour_schedule_posts_on_time_every_six_hours(
    world: World, jack: Path, simcord_env: simcord.Env
) -> None:
    start = simcord_env.now()
    reply = await autopost(world, "@jack #general every 6h")
    assert reply.startswith("Auto-post #1: **jack** in <#")
    assert "every 6h" in reply
    assert f"<t:{int((start + timedelta(hours=6)).timestamp())}:f>" in reply
    await simcord_env.advance_time(6 * HOUR - 1)
    assert posts(world) == []
    await simcord_env.advance_time(1)
    [first] = posts(world)
    assert first.created_at == start + timedelta(hours=6)
    assert first.embeds[0].author.name == "jack (@jack)"
    assert first.embeds[0].footer.text == "AI-generated by doppeltweet · jack"
    await simcord_env.advance_time(12 * HOUR)
    assert [m.created_at - start for m in posts(world)] == [
        timedelta(hours=6),
        timedelta(hours=12),
        timedelta(hours=18),
    ]


async def test_a_daily_time_posts_at_that_time_in_the_servers_time_zone(
    world: World, jack: Path, simcord_env: simcord.Env
) -> None:
    # simcord's clock starts at 2026-01-01 00:00 UTC, i.e. 01:00 in Berlin (UTC+1 in winter).
    assert await autopost(world, "timezone") == (
        "New auto-posts in this server use the time zone UTC."
    )
    assert await autopost(world, "timezone Europe/Berlin") == (
        "New auto-posts in this server use the time zone Europe/Berlin; existing ones keep theirs."
    )
    reply = await autopost(world, "@jack #general at 09:00")
    assert "daily at 09:00 (Europe/Berlin)" in reply
    await simcord_env.advance_time(8 * HOUR - 1)
    assert posts(world) == []
    await simcord_env.advance_time(1)
    [post] = posts(world)
    assert post.created_at == datetime.fromisoformat("2026-01-01T08:00:00+00:00")
    await simcord_env.advance_time(24 * HOUR)
    assert len(posts(world)) == 2


async def test_a_schedule_may_name_its_own_time_zone(
    world: World, jack: Path, simcord_env: simcord.Env
) -> None:
    reply = await autopost(world, "@jack #general at 09:00 --tz Asia/Tokyo")
    assert "daily at 09:00 (Asia/Tokyo)" in reply
    await simcord_env.advance_time(24 * HOUR)
    [post] = posts(world)
    assert post.created_at == datetime.fromisoformat("2026-01-01T00:00:00+00:00") + timedelta(
        hours=24
    )


async def test_weekdays_limit_a_daily_time(
    world: World, jack: Path, simcord_env: simcord.Env
) -> None:
    # 2026-01-01 is a Thursday; "mon" first fires on Monday 2026-01-05.
    await autopost(world, "@jack #general at 09:00 mon")
    await simcord_env.advance_time(4 * 24 * HOUR)
    assert posts(world) == []
    await simcord_env.advance_time(9 * HOUR)
    [post] = posts(world)
    assert post.created_at == datetime.fromisoformat("2026-01-05T09:00:00+00:00")


async def test_jitter_delays_a_post_by_at_most_the_jitter(
    world: World, jack: Path, simcord_env: simcord.Env
) -> None:
    start = simcord_env.now()
    await autopost(world, "@jack #general every 1h --jitter 10m")
    await simcord_env.advance_time(HOUR + 10 * 60)
    [post] = posts(world)
    assert timedelta(hours=1) <= post.created_at - start <= timedelta(hours=1, minutes=10)


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        ("@nobody #general every 6h", "This server has no model of @nobody; train one with "),
        ("@jack #general every 5m", "Auto-posts must be at least 10m apart, so “5m” is too often."),
        ("@jack #general every soon", "“soon” is not a duration such as 30m, 6h or 1d."),
        ("@jack #general at 25:00", "“25:00” is not a time of day such as 09:00 or 21:30."),
        ("@jack #general at 09:00 funday", "“funday” is not a list of weekdays such as "),
        ("@jack #general every 6h --loud", "I do not understand “--loud”; write `every 6h` "),
        ("@jack #general", "Say when to post: write `every 6h`"),
        ("@jack #nowhere every 6h", "This server has no text channel #nowhere."),
        ("@jack #general every 1h --jitter 45m", "The jitter may be at most 30m for this "),
    ],
    ids=[
        "unknown-model",
        "too-often",
        "bad-interval",
        "bad-time",
        "bad-days",
        "bad-option",
        "no-when",
        "unknown-channel",
        "jitter-too-long",
    ],
)
async def test_bad_input_gets_one_sentence_and_no_schedule(
    world: World, jack: Path, store: Store, args: str, sentence: str
) -> None:
    reply = await autopost(world, args)
    assert reply.startswith(sentence), reply
    assert reply.count(". ") == 0
    assert await store.list_schedules(world.guild.id) == []
    assert world.handled_errors()


async def test_an_unknown_time_zone_is_one_sentence(world: World, jack: Path, store: Store) -> None:
    assert await autopost(world, "timezone Mars/Olympus") == (
        "“Mars/Olympus” is not a time zone such as Europe/Berlin."
    )
    assert await store.get_guild_setting(world.guild.id, "timezone") is None
    world.handled_errors()


async def test_a_server_may_have_at_most_ten_schedules(
    world: World, jack: Path, store: Store
) -> None:
    for hour in range(10):
        assert (await autopost(world, f"@jack #general at {hour:02d}:00")).startswith("Auto-post")
    assert await autopost(world, "@jack #general at 11:00") == (
        "This server already has 10 auto-posts; remove one with `!autopost remove ID` first."
    )
    assert len(await store.list_schedules(world.guild.id)) == 10
    world.handled_errors()


async def test_a_channel_of_another_server_is_refused(
    world: World, jack: Path, store: Store, simcord_env: simcord.Env
) -> None:
    other = simcord_env.create_guild("Other").create_text_channel("elsewhere")
    reply = await autopost(world, f"@jack {other.mention} every 6h")
    assert reply == "That channel is not in this server; pick one of its text channels."
    assert await store.list_schedules(world.guild.id) == []
    world.handled_errors()


async def test_a_channel_the_bot_cannot_post_in_is_refused(
    world: World, jack: Path, store: Store
) -> None:
    me = world.guild.me
    assert me is not None
    world.guild.create_text_channel(
        "quiet", overwrites={me: discord.PermissionOverwrite(send_messages=False)}
    )
    reply = await autopost(world, "@jack #quiet every 6h")
    assert reply == "I cannot post in #quiet; give me the Send Messages permission there."
    assert await store.list_schedules(world.guild.id) == []
    world.handled_errors()


async def test_posting_to_x_without_credentials_is_refused(
    world: World, jack: Path, store: Store, simcord_env: simcord.Env
) -> None:
    simcord_env.bot.settings.x_access_token = None  # type: ignore[attr-defined]
    reply = await autopost(world, "@jack #general every 6h --to-x")
    assert reply == (
        "Posting to X needs X_CONSUMER_KEY, X_CONSUMER_SECRET, X_ACCESS_TOKEN and "
        "X_ACCESS_TOKEN_SECRET in the bot's configuration."
    )
    assert await store.list_schedules(world.guild.id) == []
    world.handled_errors()


async def test_only_admins_may_schedule_posts(
    world: World, jack: Path, store: Store, simcord_env: simcord.Env
) -> None:
    await world.alice.send(world.channel, "!autopost @jack #general every 6h")
    assert world.last_text() == "Only members with the Manage Server permission can do that."
    await world.alice.send(world.channel, "!autopost list")
    assert world.last_text() == "Only members with the Manage Server permission can do that."
    assert await store.list_schedules(world.guild.id) == []
    world.handled_errors()


# -- list, pause, resume, remove ----------------------------------------------------------------


async def test_list_pause_resume_and_remove(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store
) -> None:
    start = simcord_env.now()
    await autopost(world, "@jack #general every 6h")
    await autopost(world, "@jack #general at 09:00 mon --jitter 5m")
    listing = (await autopost(world, "list")).splitlines()
    assert listing[0] == "**Auto-posts in this server** (2):"
    assert listing[1].startswith(f"• #1 **jack** in <#{world.channel.id}> every 6h — active; next")
    assert listing[2].startswith(
        f"• #2 **jack** in <#{world.channel.id}> on mon at 09:00 (UTC), up to 5m later"
    )

    assert await autopost(world, "pause 1") == (
        "Paused auto-post #1; resume it with `!autopost resume 1`."
    )
    assert (await autopost(world, "list")).splitlines()[1].endswith("— paused: Paused by ada.")
    await simcord_env.advance_time(7 * HOUR)
    assert posts(world) == []

    reply = await autopost(world, "resume 1")
    # It resumes on its own grid (created + 6h, +12h, …), not at once.
    assert reply == (
        f"Resumed auto-post #1; next post <t:{int((start + timedelta(hours=12)).timestamp())}:f>."
    )
    await simcord_env.advance_time(5 * HOUR)
    assert [m.created_at - start for m in posts(world)] == [timedelta(hours=12)]

    assert await autopost(world, "remove 1") == "Removed auto-post #1."
    assert [s.id for s in await store.list_schedules(world.guild.id)] == [2]
    assert simcord_env.bot.autoposter.job_ids() == {2}  # type: ignore[attr-defined]
    await simcord_env.advance_time(6 * HOUR)
    assert len(posts(world)) == 1


async def test_an_unknown_or_foreign_schedule_id_is_one_sentence(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store, bot_settings: BotSettings
) -> None:
    other = simcord_env.create_guild("Other")
    await add_model(store, bot_settings, other.id, "jack")
    foreign = await store.add_schedule(
        other.id, "jack", 1, kind="interval", spec="6h", timezone="UTC", created_by=1
    )
    for command in ("pause", "resume", "remove"):
        assert await autopost(world, f"{command} {foreign.id}") == (
            f"This server has no auto-post #{foreign.id}; `!autopost list` shows them."
        )
    assert (await store.schedule_by_id(foreign.id)) == foreign
    world.handled_errors()


async def test_deleting_the_model_removes_its_schedules_and_jobs(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store
) -> None:
    await autopost(world, "@jack #general every 6h")
    assert simcord_env.bot.autoposter.job_ids() == {1}  # type: ignore[attr-defined]
    await world.admin.send(world.channel, "!delete @jack")
    assert world.last_text() == "Deleted the model **jack**."
    assert await store.list_schedules(world.guild.id) == []
    assert simcord_env.bot.autoposter.job_ids() == set()  # type: ignore[attr-defined]
    await simcord_env.advance_time(7 * HOUR)
    assert posts(world) == []


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
    runner = JobRunner(store, settings, python=str(fake_training))
    cache = ModelCache(2, 1 << 30, loader=lambda path: generator)
    bot = create_bot(settings, store=store, runner=runner, cache=cache)
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
    from training.generate import TweetGenerator

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
    assert sorted(posted) == sorted(m.embeds[0].description for m in posts(world))


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


# -- X --------------------------------------------------------------------------------------------


async def test_a_post_also_goes_to_x_with_the_ai_label(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store, scripted_tweets: list[str]
) -> None:
    scripted_tweets[:] = ["Test Tweet"]
    await autopost(world, "@jack #general every 6h --to-x")
    sent: list[Any] = []

    def seen(request: Any) -> Any:
        if request.method == "POST":
            sent.append(json.loads(request.body))
        return request

    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        decode_compressed_response=True,
        match_on=["method", "uri"],
        before_record_request=seen,
    )
    with recorder.use_cassette("test_client_create_and_delete_tweet.yaml") as cassette:
        await simcord_env.advance_time(6 * HOUR)
    assert cassette.play_count == 1
    assert sent[-1] == {"text": "Test Tweet 🤖 AI-generated"}
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert logged.x_post_id == "1456012973835788293"
    assert len(posts(world)) == 1


@pytest.mark.parametrize("mode", ["neutralise", "skip"])
async def test_generated_mentions_never_reach_x_as_live_mentions(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    scripted_tweets: list[str],
    bot_settings: BotSettings,
    mode: str,
) -> None:
    bot_settings.public_mentions = mode  # type: ignore[assignment]
    scripted_tweets[:] = ["@jack Test Tweet"]
    await autopost(world, "@jack #general every 6h --to-x")
    sent: list[Any] = []

    def seen(request: Any) -> Any:
        if request.method == "POST":
            sent.append(json.loads(request.body))
        return request

    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        decode_compressed_response=True,
        match_on=["method", "uri"],
        before_record_request=seen,
    )
    with recorder.use_cassette("test_client_create_and_delete_tweet.yaml") as cassette:
        await simcord_env.advance_time(6 * HOUR)
    assert len(posts(world)) == 1  # the channel gets it either way, pinging nobody
    if mode == "neutralise":
        assert cassette.play_count == 1
        assert sent[-1] == {"text": "@\u200bjack Test Tweet 🤖 AI-generated"}
    else:
        assert cassette.play_count == 0  # nothing was posted to X
        [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
        assert logged.x_post_id is None


async def test_no_ai_label_posts_the_text_as_generated(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store, scripted_tweets: list[str]
) -> None:
    scripted_tweets[:] = ["Test Tweet"]
    await autopost(world, "@jack #general every 6h --to-x --no-ai-label")
    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        decode_compressed_response=True,
        match_on=["method", "uri", "body"],
    )
    with recorder.use_cassette("test_client_create_and_delete_tweet.yaml") as cassette:
        await simcord_env.advance_time(6 * HOUR)
    assert cassette.play_count == 1
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert logged.x_post_id == "1456012973835788293"


@pytest.fixture
def x_api() -> Iterator[responses.RequestsMock]:
    """Synthetic X answers; any request to another address fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.mark.parametrize(
    ("status", "body", "sentence"),
    [
        (
            401,
            {
                "title": "Unauthorized",
                "type": "about:blank",
                "status": 401,
                "detail": "Unauthorized",
            },
            "X rejected the posting credentials (401 Unauthorized)",
        ),
        (
            402,
            {
                "title": "CreditsDepleted",
                "detail": "Your enrolled account does not have any credits",
            },
            "X says the account's API credits are used up (402 Payment Required)",
        ),
        (
            403,
            {"detail": "You are not permitted to perform this action.", "status": 403},
            "X refused the post (403 Forbidden)",
        ),
        (
            429,
            {"title": "Too Many Requests", "detail": "Too Many Requests", "status": 429},
            "X's rate limit for posting was reached (429 Too Many Requests)",
        ),
    ],
    ids=["401", "402", "403", "429"],
)
async def test_an_x_error_pauses_the_schedule_and_tells_the_channel_once(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    x_api: responses.RequestsMock,
    status: int,
    body: dict[str, Any],
    sentence: str,
) -> None:
    x_api.add(responses.POST, X_TWEETS_URL, json=body, status=status)
    await autopost(world, "@jack #general every 1h --to-x")
    await simcord_env.advance_time(5 * HOUR)
    assert len(x_api.calls) == 1
    assert len(posts(world)) == 1  # the Discord post went out before X refused
    [notice] = [t for t in texts(world) if "is paused:" in t]
    assert notice.startswith(f"Auto-post #1 of **jack** is paused: {sentence}")
    assert notice.endswith("An admin can resume it with `!autopost resume 1`.")
    [schedule] = await store.list_schedules(world.guild.id)
    assert (
        schedule.paused and schedule.paused_reason and schedule.paused_reason.startswith(sentence)
    )
    assert "consumer-secret" not in notice and "access-token-secret" not in notice
    assert simcord_env.bot.autoposter.job_ids() == set()  # type: ignore[attr-defined]


async def test_an_x_outage_does_not_pause_the_schedule(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store, x_api: responses.RequestsMock
) -> None:
    x_api.add(responses.POST, X_TWEETS_URL, json={"title": "Service Unavailable"}, status=503)
    x_api.add(responses.POST, X_TWEETS_URL, json={"data": {"id": "77", "text": "x"}}, status=201)
    await autopost(world, "@jack #general every 1h --to-x")
    await simcord_env.advance_time(2 * HOUR)
    [schedule] = await store.list_schedules(world.guild.id)
    assert not schedule.paused
    logged = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert [t.x_post_id for t in reversed(logged)] == [None, "77"]
    assert not [t for t in texts(world) if "paused" in t]


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


# -- slash commands -----------------------------------------------------------------------------


@pytest.mark.simcord(strict_sync=False)
async def test_slash_autopost_add_and_list(
    world: World, jack: Path, simcord_env: simcord.Env
) -> None:
    group = simcord_env.bot.tree.get_command("autopost")  # type: ignore[attr-defined]
    assert group.default_permissions == discord.Permissions(manage_guild=True)
    assert group.guild_only
    result = await world.admin.slash(
        world.channel, "autopost add", handle="@jack", channel="#general", schedule="every 6h"
    )
    assert result.response.content.startswith("Auto-post #1: **jack** in <#")
    listing = await world.admin.slash(world.channel, "autopost list")
    assert listing.response.content.splitlines()[1].startswith("• #1 **jack** in <#")
    await simcord_env.advance_time(6 * HOUR)
    assert len(posts(world)) == 1


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
    from training.generate import TweetGenerator

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


# -- Bluesky and Mastodon -----------------------------------------------------------------------

BSKY_CREATE = "/xrpc/com.atproto.repo.createRecord"
BSKY_SESSION = "/xrpc/com.atproto.server.createSession"
STATUSES = "/api/v1/statuses"


@pytest.fixture
def pds(bot_settings: BotSettings) -> Iterator[FakeNetwork]:
    """A Bluesky PDS on 127.0.0.1, configured as the bot's Bluesky account."""
    with serve(bluesky()) as network:
        bot_settings.bluesky_handle = "doppel.bsky.social"
        bot_settings.bluesky_app_password = SecretStr("app-password-secret")
        bot_settings.bluesky_service = network.url
        yield network


@pytest.fixture
def instance(bot_settings: BotSettings) -> Iterator[FakeNetwork]:
    """A Mastodon server on 127.0.0.1 (limit 500), configured as the bot's Mastodon account."""
    with serve(mastodon(max_characters=500)) as network:
        bot_settings.mastodon_instance = network.url
        bot_settings.mastodon_access_token = SecretStr("mastodon-token-secret")
        yield network


async def test_a_post_also_goes_to_bluesky_and_mastodon_with_the_ai_label(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    scripted_tweets: list[str],
    pds: FakeNetwork,
    instance: FakeNetwork,
) -> None:
    scripted_tweets[:] = ["the moon is a cheese"]
    reply = await autopost(world, "@jack #general every 6h --to-bluesky --to-mastodon")
    assert "every 6h, also to Bluesky and Mastodon" in reply
    await simcord_env.advance_time(6 * HOUR)
    assert len(posts(world)) == 1
    [record] = pds.calls("POST", BSKY_CREATE)
    assert record.body["record"]["text"] == "the moon is a cheese 🤖 AI-generated"
    [status] = instance.calls("POST", STATUSES)
    assert status.body == {"status": "the moon is a cheese 🤖 AI-generated", "visibility": "public"}
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert logged.posted_to == {
        "bluesky": "https://bsky.app/profile/doppel.bsky.social/post/3kq2gxk4aqk2c",
        "mastodon": "https://mastodon.example/@doppel/113371093580426345",
    }
    assert logged.x_post_id is None
    assert not [t for t in texts(world) if "paused" in t]


async def test_posting_to_bluesky_or_mastodon_without_settings_is_refused(
    world: World, jack: Path, store: Store
) -> None:
    assert await autopost(world, "@jack #general every 6h --to-bluesky") == (
        "Posting to Bluesky needs BLUESKY_HANDLE and BLUESKY_APP_PASSWORD in the bot's "
        "configuration."
    )
    assert await autopost(world, "@jack #general every 6h --to-mastodon") == (
        "Posting to Mastodon needs MASTODON_INSTANCE and MASTODON_ACCESS_TOKEN in the bot's "
        "configuration."
    )
    assert await store.list_schedules(world.guild.id) == []
    world.handled_errors()


@pytest.mark.parametrize(
    ("network", "status", "body", "sentence"),
    [
        (
            "bluesky",
            401,
            {"error": "AuthenticationRequired", "message": "Invalid identifier or password"},
            "Bluesky rejected the handle or app password",
        ),
        (
            "bluesky",
            429,
            {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
            "Bluesky's rate limit for posting was reached (429 Too Many Requests)",
        ),
        (
            "mastodon",
            401,
            {"error": "The access token is invalid"},
            "Mastodon rejected the posting credentials (401 Unauthorized)",
        ),
        (
            "mastodon",
            422,
            {"error": "Validation failed: Text character limit of 500 exceeded"},
            "Mastodon refused the text of the post (422)",
        ),
    ],
    ids=["bluesky-401", "bluesky-429", "mastodon-401", "mastodon-422"],
)
async def test_a_network_error_pauses_the_schedule_and_tells_the_channel_once(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    pds: FakeNetwork,
    instance: FakeNetwork,
    network: str,
    status: int,
    body: dict[str, Any],
    sentence: str,
) -> None:
    if network == "bluesky":
        route = BSKY_SESSION if status == 401 else BSKY_CREATE
        pds.reply("POST", route, status, body)
    else:
        instance.reply("POST", STATUSES, status, body)
    await autopost(world, f"@jack #general every 1h --to-{network}")
    await simcord_env.advance_time(HOUR)
    requests_made = len(pds.requests) + len(instance.requests)
    assert requests_made in (1, 2)  # Bluesky's login, then its post
    # Run it twice more by hand: a paused schedule neither posts nor tells the channel again.
    autoposter = simcord_env.bot.autoposter  # type: ignore[attr-defined]
    assert await autoposter.run_schedule(1) is None
    assert await autoposter.run_schedule(1) is None
    await simcord_env.advance_time(3 * HOUR)
    assert len(posts(world)) == 1  # the Discord post went out before the network refused
    [notice] = [t for t in texts(world) if "is paused:" in t]
    assert notice.startswith(f"Auto-post #1 of **jack** is paused: {sentence}")
    assert notice.endswith("An admin can resume it with `!autopost resume 1`.")
    assert "secret" not in notice
    [schedule] = await store.list_schedules(world.guild.id)
    assert schedule.paused and (schedule.paused_reason or "").startswith(sentence)
    assert autoposter.job_ids() == set()
    assert len(pds.requests) + len(instance.requests) == requests_made


async def test_one_network_refusing_does_not_stop_the_other(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    pds: FakeNetwork,
    instance: FakeNetwork,
) -> None:
    instance.reply("POST", STATUSES, 429, {"error": "Too many requests"})
    await autopost(world, "@jack #general every 1h --to-mastodon --to-bluesky")
    await simcord_env.advance_time(HOUR)
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert set(logged.posted_to) == {"bluesky"}
    [schedule] = await store.list_schedules(world.guild.id)
    assert schedule.paused and (schedule.paused_reason or "").startswith("Mastodon's rate limit")


async def test_a_network_outage_does_not_pause_the_schedule(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store, pds: FakeNetwork
) -> None:
    pds.reply("POST", BSKY_CREATE, 502, {"error": "UpstreamFailure"})
    await autopost(world, "@jack #general every 1h --to-bluesky")
    await simcord_env.advance_time(2 * HOUR)
    [schedule] = await store.list_schedules(world.guild.id)
    assert not schedule.paused
    assert len(posts(world)) == 2
    assert len(pds.calls("POST", BSKY_CREATE)) == 2


@pytest.mark.parametrize("mode", ["neutralise", "skip"])
async def test_generated_mentions_never_reach_bluesky_or_mastodon_as_live_mentions(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    scripted_tweets: list[str],
    bot_settings: BotSettings,
    pds: FakeNetwork,
    instance: FakeNetwork,
    mode: str,
) -> None:
    bot_settings.public_mentions = mode  # type: ignore[assignment]
    scripted_tweets[:] = ["@jack.bsky.social and @jack@mastodon.social look"]
    await autopost(world, "@jack #general every 6h --to-bluesky --to-mastodon")
    await simcord_env.advance_time(6 * HOUR)
    assert len(posts(world)) == 1
    sent = [c.body["record"]["text"] for c in pds.calls("POST", BSKY_CREATE)]
    sent += [c.body["status"] for c in instance.calls("POST", STATUSES)]
    if mode == "neutralise":
        expected = "@\u200bjack.bsky.social and @\u200bjack@mastodon.social look 🤖 AI-generated"
        assert sent == [expected, expected]
    else:
        assert sent == []


async def test_a_schedule_posts_from_its_own_prompt_and_lists_it(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    scripted_generator: RecordingGenerator,
) -> None:
    reply = await autopost(world, "@jack #general every 1h --prompt My *dream* is")
    assert "every 1h, starting “My \\*dream\\* is”" in reply
    await autopost(world, "@jack #general every 2h")
    listing = (await autopost(world, "list")).splitlines()
    assert "every 1h, starting “My \\*dream\\* is” — active" in listing[1]
    assert "starting" not in listing[2]
    await simcord_env.advance_time(HOUR)
    assert scripted_generator.prompts[-1] == "My *dream* is"
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert logged.prompt == "My *dream* is"
    [first, second] = await store.list_schedules(world.guild.id)
    assert (first.prompt, second.prompt) == ("My *dream* is", "")


async def test_a_long_tweet_is_cut_to_the_strictest_networks_limit(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    scripted_tweets: list[str],
    pds: FakeNetwork,
    bot_settings: BotSettings,
) -> None:
    with serve(mastodon(max_characters=120)) as small:
        bot_settings.mastodon_instance = small.url
        bot_settings.mastodon_access_token = SecretStr("mastodon-token-secret")
        scripted_tweets[:] = ["The moon rose. " + "word " * 50]
        await autopost(world, "@jack #general every 1h --to-bluesky --to-mastodon")
        await simcord_env.advance_time(HOUR)
        [status] = small.calls("POST", STATUSES)
    [record] = pds.calls("POST", BSKY_CREATE)
    text = status.body["status"]
    assert record.body["record"]["text"] == text  # every network shows the same text
    assert len(text) <= 120 and text.endswith("… 🤖 AI-generated")
    [post] = posts(world)
    assert post.embeds[0].description == text.removesuffix(" 🤖 AI-generated")


# -- !post: the channel's latest !tweet on the public networks ---------------------------------


async def tweet_then_post(world: World, post_args: str) -> str:
    await world.admin.send(world.channel, "!tweet @jack")
    await world.admin.send(world.channel, f"!post {post_args}".rstrip())
    return world.last_text()


async def test_post_puts_the_channels_latest_tweet_on_the_chosen_networks(
    world: World,
    jack: Path,
    store: Store,
    scripted_tweets: list[str],
    pds: FakeNetwork,
    instance: FakeNetwork,
) -> None:
    scripted_tweets[:] = ["the moon is a cheese, ask @nasa"]
    reply = await tweet_then_post(world, "bluesky mastodon")
    assert reply == (
        "Posted to Bluesky: <https://bsky.app/profile/doppel.bsky.social/post/3kq2gxk4aqk2c>\n"
        "Posted to Mastodon: <https://mastodon.example/@doppel/113371093580426345>"
    )
    [record] = pds.calls("POST", BSKY_CREATE)
    [status] = instance.calls("POST", STATUSES)
    for text in (record.body["record"]["text"], status.body["status"]):
        assert text.endswith(" 🤖 AI-generated")
        assert "@nasa" not in text  # generated mentions never go out live
        assert "nasa" in text
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="command")
    assert set(logged.posted_to) == {"bluesky", "mastodon"}
    # The same tweet is not posted twice, and nothing is sent when asked again.
    await world.admin.send(world.channel, "!post bluesky")
    assert world.last_text() == "That tweet is already on Bluesky."
    assert len(pds.calls("POST", BSKY_CREATE)) == 1
    world.handled_errors()


async def test_post_without_ai_label_and_with_one_network_refusing(
    world: World,
    jack: Path,
    store: Store,
    scripted_tweets: list[str],
    pds: FakeNetwork,
    instance: FakeNetwork,
) -> None:
    scripted_tweets[:] = ["the moon is a cheese"]
    instance.reply("POST", STATUSES, 401, {"error": "The access token is invalid"})
    reply = await tweet_then_post(world, "mastodon bluesky --no-ai-label")
    first, second = reply.split("\n")
    assert first.startswith("Posted to Bluesky: <https://bsky.app/")
    assert second.startswith("Mastodon rejected the posting credentials (401 Unauthorized)")
    assert "token-secret" not in reply
    [record] = pds.calls("POST", BSKY_CREATE)
    assert record.body["record"]["text"] == "the moon is a cheese"
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="command")
    assert set(logged.posted_to) == {"bluesky"}


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        ("myspace", "myspace is not a network I post to; name x, bluesky, mastodon"),
        ("bluesky", "Posting to Bluesky needs BLUESKY_HANDLE and BLUESKY_APP_PASSWORD"),
    ],
)
async def test_post_refuses_unknown_or_unconfigured_networks(
    world: World, jack: Path, store: Store, args: str, sentence: str
) -> None:
    reply = await tweet_then_post(world, args)
    assert reply.startswith(sentence)
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="command")
    assert logged.posted_to == {}
    world.handled_errors()


async def test_post_needs_a_tweet_in_this_channel_and_an_admin(
    world: World, jack: Path, pds: FakeNetwork
) -> None:
    await world.admin.send(world.channel, "!post bluesky")
    assert world.last_text() == (
        "There is no tweet to post in this channel yet; make one with `!tweet`."
    )
    await world.alice.send(world.channel, "!tweet @jack")
    await world.alice.send(world.channel, "!post bluesky")
    assert "Manage Server" in world.last_text()
    assert pds.calls("POST", BSKY_CREATE) == []
    world.handled_errors()


async def test_post_skips_a_tweet_naming_accounts_when_the_setting_says_skip(
    world: World,
    jack: Path,
    bot_settings: BotSettings,
    scripted_tweets: list[str],
    pds: FakeNetwork,
) -> None:
    bot_settings.public_mentions = "skip"
    scripted_tweets[:] = ["thanks @nasa for the moon"]
    reply = await tweet_then_post(world, "bluesky")
    assert reply.startswith("That tweet names accounts, and this bot does not post such tweets")
    assert pds.calls("POST", BSKY_CREATE) == []
    world.handled_errors()
