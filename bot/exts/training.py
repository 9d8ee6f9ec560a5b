"""``!train``, ``!jobs``, ``!cancel`` and the status messages of training jobs.

The cog is also the job runner's listener: each job has one status message that is edited as the
background training process reports progress (at most once every ``progress_edit_interval_s``), and
when the job ends the cog posts the data table, the validation perplexity before → after, three
sample tweets and the loss curve — or one sentence saying why it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import NO_MENTIONS
from bot.exts import parse_handle_list, require_guild_id
from bot.exts.admin import admin_only
from bot.formatting import (
    data_table_block,
    escape_user_text,
    format_duration,
    perplexity_line,
    progress_text,
)
from bot.jobs import UPLOAD_ARCHIVE_FOLDER, JobResult, network_sources
from bot.own_messages import (
    OWN_MESSAGES_FILE,
    TRAIN_ME_SETTING,
    collect_own_messages,
    own_handle,
    own_model_name,
    refuse_if_nothing,
)
from bot.public_errors import public_error, public_message
from bot.store import Job
from training.config import get_settings as training_settings
from training.errors import DoppeltweetError, InputError
from training.generate import DEFAULT_PROMPT
from training.handles import Handle

if TYPE_CHECKING:
    from bot.client import DoppeltweetBot

log = logging.getLogger(__name__)

#: Phases whose progress message is meant for people (others may name server paths).
_PHASES_WITH_MESSAGES = frozenset({"queued", "fetching", "cleaning", "loading"})
API_WORDS = frozenset({"api", "--api", "x-api"})
#: ``!train me``: the member's own messages (``@me`` stays the X handle me).
ME_WORD = "me"
SAMPLE_TWEETS = 3


#: The report's last line when Discord refused its image.
LOSS_CURVE_MISSING = "_The loss curve could not be uploaded._"

#: Discord lets a message carry at most ten attachments.
MAX_ATTACHMENTS = 10
_MB = 1024 * 1024


def no_source_sentence(prefix: str) -> str:
    """What to do when ``!train`` got no tweets to learn from."""
    return (
        f"Attach your X archive (the zip, or tweets.js and the other .js files from its data/ "
        f"folder), a CSV, JSONL or plain-text (.txt, one post per line) file of tweets to "
        f"`{prefix}train @handle`, or name Bluesky handles (bluesky:name.bsky.social) or "
        f"Mastodon handles (mastodon:@name@server), or add `api` to read the paid X API."
    )


def size_refusal(size: int, limit: int, limit_mb: float) -> str:
    """``10.01 MB, over this bot's 10 MB limit`` — in bytes when MB would round into the limit."""
    shown = f"{size / _MB:.2f}"
    if float(shown) > limit_mb:
        return f"{shown} MB, over this bot's {limit_mb:g} MB limit"
    return f"{size:,} bytes, over this bot's limit of {limit:,} bytes ({limit_mb:g} MB)"


def job_title(job: Job) -> str:
    """``Job #3 · jack-bob`` — how a job is named in messages."""
    return f"Job #{job.id} · {escape_user_text(job.model_name)}"


def discord_time(unix_s: float) -> str:
    """A time Discord shows in each reader's own words and zone, kept current (``in 5 minutes``)."""
    return f"<t:{int(unix_s)}:R>"


def budget_line(job: Job, budget_s: float | None) -> str | None:
    """``Budget 5m 00s · ready <t:…:R>`` for a running job with a time budget."""
    if budget_s is None or job.state != "running" or job.started_at is None:
        return None
    ready = job.started_at.timestamp() + budget_s
    return f"Budget {format_duration(budget_s)} · ready {discord_time(ready)}"


