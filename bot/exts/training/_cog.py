"""The training cog: ``!train``, ``!retrain``, ``!jobs``, ``!cancel``, ``!trainme``, ``!forgetme``.

The cog is also the job runner's listener: each job has one status message that is edited as the
background training process reports progress (at most once every ``progress_edit_interval_s``), and
when the job ends the cog posts the data table, the validation perplexity before → after, three
sample tweets and the loss curve — or one sentence saying why it failed. The rules of a request are
:mod:`bot.services.training_requests`'s; what the messages say is :mod:`._reports`'s.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import admin_only, is_admin
from bot.exts import model_named, parse_handle_list, require_guild_id
from bot.formatting import (
    NO_MENTIONS,
    escape_user_text,
)
from bot.jobs import JobResult
from bot.own_messages import (
    collect_own_messages,
    own_handle,
    own_model_name,
    refuse_if_nothing,
)
from bot.public_errors import public_error
from bot.store import Job
from training.errors import DoppeltweetError, InputError
from training.generation import DEFAULT_PROMPT

if TYPE_CHECKING:
    from bot.client import DoppeltweetBot
from bot.exts.training._reports import (
    LOSS_CURVE_MISSING,
    failure_text,
    job_title,
    queue_line,
    queued_text,
    status_text,
    summary_text,
)

log = logging.getLogger(__name__)

API_WORDS = frozenset({"api", "--api", "x-api"})
#: ``!train me``: the member's own messages (``@me`` stays the X handle me).
ME_WORD = "me"
SAMPLE_TWEETS = 3


class Training(commands.Cog):
    """Train models in the background and report on them."""

    def __init__(self, bot: DoppeltweetBot) -> None:
        self.bot = bot
        self._status: dict[int, discord.Message | discord.PartialMessage] = {}
        self._last_edit: dict[int, float] = {}
        # Held while a command queues a job and posts its status message, so that the runner's
        # first events (the job may start at once) edit that message instead of racing it.
        self._announcing = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    async def cog_load(self) -> None:
        """Listen to the job runner (progress, success, failure)."""
        self.bot.runner.add_listener(self)

    async def cog_unload(self) -> None:
        """Stop listening to the job runner and drop unfinished sample posts."""
        self.bot.runner.remove_listener(self)
        for task in list(self._background):
            task.cancel()

    # ------------------------------------------------------------------ commands

    @commands.hybrid_command(name="train")
    @app_commands.guild_only()
    @app_commands.describe(
        handles="1 to 3 handles (@jack @bob, bluesky:alice.bsky.social, mastodon:@alice@server); "
        "add api for the X API; or me for your own messages here",
        archive="Your X or Mastodon archive (zip), tweets.js, or a CSV, JSONL or .txt file",
    )
    async def train(
        self,
        ctx: commands.Context[Any],
        archive: discord.Attachment | None = None,
        *,
        handles: str,
    ) -> None:
        """Train a model that tweets like 1 to 3 people, in the background."""
        guild_id = require_guild_id(ctx)
        prefix = self.bot.settings.prefix
        requests = self.bot.training_requests
        tokens = handles.split()
        if [t.lower() for t in tokens] == [ME_WORD]:
            if _attachments(ctx, archive):
                raise InputError(
                    f"`{prefix}train me` reads your messages here; attach files with "
                    f"`{prefix}train @handle` instead."
                )
            await self._train_me(ctx, guild_id)
            return
        use_api = any(t.lower() in API_WORDS for t in tokens)
        parsed = parse_handle_list([t for t in tokens if t.lower() not in API_WORDS])
        received = await requests.receive(
            guild_id, parsed, use_api=use_api, files=_attachments(ctx, archive)
        )
        async with self._announcing:
            job = await requests.queue(guild_id, ctx.channel.id, ctx.author.id, received)
            await self._announce_queued(ctx, job)

    async def _train_me(self, ctx: commands.Context[Any], guild_id: int) -> None:
        """A model of the member who asks, from their own messages in this server's channels."""
        settings = self.bot.settings
        requests = self.bot.training_requests
        guild, member = ctx.guild, ctx.author
        if guild is None or not isinstance(member, discord.Member):
            raise commands.NoPrivateMessage()
        handle, name = own_handle(member), own_model_name(member)
        await requests.check_own_model(guild_id, member.id, name)
        collected = await collect_own_messages(
            guild,
            member,
            before=ctx.message,
            prefix=settings.prefix,
            max_messages=settings.train_me_max_messages,
            max_age_days=settings.train_me_max_age_days,
        )
        refuse_if_nothing(collected, settings.train_me_max_age_days)
        received = requests.receive_own_messages(guild_id, member.id, handle, name, collected.lines)
        async with self._announcing:
            job = await requests.queue(guild_id, ctx.channel.id, member.id, received)
            await self._announce_queued(ctx, job)

    @commands.hybrid_command(name="retrain")
    @app_commands.guild_only()
    @app_commands.describe(
        handle="The model to train again: a handle such as @jack, or a member's own: alice+discord"
    )
    @admin_only()
    async def retrain(self, ctx: commands.Context[Any], handle: str) -> None:
        """Train a model again from the same sources as last time (API and Bluesky refreshed)."""
        guild_id = require_guild_id(ctx)
        parsed = await model_named(self.bot.models, guild_id, handle)
        async with self._announcing:
            job = await self.bot.models.retrain(guild_id, ctx.channel.id, ctx.author.id, parsed)
            await self._announce_queued(ctx, job)

    async def _announce_queued(self, ctx: commands.Context[Any], job: Job) -> None:
        """Post the job's first status. The job is queued whatever Discord answers: a refused
        reply falls back to a plain message, and when that is refused too the job's first
        progress posts its status (and ``!jobs`` shows it meanwhile)."""
        # The status message answers the command (a reply, which pings nobody), so in a busy
        # channel it stays next to the request.
        starts = await self.bot.runner.start_estimates() if job.state == "queued" else {}
        text = queued_text(job, starts.get(job.id))
        try:
            message: discord.Message = await ctx.reply(
                text, mention_author=False, allowed_mentions=NO_MENTIONS
            )
        except discord.HTTPException as error:
            log.warning(
                "job %s: Discord refused its status reply (HTTP %s); posting it plainly",
                job.id,
                error.status,
            )
            try:
                message = await self._channel(job).send(text, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException as again:
                log.warning(
                    "job %s: Discord refused its status message too (HTTP %s); the job is "
                    "queued and its progress will post one",
                    job.id,
                    again.status,
                )
                return
        self._status[job.id] = message
        try:
            await self.bot.store.set_job_status_message(job.guild_id, job.id, message.id)
        except Exception:  # the status message is a convenience; the job is queued regardless
            log.exception("could not remember the status message of job %s", job.id)

    @commands.hybrid_command(name="trainme")
    @app_commands.guild_only()
    @app_commands.describe(switch="on or off (leave out to see the current setting)")
    @admin_only()
    async def trainme(self, ctx: commands.Context[Any], switch: str = "") -> None:
        """Switch `!train me` (models of members from their own messages) on or off here."""
        guild_id = require_guild_id(ctx)
        prefix = self.bot.settings.prefix
        word = switch.strip().lower()
        if word not in ("", "on", "off"):
            raise InputError(f"Say `{prefix}trainme on` or `{prefix}trainme off`.")
        switch_to = word == "on" if word else None
        enabled = await self.bot.training_requests.train_me_enabled(guild_id, switch_to)
        state = "on: members may" if enabled else "off: nobody may"
        await ctx.send(
            f"`{prefix}train me` is {state} train a model of themselves from their own "
            "messages in this server.",
            allowed_mentions=NO_MENTIONS,
        )

    @commands.hybrid_command(name="forgetme")
    @app_commands.guild_only()
    async def forgetme(self, ctx: commands.Context[Any]) -> None:
        """Delete your own `!train me` models and every copy of your messages the bot kept."""
        guild_id = require_guild_id(ctx)
        prefix = self.bot.settings.prefix
        records, cancelled = await self.bot.models.forget_member(guild_id, ctx.author.id)
        if records:
            names = ", ".join(f"**{escape_user_text(r.name)}**" for r in records)
            text = (
                f"Deleted your own model {names} with every copy of your messages I kept (the "
                "model's files, your messages file and the tweets it wrote)."
            )
        elif cancelled:
            text = "Cancelled your `train me` training and deleted the copy of your messages."
        else:
            text = (
                f"I keep no model of your own messages in this server (`{prefix}train me` makes "
                "one), and no copy of them."
            )
        await ctx.send(text, allowed_mentions=NO_MENTIONS)

    @commands.hybrid_command(name="jobs")
    @app_commands.guild_only()
    @app_commands.describe(scope="all: every queued job of this server (admins)")
    async def jobs(self, ctx: commands.Context[Any], scope: str = "") -> None:
        """Show the running jobs and your queued ones with when they start (admins: `all`)."""
        guild_id = require_guild_id(ctx)
        prefix = self.bot.settings.prefix
        word = scope.strip().lower()
        if word not in ("", "all"):
            raise InputError(
                f"Say `{prefix}jobs` for the running jobs and yours, or `{prefix}jobs all` for "
                "every queued job of this server (admins)."
            )
        if word == "all" and not is_admin(self.bot.settings, ctx.author):
            raise InputError(
                f"Only server admins see every queued job of this server; `{prefix}jobs` shows "
                "the running jobs and yours."
            )
        runner = self.bot.runner
        running = await runner.running(guild_id)
        queued = await runner.queue(guild_id)
        if not running and not queued:
            await ctx.send("No training jobs are queued or running.", allowed_mentions=NO_MENTIONS)
            return
        lines = [status_text(job, job.progress, runner.budget_s(job)) for job in running]
        shown = queued if word == "all" else [j for j in queued if j.user_id == ctx.author.id]
        starts = await runner.start_estimates() if shown else {}
        if shown:
            lines.append("**Queue**" if word == "all" else "**Your queued jobs**")
            lines += [queue_line(job, starts.get(job.id)) for job in shown]
        others = len(queued) - len(shown)
        if others:
            lines.append(
                f"{others} more job{'s' if others != 1 else ''} of this server "
                f"{'are' if others != 1 else 'is'} queued (admins: `{prefix}jobs all`)."
            )
        await ctx.send("\n".join(lines)[:2000], allowed_mentions=NO_MENTIONS)

    @commands.hybrid_command(name="cancel")
    @app_commands.guild_only()
    @app_commands.describe(job_id="The job's number from !jobs (default: your latest job)")
    async def cancel(self, ctx: commands.Context[Any], job_id: int = 0) -> None:
        """Cancel your queued or running training job (admins may cancel any)."""
        guild_id = require_guild_id(ctx)
        if job_id == 0:
            own = await self.bot.runner.user_jobs(guild_id, ctx.author.id)
            if not own:
                raise InputError("You have no queued or running training job in this server.")
            job_id = max(job.id for job in own)
        job = await self.bot.runner.cancel(
            job_id,
            guild_id=guild_id,
            user_id=ctx.author.id,
            is_admin=is_admin(self.bot.settings, ctx.author),
        )
        detail = f" {escape_user_text(public_error(self.bot, job.error))}" if job.error else ""
        await ctx.send(f"Cancelled {job_title(job)}.{detail}", allowed_mentions=NO_MENTIONS)

    # ------------------------------------------------------------------ runner listener

    def _channel(self, job: Job) -> discord.PartialMessageable:
        """The job's channel, usable before the gateway has delivered the server (after a restart,
        the runner reports recovered jobs while the bot is still connecting)."""
        return self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)

    async def _edit_status(self, job: Job, text: str, *, create: bool = True) -> None:
        """Show ``text`` in the job's status message: remembered, recovered from the store (after
        a restart), or posted now if the job has none yet."""
        if job.id not in self._status:
            async with self._announcing:  # a command may be posting it right now
                pass
        message = self._status.get(job.id)
        if message is None and job.status_message_id is not None:
            message = self._channel(job).get_partial_message(job.status_message_id)
        if message is not None:
            try:
                await message.edit(content=text, allowed_mentions=NO_MENTIONS)
            except discord.NotFound:
                pass  # someone deleted it: post a fresh one below
            else:
                self._status[job.id] = message
                return
        if not create:
            return
        posted = await self._channel(job).send(text, allowed_mentions=NO_MENTIONS)
        self._status[job.id] = posted
        await self.bot.store.set_job_status_message(job.guild_id, job.id, posted.id)

    async def on_progress(self, job: Job, event: dict[str, Any]) -> None:
        """Edit the job's status message, at most once every ``progress_edit_interval_s``."""
        now = time.monotonic()
        last = self._last_edit.get(job.id, -math.inf)
        if now - last < self.bot.settings.progress_edit_interval_s:
            return
        self._last_edit[job.id] = now
        await self._edit_status(job, status_text(job, event, self.bot.runner.budget_s(job)))

    async def on_finished(self, job: Job, result: JobResult) -> None:
        """Post the data table, perplexity before → after and the loss curve, then add three
        sample tweets to that message once the new model has written them.

        Loading a model and sampling can take longer than the runner waits for a listener, so
        the samples come from a task of their own.
        """
        self._last_edit.pop(job.id, None)
        # A retrain replaced the folder: the next !tweet must load the new weights.
        self.bot.cache.invalidate(result.path)
        try:
            await self._edit_status(job, f"**{job_title(job)}** — Done")
        except discord.HTTPException as error:  # the report below says it all the same
            log.warning("job %s: could not mark its status done (HTTP %s)", job.id, error.status)
        self._status.pop(job.id, None)
        report, text = await self._post_report(job, result)
        task = asyncio.get_running_loop().create_task(self._add_samples(job, result, report, text))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _post_report(self, job: Job, result: JobResult) -> tuple[discord.Message, str]:
        """Post the report with its loss curve; when Discord refuses the image, the text alone
        (which says so). Returns the message and its text."""
        text = summary_text(job, result)
        channel = self._channel(job)
        if result.loss_plot is not None:
            try:
                file = discord.File(result.loss_plot, filename="loss.png")
                report = await channel.send(text, file=file, allowed_mentions=NO_MENTIONS)
            except (discord.HTTPException, OSError) as error:
                why = (
                    f"HTTP {error.status}"
                    if isinstance(error, discord.HTTPException)
                    else type(error).__name__
                )
                log.warning(
                    "job %s: could not post its loss curve (%s); posting the report without it",
                    job.id,
                    why,
                )
                text = f"{text}\n{LOSS_CURVE_MISSING}"
            else:
                return report, text
        return await channel.send(text, allowed_mentions=NO_MENTIONS), text

    async def _add_samples(
        self, job: Job, result: JobResult, report: discord.Message, text: str
    ) -> None:
        """Append three sample tweets to the report; a failure here does not fail the job."""
        try:
            generated = await self.bot.cache.generate(result.path, DEFAULT_PROMPT, n=SAMPLE_TWEETS)
        except DoppeltweetError as error:
            log.warning("no samples for job %s: %s", job.id, error)
            return
        except Exception:
            log.exception("sampling the new model of job %s failed", job.id)
            return
        if not generated.tweets:
            return
        samples = "\n".join(f"> {escape_user_text(t)}" for t in generated.tweets[:SAMPLE_TWEETS])
        content = f"{text}\n**Samples** (AI-generated)\n{samples}"
        try:
            await report.edit(content=content[:2000], allowed_mentions=NO_MENTIONS)
        except discord.HTTPException:
            log.warning("could not add samples to the report of job %s", job.id)

    async def on_failed(self, job: Job, message: str) -> None:
        """The job's one status message says why it failed (and shows the data table when the
        tweets were read but refused).

        A cancelled job only gets its status message updated: ``!cancel`` already answered.
        """
        self._last_edit.pop(job.id, None)
        if job.state == "cancelled":
            await self._edit_status(job, f"**{job_title(job)}** — Cancelled", create=False)
            self._status.pop(job.id, None)
            return
        message = public_error(self.bot, message)  # the training process may name files
        await self._edit_status(job, failure_text(job, message))
        self._status.pop(job.id, None)


def _attachments(
    ctx: commands.Context[Any], archive: discord.Attachment | None
) -> list[discord.Attachment]:
    """Every file of the command: all of a message's attachments, or the slash option's one."""
    if ctx.interaction is None and ctx.message.attachments:
        return list(ctx.message.attachments)
    return [archive] if archive is not None else []
