"""Auto-posting: generated tweets on a schedule, in a Discord channel and optionally on X.

An APScheduler 3 ``AsyncIOScheduler`` runs inside the bot's event loop; the schedules themselves
live in SQLite (the store) and the scheduler only holds one job per active schedule, with the
schedule's id as the job id. On start every active schedule is restored with its next run
computed from when it last posted (or was created), so runs missed while the bot was down are
found: APScheduler coalesces them into one run, which posts only if it is still within the misfire
grace time.

A post is generated from the server's model in the model cache (off the event loop) with every
earlier auto-post of that model excluded, so it never repeats one; it goes out as the tweet-style
embed with no pings allowed, optionally to X, and is logged in the store. Errors that would repeat
on every tick (X refusing the credentials, the channel deleted, permissions missing, the model
unusable) pause the schedule with the reason and tell the channel once.

Parsing of the schedule a user types (``every 6h``, ``at 09:00 mon,thu``, options) lives here too,
as plain functions, so the cog only adapts Discord to them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import discord
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.formatting import escape_user_text, tweet_embed
from bot.public_errors import public_error
from bot.store import Schedule, ScheduleKind
from bot.x_poster import MISSING_CREDENTIALS, XPoster, XPostError, x_post_text
from training.errors import DoppeltweetError, InputError
from training.generate import DEFAULT_PROMPT
from training.textrules import has_mentions, neutralise_mentions

if TYPE_CHECKING:
    from bot.client import DoppeltweetBot

log = logging.getLogger(__name__)

#: Auto-posts may not come more often than this (seconds): a channel is not a firehose.
MIN_INTERVAL_S = 10 * 60
#: Nor less often than this; longer gaps are better written as ``at 09:00 mon``.
MAX_INTERVAL_S = 28 * 24 * 3600
#: A run missed by more than this (bot down, event loop busy) is skipped rather than posted late.
DEFAULT_MISFIRE_GRACE_S = 3600
#: The longest random delay ``--jitter`` may add to a time-of-day schedule.
MAX_CRON_JITTER_S = 12 * 3600
#: Most schedules one server may have: every active one costs a generation per run.
MAX_SCHEDULES_PER_GUILD = 10
#: The guild setting that overrides ``BotSettings.timezone`` for one server.
TIMEZONE_SETTING = "timezone"

NO_MENTIONS = discord.AllowedMentions.none()

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+[mhdw])+")
_DURATION_PART = re.compile(r"(\d+)([mhdw])")
_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {"daily": "", "weekdays": "mon-fri", "weekends": "sat,sun"}
_DASHES = ("—", "–")  # Discord clients turn "--" into a dash

SCHEDULE_HELP = (
    "write `every 6h` (at least 10 minutes apart) or `at 09:00` (optionally `at 09:00 mon,thu`), "
    "then any of `--to-x`, `--no-ai-label`, `--jitter 10m`, `--tz Europe/Berlin`"
)


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------- parsing


def parse_duration(text: str) -> int:
    """Seconds in ``30m``, ``6h``, ``1d``, ``1h30m`` or ``2w``; InputError otherwise."""
    token = text.strip().lower()
    if not _DURATION.fullmatch(token):
        raise InputError(f"“{text[:20]}” is not a duration such as 30m, 6h or 1d.")
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(token))


def format_duration(seconds: int) -> str:
    """``6h``, ``1h30m``, ``1d``: the compact form a duration is stored and shown in."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0m"


def parse_interval(text: str) -> int:
    """An auto-post interval in seconds, between 10 minutes and 4 weeks."""
    seconds = parse_duration(text)
    if seconds < MIN_INTERVAL_S:
        raise InputError(
            f"Auto-posts must be at least {format_duration(MIN_INTERVAL_S)} apart, "
            f"so “{text.strip()[:20]}” is too often."
        )
    if seconds > MAX_INTERVAL_S:
        raise InputError(
            f"Auto-posts must come at least every {format_duration(MAX_INTERVAL_S)}; "
            "use `at 09:00 mon` for a weekly post."
        )
    return seconds


