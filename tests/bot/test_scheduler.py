"""The schedule language (``every 6h``, ``at 09:00 mon,thu``, options), the triggers built from
stored schedules, where a restored schedule picks up, and the scheduler's independence from the
bot's class. The runs themselves are tested against a simulated Discord in
``tests/bot/exts/autopost/``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.schedule_grammar import (
    MIN_INTERVAL_S,
    ScheduleRequest,
    check_timezone,
    describe,
    format_duration,
    parse_duration,
    parse_interval,
    parse_schedule,
    parse_time_spec,
)
from bot.scheduler import build_trigger, first_run
from bot.store import Schedule
from training.errors import InputError

ROOT = Path(__file__).resolve().parents[2]

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
    to_bluesky: bool = False,
    to_mastodon: bool = False,
    prompt: str = "",
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
        to_bluesky=to_bluesky,
        to_mastodon=to_mastodon,
        prompt=prompt,
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
        (
            "every 6h --to-bluesky --to-mastodon",
            ScheduleRequest("interval", "6h", to_bluesky=True, to_mastodon=True),
        ),
        (
            "at 09:00 --prompt My dream is --to-x",
            ScheduleRequest("cron", "09:00", to_x=True, prompt="My dream is"),
        ),
        (
            "every 1h --prompt “Today I   learned”",
            ScheduleRequest("interval", "1h", prompt="Today I learned"),
        ),
        # The prompt runs to the next option, so `at` inside it is part of the prompt.
        ("every 1h --prompt at last", ScheduleRequest("interval", "1h", prompt="at last")),
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
        ("every 1h --prompt", r"^`--prompt` needs the words each post starts with, such as "),
        ("every 1h --prompt a --prompt b", r"^Give `--prompt` once\.$"),
        ("every 1h --prompt " + "word " * 50, r"^The prompt is 249 characters long; keep it "),
        ("every 1h --to-myspace", r"^I do not understand “--to-myspace”; write "),
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
        (schedule(spec="1d", to_bluesky=True), "every 1d, also to Bluesky"),
        (
            schedule(spec="1d", to_x=True, to_bluesky=True, to_mastodon=True),
            "every 1d, also to X, Bluesky and Mastodon",
        ),
        (schedule(spec="6h", prompt="My dream is"), "every 6h, starting “My dream is”"),
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


def test_a_prompt_is_quoted_as_the_caller_asks() -> None:
    made = schedule(prompt="*bold* <@1>")
    assert describe(made, quote=lambda text: text.replace("*", "\\*")).endswith(
        "starting “\\*bold\\* <@1>”"
    )


_PROBE = """
import json, sys
import bot.scheduler
print(json.dumps(sorted(m for m in sys.modules if m.startswith("bot."))))
"""


def test_the_scheduler_imports_without_the_bot_client() -> None:
    """The client builds the scheduler; the scheduler needs only a small host protocol."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "bot.scheduler" in loaded
    assert "bot.client" not in loaded and not any(m.startswith("bot.exts") for m in loaded)
