"""Helpers for the simcord tests of the Discord layer: the bot assembled over a store, and a
small server (the scripted model is ``model_fakes.ScriptedGenerator``).

The fixtures that use them live in ``tests/bot/conftest.py`` (``simcord_bot``, ``world``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot.config import BotSettings
from bot.store import Store
from training.handles import Handle

if TYPE_CHECKING:
    import simcord

    from bot.client import DoppeltweetBot

#: A tiny CSV attachment (the stand-in training process does not read it).
CSV = b"text\nhello world from the test\n"


def assemble_bot(
    settings: BotSettings,
    store: Store,
    *,
    generator: Any = None,
    python: Path | None = None,
    training_args: Sequence[str] = (),
    **options: Any,
) -> DoppeltweetBot:
    """The real bot on ``store`` with its job runner and model cache made here.

    The runner runs ``python`` (the stand-in training process, ``fake_training``) or, without it,
    the real training CLI with ``training_args``; the cache loads every model folder as
    ``generator`` or, without one, as the real model it is. ``close_parts`` ends both.
    """
    from bot.client import create_bot
    from bot.jobs import JobRunner
    from bot.model_cache import ModelCache

    cache = ModelCache(2, 1 << 30, loader=None if generator is None else lambda path: generator)
    runner = JobRunner(
        store,
        settings,
        python=None if python is None else str(python),
        training_args=training_args,
    )
    return create_bot(settings, store=store, runner=runner, cache=cache, **options)


async def close_parts(bot: DoppeltweetBot) -> None:
    """Stop the job runner and close the model cache that ``assemble_bot`` made."""
    await bot.runner.stop()
    await bot.cache.close()


class World:
    """A server with a channel, an admin (Manage Server) and two ordinary members."""

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
        """The content of the channel's last message."""
        message = self.channel.last_message
        assert message is not None
        return message.content


async def add_trained_model(store: Store, guild_id: int, trained: Path, folder: Path) -> Path:
    """Copy a really trained model folder (e.g. ``tiny_model_dir``) to ``folder`` and record it
    in a server as the model of the handle its folder is named after."""
    import shutil

    shutil.copytree(trained, folder)
    await store.upsert_model(
        guild_id,
        folder.name,
        handles=[Handle(folder.name)],
        sources=["bluesky"],
        base_model="tiny",
        lora=False,
        path=folder,
        trained_by=None,
    )
    return folder


def not_admin() -> type[BaseException]:
    """The NotAdmin class of the admin rule (:mod:`bot.checks`)."""
    from bot.checks import NotAdmin

    return NotAdmin


async def add_model(
    store: Store, settings: BotSettings, guild_id: int, *names: str, sources: tuple[str, ...] = ()
) -> Path:
    """Record a trained model of ``names`` in a server, with a readable ``training.json``."""
    handles = [Handle(n) for n in sorted(names)]
    name = "-".join(h.name for h in handles)
    path = settings.guild_models_dir(guild_id) / name
    path.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "handles": [h.name for h in handles],
        "base_model": "tiny",
        "lora": False,
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    (path / "training.json").write_text(json.dumps(record), encoding="utf-8")
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
