"""JobRunner: queueing, the background training process, cancelling, failures and recovery.

Most tests run a stand-in for the training CLI (conftest.FAKE_TRAINING) that speaks the same JSON
progress protocol, so they take well under a second each; the tests at the end of the file run the
real ``python -m training train`` on a ``tiny`` model.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from service_fakes import models_for, requests_for

from bot.config import BotSettings
from bot.jobs import JobResult, JobRunner
from bot.services.uploads import safe_filename, upload_path
from bot.store import Job, Store
from training.errors import InputError
from training.handles import parse_handle, parse_handles
from training.store import process_alive

GUILD, OTHER_GUILD, CHANNEL, USER, OTHER_USER = 1001, 2002, 3003, 4004, 5005


class Recorder:
    """A job listener that remembers every call and lets a test wait for one."""

    def __init__(self) -> None:
        self.progress: list[tuple[Job, dict[str, Any]]] = []
        self.finished: list[tuple[Job, JobResult]] = []
        self.failed: list[tuple[Job, str]] = []
        self._changed = asyncio.Event()

    async def on_progress(self, job: Job, event: dict[str, Any]) -> None:
        self.progress.append((job, event))
        self._changed.set()

    async def on_finished(self, job: Job, result: JobResult) -> None:
        self.finished.append((job, result))
        self._changed.set()

    async def on_failed(self, job: Job, message: str) -> None:
        self.failed.append((job, message))
        self._changed.set()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def phases(self, job_id: int) -> list[str]:
        return [e["phase"] for j, e in self.progress if j.id == job_id]

    def ended(self, job_id: int) -> bool:
        return any(j.id == job_id for j, _ in self.finished) or any(
            j.id == job_id for j, _ in self.failed
        )


MakeRunner = Callable[..., Awaitable[tuple[JobRunner, Recorder]]]


@pytest.fixture
async def make_runner(
    store: Store, bot_settings: BotSettings, fake_training: Path
) -> AsyncIterator[MakeRunner]:
    """Start runners over the fake training process; every one is stopped after the test."""
    started: list[JobRunner] = []

    async def make(
        settings: BotSettings | None = None, start: bool = True
    ) -> tuple[JobRunner, Recorder]:
        runner = JobRunner(store, settings or bot_settings, python=str(fake_training))
        recorder = Recorder()
        runner.add_listener(recorder)
        if start:
            await runner.start()
        started.append(runner)
        return runner, recorder

    yield make
    for runner in started:
        await runner.stop()


@pytest.fixture
def argv_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake training process appends its argv here, one JSON list per run."""
    path = tmp_path / "argv.jsonl"
    monkeypatch.setenv("FAKE_TRAINING_ARGV", str(path))
    return path


def upload(runner: JobRunner, name: str = "tweets.csv", guild: int = GUILD) -> str:
    path = upload_path(runner.settings, guild, name)
    path.write_text("text\nhello world\n", encoding="utf-8")
    return str(path)


async def submit(
    runner: JobRunner,
    handle: str = "@alice",
    *,
    user: int = USER,
    guild: int = GUILD,
    **options: Any,
) -> Job:
    return await requests_for(runner).submit(
        guild, CHANNEL, user, parse_handles([handle]), [upload(runner, guild=guild)], options
    )


def settings_with(base: BotSettings, **changes: Any) -> BotSettings:
    return base.model_copy(update=changes)


# -- the whole lifecycle -----------------------------------------------------------------------


