"""JobRunner watching a training process: a run that errs, crashes, is killed or cannot start
ends in one sentence and keeps the previous model; listeners that fail or are slow hold
nothing up. The training process is the stand-in (conftest.FAKE_TRAINING).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from service_fakes import (
    CHANNEL,
    GUILD,
    OTHER_USER,
    USER,
    MakeRunner,
    Recorder,
    models_for,
    submit,
)

from bot.config import BotSettings
from bot.jobs import JobResult, JobRunner
from bot.store import Job, Store


async def test_kill_9_fails_the_job_in_one_sentence_and_keeps_the_previous_model(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    runner, rec = await make_runner()
    first = await submit(runner)
    await rec.wait(lambda: rec.ended(first.id))
    before = await store.get_model(GUILD, "alice")
    assert before is not None

    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    again = await models_for(runner).retrain(GUILD, CHANNEL, USER, "alice")
    await rec.wait(lambda: "training" in rec.phases(again.id))
    assert again.pid is not None
    os.kill(again.pid, signal.SIGKILL)
    await rec.wait(lambda: rec.ended(again.id))

    job, message = rec.failed[-1]
    assert (
        message == "The training process was killed (signal 9); the previous model is still served."
    )
    assert job.state == "failed" and job.error == message
    assert await store.get_model(GUILD, "alice") == before
    assert (before.path / "training.json").is_file()


async def test_the_error_line_is_the_failure_message(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "error")
    runner, rec = await make_runner()
    job = await submit(runner)
    await rec.wait(lambda: rec.ended(job.id))
    assert rec.failed[0][1] == "Too few tweets are left after cleaning to train a model."


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("crash", "The training process stopped with exit code 3; no model was saved."),
        ("nodone", "The training process ended without saving a model; no model was saved."),
    ],
)
async def test_a_process_that_ends_without_a_result_fails_in_one_sentence(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, store: Store, mode: str, message: str
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", mode)
    runner, rec = await make_runner()
    job = await submit(runner)
    await rec.wait(lambda: rec.ended(job.id))
    assert rec.failed[0][1] == message
    assert await store.get_model(GUILD, "alice") is None


async def test_a_python_that_cannot_start_fails_the_job(
    store: Store, bot_settings: BotSettings, tmp_path: Path
) -> None:
    runner = JobRunner(store, bot_settings, python=str(tmp_path / "no-such-python"))
    rec = Recorder()
    runner.add_listener(rec)
    await runner.start()
    job = await submit(runner)
    assert job.state == "failed"
    await runner.wait_for_listeners()
    assert rec.failed[0][1].startswith("The training process could not be started")


async def test_a_failing_listener_does_not_stop_the_runner(make_runner: MakeRunner) -> None:
    class Broken:
        async def on_progress(self, job: Job, event: dict[str, Any]) -> None:
            raise RuntimeError("progress")

        async def on_finished(self, job: Job, result: JobResult) -> None:
            raise RuntimeError("finished")

        async def on_failed(self, job: Job, message: str) -> None:
            raise RuntimeError("failed")

    runner, rec = await make_runner(start=False)
    runner.remove_listener(rec)
    runner.add_listener(Broken())
    runner.add_listener(rec)
    await runner.start()
    job = await submit(runner)
    await rec.wait(lambda: rec.ended(job.id))
    assert rec.finished and rec.finished[0][0].state == "succeeded"


async def test_a_slow_result_announcement_does_not_hold_up_the_next_job(
    make_runner: MakeRunner,
) -> None:
    release = asyncio.Event()

    class SlowAnnouncer(Recorder):
        async def on_finished(self, job: Job, result: JobResult) -> None:
            await release.wait()  # e.g. generating sample tweets on a busy CPU
            await super().on_finished(job, result)

    runner, rec = await make_runner(start=False)
    slow = SlowAnnouncer()
    runner.add_listener(slow)
    await runner.start()
    first = await submit(runner, "@alice")
    second = await submit(runner, "@bob", user=OTHER_USER)
    await rec.wait(lambda: rec.ended(first.id) and rec.ended(second.id))
    assert slow.finished == []
    release.set()
    await runner.wait_for_listeners()
    assert [j.id for j, _ in slow.finished] == [first.id, second.id]
