"""simcord fixtures: the real bot, its real store and job runner, against a simulated Discord.

The training process is the stand-in from ``tests/bot/conftest.py`` (it speaks the
``--progress-json`` protocol in milliseconds); the model cache is the real one with a loader that
returns a scripted model, so a test decides exactly what "the model" writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import discord
import pytest

from bot.config import BotSettings
from bot.store import Store
from training.handles import Handle

if TYPE_CHECKING:
    import simcord

    from bot.client import DoppeltweetBot
    from training.generate import GenerationResult

#: The Discord user id that ``bot_settings`` makes a bot owner (``owner_ids="42"``).
OWNER_ID = 42


class ScriptedGenerator:
    """A loaded model that answers with scripted tweets, so a test controls the generated text."""

    memory_bytes = 1

    def __init__(self, tweets: list[str]) -> None:
        self.tweets = tweets
        self.prompts: list[str] = []

    def generate(
        self, prompt: str, *, n: int = 1, seed: int | None = None, exclude: object = ()
    ) -> GenerationResult:
        from training.generate import GenerationResult

        self.prompts.append(prompt)
        return GenerationResult(
            prompt=prompt, tweets=self.tweets[:n], candidates=len(self.tweets), rejected=0
        )


@pytest.fixture
def scripted_tweets() -> list[str]:
    """What the scripted model generates; tests may replace the contents."""
    return ["just setting up my twttr"]


@pytest.fixture
def scripted_generator(scripted_tweets: list[str]) -> ScriptedGenerator:
    """The one scripted model every model folder loads as."""
    return ScriptedGenerator(scripted_tweets)


@pytest.fixture(autouse=True)
def _reset_command_cooldowns() -> Iterator[None]:
    """Cooldown state lives on the command objects, shared by every bot in the process."""
    from discord.ext import commands

    from bot.exts.tweeting import Tweeting

    def reset() -> None:
        for command in Tweeting.__cog_commands__:
            if isinstance(command, commands.Command) and command._buckets.valid:
                command._buckets._cache.clear()

    reset()
    yield
    reset()


@pytest.fixture
async def simcord_bot(
    bot_settings: BotSettings,
    store: Store,
    fake_training: Path,
    scripted_generator: ScriptedGenerator,
) -> AsyncIterator[DoppeltweetBot]:
    """The real bot with the fake training process and the scripted model (simcord's fixture)."""
    from bot.client import create_bot
    from bot.jobs import JobRunner
    from bot.model_cache import ModelCache

    cache = ModelCache(2, 1 << 30, loader=lambda path: scripted_generator)
    runner = JobRunner(store, bot_settings, python=str(fake_training))
    bot = create_bot(bot_settings, store=store, runner=runner, cache=cache)
    yield bot
    await runner.stop()
    await cache.close()


class World:
    """A server with a channel, an admin and two ordinary members."""

    def __init__(self, env: simcord.Env) -> None:
        self.env = env
        self._seen = 0
        self.guild = env.create_guild("Test Server")
        self.channel = self.guild.create_text_channel("general")
        admins = self.guild.create_role(
            "Admins", permissions=discord.Permissions(manage_guild=True)
        )
        self.admin = self.guild.add_member(env.create_user("ada"), roles=[admins])
        self.alice = self.guild.add_member(env.create_user("alice"))
        self.bob = self.guild.add_member(env.create_user("bob"))

    def bot_messages(self) -> list[discord.Message]:
        """What the bot posted in the channel, oldest first."""
        bot_id = self.env.bot.user.id
        return [m for m in self.channel.history() if m.author.id == bot_id]

    def handled_errors(self) -> list[type[BaseException]]:
        """The errors commands raised (and the bot answered) since the last call, unwrapped.

        simcord records every command error; reading them acknowledges them, so a test that
        provokes an error states which one it expects.
        """
        from bot.client import _unwrap

        errors = self.env.errors
        new, self._seen = errors[self._seen :], len(errors)
        return [type(_unwrap(error)) for error in new]

    def last_text(self) -> str:
        message = self.channel.last_message
        assert message is not None
        return message.content


@pytest.fixture
def world(simcord_env: simcord.Env) -> World:
    """A fresh server for the running bot."""
    return World(simcord_env)


async def add_model(
    store: Store, settings: BotSettings, guild_id: int, *names: str, sources: tuple[str, ...] = ()
) -> Path:
    """Record a trained model of ``names`` in a server (its folder exists, with a marker file)."""
    handles = [Handle(n) for n in sorted(names)]
    name = "-".join(h.name for h in handles)
    path = settings.guild_models_dir(guild_id) / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "training.json").write_text("{}", encoding="utf-8")
    await store.upsert_model(
        guild_id,
        name,
        handles=handles,
        sources=list(sources) or ["bluesky"],
        base_model="tiny",
        lora=False,
        path=path,
        trained_by=None,
    )
    return path
