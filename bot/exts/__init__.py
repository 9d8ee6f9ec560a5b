"""The bot's cogs, one module per domain, each ending with ``async def setup(bot)``.

Shared here: turning the raw text of a command into validated handles. Discord rewrites a typed
``@name`` into a member mention (``<@123>``) when ``name`` is a member of the server, so the raw
text is checked for mentions first and the user gets a sentence telling them how to type an X
handle instead of a confusing "not a handle" error.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from discord.ext import commands

from training.errors import InputError
from training.handles import Handle, parse_handle, parse_handles

if TYPE_CHECKING:
    from bot.services.models import Models

_MENTION = re.compile(r"<(@[!&]?|#)\d+>")


def reject_mentions(text: str) -> None:
    """Refuse Discord mentions where an X handle was meant, with the way to type one."""
    if _MENTION.search(text) or "@everyone" in text or "@here" in text:
        raise InputError(
            "Discord turned that into a mention of a server member; type the X handle "
            "without the @ (e.g. jack) or in backticks (`@jack`)."
        )


def _strip_code(token: str) -> str:
    return token.strip().strip("`")


def parse_handle_text(text: str) -> Handle:
    """One handle from a command argument (``@jack``, ``jack``, ```@jack```, ``bluesky:…``)."""
    reject_mentions(text)
    return parse_handle(_strip_code(text))


async def model_named(models: Models, guild_id: int, text: str) -> str | Handle:
    """The model a command's argument names: a member's own (their mention or ``alice+discord``)
    by its name, else the handle typed."""
    return await models.own_named(guild_id, text) or parse_handle_text(text)


def parse_handle_list(tokens: list[str]) -> list[Handle]:
    """1–3 handles from command tokens, mentions refused with a helpful sentence."""
    for token in tokens:
        reject_mentions(token)
    return parse_handles(_strip_code(t) for t in tokens if _strip_code(t))


class HandleArg(commands.Converter[Handle]):
    """A command argument that must look like a handle: ``@name``, ```@name``` or ``bluesky:…``.

    Requiring the ``@`` (or ``bluesky:``) lets ``!tweet [@handle] <prompt>`` tell an optional
    handle from the first word of a prompt.
    """

    async def convert(self, ctx: commands.Context[Any], argument: str) -> Handle:
        token = _strip_code(argument)
        if not (token.startswith("@") or token.lower().startswith("bluesky:")):
            raise commands.BadArgument(f"{argument!r} is not a handle such as @jack")
        try:
            return parse_handle(token)
        except InputError as error:
            raise commands.BadArgument(str(error)) from error


def require_guild_id(ctx: commands.Context[Any]) -> int:
    """The server a command runs in; every command is server-scoped."""
    if ctx.guild is None:
        raise commands.NoPrivateMessage()
    return ctx.guild.id
