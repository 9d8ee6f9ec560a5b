"""JobRunner stopping and starting again: a running job is queued again, a job a dead bot left
running is recovered once, and a training process it left behind is stopped (only that one).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_fakes import (
    CHANNEL,
    GUILD,
    USER,
    MakeRunner,
    dead_pid,
    submit,
    upload,
)

from bot.config import BotSettings
from bot.store import Store
from training.handles import parse_handles
from training.store import process_alive

# -- stopping ----------------------------------------------------------------------------------


async def test_stop_requeues_a_running_job_without_counting_a_restart(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, rec = await make_runner()
    job = await submit(runner)
    await rec.wait(lambda: "training" in rec.phases(job.id))
    await runner.stop()
    assert job.pid is not None and not process_alive(job.pid)
    after = await store.get_job(GUILD, job.id)
    assert after is not None and after.state == "queued" and after.restarts == 0
    assert rec.progress[-1][1]["phase"] == "queued"

    monkeypatch.setenv("FAKE_TRAINING_MODE", "succeed")
    _, rec2 = await make_runner()
    await rec2.wait(lambda: rec2.ended(job.id))
    assert rec2.finished[0][0].state == "succeeded"


async def test_a_model_saved_while_the_bot_stopped_is_not_trained_again(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "late")
    runner, rec = await make_runner()
    job = await submit(runner)
    await rec.wait(lambda: "training" in rec.phases(job.id))
    await runner.stop()
    after = await store.get_job(GUILD, job.id)
    assert after is not None and after.state == "succeeded"
    assert await store.queued_jobs(None) == []


# -- recovering at start -----------------------------------------------------------------------


async def test_a_job_left_running_by_a_dead_bot_is_queued_again_once(
    make_runner: MakeRunner, store: Store, bot_settings: BotSettings
) -> None:
    runner, _ = await make_runner(start=False)
    path = upload(runner)
    job = await store.create_job(
        GUILD, CHANNEL, USER, "alice", handles=parse_handles(["alice"]), sources=[path]
    )
    await store.mark_job_running(job.id, dead_pid())

    runner, rec = await make_runner()
    await rec.wait(lambda: rec.ended(job.id))
    assert rec.progress[0][1]["phase"] == "queued"
    assert "restarted" in rec.progress[0][1]["message"]
    done, _ = rec.finished[0]
    assert done.state == "succeeded" and done.restarts == 1


async def test_a_job_already_restarted_once_fails_after_another_restart(
    make_runner: MakeRunner, store: Store
) -> None:
    runner, _ = await make_runner(start=False)
    job = await store.create_job(
        GUILD, CHANNEL, USER, "alice", handles=parse_handles(["alice"]), sources=[upload(runner)]
    )
    await store.mark_job_running(job.id, dead_pid())
    await store.requeue_job(job.id, count_restart=True)
    await store.mark_job_running(job.id, dead_pid())

    runner, rec = await make_runner()
    await runner.wait_for_listeners()
    failed = await store.get_job(GUILD, job.id)
    assert failed is not None and failed.state == "failed"
    assert failed.error is not None
    assert failed.error.startswith("The bot restarted while training;")
    assert rec.failed == [(rec.failed[0][0], failed.error)]
    assert await runner.running(GUILD) == [] and await runner.queue(GUILD) == []


async def test_recovery_stops_the_training_process_an_earlier_bot_left_behind(
    make_runner: MakeRunner, store: Store, fake_training: Path, tmp_path: Path
) -> None:
    runner, _ = await make_runner(start=False)
    path = upload(runner)
    job = await store.create_job(
        GUILD, CHANNEL, USER, "alice", handles=parse_handles(["alice"]), sources=[path]
    )
    orphan = subprocess.Popen(
        runner.command(job),
        env={**os.environ, "FAKE_TRAINING_MODE": "hang"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(0.3)
        assert orphan.poll() is None
        await store.mark_job_running(job.id, orphan.pid)

        runner, rec = await make_runner()
        assert orphan.wait(timeout=5) is not None
        await rec.wait(lambda: rec.ended(job.id))
        assert rec.finished[0][0].restarts == 1
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


async def test_recovery_never_kills_a_process_that_is_not_training(
    make_runner: MakeRunner, store: Store
) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        runner, _ = await make_runner(start=False)
        job = await store.create_job(
            GUILD,
            CHANNEL,
            USER,
            "alice",
            handles=parse_handles(["alice"]),
            sources=[upload(runner)],
        )
        await store.mark_job_running(job.id, bystander.pid)
        runner, rec = await make_runner()
        await rec.wait(lambda: rec.ended(job.id))
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
