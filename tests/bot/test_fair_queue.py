"""The fair queue's order and its start estimates, as plain functions (no database), and the
order the job runner starts jobs in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from service_fakes import GUILD, OTHER_GUILD, OTHER_USER, MakeRunner, submit

from bot.config import BotSettings
from bot.fair_queue import fair_order, start_estimates
from bot.store import Job
from training.handles import parse_handles

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def job(job_id: int, guild: int, user: int, **changes: object) -> Job:
    fields: dict[str, object] = {
        "id": job_id,
        "guild_id": guild,
        "channel_id": 1,
        "user_id": user,
        "model_name": f"m{job_id}",
        "handles": tuple(parse_handles([f"m{job_id}"])),
        "sources": ("bluesky",),
        "options": {},
        "state": "queued",
        "pid": None,
        "restarts": 0,
        "created_at": T0,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "status_message_id": None,
        "progress": None,
    }
    fields.update(changes)
    return Job(**fields)  # type: ignore[arg-type]


def test_servers_take_turns_and_a_server_served_recently_waits() -> None:
    queued = [job(2, 1, 10), job(3, 1, 10), job(4, 2, 20), job(5, 3, 30), job(6, 2, 20)]
    served = {(1, 10): T0}
    assert [j.id for j in fair_order(queued, served)] == [4, 5, 2, 6, 3]


def test_members_of_one_server_take_turns_oldest_request_first() -> None:
    queued = [job(1, 1, 10), job(2, 1, 10), job(3, 1, 11), job(4, 1, 12)]
    assert [j.id for j in fair_order(queued, {})] == [1, 3, 4, 2]
    # Member 11 trained earlier than member 12: the one served longest ago comes first.
    served = {(1, 11): T0, (1, 12): T0 - timedelta(hours=1)}
    assert [j.id for j in fair_order(queued, served)] == [1, 4, 3, 2]


def test_an_empty_queue_is_empty() -> None:
    assert fair_order([], {(1, 1): T0}) == []
    assert start_estimates([], [], now=T0, slots=1, duration_s=lambda j: 300) == {}


def test_each_job_starts_when_the_first_slot_frees_up() -> None:
    running = [
        job(1, 1, 10, state="running", started_at=T0 - timedelta(seconds=100)),
        job(2, 2, 20, state="running", started_at=T0 - timedelta(seconds=250)),
    ]
    queue = [job(3, 3, 30), job(4, 1, 11), job(5, 2, 21)]
    starts = start_estimates(queue, running, now=T0, slots=2, duration_s=lambda j: 300)
    assert starts == {3: 50.0, 4: 200.0, 5: 350.0}
    # A free slot starts the first job at once; a job past its budget frees its slot now.
    overdue = [job(1, 1, 10, state="running", started_at=T0 - timedelta(seconds=900))]
    assert start_estimates(queue[:2], overdue, now=T0, slots=2, duration_s=lambda j: 60) == {
        3: 0.0,
        4: 0.0,
    }


def test_more_runs_than_slots_hold_the_queue_until_enough_have_ended() -> None:
    running = [
        job(1, 1, 10, state="running", started_at=T0),
        job(2, 2, 20, state="running", started_at=T0 - timedelta(seconds=200)),
    ]
    starts = start_estimates([job(3, 3, 30)], running, now=T0, slots=1, duration_s=lambda j: 300)
    assert starts == {3: 300.0}


# -- through the job runner --------------------------------------------------------------------


async def test_a_second_servers_job_runs_before_the_first_servers_later_ones(
    make_runner: MakeRunner,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., BotSettings],
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_DELAY", "0.05")
    runner, rec = await make_runner(make_settings(max_queued_jobs_per_user=3))
    a_jobs = [await submit(runner, f"@a{i}") for i in range(3)]
    b_job = await submit(runner, "@b", guild=OTHER_GUILD, user=OTHER_USER)
    assert b_job.position == 1 and [j.position for j in await runner.queue(GUILD)] == [2, 3]
    await rec.wait(lambda: len(rec.finished) == 4)
    started = [job.id for job, event in rec.progress if event["phase"] == "starting"]
    assert started == [a_jobs[0].id, b_job.id, a_jobs[1].id, a_jobs[2].id]
