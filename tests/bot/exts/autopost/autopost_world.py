"""What the auto-post tests share: virtual time and reading the channel (the recording model
is ``model_fakes.RecordingGenerator``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import discord
import simcord
from discord_world import World

HOUR = 3600


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


def posts(world: World) -> list[discord.Message]:
    """The bot's tweet-style posts in the channel."""
    return [m for m in world.bot_messages() if m.embeds]


def texts(world: World) -> list[str]:
    return [m.content for m in world.bot_messages() if not m.embeds]


async def autopost(world: World, args: str) -> str:
    await world.admin.send(world.channel, f"!autopost {args}")
    return world.last_text()