async def test_a_submitted_job_runs_the_training_process_and_records_the_model(
    make_runner: MakeRunner, store: Store, argv_log: Path, bot_settings: BotSettings
) -> None:
    runner, rec = await make_runner()
    job = await submit(runner, "@Alice")
    assert job.model_name == "alice"
    await rec.wait(lambda: rec.ended(job.id))

    assert not rec.failed
    finished, result = rec.finished[0]
    assert finished.state == "succeeded" and finished.finished_at is not None
    phases = rec.phases(job.id)
    assert phases[0] == "starting"
    assert phases[1:] == ["loading", "training", "training", "training", "saving"]
    steps = [e["step"] for j, e in rec.progress if e["phase"] == "training"]
    assert steps == [1, 2, 3]

    models_dir = bot_settings.guild_models_dir(GUILD).resolve()
    assert result.path == models_dir / "alice"
    assert result.table == {"alice": {"tweets_downloaded": 100, "tweets_kept": 90}}
    assert (result.perplexity_before, result.perplexity_after) == (80.5, 20.25)
    assert result.loss_plot == models_dir / "alice" / "loss.png"
    assert result.record["base_model"] == "smollm2-135m"  # the default: SmolLM2 + LoRA

    record = await store.get_model(GUILD, "alice")
    assert record is not None
    assert record.path == models_dir / "alice"
    assert record.sources == job.sources and record.trained_by == USER
    assert record.base_model == "smollm2-135m" and record.lora is True

    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv[:4] == ["-m", "training", "train", "alice"]
    assert argv[argv.index("--from") + 1] == job.sources[0]
    assert argv[argv.index("--models-dir") + 1] == str(models_dir)
    assert "--progress-json" in argv
    assert argv[argv.index("--base-model") + 1] == "smollm2-135m" and "--lora" in argv
    stored = await store.get_job(GUILD, job.id)
    assert stored is not None and stored.state == "succeeded" and stored.pid is not None


async def test_job_options_and_settings_become_training_arguments(
    make_runner: MakeRunner, argv_log: Path, bot_settings: BotSettings
) -> None:
    bases = {"ja": "Qwen/Qwen2.5-0.5B"}
    settings = settings_with(bot_settings, train_epochs=2, base_by_language=bases)
    runner, rec = await make_runner(settings)
    job = await submit(runner, base_model="tiny", lora=True, max_steps=2)
    await rec.wait(lambda: rec.ended(job.id))
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv[argv.index("--base-model") + 1] == "tiny"
    # The training process picks among them by the language of the cleaned tweets.
    assert json.loads(argv[argv.index("--base-by-language") + 1]) == bases
    assert "--lora" in argv
    assert argv[argv.index("--max-steps") + 1] == "2"
    assert argv[argv.index("--epochs") + 1] == "2"
    assert rec.finished[0][1].model.lora is True


async def test_api_and_bluesky_sources_become_their_flags(
    make_runner: MakeRunner, argv_log: Path
) -> None:
    runner, rec = await make_runner()
    job = await requests_for(runner).submit(
        GUILD, CHANNEL, USER, [parse_handle("bluesky:alice.bsky.social")], ["bluesky"]
    )
    await rec.wait(lambda: rec.ended(job.id))
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv[3] == "bluesky:alice.bsky.social" and "--bluesky" in argv
    assert "--from" not in argv and "--base-by-language" not in argv  # none set


