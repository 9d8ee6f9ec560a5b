"""JobRunner over the real ``python -m training train`` on a ``tiny`` model: a model the cache
serves, and a kill -9 that keeps the served one (minutes; the other job tests use the stand-in).
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from service_fakes import (
    CHANNEL,
    GUILD,
    USER,
    Recorder,
    requests_for,
)
from tweet_texts import MORE_WORDS, random_texts, tweets_csv

from bot.config import BotSettings
from bot.jobs import JobRunner
from bot.services.uploads import upload_path
from bot.store import Store
from training.handles import parse_handles


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
    path.write_bytes(tweets_csv(random_texts(160, words=MORE_WORDS, shortest=5)))
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
    path.write_bytes(tweets_csv(random_texts(160, words=MORE_WORDS, shortest=5)))
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
