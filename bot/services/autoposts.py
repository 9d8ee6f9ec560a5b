"""One auto-post, step by step: generate the text, choose and fit its networks, show it in its
channel, record it. The schedules and their timing are :mod:`bot.scheduler`'s.

A step that makes the run pointless to repeat as it is (the model unusable or out of new things
to say, the channel gone or closed to the bot) raises :class:`Paused` with the reason.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.formatting import NO_MENTIONS, escape_user_text, tweet_embed
from bot.posters import Poster, PostError
from bot.posters.crosspost import fit_for, x_post_id
from bot.store import ModelRecord, Schedule
from training.errors import DoppeltweetError, InputError
from training.generation import DEFAULT_PROMPT
from training.textrules import has_mentions

if TYPE_CHECKING:
    from bot.config import BotSettings
    from bot.model_cache import ModelCache
    from bot.store import Store

log = logging.getLogger(__name__)


class Paused(Exception):
    """The run must pause its schedule for ``reason``; ``tell`` when its channel can hear why."""

    def __init__(self, reason: str, *, tell: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tell = tell


@dataclass(frozen=True, slots=True)
class Draft:
    """A generated post and the prompt it started from."""

    text: str
    prompt: str


async def generate(
    cache: ModelCache,
    store: Store,
    schedule: Schedule,
    model: ModelRecord,
    *,
    public: Callable[[str], str],
) -> Draft:
    """A new post of the schedule's model, never one it posted before; ``public`` turns an
    error into what a channel may read."""
    exclude = await store.posted_texts(schedule.guild_id, schedule.model_name)
    prompt = schedule.prompt or DEFAULT_PROMPT
    try:
        result = await cache.generate(model.path, prompt, n=1, exclude=exclude)
    except DoppeltweetError as error:
        raise Paused(public(str(error))) from error
    if not result.tweets:
        # Every round of candidates was a repeat, a copy or empty: the model has run out of new
        # things to say. Saying so once and pausing beats failing silently every run.
        log.warning(
            "auto-post #%s: the model wrote nothing new (%d candidates rejected)",
            schedule.id,
            result.rejected,
        )
        raise Paused(
            f"The model could not write a tweet it has not posted before ({result.rejected} "
            "tries were repeats, copies of its training tweets or empty); retrain it with "
            "more tweets, or resume to try again."
        )
    return Draft(result.tweets[0], prompt)


async def choose_networks(
    text: str,
    schedule: Schedule,
    settings: BotSettings,
    poster_of: Callable[[str], Poster],
) -> tuple[str, list[Poster], list[str]]:
    """The text cut to fit every chosen network, their posters, and the problems that keep a
    network out (each pauses the schedule once the post is out)."""
    targets: list[Poster] = []
    errors: list[str] = []
    if schedule.targets and settings.public_mentions == "skip" and has_mentions(text):
        log.info("auto-post #%s: not posted to other networks, it names accounts", schedule.id)
    else:
        for key in schedule.targets:
            try:
                targets.append(poster_of(key))
            except InputError as error:  # the settings changed since the schedule was made
                errors.append(str(error))
    if targets:
        try:
            text = await fit_for(text, targets, ai_label=schedule.ai_label)
        except PostError as error:
            errors.append(str(error))
            targets = []
    return text, targets, errors


async def show(channel: Any, schedule: Schedule, model: ModelRecord, text: str) -> Any | None:
    """Post the tweet-style embed in the schedule's channel; None when Discord refused it
    this once."""
    embed = tweet_embed(
        text,
        display_name=" & ".join(h.name for h in model.handles),
        handle=model.handles[0].name,
        model=model.name,
    )
    try:
        return await channel.send(embed=embed, allowed_mentions=NO_MENTIONS)
    except discord.NotFound:
        raise Paused("Its channel was deleted.", tell=False) from None
    except discord.Forbidden:
        raise Paused(
            f"I may not post in #{escape_user_text(channel.name)} any more (missing permissions)."
        ) from None
    except discord.HTTPException as error:
        log.warning("auto-post #%s: Discord refused the post: %s", schedule.id, error)
        return None


async def record(
    store: Store, schedule: Schedule, draft: Draft, text: str, posted_to: dict[str, str]
) -> None:
    """Log the post with where each network shows it."""
    log_fields: dict[str, Any] = {
        "kind": "autopost",
        "prompt": draft.prompt,
        "channel_id": schedule.channel_id,
        "x_post_id": x_post_id(posted_to),
        "posted_to": posted_to,
    }
    try:
        await store.log_tweet(
            schedule.guild_id, schedule.model_name, text, schedule_id=schedule.id, **log_fields
        )
    except sqlite3.IntegrityError:
        # The schedule was removed while this post was being made; the post still counts.
        await store.log_tweet(schedule.guild_id, schedule.model_name, text, **log_fields)
