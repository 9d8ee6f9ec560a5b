"""The Discord client: explicit intents, no pings, the services it owns, one error handler.

:class:`DoppeltweetBot` wires the seams (store, job runner, model cache) and the services over them
(:mod:`bot.services`: training requests, models) to Discord. The cogs under :mod:`bot.exts` only
parse commands, call a service and format replies; everything they need hangs off the bot. Services
can be handed in ready-made (tests, or an embedding application). The bot always starts the job
runner in :meth:`DoppeltweetBot.setup_hook` and stops it in :meth:`DoppeltweetBot.close`; the store
and cache it closes only when it created them.

A gateway event discord.py cannot read is skipped instead of ending the bot, and a gateway that
refuses the first connection is one sentence (:mod:`bot.gateway_guard`).
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord.ext import commands

from bot.config import BotSettings
from bot.formatting import NO_MENTIONS, escape_mentions
from bot.gateway_guard import first_connection_explained, guard_parsers
from bot.jobs import JobRunner
from bot.model_cache import ModelCache
from bot.public_errors import public_error
from bot.scheduler import AutoPoster
from bot.services.models import Models
from bot.services.training_requests import TrainingRequests
from bot.store import StorageError, Store
from training.errors import DoppeltweetError

log = logging.getLogger(__name__)

#: The cogs, loaded in this order by :meth:`DoppeltweetBot.setup_hook`.
EXTENSIONS: tuple[str, ...] = (
    "bot.exts.meta",
    "bot.exts.training",
    "bot.exts.tweeting",
    "bot.exts.admin",
    "bot.exts.autopost",
)

GENERIC_ERROR = "Something went wrong on my side; the error has been logged for the bot's owner."


def bot_intents() -> discord.Intents:
    """Exactly what the bot needs: servers, their messages, and message content for ``!cmd``."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    return intents


