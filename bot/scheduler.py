"""Auto-posting: an APScheduler ``AsyncIOScheduler`` in the bot's event loop, one job per active
schedule (the schedules live in the store), restored on start with their missed runs coalesced.

One run is :mod:`bot.services.autoposts`; the posting rules are in docs/autopost.md. The scheduler
depends on :class:`AutoPostHost`, the few things it needs of the bot, not on the bot's class.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import discord
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.formatting import NO_MENTIONS, escape_user_text
from bot.posters import Poster, configured, missing_credentials, poster_for
from bot.posters.crosspost import post_everywhere
from bot.public_errors import public_error
from bot.schedule_grammar import (
    ScheduleRequest,
    check_timezone,
    parse_duration,
    parse_time_spec,
)
from bot.services import autoposts
from bot.store import Schedule
from training.errors import DoppeltweetError, InputError

if TYPE_CHECKING:
    from bot.config import BotSettings
    from bot.model_cache import ModelCache
    from bot.store import Store

log = logging.getLogger(__name__)

#: A run missed by more than this (bot down, event loop busy) is skipped rather than posted late.
DEFAULT_MISFIRE_GRACE_S = 3600
#: Most schedules one server may have: every active one costs a generation per run.
MAX_SCHEDULES_PER_GUILD = 10
#: The guild setting that overrides ``BotSettings.timezone`` for one server.
TIMEZONE_SETTING = "timezone"


def _now() -> datetime:
    return datetime.now(UTC)


class AutoPostHost(Protocol):
    """What the auto-poster needs of the bot: its services and a way to find channels.

    :class:`bot.client.DoppeltweetBot` is one; the bot builds the auto-poster and hands itself in,
    as discord.py hands a cog its bot.
    """

    @property
    def settings(self) -> BotSettings: ...

    @property
    def store(self) -> Store: ...

    @property
    def cache(self) -> ModelCache: ...

    async def wait_until_ready(self) -> None: ...

    def get_channel(self, channel_id: int, /) -> Any: ...

    async def fetch_channel(self, channel_id: int, /) -> Any: ...


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


# ---------------------------------------------------------------------------------- posting


@dataclass(frozen=True, slots=True)
class PostOutcome:
    """What one run of a schedule did (for logs and tests)."""

    schedule_id: int
    text: str | None
    message_id: int | None
    paused_reason: str | None
    #: Where each network shows the post (its address, else its id), by network key.
    posted_to: dict[str, str] = field(default_factory=dict)


class AutoPoster:
    """Runs the auto-posting schedules of every server the bot is in."""

    def __init__(
        self,
        bot: AutoPostHost,
        *,
        misfire_grace_s: int = DEFAULT_MISFIRE_GRACE_S,
        posters: Mapping[str, Poster] | None = None,
    ) -> None:
        self.bot = bot
        self.misfire_grace_s = misfire_grace_s
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": misfire_grace_s,
            },
        )
        # One poster per network, made on first use (``posters`` hands some in ready-made).
        self._posters: dict[str, Poster] = dict(posters or {})

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

    def poster(self, key: str) -> Poster:
        """The poster of one network for the configured account (made once); InputError when
        its settings are missing."""
        if key not in self._posters:
            self._posters[key] = poster_for(self.bot.settings, key)
        return self._posters[key]

    def check_targets(self, targets: tuple[str, ...]) -> None:
        """InputError naming the settings of the first chosen network that is not configured."""
        for key in targets:
            if key not in self._posters and not configured(self.bot.settings, key):
                raise InputError(missing_credentials(key))

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
        self.check_targets(request.targets)
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
            to_bluesky=request.to_bluesky,
            to_mastodon=request.to_mastodon,
            prompt=request.prompt,
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
        try:
            self.check_targets(schedule.targets)
        except InputError as error:
            await self.bot.store.set_schedule_paused(guild_id, schedule_id, True, str(error))
            raise
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
        try:
            draft = await autoposts.generate(
                self.bot.cache,
                store,
                schedule,
                model,
                public=lambda text: public_error(self.bot, text),
            )
            text, targets, errors = await autoposts.choose_networks(
                draft.text, schedule, self.bot.settings, self.poster
            )
            message = await autoposts.show(channel, schedule, model, text)
        except autoposts.Paused as paused:
            return await self._pause(schedule, paused.reason, channel if paused.tell else None)
        if message is None:
            return PostOutcome(schedule.id, None, None, None)
        posted_to, refused, transient = await post_everywhere(
            text, targets, ai_label=schedule.ai_label
        )
        errors.extend(refused)
        for problem in transient:
            log.warning("auto-post #%s: %s", schedule.id, problem)
        if posted_to:
            log.info("auto-post #%s posted to %s", schedule.id, ", ".join(sorted(posted_to)))
        await autoposts.record(store, schedule, draft, text, posted_to)
        await store.mark_schedule_run(schedule.id, _now())
        if errors:
            return await self._pause(
                schedule, " ".join(errors), channel, text=text, message=message, posted=posted_to
            )
        return PostOutcome(schedule.id, text, message.id, None, posted_to)

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
        posted: dict[str, str] | None = None,
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
            schedule.id, text, message.id if message is not None else None, reason, posted or {}
        )
