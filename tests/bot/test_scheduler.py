"""The schedule language (``every 6h``, ``at 09:00 mon,thu``, options), the triggers built from
stored schedules, and where a restored schedule picks up. The runs themselves are tested against a
simulated Discord in ``tests/bot/exts/test_autopost.py``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.scheduler import (
    MIN_INTERVAL_S,
    ScheduleRequest,
    build_trigger,
    check_timezone,
    describe,
    first_run,
    format_duration,
    parse_duration,
    parse_interval,
    parse_schedule,
    parse_time_spec,
)
from bot.store import Schedule
from training.errors import InputError

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday


def schedule(
    kind: str = "interval",
    spec: str = "6h",
    *,
    timezone: str = "UTC",
    jitter_s: int = 0,
    to_x: bool = False,
    ai_label: bool = True,
    last_run_at: datetime | None = None,
) -> Schedule:
    return Schedule(
        id=1,
        guild_id=10,
        model_name="jack",
        channel_id=20,
        kind=kind,  # type: ignore[arg-type]
        spec=spec,
        timezone=timezone,
        jitter_s=jitter_s,
        to_x=to_x,
        ai_label=ai_label,
        paused=False,
        paused_reason=None,
        created_by=1,
        created_at=T0,
        last_run_at=last_run_at,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("6h", 21600), ("1d", 86400), ("1h30m", 5400), ("2w", 1209600), ("6H", 21600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "h", "6x", "-1h", "1.5h", "six hours"])
def test_bad_durations_are_one_sentence(text: str) -> None:
    with pytest.raises(InputError, match=r"is not a duration such as 30m, 6h or 1d\.$"):
        parse_duration(text)


def test_durations_print_compactly() -> None:
    assert [format_duration(s) for s in (600, 5400, 86400, 90000)] == ["10m", "1h30m", "1d", "1d1h"]


def test_intervals_have_a_minimum_and_a_maximum() -> None:
    assert parse_interval("10m") == MIN_INTERVAL_S
    with pytest.raises(InputError, match=r"^Auto-posts must be at least 10m apart, so “9m” is"):
        parse_interval("9m")
    with pytest.raises(InputError, match=r"^Auto-posts must come at least every 28d; "):
        parse_interval("5w")


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("09:00", (9, 0, "")),
        ("9:05", (9, 5, "")),
        ("23:59 mon,thu", (23, 59, "mon,thu")),
        ("07:30 mon-fri", (7, 30, "mon-fri")),
        ("07:30 weekdays", (7, 30, "mon-fri")),
        ("07:30 weekends", (7, 30, "sat,sun")),
        ("07:30 daily", (7, 30, "")),
    ],
)
def test_times_of_day(spec: str, parsed: tuple[int, int, str]) -> None:
    assert parse_time_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["24:00", "9", "09:60", "noon", "9am"])
def test_bad_times_are_one_sentence(spec: str) -> None:
    with pytest.raises(InputError, match=r"is not a time of day such as 09:00 or 21:30\.$"):
        parse_time_spec(spec)


@pytest.mark.parametrize("days", ["monday", "mon,", "mon-", "mon-thu-fri", "lun"])
def test_bad_weekdays_are_one_sentence(days: str) -> None:
    with pytest.raises(InputError, match=r"is not a list of weekdays such as mon,thu or mon-fri"):
        parse_time_spec(f"09:00 {days}")


@pytest.mark.parametrize(
    ("text", "request_"),
    [
        ("every 6h", ScheduleRequest("interval", "6h")),
        ("every 90m", ScheduleRequest("interval", "1h30m")),
        ("at 9:00", ScheduleRequest("cron", "09:00")),
        ("at 09:00 mon,thu --to-x", ScheduleRequest("cron", "09:00 mon,thu", to_x=True)),
        (
            "every 6h --to-x --no-ai-label --jitter 10m",
            ScheduleRequest("interval", "6h", jitter_s=600, to_x=True, ai_label=False),
        ),
        ("--jitter 5m every 1h", ScheduleRequest("interval", "1h", jitter_s=300)),
        ("at 09:00 --tz Europe/Berlin", ScheduleRequest("cron", "09:00", timezone="Europe/Berlin")),
        # Discord clients turn "--" into a dash.
        ("every 6h —to-x –no-ai-label", ScheduleRequest("interval", "6h", 0, True, False)),
    ],
)
def test_schedules(text: str, request_: ScheduleRequest) -> None:
    assert parse_schedule(text) == request_


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"^Say when to post: write `every 6h`"),
        ("--to-x", r"^Say when to post: "),
        ("every", r"^`every` needs a value; "),
        ("every 6h --jitter", r"^`--jitter` needs a value; "),
        ("every 6h at 09:00", r"^Give either `every …` or `at …`, not both\.$"),
        ("every 6h now", r"^I do not understand “now”; write "),
        ("at 09:00 --tz Mars/Olympus", r"^“Mars/Olympus” is not a time zone such as Europe/Berlin"),
        ("every 1h --jitter 31m", r"^The jitter may be at most 30m for this schedule, not 31m\.$"),
        ("at 09:00 --jitter 13h", r"^The jitter may be at most 12h for this schedule, not 13h\.$"),
    ],
)
def test_bad_schedules_are_one_sentence(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        parse_schedule(text)
    assert str(caught.value).count(". ") == 0


def test_time_zones_are_checked() -> None:
    assert check_timezone("Europe/Berlin") == "Europe/Berlin"
    with pytest.raises(InputError, match=r"^“Mars/Olympus” is not a time zone such as "):
        check_timezone("Mars/Olympus")


def test_an_interval_trigger_is_anchored_at_the_schedules_creation() -> None:
    trigger = build_trigger(schedule(spec="6h"))
    later = T0 + timedelta(hours=7, minutes=3)
    assert trigger.get_next_fire_time(None, later) == T0 + timedelta(hours=12)
    assert trigger.get_next_fire_time(T0 + timedelta(hours=12), later) == T0 + timedelta(hours=18)


def test_a_cron_trigger_fires_at_the_local_time() -> None:
    trigger = build_trigger(schedule("cron", "09:00 mon", timezone="America/New_York"))
    fire = trigger.get_next_fire_time(None, T0)
    assert fire == datetime(2026, 1, 5, 14, 0, tzinfo=UTC)  # Monday 09:00 EST


def test_jitter_delays_but_never_advances_a_run() -> None:
    trigger = build_trigger(schedule(spec="1h", jitter_s=600))
    fires = [trigger.get_next_fire_time(None, T0 + timedelta(minutes=1)) for _ in range(50)]
    base = T0 + timedelta(hours=1)
    assert all(base <= f <= base + timedelta(minutes=10) for f in fires)
    assert len(set(fires)) > 1


def test_jitter_does_not_add_up_from_run_to_run() -> None:
    trigger = build_trigger(schedule(spec="1h", jitter_s=600))
    late = T0 + timedelta(hours=1, minutes=9, seconds=59)
    for _ in range(20):
        fire = trigger.get_next_fire_time(late, late)
        assert fire is not None
        assert T0 + timedelta(hours=2) <= fire <= T0 + timedelta(hours=2, minutes=10)
    without = build_trigger(schedule(spec="1h"))
    assert without.get_next_fire_time(late, late) == T0 + timedelta(hours=2)


@pytest.mark.parametrize(
    ("made", "text"),
    [
        (schedule(spec="6h"), "every 6h"),
        (schedule("cron", "09:00"), "daily at 09:00 (UTC)"),
        (
            schedule("cron", "09:00 mon,thu", timezone="Europe/Berlin", jitter_s=600, to_x=True),
            "on mon,thu at 09:00 (Europe/Berlin), up to 10m later at random, also to X",
        ),
        (
            schedule(spec="1d", to_x=True, ai_label=False),
            "every 1d, also to X without the AI label",
        ),
    ],
)
def test_schedules_describe_themselves(made: Schedule, text: str) -> None:
    assert describe(made) == text


def test_a_new_schedule_first_runs_one_interval_after_its_creation() -> None:
    made = schedule(spec="6h")
    assert first_run(made) == T0 + timedelta(hours=6)


def test_a_restored_schedule_continues_after_its_last_post() -> None:
    made = schedule(spec="6h", last_run_at=T0 + timedelta(hours=12, seconds=3))
    first = first_run(made)
    assert first == T0 + timedelta(hours=18)


def test_a_restored_schedule_that_posted_exactly_on_time_does_not_post_again() -> None:
    made = schedule("cron", "09:00", last_run_at=T0 + timedelta(hours=9))
    first = first_run(made)
    assert first == T0 + timedelta(days=1, hours=9)