async def test_handles_keep_their_typed_order_so_each_file_stays_with_its_handle(
    make_runner: MakeRunner, argv_log: Path
) -> None:
    runner, rec = await make_runner()
    bob, alice = upload(runner, "bob.csv"), upload(runner, "alice.csv")
    job = await requests_for(runner).submit(
        GUILD, CHANNEL, USER, [parse_handle("@bob"), parse_handle("@alice")], [bob, alice]
    )
    assert job.model_name == "alice-bob"
    await rec.wait(lambda: rec.ended(job.id))
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv[3:5] == ["bob", "alice"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--from"] == [bob, alice]


async def test_a_servers_settings_fill_the_options_a_job_leaves_unset(
    make_runner: MakeRunner, argv_log: Path, store: Store
) -> None:
    await store.set_guild_setting(GUILD, "base_model", "tiny")
    await store.set_guild_setting(GUILD, "max_steps", 7)
    runner, rec = await make_runner()
    first = await submit(runner, "@alice")
    second = await submit(runner, "@bob", base_model="gpt2")
    await rec.wait(lambda: rec.ended(first.id) and rec.ended(second.id))
    assert first.options == {"base_model": "tiny", "max_steps": 7}
    runs = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert [r[r.index("--base-model") + 1] for r in runs] == ["tiny", "gpt2"]
    assert [r[r.index("--max-steps") + 1] for r in runs] == ["7", "7"]


async def test_invalid_options_are_refused_before_queueing(make_runner: MakeRunner) -> None:
    runner, _ = await make_runner(start=False)
    with pytest.raises(InputError, match="not a training option"):
        await submit(runner, learning_rate=1)
    with pytest.raises(InputError, match="whole number"):
        await submit(runner, max_steps=0)
    for path in ("/etc", "../models/alice", "a/b/c"):
        with pytest.raises(InputError, match="Hugging Face model id"):
            await submit(runner, base_model=path)
    assert await runner.queue(GUILD) == []


async def test_the_training_process_gets_no_discord_or_x_posting_secrets(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "discord-secret")
    monkeypatch.setenv("X_ACCESS_TOKEN_SECRET", "x-secret")
    monkeypatch.setenv("X_BEARER_TOKEN", "reading-is-training-work")
    posting = ("BLUESKY_APP_PASSWORD", "MASTODON_ACCESS_TOKEN", "DOPPELTWEET_MASTODON_ACCESS_TOKEN")
    for name in posting:
        monkeypatch.setenv(name, "posting-secret")
    env = JobRunner._environment()
    assert "DISCORD_TOKEN" not in env and "X_ACCESS_TOKEN_SECRET" not in env
    assert not [name for name in posting if name in env]
    assert "posting-secret" not in env.values()
    assert env["X_BEARER_TOKEN"] == "reading-is-training-work"


# -- the queue ----------------------------------------------------------------------------------


async def test_the_same_model_queued_again_is_refused_with_its_position(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, _ = await make_runner()
    running = await submit(runner, "@alice")
    queued = await submit(runner, "@bob", user=OTHER_USER)
    assert running.state == "running" and queued.state == "queued" and queued.position == 1
    with pytest.raises(InputError, match=r"bob is already queued \(position 1\) as job #\d+"):
        await submit(runner, "@bob", user=OTHER_USER)
    with pytest.raises(InputError, match="alice is already training right now"):
        await submit(runner, "@ALICE", user=OTHER_USER)
    # The same model in another server is another model; that server has not been served yet,
    # so its job goes first.
    elsewhere = await submit(runner, "@alice", guild=OTHER_GUILD, user=OTHER_USER + 1)
    assert elsewhere.state == "queued" and elsewhere.position == 1
    assert [j.position for j in await runner.queue(GUILD)] == [2]


async def test_a_user_cannot_queue_more_jobs_than_the_cap(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, _ = await make_runner()
    await submit(runner, "@one")
    await submit(runner, "@two")
    with pytest.raises(InputError, match=r"You already have 2 training jobs .* limit is 2"):
        await submit(runner, "@three")
    assert (await submit(runner, "@three", user=OTHER_USER)).state == "queued"


async def test_jobs_run_one_at_a_time_first_in_first_out(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_DELAY", "0.05")
    runner, rec = await make_runner()
    jobs = [await submit(runner, f"@user{i}", user=USER + i) for i in range(3)]
    assert [j.state for j in jobs] == ["running", "queued", "queued"]
    assert [j.position for j in jobs[1:]] == [1, 2]
    assert [j.id for j in await runner.queue(GUILD)] == [jobs[1].id, jobs[2].id]
    await rec.wait(lambda: len(rec.finished) == 3)

    order: list[tuple[str, int]] = []
    for job, event in rec.progress:
        if event["phase"] == "starting":
            order.append(("start", job.id))
        elif event["phase"] == "saving":
            order.append(("end", job.id))
    expected = [(kind, j.id) for j in jobs for kind in ("start", "end")]
    assert order == expected


async def test_two_concurrent_slots_run_two_jobs_at_once(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, bot_settings: BotSettings
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, _ = await make_runner(settings_with(bot_settings, max_concurrent_jobs=2))
    states = [(await submit(runner, f"@u{i}", user=USER + i)).state for i in range(3)]
    assert states == ["running", "running", "queued"]
    assert len(await runner.running(GUILD)) == 2


async def test_a_second_servers_job_runs_before_the_first_servers_later_ones(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, bot_settings: BotSettings
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_DELAY", "0.05")
    runner, rec = await make_runner(settings_with(bot_settings, max_queued_jobs_per_user=3))
    a_jobs = [await submit(runner, f"@a{i}") for i in range(3)]
    b_job = await submit(runner, "@b", guild=OTHER_GUILD, user=OTHER_USER)
    assert b_job.position == 1 and [j.position for j in await runner.queue(GUILD)] == [2, 3]
    await rec.wait(lambda: len(rec.finished) == 4)
    started = [job.id for job, event in rec.progress if event["phase"] == "starting"]
    assert started == [a_jobs[0].id, b_job.id, a_jobs[1].id, a_jobs[2].id]


async def test_start_estimates_add_up_the_budgets_ahead(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    from datetime import timedelta

    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, _ = await make_runner()
    running = await submit(runner, "@alice")
    second = await submit(runner, "@bob", user=OTHER_USER)
    third = await submit(runner, "@carol", guild=OTHER_GUILD, user=OTHER_USER + 1)
    stepped = await submit(runner, "@dave", user=OTHER_USER + 2, max_steps=5)
    started = (await store.get_job(GUILD, running.id)).started_at  # type: ignore[union-attr]
    estimates = await runner.start_estimates(started + timedelta(seconds=100))
    # The running job has 200 s of its 300 s budget left; each job ahead takes its budget, and
    # one with a step cap instead is counted as the default budget.
    assert estimates == {third.id: 200.0, second.id: 500.0, stepped.id: 800.0}
    assert runner.budget_s(running) == 300 and runner.budget_s(stepped) is None


async def test_a_job_without_epochs_or_steps_trains_for_the_budget(
    make_runner: MakeRunner, argv_log: Path
) -> None:
    runner, rec = await make_runner()
    budgeted = await submit(runner, "@alice")
    capped = await submit(runner, "@bob", user=OTHER_USER, max_steps=4)
    await rec.wait(lambda: rec.ended(budgeted.id) and rec.ended(capped.id))
    first, second = (json.loads(line) for line in argv_log.read_text().splitlines())
    assert first[first.index("--time-budget") + 1] == "300"
    assert "--time-budget" not in second and second[second.index("--max-steps") + 1] == "4"


# -- cancelling ---------------------------------------------------------------------------------


async def test_a_queued_job_is_cancelled_without_ever_starting(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, argv_log: Path
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, rec = await make_runner()
    running = await submit(runner, "@alice")
    queued = await submit(runner, "@bob", user=OTHER_USER)
    await rec.wait(lambda: "training" in rec.phases(running.id))

    with pytest.raises(InputError, match="someone else's"):
        await runner.cancel(queued.id, guild_id=GUILD, user_id=USER, is_admin=False)
    cancelled = await runner.cancel(queued.id, guild_id=GUILD, user_id=OTHER_USER, is_admin=False)
    assert cancelled.state == "cancelled"
    assert rec.failed[-1][0].state == "cancelled"
    assert await runner.queue(GUILD) == []
    with pytest.raises(InputError, match="already been cancelled"):
        await runner.cancel(queued.id, guild_id=GUILD, user_id=OTHER_USER, is_admin=False)
    assert all("bob" not in json.loads(line) for line in argv_log.read_text().splitlines())


async def test_an_admin_cancels_a_running_job_and_its_process_stops(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, rec = await make_runner()
    job = await submit(runner)
    await rec.wait(lambda: "training" in rec.phases(job.id))
    assert job.pid is not None and process_alive(job.pid)

    cancelled = await runner.cancel(job.id, guild_id=GUILD, user_id=OTHER_USER, is_admin=True)
    assert cancelled.state == "cancelled"
    assert cancelled.error == "Training of alice was cancelled; no model was saved."
    assert not process_alive(job.pid)
    assert rec.failed == [(rec.failed[0][0], cancelled.error)]
    assert await runner.running(GUILD) == []


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, bot_settings: BotSettings
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "stubborn")
    runner, rec = await make_runner(settings_with(bot_settings, cancel_grace_s=0.5))
    job = await submit(runner)
    await rec.wait(lambda: "training" in rec.phases(job.id))
    began = time.monotonic()
    cancelled = await runner.cancel(job.id, guild_id=GUILD, user_id=USER, is_admin=False)
    assert time.monotonic() - began >= 0.5
    assert cancelled.state == "cancelled"
    assert job.pid is not None and not process_alive(job.pid)


async def test_a_model_saved_before_the_cancel_arrived_counts_as_trained(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "late")
    runner, rec = await make_runner()
    job = await submit(runner)
    await rec.wait(lambda: "training" in rec.phases(job.id))
    ended = await runner.cancel(job.id, guild_id=GUILD, user_id=USER, is_admin=False)
    await runner.wait_for_listeners()
    assert ended.state == "succeeded" and rec.finished and not rec.failed
    assert await store.get_model(GUILD, "alice") is not None


async def test_another_servers_job_cannot_be_seen_or_cancelled(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, _ = await make_runner()
    await submit(runner, "@alice")
    theirs = await submit(runner, "@bob", user=OTHER_USER)
    with pytest.raises(InputError, match=f"no training job #{theirs.id} in this server"):
        await runner.cancel(theirs.id, guild_id=OTHER_GUILD, user_id=OTHER_USER, is_admin=True)
    assert await runner.queue(OTHER_GUILD) == []
    assert await runner.running(OTHER_GUILD) == []


# -- failures -----------------------------------------------------------------------------------


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


# -- stopping and recovering --------------------------------------------------------------------


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


async def test_retrain_without_known_sources_says_to_train_again(
    make_runner: MakeRunner, store: Store
) -> None:
    await store.upsert_model(
        GUILD,
        "alice",
        handles=parse_handles(["alice"]),
        sources=[],
        base_model="gpt2",
        lora=False,
        path=Path("/nowhere"),
        trained_by=USER,
    )
    runner, _ = await make_runner(start=False)
    with pytest.raises(InputError, match="does not know what alice was trained from"):
        await models_for(runner).retrain(GUILD, CHANNEL, USER, "alice")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_a_job_left_running_by_a_dead_bot_is_queued_again_once(
    make_runner: MakeRunner, store: Store, bot_settings: BotSettings
) -> None:
    runner, _ = await make_runner(start=False)
    path = upload(runner)
    job = await store.create_job(
        GUILD, CHANNEL, USER, "alice", handles=parse_handles(["alice"]), sources=[path]
    )
    await store.mark_job_running(job.id, _dead_pid())

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
    await store.mark_job_running(job.id, _dead_pid())
    await store.requeue_job(job.id, count_restart=True)
    await store.mark_job_running(job.id, _dead_pid())

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


# -- models: retrain and delete -----------------------------------------------------------------


async def test_retrain_reuses_the_sources_of_the_last_training(
    make_runner: MakeRunner, argv_log: Path
) -> None:
    runner, rec = await make_runner()
    first = await submit(runner)
    await rec.wait(lambda: rec.ended(first.id))
    again = await models_for(runner).retrain(GUILD, CHANNEL, OTHER_USER, "alice")
    await rec.wait(lambda: rec.ended(again.id))
    assert again.sources == first.sources
    runs = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert runs[0] == runs[1]
    with pytest.raises(InputError, match="no model called carol in this server; known: alice"):
        await models_for(runner).retrain(GUILD, CHANNEL, USER, "carol")


async def test_delete_model_removes_its_folder_record_and_uploads(
    make_runner: MakeRunner, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, rec = await make_runner()
    job = await submit(runner)
    await rec.wait(lambda: rec.ended(job.id))
    folder = rec.finished[0][1].path
    upload_folder = Path(job.sources[0]).parent

    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    again = await models_for(runner).retrain(GUILD, CHANNEL, USER, "alice")
    with pytest.raises(InputError, match=f"cancel it with !cancel {again.id} first"):
        await models_for(runner).delete(GUILD, "alice")
    await runner.cancel(again.id, guild_id=GUILD, user_id=USER, is_admin=False)

    deleted = await models_for(runner).delete(GUILD, "alice")
    assert deleted.name == "alice"
    assert not folder.exists() and not upload_folder.exists()
    assert await store.get_model(GUILD, "alice") is None
    assert runner.settings.guild_uploads_dir(GUILD).is_dir()


async def test_uploads_are_kept_only_while_a_model_trains_from_them(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    runner, rec = await make_runner()
    monkeypatch.setenv("FAKE_TRAINING_MODE", "error")
    failed = await submit(runner)
    await rec.wait(lambda: rec.ended(failed.id))
    assert not Path(failed.sources[0]).exists()  # nothing will ever train from it

    monkeypatch.setenv("FAKE_TRAINING_MODE", "succeed")
    first = await submit(runner)
    await rec.wait(lambda: rec.ended(first.id))
    monkeypatch.setenv("FAKE_TRAINING_MODE", "crash")
    retry = await models_for(runner).retrain(GUILD, CHANNEL, USER, "alice")
    await rec.wait(lambda: rec.ended(retry.id))
    assert Path(first.sources[0]).is_file()  # !retrain still needs it

    monkeypatch.setenv("FAKE_TRAINING_MODE", "succeed")
    newer = await submit(runner)
    await rec.wait(lambda: rec.ended(newer.id))
    assert not Path(first.sources[0]).exists()  # replaced by the newer file
    assert Path(newer.sources[0]).is_file()
    assert (await store.get_model(GUILD, "alice")).sources == newer.sources  # type: ignore[union-attr]


# -- uploads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("tweets.csv", "tweets.csv"),
        ("../../etc/passwd.csv", "passwd.csv"),
        ("..\\..\\evil.JSONL", "evil.jsonl"),
        ("résumé tweets (1).csv", "resume_tweets_1.csv"),
        (".hidden.js", "hidden.js"),
        ("%%%.zip", "upload.zip"),
    ],
)
def test_safe_filename_keeps_only_a_harmless_base_name(given: str, expected: str) -> None:
    assert safe_filename(given) == expected


async def test_upload_paths_are_unique_folders_inside_the_servers_uploads(
    make_runner: MakeRunner, bot_settings: BotSettings
) -> None:
    runner, _ = await make_runner(start=False)
    first = upload_path(runner.settings, GUILD, "../../../tweets.csv")
    second = upload_path(runner.settings, GUILD, "tweets.csv")
    uploads = bot_settings.guild_uploads_dir(GUILD).resolve()
    assert first.parent.parent == uploads == second.parent.parent
    assert first.parent != second.parent and first.name == second.name == "tweets.csv"
    with pytest.raises(InputError, match="not a file I can train from"):
        upload_path(runner.settings, GUILD, "payload.exe")


async def test_sources_outside_the_servers_uploads_are_refused(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    runner, _ = await make_runner(start=False)
    outside = tmp_path / "tweets.csv"
    outside.write_text("text\nhi\n")
    with pytest.raises(InputError, match="uploaded in this server"):
        await requests_for(runner).submit(
            GUILD, CHANNEL, USER, parse_handles(["a"]), [str(outside)]
        )
    other_servers = upload(runner, guild=OTHER_GUILD)
    with pytest.raises(InputError, match="uploaded in this server"):
        await requests_for(runner).submit(
            GUILD, CHANNEL, USER, parse_handles(["a"]), [other_servers]
        )
    with pytest.raises(InputError, match="Attach an X archive"):
        await requests_for(runner).submit(GUILD, CHANNEL, USER, parse_handles(["a"]), [])


async def test_sources_must_be_uploads_or_one_remote_source(make_runner: MakeRunner) -> None:
    runner, _ = await make_runner(start=False)
    two = parse_handles(["a", "b"])
    with pytest.raises(InputError, match="not a mix"):
        await requests_for(runner).submit(GUILD, CHANNEL, USER, two, ["api", upload(runner)])
    with pytest.raises(InputError, match=r"one per handle \(2\), not 3"):
        await requests_for(runner).submit(
            GUILD, CHANNEL, USER, two, [upload(runner) for _ in range(3)]
        )


# -- the real training process ------------------------------------------------------------------

_VOCABULARY = (
    "my dream is to build a rocket and fly to the moon with friends coffee code python today "
    "great people vote change future hope music city night morning team win learn new book read "
    "write garden rain sun happy thanks everyone"
)


def write_tweets_csv(path: Path, count: int = 160) -> None:
    """Enough synthetic tweets for training's data gates."""
    import csv
    import random

    rng = random.Random(0)
    words = _VOCABULARY.split()
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        for _ in range(count):
            writer.writerow([" ".join(rng.choice(words) for _ in range(rng.randint(5, 14)))])


@pytest.fixture
async def real_runner(
    store: Store, bot_settings: BotSettings
) -> AsyncIterator[tuple[JobRunner, Recorder]]:
    """A runner over the real ``python -m training train``."""
    runner = JobRunner(store, bot_settings, training_args=("--seed", "7", "--block-size", "64"))
    recorder = Recorder()
    runner.add_listener(recorder)
    await runner.start()
    yield runner, recorder
    await runner.stop()


@pytest.mark.timeout(420)
async def test_the_real_training_process_trains_a_tiny_model_that_the_cache_serves(
    real_runner: tuple[JobRunner, Recorder], store: Store
) -> None:
    from bot.model_cache import ModelCache

    runner, rec = real_runner
    path = upload_path(runner.settings, GUILD, "alice.csv")
    write_tweets_csv(path)
    job = await requests_for(runner).submit(
        GUILD,
        CHANNEL,
        USER,
        parse_handles(["@alice"]),
        [str(path)],
        {"base_model": "tiny", "max_steps": 2},
    )
    await rec.wait(lambda: rec.ended(job.id), timeout=360)
    assert not rec.failed, rec.failed
    done, result = rec.finished[0]
    assert done.state == "succeeded"
    phases = rec.phases(job.id)
    for phase in ("starting", "fetching", "cleaning", "loading", "training", "saving"):
        assert phase in phases
    steps = [e for j, e in rec.progress if e["phase"] == "training" and e["step"] is not None]
    assert steps[-1]["step"] == steps[-1]["total"] == 2
    assert result.table["alice"]["tweets_kept"] == 160
    assert isinstance(result.perplexity_before, float) and isinstance(
        result.perplexity_after, float
    )
    assert result.loss_plot is not None and result.loss_plot.is_file()
    record = await store.get_model(GUILD, "alice")
    assert record is not None and record.base_model == "tiny" and record.path == result.path

    cache = ModelCache(max_models=2, max_bytes=2**30)
    try:
        generated = await cache.generate(record.path, "My dream is", n=1, seed=1)
    finally:
        await cache.close()
    assert generated.prompt == "My dream is" and generated.candidates >= 1


@pytest.mark.timeout(420)
async def test_kill_9_of_the_real_training_process_keeps_the_served_model(
    real_runner: tuple[JobRunner, Recorder], store: Store, tiny_model_dir: Path
) -> None:
    import shutil

    runner, rec = real_runner
    served = runner.models_dir(GUILD) / "alice"
    shutil.copytree(tiny_model_dir, served)
    weights_before = (served / "model.safetensors").read_bytes()
    before = await store.upsert_model(
        GUILD,
        "alice",
        handles=parse_handles(["alice"]),
        sources=[],
        base_model="tiny",
        lora=False,
        path=served,
        trained_by=USER,
    )
    path = upload_path(runner.settings, GUILD, "alice.csv")
    write_tweets_csv(path)
    job = await requests_for(runner).submit(
        GUILD,
        CHANNEL,
        USER,
        parse_handles(["alice"]),
        [str(path)],
        {"base_model": "tiny", "max_steps": 5000},
    )
    await rec.wait(lambda: "training" in rec.phases(job.id) or rec.ended(job.id), timeout=360)
    assert job.pid is not None and not rec.ended(job.id)
    os.kill(job.pid, signal.SIGKILL)
    await rec.wait(lambda: rec.ended(job.id), timeout=30)

    assert rec.failed[0][1] == (
        "The training process was killed (signal 9); the previous model is still served."
    )
    assert await store.get_model(GUILD, "alice") == before
    assert (served / "model.safetensors").read_bytes() == weights_before