def status_text(job: Job, event: dict[str, Any] | None, budget_s: float | None = None) -> str:
    """The status message of a job for its last progress event (or its state); a running job
    with a time budget also shows the budget and when it will be ready."""
    fields = event or {}
    phase = fields.get("phase") or ("queued" if job.state == "queued" else "starting")
    budget = budget_line(job, budget_s)
    # Notes (a base that does not write the person's language) stay in every later event.
    notes = fields.get("notes")
    notes = [str(n) for n in notes if n] if isinstance(notes, list) else []
    message = (
        public_message(str(fields["message"]))
        if phase in _PHASES_WITH_MESSAGES and fields.get("message") not in (None, "", *notes)
        else None
    )
    text = progress_text(
        title=job_title(job),
        phase=str(phase),
        step=fields.get("step"),
        total=fields.get("total"),
        loss=fields.get("loss"),
        eta_s=fields.get("eta_s"),
        message=message,
    )
    notes_text = "\n".join(f"⚠️ {escape_user_text(public_message(n))}" for n in notes)
    lines = [text, *([budget] if budget else []), *([notes_text] if notes else [])]
    return "\n".join(lines)[:2000]


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
        upload: list[Path] = []
        attachments = _attachments(ctx, archive)
        if attachments:
            if use_api:
                raise InputError("Use either an attachment or `api`, not both.")
            self._check_attachments(attachments)
            upload = self.bot.runner.upload_paths(guild_id, [a.filename for a in attachments])
            try:
                for attachment, path in zip(attachments, upload, strict=True):
                    await attachment.save(path)
                    self._check_saved(path)
            except BaseException:
                _remove_upload(upload)
                raise
            # Several files are the .js files of one archive: their folder is the source.
            sources = [str(upload[0] if len(upload) == 1 else upload[0].parent)]
        elif use_api:
            if any(h.platform != "x" for h in parsed):
                raise InputError(
                    "The X API reads X handles only; Bluesky and Mastodon handles need no `api`."
                )
            token = training_settings().x_bearer_token
            if token is None or not token.get_secret_value():
                raise InputError(
                    "The X API is not configured on this bot (it is paid: about $16 for 3,200 "
                    "tweets); attach your free X archive instead."
                )
            sources = ["api"]
        elif (networks := network_sources(parsed)) is not None:
            sources = networks  # Bluesky's public feed, each Mastodon server's public API
        else:
            raise InputError(no_source_sentence(prefix))
        async with self._announcing:
            try:
                job = await self.submit(ctx, guild_id, parsed, sources)
            except BaseException:
                if upload:
                    _remove_upload(upload)
                raise
            await self._announce_queued(ctx, job)

    async def _train_me(self, ctx: commands.Context[Any], guild_id: int) -> None:
        """A model of the member who asks, from their own messages in this server's channels."""
        settings = self.bot.settings
        if not await self.bot.store.get_guild_setting(guild_id, TRAIN_ME_SETTING, True):
            raise InputError(f"An admin of this server switched `{settings.prefix}train me` off.")
        guild, member = ctx.guild, ctx.author
        if guild is None or not isinstance(member, discord.Member):
            raise commands.NoPrivateMessage()
        handle, name = own_handle(member), own_model_name(member)
        await self._refuse_foreign_model(guild_id, name, member.id)
        collected = await collect_own_messages(
            guild,
            member,
            before=ctx.message,
            prefix=settings.prefix,
            max_messages=settings.train_me_max_messages,
            max_age_days=settings.train_me_max_age_days,
        )
        refuse_if_nothing(collected, settings.train_me_max_age_days)
        upload = [self.bot.runner.upload_path(guild_id, OWN_MESSAGES_FILE)]
        try:
            upload[0].write_text("\n".join(collected.lines) + "\n", encoding="utf-8")
        except BaseException:
            _remove_upload(upload)
            raise
        async with self._announcing:
            try:
                job = await self.bot.runner.submit(
                    guild_id,
                    ctx.channel.id,
                    member.id,
                    [handle],
                    [str(upload[0])],
                    {},
                    owner_id=member.id,
                    name=name,
                )
            except BaseException:
                _remove_upload(upload)
                raise
            await self._announce_queued(ctx, job)

    async def _refuse_foreign_model(self, guild_id: int, name: str, member_id: int) -> None:
        """An own model's name holds its member's username: a member who took the username of
        someone who trained a model of themselves never trains over that one."""
        record = await self.bot.store.get_model(guild_id, name)
        if record is not None and record.owner_id != member_id:
            raise InputError(
                f"The model {escape_user_text(name)} is the own model of a member who had your "
                f"username before; an admin can `{self.bot.settings.prefix}delete` it first."
            )

    def _check_attachments(self, attachments: list[discord.Attachment]) -> None:
        """Count and sizes, from the attachments' metadata, before anything is downloaded."""
        if len(attachments) > MAX_ATTACHMENTS:
            raise InputError(
                f"Attach at most {MAX_ATTACHMENTS} files to one training, not {len(attachments)}."
            )
        limit = self.bot.settings.max_attachment_bytes
        total = sum(a.size for a in attachments)
        total_limit = int(self.bot.settings.max_upload_total_mb * _MB)
        if len(attachments) > 1 and total > total_limit:
            over = size_refusal(total, total_limit, self.bot.settings.max_upload_total_mb)
            raise InputError(
                f"Together the files are {over} for one training; attach only tweets.js (and "
                "note-tweet.js or tweets-part1.js… if you have them) from your archive's data/ "
                "folder."
            )
        for attachment in attachments:
            if attachment.size > limit:
                which = "That file" if len(attachments) == 1 else "One of the files"
                over = size_refusal(attachment.size, limit, self.bot.settings.max_attachment_mb)
                raise InputError(
                    f"{which} is {over}; attach only the .js "
                    "files from your archive's data/ folder (tweets.js, and note-tweet.js or "
                    "tweets-part1.js… if you have them) instead of the whole zip."
                )

    def _check_saved(self, path: Path) -> None:
        """A saved file larger than its announced size is refused like one announced so."""
        size = path.stat().st_size
        limit = self.bot.settings.max_attachment_bytes
        if size > limit:
            over = size_refusal(size, limit, self.bot.settings.max_attachment_mb)
            raise InputError(f"{path.name} is {over}.")

    async def submit(
        self, ctx: commands.Context[Any], guild_id: int, handles: list[Handle], sources: list[str]
    ) -> Job:
        """Queue a training job with the bot's default training options."""
        return await self.bot.runner.submit(
            guild_id, ctx.channel.id, ctx.author.id, handles, sources, {}
        )

    async def retrain_model(self, ctx: commands.Context[Any], name: str) -> None:
        """Queue a model again from the sources its last training used."""
        guild_id = require_guild_id(ctx)
        async with self._announcing:
            job = await self.bot.runner.retrain(guild_id, ctx.channel.id, ctx.author.id, name)
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
        if word:
            await self.bot.store.set_guild_setting(guild_id, TRAIN_ME_SETTING, word == "on")
        enabled = await self.bot.store.get_guild_setting(guild_id, TRAIN_ME_SETTING, True)
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
        records, cancelled = await self.bot.runner.forget_member(guild_id, ctx.author.id)
        for record in records:
            self.bot.cache.invalidate(record.path)
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
        from bot.exts.admin import is_admin

        guild_id = require_guild_id(ctx)
        prefix = self.bot.settings.prefix
        word = scope.strip().lower()
        if word not in ("", "all"):
            raise InputError(
                f"Say `{prefix}jobs` for the running jobs and yours, or `{prefix}jobs all` for "
                "every queued job of this server (admins)."
            )
        if word == "all" and not is_admin(self.bot, ctx.author):
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
        from bot.exts.admin import is_admin

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
            is_admin=is_admin(self.bot, ctx.author),
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


