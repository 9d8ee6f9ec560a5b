"""``doppeltweet bot``: run the Discord bot until SIGTERM or Ctrl-C.

Registered in the ``doppeltweet.commands`` entry-point group, so ``training`` never imports discord.
Configuration comes from the environment or ``.env`` (see docs/configuration.md); the only required
setting is ``DISCORD_TOKEN``. SIGTERM and SIGINT close the bot cleanly: running training processes
are stopped, the database is closed, then the gateway connection.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from training.errors import DoppeltweetError

if TYPE_CHECKING:
    from bot.config import BotSettings

log = logging.getLogger("bot")


def build_parser() -> argparse.ArgumentParser:
    """The ``doppeltweet bot`` argument parser."""
    return argparse.ArgumentParser(
        prog="doppeltweet bot",
        description=(
            "Run the doppeltweet Discord bot. Configure it through the environment or a .env "
            "file: DISCORD_TOKEN (required), DOPPELTWEET_OWNER_IDS, DOPPELTWEET_PREFIX, "
            "DOPPELTWEET_DATA_DIR and the limits in docs/configuration.md. Stop it with SIGTERM "
            "or Ctrl-C; training jobs are stopped and the database closed cleanly."
        ),
    )


def _settings_error(error: ValidationError) -> str:
    """One sentence out of pydantic's report, naming the first bad setting."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "a setting"
    return f"The setting {where.upper()} is invalid: {first.get('msg', 'bad value')}."


async def _serve(settings: BotSettings, token: str) -> None:
    """Run the bot; SIGTERM/SIGINT close it (jobs, database, gateway) instead of killing it."""
    from bot.client import create_bot

    bot = create_bot(settings)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def request_stop(signame: str) -> None:
        if not stopping:
            log.info("%s received: shutting down", signame)
            stopping.append(loop.create_task(bot.close()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)
    try:
        async with bot:
            await bot.start(token)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if stopping:
            await stopping[0]


def main(argv: Sequence[str]) -> int:
    """Entry point of ``doppeltweet bot``; returns the exit code."""
    build_parser().parse_args(list(argv))
    from bot.config import BotSettings
    from bot.endpoints import apply_discord_endpoints

    try:
        settings = BotSettings()
        token = settings.token()
        apply_discord_endpoints(settings.discord_api_base, settings.discord_gateway_url)
    except ValidationError as error:
        print(f"error: {_settings_error(error)}", file=sys.stderr)
        return 2
    except DoppeltweetError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code

    from bot.client import check_storage

    try:  # a data dir or database the bot cannot use: one sentence now, not a crash later
        asyncio.run(check_storage(settings))
    except DoppeltweetError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code

    import discord

    from bot.endpoints import log_discord_endpoints

    # discord.py's handler; discord.py never logs the token.
    discord.utils.setup_logging(level=logging.INFO, root=True)
    log_discord_endpoints()

    try:
        asyncio.run(_serve(settings, token))
    except discord.errors.LoginFailure:
        print(
            "error: Discord rejected DISCORD_TOKEN; copy the bot token again from the "
            "developer portal.",
            file=sys.stderr,
        )
        return 2
    except discord.errors.PrivilegedIntentsRequired:
        print(
            "error: Enable the Message Content intent for the bot in the Discord developer "
            "portal (Bot → Privileged Gateway Intents).",
            file=sys.stderr,
        )
        return 2
    except DoppeltweetError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    return 0
