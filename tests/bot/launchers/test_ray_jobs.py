"""Trainings as Ray Jobs on a real local Ray head (tests/bot/ray_cluster.py; no mock of Ray).

The first test runs the real ``python -m training train`` on ``tiny`` as a Ray Job behind the
real bot (simcord) and then answers ``!tweet``; the others run the stand-in training process
(conftest.FAKE_TRAINING) as the job's entrypoint, so they take seconds. The test that stops the
head comes last: the next test that needs one starts it again.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import simcord
from discord_world import World
from ray_cluster import RayHead, free_port
from service_fakes import GUILD, USER, Recorder, submit
from tweet_texts import random_texts, tweets_csv

from bot.client import create_bot
from bot.config import BotSettings
from bot.jobs import JobRunner
from bot.launchers.ray_jobs import RayJobLauncher, job_env, submission_id
from bot.store import Job, Store
from training.handles import parse_handles

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

FAKE_ENV = (
    "FAKE_TRAINING_MODE",
    "FAKE_TRAINING_STEPS",
    "FAKE_TRAINING_DELAY",
    "FAKE_TRAINING_ARGV",
)


def ray_settings(base: BotSettings, address: str, **changes: Any) -> BotSettings:
    return base.model_copy(
        update={
            "ray_address": address,
            "ray_python": sys.executable,
            "ray_num_cpus": 0.5,
            "ray_retry_s": 1,
            **changes,
        }
    )


def ray_jobs_of(head: RayHead, job: Job) -> list[Any]:
    """The Ray jobs the head knows for a bot job (every attempt of it)."""
    from ray.job_submission import JobSubmissionClient

    prefix = submission_id(job).rsplit("-", 1)[0] + "-"
    client = JobSubmissionClient(head.jobs_address)
    return [j for j in client.list_jobs() if (j.submission_id or "").startswith(prefix)]


MakeRayRunner = Callable[..., Any]


class HoldAtTraining:
    """A listener that holds the runner at the first training event until the bot stops, so a
    test stops the bot while the Ray job surely still runs (the log stream comes in bursts)."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()

    async def on_progress(self, job: Job, event: dict[str, Any]) -> None:
        if event["phase"] == "training":
            self.reached.set()
            await asyncio.Event().wait()  # until the runner's task is cancelled by stop()

    async def on_finished(self, job: Job, result: Any) -> None:
        pass

    async def on_failed(self, job: Job, message: str) -> None:
        pass


async def stop_mid_training(runner: JobRunner, recorder: Recorder, job: Job) -> None:
    """Stop the bot's runner while the job trains: the Ray job goes on without it."""
    hold = HoldAtTraining()
    runner.add_listener(hold)
    await asyncio.wait_for(hold.reached.wait(), 120)
    await runner.stop()
    assert not recorder.ended(job.id)


@pytest.fixture
async def make_ray_runner(
    store: Store, bot_settings: BotSettings, fake_training: Path
) -> AsyncIterator[MakeRayRunner]:
    """Runners whose jobs are Ray Jobs running the stand-in training process."""
    made: list[JobRunner] = []

    async def make(address: str, **changes: Any) -> tuple[JobRunner, Recorder]:
        settings = ray_settings(bot_settings, address, **changes)
        launcher = RayJobLauncher(settings, pass_env=FAKE_ENV)
        runner = JobRunner(store, settings, python=str(fake_training), launcher=launcher)
        recorder = Recorder()
        runner.add_listener(recorder)
        await runner.start()
        made.append(runner)
        return runner, recorder

    yield make
    for runner in made:
        await runner.stop()


def test_a_job_gets_only_unbuffered_output_and_the_training_settings_that_are_no_secrets() -> None:
    env = {
        "PATH": "/usr/bin",
        "DISCORD_TOKEN": "secret",
        "X_BEARER_TOKEN": "secret",
        "DOPPELTWEET_MAX_FILE_MB": "5",
        "DOPPELTWEET_PREFIX": "?",
        "EXTRA": "1",
    }
    assert job_env(env) == {"DOPPELTWEET_MAX_FILE_MB": "5", "PYTHONUNBUFFERED": "1"}
    assert job_env(env, ["EXTRA"])["EXTRA"] == "1"


async def test_train_tiny_as_a_ray_job_then_tweet(
    ray_head: RayHead, bot_settings: BotSettings, store: Store
) -> None:
    settings = ray_settings(
        bot_settings, ray_head.jobs_address, base_model="tiny", train_max_steps=2
    )
    runner = JobRunner(store, settings, training_args=("--seed", "7"))
    assert isinstance(runner.launcher, RayJobLauncher)
    bot = create_bot(settings, store=store, runner=runner)
    try:
        async with simcord.run(bot, settle_timeout=240) as env:
            world = World(env)
            await world.alice.send(
                world.channel,
                "!train @alice",
                attachments=[("alice.csv", tweets_csv(random_texts(300)))],
            )
            status, report = world.bot_messages()[0], world.bot_messages()[-1]
            assert status.content == "**Job #1 · alice** — Done"
            edits = [
                r.json["content"]
                for r in env.http_requests
                if r.method == "PATCH" and r.path.endswith(f"/messages/{status.id}")
            ]
            assert len(edits) >= 2
            assert report.content.startswith("**alice** is trained.\n```\nData")
            [job] = await store.recent_jobs(world.guild.id)
            assert job.state == "succeeded" and job.pid is None
            [ray_job] = ray_jobs_of(ray_head, job)
            assert ray_job.status == "SUCCEEDED"
            assert ray_job.metadata == {"doppeltweet_job": str(job.id), "model": "alice"}

            await world.bob.send(world.channel, "!tweet @alice My dream is")
            embed = world.channel.last_message.embeds[0]
            assert embed.footer.text == "AI-generated by doppeltweet · alice"
            assert embed.description
    finally:
        await bot.close()