def parse_days(text: str) -> str:
    """Weekdays as APScheduler's ``day_of_week`` (``mon,thu``, ``mon-fri``); "" means daily."""
    token = text.strip().lower()
    token = _DAY_ALIASES.get(token, token)
    if not token:
        return ""
    for part in token.split(","):
        ends = part.split("-")
        if not 1 <= len(ends) <= 2 or any(end not in _DAYS for end in ends):
            raise InputError(f"“{text[:30]}” is not a list of weekdays such as mon,thu or mon-fri.")
    return token


def parse_time_spec(spec: str) -> tuple[int, int, str]:
    """``09:00`` or ``09:00 mon,thu`` → (hour, minute, days; "" = every day)."""
    parts = spec.split()
    if not 1 <= len(parts) <= 2:
        raise InputError(f"“{spec[:30]}” is not a time of day such as 09:00 or 09:00 mon,thu.")
    match = _TIME.fullmatch(parts[0])
    if not match:
        raise InputError(f"“{parts[0][:20]}” is not a time of day such as 09:00 or 21:30.")
    days = parse_days(parts[1]) if len(parts) == 2 else ""
    return int(match.group(1)), int(match.group(2)), days


def check_timezone(name: str) -> str:
    """An IANA time zone name, or a one-sentence InputError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise InputError(f"“{name[:40]}” is not a time zone such as Europe/Berlin.") from error
    return name


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """What an admin asked for: when (kind + canonical spec) and how to post."""

    kind: ScheduleKind
    spec: str
    jitter_s: int = 0
    to_x: bool = False
    ai_label: bool = True
    timezone: str | None = None


def parse_schedule(text: str) -> ScheduleRequest:
    """Parse ``every 6h [--to-x] [--no-ai-label] [--jitter 10m] [--tz Europe/Berlin]`` or
    ``at 09:00 [mon,thu] …``."""
    tokens = []
    for token in text.split():
        for dash in _DASHES:
            if token.startswith(dash):
                token = "--" + token[len(dash) :]
        tokens.append(token)
    kind: ScheduleKind | None = None
    spec = ""
    jitter_s = 0
    to_x = False
    ai_label = True
    timezone: str | None = None
    index = 0

    def value(name: str) -> str:
        if index + 1 >= len(tokens):
            raise InputError(f"`{name}` needs a value; {SCHEDULE_HELP}.")
        return tokens[index + 1]

    while index < len(tokens):
        token = tokens[index].lower()
        if token in ("every", "at"):
            if kind is not None:
                raise InputError("Give either `every …` or `at …`, not both.")
            if token == "every":
                kind, spec = "interval", format_duration(parse_interval(value("every")))
                index += 2
                continue
            time_text = value("at")
            index += 2
            day_text = ""
            if index < len(tokens) and not tokens[index].startswith("--"):
                day_text = tokens[index]
                index += 1
            hour, minute, days = parse_time_spec(f"{time_text} {day_text}".strip())
            kind, spec = "cron", f"{hour:02d}:{minute:02d}" + (f" {days}" if days else "")
            continue
        if token == "--to-x":
            to_x = True
        elif token == "--no-ai-label":
            ai_label = False
        elif token == "--jitter":
            jitter_s = parse_duration(value("--jitter"))
            index += 1
        elif token == "--tz":
            timezone = check_timezone(value("--tz"))
            index += 1
        else:
            raise InputError(f"I do not understand “{tokens[index][:30]}”; {SCHEDULE_HELP}.")
        index += 1
    if kind is None:
        raise InputError(f"Say when to post: {SCHEDULE_HELP}.")
    limit = parse_duration(spec) // 2 if kind == "interval" else MAX_CRON_JITTER_S
    if jitter_s > limit:
        raise InputError(
            f"The jitter may be at most {format_duration(limit)} for this schedule, "
            f"not {format_duration(jitter_s)}."
        )
    return ScheduleRequest(kind, spec, jitter_s, to_x, ai_label, timezone)


class GridIntervalTrigger(IntervalTrigger):
    """An interval trigger whose runs stay on the grid ``start + k * interval``.

    APScheduler's own adds the interval to the previous fire time, jitter included, so random
    delays would add up run after run and the schedule would drift later and later.
    """

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is None:
            return super().get_next_fire_time(None, now)
        start = self.start_date.timestamp()
        elapsed = previous_fire_time.timestamp() - start
        fire = start + self.interval_length * (math.floor(elapsed / self.interval_length) + 1)
        if self.jitter:
            fire += random.uniform(0, self.jitter)
        if self.end_date and fire > self.end_date.timestamp():
            return None
        return datetime.fromtimestamp(fire, tz=self.timezone)


def build_trigger(schedule: Schedule) -> BaseTrigger:
    """The APScheduler trigger of a stored schedule, in the schedule's own time zone.

    Interval schedules are anchored at their creation, so the times they post at do not move
    when the bot restarts.
    """
    zone = ZoneInfo(schedule.timezone)
    jitter = schedule.jitter_s or None
    if schedule.kind == "interval":
        return GridIntervalTrigger(
            seconds=parse_duration(schedule.spec),
            start_date=schedule.created_at,
            timezone=zone,
            jitter=jitter,
        )
    hour, minute, days = parse_time_spec(schedule.spec)
    return CronTrigger(
        hour=hour, minute=minute, day_of_week=days or "*", timezone=zone, jitter=jitter
    )


def first_run(schedule: Schedule, trigger: BaseTrigger | None = None) -> datetime | None:
    """The first run after the schedule last posted (or was created), possibly in the past.

    A past time is a run missed while the bot was down; the scheduler coalesces the missed runs
    and posts once if the latest is within the misfire grace time. The second's margin keeps a
    run that posted exactly on time from counting as due again.
    """
    trigger = trigger or build_trigger(schedule)
    since = schedule.last_run_at or schedule.created_at
    return trigger.get_next_fire_time(None, since + timedelta(seconds=1))


def describe(schedule: Schedule) -> str:
    """``every 6h`` or ``at 09:00 on mon,thu (Europe/Berlin)``, plus its options."""
    if schedule.kind == "interval":
        text = f"every {schedule.spec}"
    else:
        hour, minute, days = parse_time_spec(schedule.spec)
        when = f"on {days}" if days else "daily"
        text = f"{when} at {hour:02d}:{minute:02d} ({schedule.timezone})"
    if schedule.jitter_s:
        text += f", up to {format_duration(schedule.jitter_s)} later at random"
    if schedule.to_x:
        text += ", also to X" + ("" if schedule.ai_label else " without the AI label")
    return text


# ---------------------------------------------------------------------------------- posting


@dataclass(frozen=True, slots=True)
class PostOutcome:
    """What one run of a schedule did (for logs and tests)."""

    schedule_id: int
    text: str | None
    message_id: int | None
    x_post_id: str | None
    paused_reason: str | None


class AutoPoster:
    """Runs the auto-posting schedules of every server the bot is in."""

    def __init__(
        self,
        bot: DoppeltweetBot,
        *,
        misfire_grace_s: int = DEFAULT_MISFIRE_GRACE_S,
        prompt: str = DEFAULT_PROMPT,
    ) -> None:
        self.bot = bot
        self.prompt = prompt
        self.misfire_grace_s = misfire_grace_s
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": misfire_grace_s,
            },
        )
        self._x: XPoster | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the scheduler is started."""
        return bool(self._scheduler.running)

    async def start(self) -> None:
        """Start the scheduler in the running loop and restore every active schedule."""
        self._scheduler.start()
        for schedule in await self.bot.store.all_schedules():
            if schedule.paused:
                continue
            try:
                self._add_job(schedule)
            except (DoppeltweetError, ValueError, LookupError) as error:
                # A schedule the database holds but this version cannot read must not keep the
                # bot from starting; it is paused with the reason for the admins to see.
                log.error("auto-post #%s cannot be restored: %s", schedule.id, error)
                await self.bot.store.pause_schedule_if_active(
                    schedule.id, "Its schedule could not be read; remove it and add it again."
                )
        log.info("auto-posting started with %d active schedules", len(self.job_ids()))

    async def stop(self) -> None:
        """Stop the scheduler; a post being written is abandoned (the next start goes on)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            # AsyncIOScheduler shuts down on the loop's next turn.
            await asyncio.sleep(0)

    def job_ids(self) -> set[int]:
        """The schedules that have a job in the scheduler (the active ones)."""
        return {int(job.id) for job in self._scheduler.get_jobs()}

    def next_run(self, schedule_id: int) -> datetime | None:
        """When the schedule posts next, or None while it is paused."""
        job = self._scheduler.get_job(str(schedule_id))
        return None if job is None else job.next_run_time

    def _add_job(self, schedule: Schedule, *, start: datetime | None = None) -> None:
        trigger = build_trigger(schedule)
        first = start if start is not None else first_run(schedule, trigger)
        if first is None:
            return
        self._scheduler.add_job(
            self._tick,
            trigger,
            args=(schedule.id,),
            id=str(schedule.id),
            name=f"autopost {schedule.id} ({schedule.model_name})",
            replace_existing=True,
            next_run_time=first,
        )

    def _remove_job(self, schedule_id: int) -> None:
        if self._scheduler.get_job(str(schedule_id)) is not None:
            self._scheduler.remove_job(str(schedule_id))

    # -- managing schedules ---------------------------------------------------------------------

    async def timezone_for(self, guild_id: int) -> str:
        """The server's time zone setting, else the bot's."""
        zone = await self.bot.store.get_guild_setting(guild_id, TIMEZONE_SETTING)
        return str(zone) if zone else self.bot.settings.timezone

    async def set_timezone(self, guild_id: int, name: str) -> str:
        """Set the server's time zone for new ``at …`` schedules (existing ones keep theirs)."""
        zone = check_timezone(name.strip())
        await self.bot.store.set_guild_setting(guild_id, TIMEZONE_SETTING, zone)
        return zone

    def x_poster(self) -> XPoster:
        """The X client for the configured account (created once); InputError if unconfigured."""
        if self._x is None:
            self._x = XPoster.from_settings(self.bot.settings)
        return self._x

    async def create(
        self,
        guild_id: int,
        model_name: str,
        channel_id: int,
        request: ScheduleRequest,
        *,
        created_by: int,
    ) -> Schedule:
        """Store a new schedule and start it; its first post follows one interval or time."""
        if request.to_x and not self.bot.settings.x_posting_configured:
            raise InputError(MISSING_CREDENTIALS)
        if len(await self.bot.store.list_schedules(guild_id)) >= MAX_SCHEDULES_PER_GUILD:
            raise InputError(
                f"This server already has {MAX_SCHEDULES_PER_GUILD} auto-posts; remove one with "
                f"`{self.bot.settings.prefix}autopost remove ID` first."
            )
        zone = check_timezone(request.timezone or await self.timezone_for(guild_id))
        schedule = await self.bot.store.add_schedule(
            guild_id,
            model_name,
            channel_id,
            kind=request.kind,
            spec=request.spec,
            timezone=zone,
            created_by=created_by,
            jitter_s=request.jitter_s,
            to_x=request.to_x,
            ai_label=request.ai_label,
        )
        self._add_job(schedule)
        return schedule

    async def _own(self, guild_id: int, schedule_id: int) -> Schedule:
        schedule = await self.bot.store.get_schedule(guild_id, schedule_id)
        if schedule is None:
            raise InputError(
                f"This server has no auto-post #{schedule_id}; "
                f"`{self.bot.settings.prefix}autopost list` shows them."
            )
        return schedule

    async def pause(self, guild_id: int, schedule_id: int, reason: str) -> Schedule:
        """Pause a schedule of this server (no posts until it is resumed)."""
        await self._own(guild_id, schedule_id)
        schedule = await self.bot.store.set_schedule_paused(guild_id, schedule_id, True, reason)
        self._remove_job(schedule_id)
        assert schedule is not None
        return schedule

    async def resume(self, guild_id: int, schedule_id: int) -> Schedule:
        """Resume a paused schedule; it posts at its next regular time, not at once."""
        await self._own(guild_id, schedule_id)
        schedule = await self.bot.store.set_schedule_paused(guild_id, schedule_id, False)
        assert schedule is not None
        if schedule.to_x and not self.bot.settings.x_posting_configured:
            await self.bot.store.set_schedule_paused(
                guild_id, schedule_id, True, MISSING_CREDENTIALS
            )
            raise InputError(MISSING_CREDENTIALS)
        trigger = build_trigger(schedule)
        self._add_job(schedule, start=trigger.get_next_fire_time(None, _now()))
        return schedule

    async def remove(self, guild_id: int, schedule_id: int) -> Schedule:
        """Delete a schedule of this server for good."""
        schedule = await self._own(guild_id, schedule_id)
        await self.bot.store.delete_schedule(guild_id, schedule_id)
        self._remove_job(schedule_id)
        return schedule

    async def prune(self) -> int:
        """Drop the jobs whose schedules are gone (their model was deleted); how many."""
        active = {s.id for s in await self.bot.store.all_schedules() if not s.paused}
        stale = self.job_ids() - active
        for schedule_id in stale:
            self._remove_job(schedule_id)
        return len(stale)

    # -- one run --------------------------------------------------------------------------------

    async def _tick(self, schedule_id: int) -> None:
        """The scheduler's job: one run, never raising into APScheduler."""
        try:
            await self.run_schedule(schedule_id)
        except Exception:
            log.exception("auto-post #%s failed", schedule_id)

    async def run_schedule(self, schedule_id: int) -> PostOutcome | None:
        """Generate, post and log one tweet of a schedule; None when the schedule is gone."""
        store = self.bot.store
        # A run due right after a restart waits for the connection (and the channel cache).
        await self.bot.wait_until_ready()
        schedule = await store.schedule_by_id(schedule_id)
        if schedule is None or schedule.paused:
            self._remove_job(schedule_id)
            return None
        model = await store.get_model(schedule.guild_id, schedule.model_name)
        if model is None:
            self._remove_job(schedule_id)
            return None

        channel, reason = await self._channel(schedule)
        if channel is None:
            return await self._pause(schedule, reason or "", None)

        exclude = await store.posted_texts(schedule.guild_id, schedule.model_name)
        try:
            result = await self.bot.cache.generate(model.path, self.prompt, n=1, exclude=exclude)
        except DoppeltweetError as error:
            return await self._pause(schedule, public_error(self.bot, str(error)), channel)
        if not result.tweets:
            # Every round of candidates was a repeat, a copy or empty: the model has run out of
            # new things to say. Saying so once and pausing beats failing silently every run.
            log.warning(
                "auto-post #%s: the model wrote nothing new (%d candidates rejected)",
                schedule.id,
                result.rejected,
            )
            return await self._pause(
                schedule,
                f"The model could not write a tweet it has not posted before ({result.rejected} "
                "tries were repeats, copies of its training tweets or empty); retrain it with "
                "more tweets, or resume to try again.",
                channel,
            )
        text = result.tweets[0]

        embed = tweet_embed(
            text,
            display_name=" & ".join(h.name for h in model.handles),
            handle=model.handles[0].name,
            model=model.name,
        )
        try:
            message = await channel.send(embed=embed, allowed_mentions=NO_MENTIONS)
        except discord.NotFound:
            return await self._pause(schedule, "Its channel was deleted.", None)
        except discord.Forbidden:
            return await self._pause(
                schedule,
                f"I may not post in #{escape_user_text(channel.name)} any more "
                "(missing permissions).",
                channel,
            )
        except discord.HTTPException as error:
            log.warning("auto-post #%s: Discord refused the post: %s", schedule.id, error)
            return PostOutcome(schedule.id, None, None, None, None)

        x_post_id: str | None = None
        x_error: XPostError | None = None
        if schedule.to_x and self.bot.settings.public_mentions == "skip" and has_mentions(text):
            log.info("auto-post #%s: not posted to X, it names accounts", schedule.id)
        elif schedule.to_x:
            try:
                poster = self.x_poster()
                loop = asyncio.get_running_loop()
                # Generated text may name real accounts: on X they must not be pinged.
                x_text = x_post_text(neutralise_mentions(text), ai_label=schedule.ai_label)
                x_post_id = await loop.run_in_executor(None, poster.post, x_text)
            except InputError as error:
                x_error = XPostError(str(error), pauses=True)
            except XPostError as error:
                x_error = error

        log_fields: dict[str, Any] = {
            "kind": "autopost",
            "prompt": self.prompt,
            "channel_id": schedule.channel_id,
            "x_post_id": x_post_id,
        }
        try:
            await store.log_tweet(
                schedule.guild_id, schedule.model_name, text, schedule_id=schedule.id, **log_fields
            )
        except sqlite3.IntegrityError:
            # The schedule was removed while this post was being made; the post still counts.
            await store.log_tweet(schedule.guild_id, schedule.model_name, text, **log_fields)
        await store.mark_schedule_run(schedule.id, _now())
        if x_error is not None and x_error.pauses:
            return await self._pause(schedule, str(x_error), channel, text=text, message=message)
        if x_error is not None:
            log.warning("auto-post #%s: %s", schedule.id, x_error)
        return PostOutcome(schedule.id, text, message.id, x_post_id, None)

    async def _channel(self, schedule: Schedule) -> tuple[Any, str | None]:
        """The schedule's channel, or None with the reason the schedule must pause."""
        channel = self.bot.get_channel(schedule.channel_id)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(schedule.channel_id)
            except discord.NotFound:
                return None, "Its channel was deleted."
            except discord.Forbidden:
                return None, "I can no longer see its channel."
            except discord.HTTPException as error:
                raise RuntimeError("Discord could not look up the channel") from error
        guild = getattr(channel, "guild", None)
        if guild is None or guild.id != schedule.guild_id or not hasattr(channel, "send"):
            return None, "Its channel is no longer a text channel of this server."
        return channel, None

    async def _pause(
        self,
        schedule: Schedule,
        reason: str,
        channel: Any,
        *,
        text: str | None = None,
        message: discord.Message | None = None,
    ) -> PostOutcome:
        """Pause the schedule and, the first time only, tell its channel why."""
        self._remove_job(schedule.id)
        first = await self.bot.store.pause_schedule_if_active(schedule.id, reason)
        log.warning("auto-post #%s paused: %s", schedule.id, reason)
        if first and channel is not None:
            prefix = self.bot.settings.prefix
            notice = (
                f"Auto-post #{schedule.id} of **{escape_user_text(schedule.model_name)}** is "
                f"paused: {escape_user_text(reason)} An admin can resume it with "
                f"`{prefix}autopost resume {schedule.id}`."
            )
            try:
                await channel.send(notice[:2000], allowed_mentions=NO_MENTIONS)
            except discord.HTTPException:
                log.warning(
                    "could not tell channel %s that auto-post #%s paused", channel.id, schedule.id
                )
        return PostOutcome(
            schedule.id, text, message.id if message is not None else None, None, reason
        )