class DoppeltweetBot(commands.Bot):
    """The doppeltweet Discord bot: hybrid commands over the store, job runner and model cache."""

    def __init__(
        self,
        settings: BotSettings,
        *,
        store: Store | None = None,
        runner: JobRunner | None = None,
        cache: ModelCache | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            command_prefix=settings.prefix,
            intents=bot_intents(),
            allowed_mentions=NO_MENTIONS,
            help_command=None,
            owner_ids=set(settings.owner_ids),
            **options,
        )
        self.settings = settings
        self._store = store
        self._runner = runner
        self._cache = cache
        self._owned: list[str] = []
        self._services_closed = False
        self._autoposter: AutoPoster | None = None
        self._requests: TrainingRequests | None = None
        self._models: Models | None = None
        #: Gateway events skipped because discord.py could not read them, per event type.
        self.skipped_events = guard_parsers(self._connection.parsers)

    # ------------------------------------------------------------------ services

    @property
    def store(self) -> Store:
        """The SQLite store (open after :meth:`setup_hook`)."""
        if self._store is None:
            raise RuntimeError("the store is opened in setup_hook")
        return self._store

    @property
    def runner(self) -> JobRunner:
        """The training job runner (started after :meth:`setup_hook`)."""
        if self._runner is None:
            raise RuntimeError("the job runner is created in setup_hook")
        return self._runner

    @property
    def autoposter(self) -> AutoPoster:
        """The auto-posting scheduler (started in :meth:`setup_hook`)."""
        if self._autoposter is None:
            raise RuntimeError("the auto-poster is created in setup_hook")
        return self._autoposter

    @property
    def training_requests(self) -> TrainingRequests:
        """Checks ``!train`` requests and queues them (created in :meth:`setup_hook`)."""
        if self._requests is None:
            raise RuntimeError("the training requests service is created in setup_hook")
        return self._requests

    @property
    def models(self) -> Models:
        """Finds, retrains and deletes the servers' models (created in :meth:`setup_hook`)."""
        if self._models is None:
            raise RuntimeError("the models service is created in setup_hook")
        return self._models

    @property
    def cache(self) -> ModelCache:
        """The LRU cache of loaded models that ``!tweet`` generates from."""
        if self._cache is None:
            raise RuntimeError("the model cache is created in setup_hook")
        return self._cache

    async def setup_hook(self) -> None:
        """Open the store, create the runner and cache, load the cogs, then start the runner.

        The runner starts last so that the jobs it recovers from an earlier run are reported
        through the training cog's listener, which exists only once the cogs are loaded.
        """
        if self._store is None:
            self._store = await open_store(self.settings)
            self._owned.append("store")
        if self._cache is None:
            self._cache = ModelCache(
                max_models=self.settings.cache_max_models,
                max_bytes=self.settings.cache_max_bytes,
                loader=_generation_loader(self.settings),
                pool_size=self.settings.tweet_pool_size,
                # A generation server chooses its backends itself.
                fast_models=None
                if self.settings.generation_url
                else self.settings.cache_fast_models,
            )
            self._owned.append("cache")
        if self._runner is None:
            self._runner = JobRunner(self._store, self.settings)
        self._requests = TrainingRequests(self._store, self.settings, self._runner)
        self._models = Models(self._store, self.settings, self._runner, self._requests, self._cache)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self._runner.start()
        self._autoposter = AutoPoster(self)
        await self._autoposter.start()

    async def close(self) -> None:
        """Stop the training jobs (re-queued for the next start), close what the bot opened, then
        disconnect. Safe to call twice (a signal handler and ``async with bot`` both do)."""
        if self._services_closed:
            await super().close()
            return
        self._services_closed = True
        try:
            if self._autoposter is not None:
                await self._autoposter.stop()
            if self._runner is not None:
                await self._runner.stop()
            if "cache" in self._owned and self._cache is not None:
                await self._cache.close()
            if "store" in self._owned and self._store is not None:
                await self._store.close()
        finally:
            self._owned.clear()
            await super().close()

    # ------------------------------------------------------------------ gateway

    async def connect(self, *, reconnect: bool = True) -> None:
        """discord.py's connection loop; a gateway that refuses the very first connection is a
        :class:`~bot.gateway_guard.GatewayError` sentence instead of discord.py's traceback."""
        with first_connection_explained(self):
            await super().connect(reconnect=reconnect)

    async def on_ready(self) -> None:
        """Say in the log that the bot is connected, as whom, and in how many servers."""
        user = self.user
        log.info(
            "Ready as %s (id %s) in %d server%s.",
            user.name if user else "?",
            user.id if user else "?",
            len(self.guilds),
            "" if len(self.guilds) == 1 else "s",
        )

    # ------------------------------------------------------------------ errors

    async def on_command_error(  # type: ignore[override]
        self, ctx: commands.Context[Any], error: commands.CommandError
    ) -> None:
        """Turn every command failure into one sentence in the channel; log the unexpected."""
        if isinstance(error, commands.CommandNotFound):
            return
        sentence = error_sentence(ctx, error)
        original = _unwrap(error)
        if isinstance(original, discord.HTTPException):
            # Whatever the command did before Discord refused its answer still stands (a queued
            # job runs), so the user is told that, not that something went wrong.
            log.warning(
                "command %s: Discord refused a request (HTTP %s, code %s)",
                ctx.command.qualified_name if ctx.command else "?",
                original.status,
                original.code,
            )
        if sentence is None:
            log.error(
                "command %s failed",
                ctx.command.qualified_name if ctx.command else "?",
                exc_info=(type(original), original, original.__traceback__),
            )
            sentence = GENERIC_ERROR
        try:
            await ctx.send(sentence, allowed_mentions=NO_MENTIONS, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not report a command error in channel %s", ctx.channel.id)


def _unwrap(error: BaseException) -> BaseException:
    """The exception a command actually raised, out of discord.py's wrappers."""
    wrappers = (
        commands.CommandInvokeError,
        commands.HybridCommandError,
        discord.app_commands.CommandInvokeError,
    )
    while isinstance(error, wrappers):
        inner = getattr(error, "original", None) or error.__cause__
        if inner is None:
            break
        error = inner
    return error


def error_sentence(ctx: commands.Context[Any], error: BaseException) -> str | None:
    """The one sentence a user sees for ``error``, or None when it is a bug to log.

    Sentences may quote what the user typed, so mentions in them are broken up; and they may
    name files, so server paths in them are cut to names (:mod:`bot.public_errors`).
    """
    sentence = _sentence(ctx, _unwrap(error))
    if sentence is None:
        return None
    return escape_mentions(public_error(getattr(ctx, "bot", None), sentence))


def _sentence(ctx: commands.Context[Any], error: BaseException) -> str | None:
    prefix = ctx.clean_prefix or "!"
    name = ctx.command.qualified_name if ctx.command else "help"
    if isinstance(error, DoppeltweetError):
        return str(error)
    if isinstance(error, commands.CommandOnCooldown):
        return f"Slow down: you can use `{prefix}{name}` again in {error.retry_after:.0f} s."
    if isinstance(error, commands.NotOwner):
        return "Only the bot's owner can do that."
    if isinstance(error, commands.NoPrivateMessage):
        return "That command works only in a server."
    if isinstance(error, commands.MissingPermissions | commands.CheckFailure):
        text = str(error).strip()
        return text or "You are not allowed to use that command here."
    if isinstance(error, commands.MissingRequiredAttachment):
        return f"Attach a file to `{prefix}{name}`; see `{prefix}help`."
    if isinstance(error, commands.UserInputError):
        detail = str(error).strip().rstrip(".")
        return f"{detail}; see `{prefix}help` for how to use `{prefix}{name}`."
    if isinstance(error, discord.HTTPException):
        return (
            f"Discord refused one of my requests for `{prefix}{name}` (HTTP {error.status}); "
            "anything the command did before that still stands."
        )
    return None


async def open_store(settings: BotSettings) -> Store:
    """The bot's store in its data dir; a data dir or database that cannot be used is one
    :class:`~bot.store.StorageError` sentence (``doppeltweet bot`` prints it and exits)."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"The bot cannot use its data dir {settings.data_dir} "
            f"({error.strerror or type(error).__name__}); set DOPPELTWEET_DATA_DIR to a "
            "writable folder, then start it again."
        ) from error
    return await Store.open(settings.db_file)


async def check_storage(settings: BotSettings) -> None:
    """Open and close the store: what ``doppeltweet bot`` does before connecting to Discord."""
    store = await open_store(settings)
    await store.close()


def create_bot(settings: BotSettings, **services: Any) -> DoppeltweetBot:
    """Build the bot; ``store``, ``runner`` and ``cache`` may be passed in ready-made."""
    return DoppeltweetBot(settings, **services)


def _generation_loader(settings: BotSettings) -> Any:
    """The generation server's client when ``DOPPELTWEET_GENERATION_URL`` is set; else the worker
    process's loader (``DOPPELTWEET_GENERATION_PROCESS``), or None: the cache loads the models in
    its own threads."""
    if settings.generation_url:
        from bot.remote_generation import remote_loader

        return remote_loader(settings)
    if settings.generation_process:
        from bot.model_cache import DEFAULT_WORKERS
        from bot.model_process import ProcessLoader

        return ProcessLoader(threads=DEFAULT_WORKERS)
    return None
