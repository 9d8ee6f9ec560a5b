"""The order queued training jobs start in, and when each is expected to start.

The queue is round-robin, not first come first served: the next job belongs to the server whose
last training started longest ago (a server never served goes first), and within that server to
the member served longest ago; a member's own jobs run oldest first. Ties go to the job queued
first. So one server's three requests cannot hold up another server's one, and one busy member
cannot hold up their server. Start estimates follow from the time budgets: each slot frees up
when its running job's budget is spent, and every job ahead takes its own budget.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.store import Job

#: Never served sorts before any time; anything served while ordering sorts after all times.
_NEVER, _AT, _THIS_ROUND = 0, 1, 2


def fair_order(
    queued: Sequence[Job], last_started: Mapping[tuple[int, int], datetime]
) -> list[Job]:
    """``queued`` in the order they will start.

    ``last_started`` maps (server id, member id) to when that member's latest training started
    in that server; a server's last start is the latest of its members'.
    """
    pending = sorted(queued, key=lambda j: j.id)
    member_key: dict[tuple[int, int], tuple[int, float]] = {
        key: (_AT, when.timestamp()) for key, when in last_started.items()
    }
    guild_key: dict[int, tuple[int, float]] = {}
    for (guild_id, _), key in member_key.items():
        guild_key[guild_id] = max(guild_key.get(guild_id, key), key)
    order: list[Job] = []
    turn = 0
    while pending:
        first_of_guild: dict[int, int] = {}
        for job in pending:
            first_of_guild.setdefault(job.guild_id, job.id)
        guild = min(
            first_of_guild,
            key=lambda g: (guild_key.get(g, (_NEVER, 0.0)), first_of_guild[g]),
        )
        first_of_member: dict[int, int] = {}
        for job in pending:
            if job.guild_id == guild:
                first_of_member.setdefault(job.user_id, job.id)
        member = min(
            first_of_member,
            key=lambda u: (member_key.get((guild, u), (_NEVER, 0.0)), first_of_member[u]),
        )
        chosen = next(j for j in pending if j.guild_id == guild and j.user_id == member)
        pending.remove(chosen)
        order.append(chosen)
        turn += 1
        guild_key[guild] = member_key[(guild, member)] = (_THIS_ROUND, float(turn))
    return order


def start_estimates(
    queue: Sequence[Job],
    running: Sequence[Job],
    *,
    now: datetime,
    slots: int,
    duration_s: Callable[[Job], float],
) -> dict[int, float]:
    """Seconds from ``now`` until each queued job (in start order) is expected to start.

    A running job frees its slot when its budget (``duration_s``) is spent, counted from its
    start (at once if it is already over); each queued job then takes the slot that frees up
    first, for its own budget.
    """
    slots = max(1, slots)
    free_at = sorted(max(0.0, duration_s(job) - _elapsed(job, now)) for job in running)
    # More runs than slots (re-attached after a restart): a slot frees when enough have ended.
    free_at = free_at[max(0, len(free_at) - slots) :]
    free_at += [0.0] * (slots - len(free_at))
    heapq.heapify(free_at)
    starts: dict[int, float] = {}
    for job in queue:
        start = heapq.heappop(free_at)
        starts[job.id] = start
        heapq.heappush(free_at, start + duration_s(job))
    return starts


def _elapsed(job: Job, now: datetime) -> float:
    if job.started_at is None:
        return 0.0
    return max(0.0, (now - job.started_at).total_seconds())
