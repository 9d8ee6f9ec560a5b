"""What the auto-post tests share: virtual time, a recording model, and reading the channel."""

from __future__ import annotations

from collections.abc import Collection
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
        from training.generation import GenerationResult

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


def posts(world: World) -> list[discord.Message]:
    """The bot's tweet-style posts in the channel."""
    return [m for m in world.bot_messages() if m.embeds]


def texts(world: World) -> list[str]:
    return [m.content for m in world.bot_messages() if not m.embeds]


async def autopost(world: World, args: str) -> str:
    await world.admin.send(world.channel, f"!autopost {args}")
    return world.last_text()