async def test_cancel_stops_the_ray_job_and_the_previous_model_stays(
    ray_head: RayHead,
    make_ray_runner: MakeRayRunner,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, rec = await make_ray_runner(ray_head.jobs_address)
    served = runner.models_dir(GUILD) / "alice"
    served.mkdir(parents=True)
    (served / "weights").write_text("the old model", encoding="utf-8")
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
    job = await submit(runner)
    await rec.wait(lambda: "training" in rec.phases(job.id), timeout=120)
    ended = await runner.cancel(job.id, guild_id=GUILD, user_id=USER, is_admin=False)

    assert ended.state == "cancelled"
    assert (
        rec.failed[-1][1] == "Training of alice was cancelled; the previous model is still served."
    )
    [ray_job] = ray_jobs_of(ray_head, job)
    assert ray_job.status == "STOPPED"
    assert await store.get_model(GUILD, "alice") == before
    assert (served / "weights").read_text(encoding="utf-8") == "the old model"


async def test_a_restarted_bot_reattaches_to_the_running_job_and_submits_nothing_twice(
    ray_head: RayHead,
    make_ray_runner: MakeRayRunner,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("FAKE_TRAINING_ARGV", str(argv_log))
    monkeypatch.setenv("FAKE_TRAINING_STEPS", "30")
    monkeypatch.setenv("FAKE_TRAINING_DELAY", "0.3")
    first, first_rec = await make_ray_runner(ray_head.jobs_address)
    job = await submit(first)
    await stop_mid_training(first, first_rec, job)  # the bot goes away; the Ray job goes on
    assert (await store.get_job(GUILD, job.id)).state == "running"  # type: ignore[union-attr]

    _second, rec = await make_ray_runner(ray_head.jobs_address)
    await rec.wait(lambda: rec.ended(job.id), timeout=120)
    assert not rec.failed, rec.failed
    [(done, result)] = rec.finished
    assert done.state == "succeeded" and result.model.name == "alice"
    assert [e["step"] for j, e in rec.progress if e["phase"] == "training"][-1] == 30
    [ray_job] = ray_jobs_of(ray_head, job)
    assert ray_job.status == "SUCCEEDED"
    assert len(argv_log.read_text(encoding="utf-8").splitlines()) == 1

    # A third start finds nothing left to do: the job was concluded once.
    _third, third_rec = await make_ray_runner(ray_head.jobs_address)
    await asyncio.sleep(1)
    assert not third_rec.progress and not third_rec.finished and not third_rec.failed
    assert len(ray_jobs_of(ray_head, job)) == 1


async def test_a_job_that_ended_while_the_bot_was_away_is_concluded_once(
    ray_head: RayHead, make_ray_runner: MakeRayRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_STEPS", "8")
    monkeypatch.setenv("FAKE_TRAINING_DELAY", "0.25")
    first, first_rec = await make_ray_runner(ray_head.jobs_address)
    job = await submit(first)
    await stop_mid_training(first, first_rec, job)
    async with asyncio.timeout(90):
        while ray_jobs_of(ray_head, job)[0].status != "SUCCEEDED":
            await asyncio.sleep(0.5)

    _second, rec = await make_ray_runner(ray_head.jobs_address)
    await rec.wait(lambda: rec.ended(job.id), timeout=60)
    [(done, result)] = rec.finished
    assert done.state == "succeeded" and result.model.name == "alice" and not rec.failed
    assert len(ray_jobs_of(ray_head, job)) == 1


async def test_an_unreachable_head_keeps_the_job_queued_and_says_so_once(
    make_ray_runner: MakeRayRunner, store: Store
) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    runner, rec = await make_ray_runner(address)
    job = await submit(runner)
    await rec.wait(lambda: rec.progress, timeout=60)
    await asyncio.sleep(2.5)  # ray_retry_s is 1: the queue was tried again meanwhile

    assert (await store.get_job(GUILD, job.id)).state == "queued"  # type: ignore[union-attr]
    messages = [e["message"] for j, e in rec.progress if j.id == job.id]
    assert messages == [
        f"The Ray cluster at {address} cannot be reached, so the job waits in the queue and "
        "starts when it is back."
    ]
    assert not rec.failed
    ended = await runner.cancel(job.id, guild_id=GUILD, user_id=USER, is_admin=False)
    assert ended.state == "cancelled"


# Last: it stops the session's head (the next test that needs one starts it again).
async def test_a_head_that_dies_mid_job_fails_it_in_one_sentence(
    ray_head: RayHead,
    make_ray_runner: MakeRayRunner,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    runner, rec = await make_ray_runner(ray_head.jobs_address)
    job = await submit(runner)
    await rec.wait(lambda: "training" in rec.phases(job.id), timeout=120)
    await asyncio.to_thread(ray_head.stop)
    await rec.wait(lambda: rec.ended(job.id), timeout=120)

    [(failed, message)] = rec.failed
    assert failed.state == "failed"
    assert message == (
        f"The Ray cluster at {ray_head.jobs_address} stopped answering during the training; "
        "no model was saved."
    )
    assert (await store.get_job(GUILD, job.id)).state == "failed"  # type: ignore[union-attr]
