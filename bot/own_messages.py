"""``!train me``: a member's own messages in this server, collected as a plain-text upload.

Consent by construction: the only author whose messages are read is the member who asked, so
nobody can train a model on someone else's words. Only channels the bot may read the history of
(and the member can see) are read, within a bounded number of messages and days; the bot's
commands (messages starting with its prefix) are skipped. Each message becomes one line of a
``.txt`` file that the training's plain-text source reads, so the usual cleaning applies to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import discord

from training.errors import InputError
from training.handles import Handle

#: The upload ``!train me`` writes (only a file name: who owns a model is recorded by member id).
OWN_MESSAGES_FILE = "discord-messages.txt"
#: Ends the name of every own-messages model; no set of handles gives a name with a ``+`` but
#: no ``.`` (see :func:`training.handles.model_name`), so ``!train @name`` cannot take it.
OWN_MODEL_SUFFIX = "+discord"
#: The per-server setting (a JSON boolean) admins use to switch ``!train me`` off.
TRAIN_ME_SETTING = "train_me"
#: At most this many messages are looked at for every message that may be kept.
SCAN_FACTOR = 10

_FENCED_CODE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]*)`")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w{1,32}):\d{15,25}>")
_TIMESTAMP = re.compile(r"<t:-?\d{1,13}(?::[tTdDfFR])?>")
_SPOILER = re.compile(r"\|\|(.+?)\|\|", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Collected:
    """What ``!train me`` read: the kept lines (newest first) and how many messages it looked at."""

    lines: list[str]
    scanned: int
    channels: int


def clean_message(message: discord.Message) -> str:
    """One message as one line of text: mentions as ``@name``, code blocks dropped, inline code,
    spoilers and custom emoji as plain text, timestamps removed; ``""`` when nothing is left."""
    text = message.clean_content
    text = _FENCED_CODE.sub(" ", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _CUSTOM_EMOJI.sub(r":\1:", text)
    text = _TIMESTAMP.sub(" ", text)
    text = _SPOILER.sub(r"\1", text)
    return _WHITESPACE.sub(" ", text).strip()


def own_handle(member: discord.abc.User) -> Handle:
    """The handle a member's own model gets: their username in X handle characters."""
    name = re.sub(r"[^a-z0-9_]", "_", member.name.lower()).strip("_")[:15].strip("_")
    return Handle(name or f"member{member.id % 10**9}", "x")


def own_model_name(member: discord.abc.User) -> str:
    """The name of a member's own model, ``alice+discord``: its own namespace, apart from every
    model ``!train @handle`` can name, so nobody claims a member's name before they train."""
    return own_handle(member).name + OWN_MODEL_SUFFIX


def readable_channels(
    guild: discord.Guild, member: discord.Member
) -> list[discord.TextChannel | discord.Thread]:
    """The text channels and threads whose history the bot may read and the member can see."""
    me = guild.me
    channels: list[discord.TextChannel | discord.Thread] = [
        *guild.text_channels,
        *guild.threads,
    ]
    readable = []
    for channel in channels:
        mine = channel.permissions_for(me)
        theirs = channel.permissions_for(member)
        if mine.view_channel and mine.read_message_history and theirs.view_channel:
            readable.append(channel)
    return readable


async def collect_own_messages(
    guild: discord.Guild,
    member: discord.Member,
    *,
    before: discord.Message,
    prefix: str,
    max_messages: int,
    max_age_days: int,
) -> Collected:
    """The member's own messages older than ``before`` (the command) and at most
    ``max_age_days`` days old, newest first, at most ``max_messages``; at most
    ``SCAN_FACTOR × max_messages`` messages are looked at in all."""
    cutoff = before.created_at - timedelta(days=max_age_days)
    budget = SCAN_FACTOR * max_messages
    found: list[tuple[datetime, str]] = []
    scanned = 0
    channels = readable_channels(guild, member)
    for channel in channels:
        if budget - scanned <= 0:
            break
        try:
            async for message in channel.history(
                limit=budget - scanned, after=cutoff, before=before, oldest_first=False
            ):
                scanned += 1
                if message.author.id != member.id or message.author.bot:
                    continue
                if message.type not in (discord.MessageType.default, discord.MessageType.reply):
                    continue
                if message.content.lstrip().startswith(prefix):
                    continue  # a command to this bot, not something the member said
                line = clean_message(message)
                if line:
                    found.append((message.created_at, line))
        except discord.Forbidden:
            continue  # permissions changed while reading: that channel is simply not read
    found.sort(key=lambda item: item[0], reverse=True)
    return Collected(
        lines=[line for _, line in found[:max_messages]], scanned=scanned, channels=len(channels)
    )


def nothing_found_sentence(collected: Collected, max_age_days: int) -> str:
    """Why ``!train me`` has nothing to train on, in one sentence."""
    if collected.channels == 0:
        return (
            "I cannot read the message history of any channel here that you can see; an admin "
            "can give me Read Message History."
        )
    plural = "s" if collected.channels != 1 else ""
    return (
        f"I found none of your own messages of the last {max_age_days} days in the "
        f"{collected.channels} channel{plural} I can read (commands to me do not count)."
    )


def refuse_if_nothing(collected: Collected, max_age_days: int) -> None:
    """An InputError when no message of the member was found."""
    if not collected.lines:
        raise InputError(nothing_found_sentence(collected, max_age_days))
