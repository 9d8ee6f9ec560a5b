"""The schedule language admins type: ``every 6h``, ``at 09:00 mon,thu``, and the options.

Plain functions from text to a :class:`ScheduleRequest` (and back to words with
:func:`describe`), with one-sentence :class:`~training.errors.InputError` for every mistake. The
scheduling service (:mod:`bot.scheduler`) turns stored schedules into triggers and runs them; the
cog (:mod:`bot.exts.autopost`) only adapts Discord to these functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.posters import NETWORKS
from bot.store import PostTargets, Schedule, ScheduleKind
from training.errors import InputError
from training.generation import check_prompt

#: Auto-posts may not come more often than this (seconds): a channel is not a firehose.
MIN_INTERVAL_S = 10 * 60
#: Nor less often than this; longer gaps are better written as ``at 09:00 mon``.
MAX_INTERVAL_S = 28 * 24 * 3600
#: The longest random delay ``--jitter`` may add to a time-of-day schedule.
MAX_CRON_JITTER_S = 12 * 3600

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+[mhdw])+")
_DURATION_PART = re.compile(r"(\d+)([mhdw])")
_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {"daily": "", "weekdays": "mon-fri", "weekends": "sat,sun"}
_DASHES = ("—", "–")  # Discord clients turn "--" into a dash
#: Quotes a prompt may be wrapped in (Discord clients make typed quotes curly).
_QUOTES = {'"': '"', "'": "'", "“": "”", "„": "“", "«": "»", "‘": "’"}
_TARGET_OPTIONS = {f"--to-{key}": key for key in NETWORKS}

SCHEDULE_HELP = (
    "write `every 6h` (at least 10 minutes apart) or `at 09:00` (optionally `at 09:00 mon,thu`), "
    "then any of `--to-x`, `--to-bluesky`, `--to-mastodon`, `--no-ai-label`, `--jitter 10m`, "
    "`--tz Europe/Berlin`, `--prompt My dream is`"
)


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


def parse_prompt(text: str) -> str:
    """A schedule's prompt: quotes around it dropped, whitespace collapsed, length checked."""
    prompt = text.strip()
    if len(prompt) >= 2 and _QUOTES.get(prompt[0]) == prompt[-1]:
        prompt = prompt[1:-1]
    prompt = check_prompt(prompt)
    if not prompt:
        raise InputError("`--prompt` needs the words each post starts with, such as `My dream is`.")
    return prompt


@dataclass(frozen=True, slots=True)
class ScheduleRequest(PostTargets):
    """What an admin asked for: when (kind + canonical spec), where else and how to post."""

    kind: ScheduleKind
    spec: str
    jitter_s: int = 0
    to_x: bool = False
    ai_label: bool = True
    timezone: str | None = None
    to_bluesky: bool = False
    to_mastodon: bool = False
    prompt: str = ""


def _normalise_dashes(text: str) -> list[str]:
    tokens = []
    for token in text.split():
        for dash in _DASHES:
            if token.startswith(dash):
                token = "--" + token[len(dash) :]
        tokens.append(token)
    return tokens


def parse_schedule(text: str) -> ScheduleRequest:
    """Parse ``every 6h [--to-x] [--to-bluesky] [--to-mastodon] [--no-ai-label] [--jitter 10m]
    [--tz Europe/Berlin] [--prompt words…]`` or ``at 09:00 [mon,thu] …``.

    ``--prompt`` takes every word up to the next ``--`` option (or the end), so write the time
    before it.
    """
    tokens = _normalise_dashes(text)
    kind: ScheduleKind | None = None
    spec = ""
    jitter_s = 0
    targets: set[str] = set()
    ai_label = True
    timezone: str | None = None
    prompt = ""
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
        if token in _TARGET_OPTIONS:
            targets.add(_TARGET_OPTIONS[token])
        elif token == "--no-ai-label":
            ai_label = False
        elif token == "--jitter":
            jitter_s = parse_duration(value("--jitter"))
            index += 1
        elif token == "--tz":
            timezone = check_timezone(value("--tz"))
            index += 1
        elif token == "--prompt":
            if prompt:
                raise InputError("Give `--prompt` once.")
            words = []
            while index + 1 < len(tokens) and not tokens[index + 1].startswith("--"):
                index += 1
                words.append(tokens[index])
            prompt = parse_prompt(" ".join(words))
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
    return ScheduleRequest(
        kind,
        spec,
        jitter_s,
        to_x="x" in targets,
        ai_label=ai_label,
        timezone=timezone,
        to_bluesky="bluesky" in targets,
        to_mastodon="mastodon" in targets,
        prompt=prompt,
    )


def describe(schedule: Schedule, *, quote: Callable[[str], str] = str) -> str:
    """``every 6h`` or ``on mon,thu at 09:00 (Europe/Berlin)``, plus its options and prompt
    (passed through ``quote``, e.g. to escape it for Discord)."""
    if schedule.kind == "interval":
        text = f"every {schedule.spec}"
    else:
        hour, minute, days = parse_time_spec(schedule.spec)
        when = f"on {days}" if days else "daily"
        text = f"{when} at {hour:02d}:{minute:02d} ({schedule.timezone})"
    if schedule.jitter_s:
        text += f", up to {format_duration(schedule.jitter_s)} later at random"
    targets = [NETWORKS[key] for key in schedule.targets]
    if targets:
        names = targets[0] if len(targets) == 1 else ", ".join(targets[:-1]) + " and " + targets[-1]
        text += f", also to {names}" + ("" if schedule.ai_label else " without the AI label")
    if schedule.prompt:
        text += f", starting “{quote(schedule.prompt)}”"
    return text