def queued_text(job: Job, starts_in_s: float | None = None, now: float | None = None) -> str:
    """The first status of a job: it starts at once, or waits behind others (and, with time
    budgets, says when it is expected to start)."""
    if job.position:
        ahead = job.position - 1
        waits = f"{ahead} job{'s' if ahead != 1 else ''} ahead" if ahead else "next in line"
        return f"**{job_title(job)}** — Queued: {waits}{_expected_start(starts_in_s, now)}."
    return f"**{job_title(job)}** — Starting."


def queue_line(job: Job, starts_in_s: float | None = None, now: float | None = None) -> str:
    """``2. Job #5 · jack — by @member; expected to start <t:…:R>`` in ``!jobs``."""
    return (
        f"{job.position or '?'}. {job_title(job)} — by <@{job.user_id}>"
        f"{_expected_start(starts_in_s, now)}"
    )


def _expected_start(starts_in_s: float | None, now: float | None) -> str:
    if starts_in_s is None:
        return ""
    return f"; expected to start {discord_time((now or time.time()) + starts_in_s)}"


def failure_text(job: Job, message: str) -> str:
    """A failed job's status: the sentence, and the data table when the tweets were read."""
    lines = [f"**{job_title(job)}** — Failed: {escape_user_text(message)}"]
    table = (job.progress or {}).get("table")
    if isinstance(table, dict) and table and all(isinstance(v, dict) for v in table.values()):
        lines.append(data_table_block(table))
    return "\n".join(lines)[:2000]


def summary_text(job: Job, result: JobResult) -> str:
    """The finished job's report: the data table and validation perplexity before → after."""
    lines = [f"**{escape_user_text(job.model_name)}** is trained."]
    if result.table:
        lines.append(data_table_block(result.table))
    ppl = perplexity_line(result.perplexity_before, result.perplexity_after)
    if ppl:
        lines.append(ppl)
    lines += [escape_user_text(sentence) for sentence in record_sentences(job, result.record)]
    return "\n".join(lines)


def record_sentences(job: Job, record: dict[str, Any]) -> list[str]:
    """From ``training.json``: how recognisable the model is, and the base's language warning."""
    from training.recognisability import recognisability_sentence

    sentences = []
    likeness = record.get("likeness")
    figure = likeness.get("recognisability") if isinstance(likeness, dict) else None
    if isinstance(figure, dict):
        who = " & ".join(h.display for h in job.handles) if job.handles else job.model_name
        sentence = recognisability_sentence(figure, who)
        if sentence:
            sentences.append(sentence)
    languages = record.get("languages")
    warning = languages.get("warning") if isinstance(languages, dict) else None
    if isinstance(warning, str) and warning:
        sentences.append(f"⚠️ {warning}")
    return sentences


def _attachments(
    ctx: commands.Context[Any], archive: discord.Attachment | None
) -> list[discord.Attachment]:
    """Every file of the command: all of a message's attachments, or the slash option's one."""
    if ctx.interaction is None and ctx.message.attachments:
        return list(ctx.message.attachments)
    return [archive] if archive is not None else []


def _remove_upload(upload: list[Path]) -> None:
    """Forget the attachments of a refused job: their files and the fresh folders they sat in."""
    folders: set[Path] = set()
    for path in upload:
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
        with contextlib.suppress(OSError):
            if folder.name == UPLOAD_ARCHIVE_FOLDER:
                folder.parent.rmdir()


async def setup(bot: DoppeltweetBot) -> None:
    """Load the training cog."""
    await bot.add_cog(Training(bot))
