"""The worker process the bot's model cache loads and generates in (bot.model_process)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.model_cache import ModelCache
from bot.model_process import ProcessLoader
from training.errors import InputError, ModelError
from training.generation import TweetGenerator


@pytest.fixture
def loader() -> Iterator[ProcessLoader]:
    loader = ProcessLoader(threads=2)
    yield loader
    loader.close()


def test_tweets_from_the_worker_equal_in_process_tweets(
    loader: ProcessLoader, tiny_model_dir: Path
) -> None:
    remote = loader(tiny_model_dir)
    local = TweetGenerator.load(tiny_model_dir)
    assert loader.pid is not None and loader.pid != os.getpid()
    assert remote.backend == local.backend
    assert remote.memory_bytes == local.memory_bytes > 0
    got = remote.generate("My dream is", n=2, seed=5)
    assert got == local.generate("My dream is", n=2, seed=5)
    assert all(t.startswith("My dream is") for t in got.tweets)


def test_errors_come_back_as_the_same_one_sentence_errors(
    loader: ProcessLoader, tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="no model folder"):
        loader(tmp_path / "missing")
    remote = loader(tiny_model_dir)
    with pytest.raises(InputError, match="seed"):
        remote.generate("hi", seed=-1)


def test_a_dead_worker_fails_calls_and_the_next_load_starts_a_new_one(
    loader: ProcessLoader, tiny_model_dir: Path
) -> None:
    remote = loader(tiny_model_dir)
    first = loader.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    with pytest.raises(ModelError, match="stopped"):
        for _ in range(100):  # until the reader thread has seen the socket close
            remote.generate("My dream is", seed=1)
    assert not remote.alive
    again = loader(tiny_model_dir)
    assert loader.pid not in (None, first)
    assert again.generate("My dream is", seed=1).tweets


def test_the_worker_gets_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.model_process import _Worker

    monkeypatch.setenv("DOPPELTWEET_DISCORD_TOKEN", "secret-token")
    seen: dict[str, str] = {}
    real_popen = __import__("subprocess").Popen

    def spy(argv: list[str], **kwargs: object) -> object:
        seen.update(kwargs["env"])  # type: ignore[arg-type]
        return real_popen(argv, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("bot.model_process.subprocess.Popen", spy)
    worker = _Worker(1)
    try:
        assert "DOPPELTWEET_DISCORD_TOKEN" not in seen
        assert seen["PYTHONPATH"]
    finally:
        worker.stop(10)


def test_usage_without_arguments() -> None:
    from bot.model_process import main

    assert main([]) == 2
    assert main(["x", "1"]) == 2


async def test_the_cache_stops_its_worker_when_closed(tiny_model_dir: Path) -> None:
    loader = ProcessLoader(threads=2)
    cache = ModelCache(2, 1 << 30, loader=loader)
    result = await cache.generate(tiny_model_dir, "My dream is", n=1, seed=3)
    assert result.tweets
    pid = loader.pid
    assert pid is not None
    process = loader._worker.process  # type: ignore[union-attr]
    await cache.close()
    assert process.poll() is not None
    with pytest.raises(ModelError, match="shut down"):
        loader(tiny_model_dir)


async def test_the_cache_reloads_a_model_whose_worker_died(tiny_model_dir: Path) -> None:
    loader = ProcessLoader(threads=2)
    cache = ModelCache(2, 1 << 30, loader=loader)
    try:
        await cache.generate(tiny_model_dir, "My dream is", seed=1)
        first = loader.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await asyncio.to_thread(loader._worker.process.wait)  # type: ignore[union-attr]
        for _ in range(100):
            if not loader._worker.alive:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.05)
        result = await cache.generate(tiny_model_dir, "My dream is", seed=1)
        assert result.tweets
        assert loader.pid not in (None, first)
    finally:
        await cache.close()


def test_the_bot_uses_the_worker_process_by_default(
    bot_settings: object, make_settings: Callable[..., object]
) -> None:
    from bot.client import _generation_loader
    from bot.config import BotSettings

    assert isinstance(bot_settings, BotSettings)
    chosen = _generation_loader(bot_settings)
    assert isinstance(chosen, ProcessLoader)
    chosen.close()
    off = make_settings(generation_process=False)
    assert _generation_loader(off) is None


@pytest.fixture(scope="module")
def lora_model_dir(tmp_path_factory: pytest.TempPathFactory, sample_table: object) -> Path:
    import io

    from training.progress import JsonProgress
    from training.store import ModelStore
    from training.train import TrainConfig, train_model

    store = ModelStore(tmp_path_factory.mktemp("process-lora"))
    config = TrainConfig(
        base_model="tiny", lora=True, epochs=1, block_size=64, batch_size=8, max_steps=2
    )
    return Path(train_model(sample_table, config, store, JsonProgress(io.StringIO())).path)


async def test_a_cold_lora_handle_is_served_from_the_shared_base_in_the_worker(
    lora_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ctranslate2")
    # The fast slots are CTranslate2's (llama.cpp, where installed, serves every handle).
    monkeypatch.setenv("DOPPELTWEET_GENERATION_BACKEND", "ctranslate2")
    results = {}
    for slots in (1, 0):
        loader = ProcessLoader(threads=2)
        cache = ModelCache(2, 1 << 40, loader=loader, fast_models=slots)
        try:
            result = await cache.generate(lora_model_dir, "My dream is", seed=2)
            assert result.tweets
            [model] = cache.loaded()
            results[slots] = model
        finally:
            await cache.close()
    assert results[1].backend == "ctranslate2"
    assert results[0].backend == "torch"
    # The cold handle holds its adapter only; the fast one its whole merged int8 model.
    assert 0 < results[0].memory_bytes < results[1].memory_bytes


async def test_the_worker_reports_the_shared_base_the_cache_counts_once(
    lora_model_dir: Path, tmp_path: Path
) -> None:
    import shutil

    twin = tmp_path / lora_model_dir.name
    shutil.copytree(lora_model_dir, twin, ignore=shutil.ignore_patterns("fast*"))
    loader = ProcessLoader(threads=2)
    cache = ModelCache(4, 1 << 40, loader=loader, fast_models=0)
    try:
        await cache.generate(lora_model_dir, "My dream is", seed=1)
        first = cache.total_bytes
        await cache.generate(twin, "My dream is", seed=1)
        both = cache.total_bytes
        generators = [entry.generator for entry in cache._entries.values()]
    finally:
        await cache.close()
    keys = {g.shared_key for g in generators}
    assert len(keys) == 1 and "" not in keys  # both adapters sit on one base
    base = generators[0].shared_bytes
    adapters = [g.memory_bytes for g in generators]
    assert base > max(adapters) > 0
    assert first == adapters[0] + base
    assert both == sum(adapters) + base  # the second handle adds its adapter, not a second base
