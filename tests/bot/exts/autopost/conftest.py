"""Fixtures of the auto-post tests.

simcord runs the bot's timers on a virtual clock (``env.advance_time``). APScheduler reads the wall
clock (``datetime.now``) to decide which jobs are due, so the ``virtual_clock`` fixture points it,
and the store's and scheduler's timestamps, at simcord's clock: the real ``AsyncIOScheduler`` with
the real triggers then decides when to post, and a test only moves time forward.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import simcord
from autopost_world import virtual_datetime
from discord_world import World, add_model
from model_fakes import RecordingGenerator

from bot.config import BotSettings
from bot.store import Store


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


@pytest.fixture
def scripted_tweets() -> list[str]:
    return [f"tweet number {i} about the moon" for i in range(1, 9)]


@pytest.fixture
def scripted_generator(scripted_tweets: list[str]) -> RecordingGenerator:
    return RecordingGenerator(scripted_tweets)


@pytest.fixture
def bot_settings(make_settings: Callable[..., BotSettings]) -> BotSettings:
    """The bot's test settings with (fake) X posting credentials."""
    return make_settings(
        x_consumer_key="consumer-key",
        x_consumer_secret="consumer-secret",
        x_access_token="access-token",
        x_access_token_secret="access-token-secret",
    )


@pytest.fixture
async def jack(world: World, store: Store, bot_settings: BotSettings, virtual_clock: Any) -> Path:
    """A model of @jack in the test server (recorded at the virtual time)."""
    return await add_model(store, bot_settings, world.guild.id, "jack")
