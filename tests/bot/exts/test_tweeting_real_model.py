"""``!tweet`` with a real (tiny) trained model behind the cache: every tweet is a fresh sample."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import simcord
from discord_world import World, add_trained_model, assemble_bot, close_parts

from bot.config import BotSettings
from bot.store import Store


@pytest.fixture
async def simcord_bot(
    bot_settings: BotSettings, store: Store, fake_training: Path, reset_cooldowns: None
) -> AsyncIterator[Any]:
    """The real bot whose model cache loads real model folders (the default loader)."""
    bot = assemble_bot(bot_settings, store, python=fake_training)
    yield bot
    await close_parts(bot)


async def test_three_tweets_in_a_row_are_three_different_samples(
    world: World,
    store: Store,
    bot_settings: BotSettings,
    simcord_env: simcord.Env,
    tiny_model_dir: Path,
) -> None:
    folder = bot_settings.guild_models_dir(world.guild.id) / "alice"
    await add_trained_model(store, world.guild.id, tiny_model_dir, folder)
    descriptions = []
    for _ in range(3):
        await world.alice.send(world.channel, "!tweet @alice My dream is")
        [embed] = world.channel.last_message.embeds
        descriptions.append(embed.description)
        await simcord_env.advance_time(bot_settings.tweet_cooldown_s + 1)
    assert world.handled_errors() == []
    assert all(d and d.startswith("My dream is") for d in descriptions)
    assert len(set(descriptions)) == 3
