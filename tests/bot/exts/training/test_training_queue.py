"""The fair training queue as Discord shows it: servers take turns, and ``!jobs`` and the status
messages say when a job is expected to start (from the time budgets ahead of it)."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import simcord
from discord_world import CSV, World

from bot.store import Store
from training.errors import InputError
from training.handles import parse_handles

#: The training budget every job here gets (the training setting's default).
BUDGET_S = 300


def _starts(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"expected to start <t:(\d+):R>", text)]


async def _queue(store: Store, guild_id: int, channel_id: int, user_id: int, name: str) -> int:
    job = await store.create_job(
        guild_id, channel_id, user_id, name, handles=parse_handles([name]), sources=["bluesky"]
    )
    return job.id


async def test_a_second_servers_one_job_runs_before_the_first_servers_later_ones(
    world: World, store: Store, simcord_env: simcord.Env
) -> None:
    # Server A has three jobs waiting, from three members, before server B asks for one.
    for member, name in ((world.alice, "a1"), (world.bob, "a2"), (world.admin, "a3")):
        await _queue(store, world.guild.id, world.channel.id, member.id, name)
    other = simcord_env.create_guild("Server B")
    channel = other.create_text_channel("general")
    zed = other.add_member(simcord_env.create_user("zed"))
    before = time.time()
    await zed.send(channel, "!train @zed", attachments=[("tweets.csv", CSV)])
    after = time.time()

    jobs = {j.model_name: j for j in await store.recent_jobs(world.guild.id)}
    jobs["zed"] = (await store.recent_jobs(other.id))[0]
    assert {j.state for j in jobs.values()} == {"succeeded"}
    by_start = sorted(jobs.values(), key=lambda j: j.started_at)  # type: ignore[arg-type,return-value]
    assert [j.model_name for j in by_start] == ["a1", "zed", "a2", "a3"]
    # Its status message said so when it was queued: next in line, after a1's budget.
    first = [m for m in world.env.http_requests if m.method == "POST"]
    status = next(r.json for r in first if r.path == f"/channels/{channel.id}/messages")
    assert status["content"].startswith("**Job #4 · zed** — Queued: next in line; expected to ")
    [start] = _starts(status["content"])
    assert int(before) + BUDGET_S - 1 <= start <= after + BUDGET_S + 1


async def test_jobs_shows_your_queued_jobs_and_counts_the_others(
    world: World, store: Store
) -> None:
    await _queue(store, world.guild.id, world.channel.id, world.bob.id, "bobs")
    mine = await _queue(store, world.guild.id, world.channel.id, world.alice.id, "mine")
    await world.alice.send(world.channel, "!jobs")
    lines = world.last_text().splitlines()
    assert lines[0] == "**Your queued jobs**"
    assert lines[1].startswith(f"2. Job #{mine} · mine — by <@{world.alice.id}>; expected to")
    assert lines[2] == "1 more job of this server is queued (admins: `!jobs all`)."
    # Nothing runs, so the first job starts now and the second after its budget.
    assert len(_starts(lines[1])) == 1


async def test_an_admin_sees_the_whole_queue_of_the_server_with_start_times(
    world: World, store: Store
) -> None:
    ids = [
        await _queue(store, world.guild.id, world.channel.id, world.bob.id, "first"),
        await _queue(store, world.guild.id, world.channel.id, world.alice.id, "second"),
    ]
    before = time.time()
    await world.admin.send(world.channel, "!jobs all")
    lines = world.last_text().splitlines()
    assert lines[0] == "**Queue**"
    assert [line.split(" — ")[0] for line in lines[1:]] == [
        f"1. Job #{ids[0]} · first",
        f"2. Job #{ids[1]} · second",
    ]
    starts = [_starts(line)[0] for line in lines[1:]]
    assert starts[1] - starts[0] == BUDGET_S and int(before) - 1 <= starts[0]


async def test_jobs_all_is_for_admins_and_other_words_are_refused(world: World) -> None:
    await world.alice.send(world.channel, "!jobs all")
    assert world.last_text() == (
        "Only server admins see every queued job of this server; `!jobs` shows the running "
        "jobs and yours."
    )
    await world.alice.send(world.channel, "!jobs everything")
    assert world.last_text().startswith("Say `!jobs` for the running jobs and yours")
    assert world.handled_errors() == [InputError, InputError]


async def test_the_queued_and_running_texts_say_when_a_job_starts_and_is_ready(
    world: World, store: Store
) -> None:
    from datetime import UTC, datetime

    from bot.exts.training._reports import queued_text, status_text

    job_id = await _queue(store, world.guild.id, world.channel.id, world.alice.id, "jack")
    job = await store.get_job(world.guild.id, job_id)
    assert job is not None
    assert queued_text(replace(job, position=3), 125.0, now=1000.0) == (
        f"**Job #{job_id} · jack** — Queued: 2 jobs ahead; expected to start <t:1125:R>."
    )
    assert (
        queued_text(replace(job, position=1)) == f"**Job #{job_id} · jack** — Queued: next in line."
    )
    running = replace(
        job, state="running", started_at=datetime.fromtimestamp(2000, UTC), position=None
    )
    assert status_text(running, {"phase": "loading"}, 300.0) == (
        f"**Job #{job_id} · jack** — Loading the base model\nBudget 5m 00s · ready <t:2300:R>"
    )
    assert (
        status_text(running, {"phase": "loading"}, None)
        == f"**Job #{job_id} · jack** — Loading the base model"
    )
