"""JobRunner: a job's run from submit to saved model, the queue's order and caps, cancelling.

The tests run a stand-in for the training CLI (conftest.FAKE_TRAINING) that speaks the same JSON
progress protocol, so each takes well under a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from service_fakes import (
    GUILD,
    OTHER_GUILD,
    OTHER_USER,
    USER,
    MakeRunner,
    submit,
)

from bot.config import BotSettings
from bot.store import Store
from training.errors import InputError
from training.store import process_alive

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


# -- the queue ---------------------------------------------------------------------------------


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
    make_runner: MakeRunner,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., BotSettings],
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, _ = await make_runner(make_settings(max_concurrent_jobs=2))
    states = [(await submit(runner, f"@u{i}", user=USER + i)).state for i in range(3)]
    assert states == ["running", "running", "queued"]
    assert len(await runner.running(GUILD)) == 2


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


# -- cancelling --------------------------------------------------------------------------------


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
    make_runner: MakeRunner,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., BotSettings],
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "stubborn")
    runner, rec = await make_runner(make_settings(cancel_grace_s=0.5))
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
