"""The model cache's pool of ready prompt-less tweets: instant, refilled, dropped on retrain."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest
from model_fakes import CountingGenerator

from bot.model_cache import ModelCache
from training.generation import GenerationResult


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "alice"
    path.mkdir(parents=True)
    return path


async def settle(cache: ModelCache, path: Path, size: int) -> None:
    for _ in range(200):
        if cache.pool_sizes().get(path.resolve()) == size:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the pool never reached {size}: {cache.pool_sizes()}")


async def test_prompt_less_tweets_come_from_a_pool_filled_in_one_batch(folder: Path) -> None:
    loaded: list[CountingGenerator] = []

    def loader(path: Path) -> CountingGenerator:
        loaded.append(CountingGenerator(path))
        return loaded[-1]

    cache = ModelCache(max_models=2, max_bytes=10_000, loader=loader, pool_size=4)
    try:
        first = await cache.generate(folder, "", n=1)
        assert len(first.tweets) == 1
        await settle(cache, folder, 4)
        [generator] = loaded
        assert generator.calls[1] == ("", 4, ())  # one batch of four, not four calls
        pooled = list(cache._entries[folder.resolve()].pool)
        calls = len(generator.calls)
        served = await cache.generate(folder, "", n=1)
        assert served.tweets == [pooled[0]] and served.candidates == 1
        assert len(generator.calls) == calls  # served without generating
        skipped = await cache.generate(folder, "", n=1, exclude=[pooled[1].upper()])
        assert skipped.tweets == [pooled[2]]  # the excluded one stays unused
        await settle(cache, folder, 4)
        assert set(generator.calls[-1][2]) >= {pooled[1], pooled[3]}  # refills avoid the pool
    finally:
        await cache.close()


async def test_prompts_seeds_and_several_tweets_are_generated_live(folder: Path) -> None:
    cache = ModelCache(max_models=2, max_bytes=10_000, loader=CountingGenerator, pool_size=3)
    try:
        await cache.generate(folder, "", n=1)
        await settle(cache, folder, 3)
        pool = list(cache._entries[folder.resolve()].pool)
        prompted = await cache.generate(folder, "My dream is", n=1)
        assert prompted.tweets[0].startswith("My dream is")
        seeded = await cache.generate(folder, "", n=1, seed=7)
        several = await cache.generate(folder, "", n=2)
        assert not set(seeded.tweets + several.tweets) & set(pool)
        assert cache._entries[folder.resolve()].pool == pool
    finally:
        await cache.close()


async def test_a_retrain_or_invalidate_drops_the_pool(folder: Path) -> None:
    cache = ModelCache(max_models=2, max_bytes=10_000, loader=CountingGenerator, pool_size=3)
    try:
        await cache.generate(folder, "", n=1)
        await settle(cache, folder, 3)
        staged = folder.with_name(".staging-alice")
        shutil.copytree(folder, staged)
        (staged / "version").write_text("2")
        os.replace(folder, folder.with_name(".replaced-alice"))
        os.replace(staged, folder)  # what the model store's atomic commit does
        fresh = await cache.generate(folder, "", n=1)
        assert fresh.tweets[0].startswith("v2 ")  # not a tweet of the old model's pool
        await settle(cache, folder, 3)
        assert all(t.startswith("v2 ") for t in cache._entries[folder.resolve()].pool)
        assert cache.invalidate(folder)
        assert folder.resolve() not in cache.pool_sizes()
    finally:
        await cache.close()


async def test_the_pool_is_off_with_size_zero(folder: Path) -> None:
    loaded: list[CountingGenerator] = []

    def loader(path: Path) -> CountingGenerator:
        loaded.append(CountingGenerator(path))
        return loaded[-1]

    cache = ModelCache(max_models=2, max_bytes=10_000, loader=loader)
    try:
        await cache.generate(folder, "", n=1)
        await asyncio.sleep(0.05)
        assert len(loaded[0].calls) == 1 and cache.pool_sizes() == {folder.resolve(): 0}
    finally:
        await cache.close()


async def test_a_real_model_fills_its_pool_with_filtered_tweets(tiny_model_dir: Path) -> None:
    from training.generation import tidy_candidate

    cache = ModelCache(max_models=1, max_bytes=2**30, pool_size=3)
    try:
        await cache.generate(tiny_model_dir, "", n=1)
        await settle(cache, tiny_model_dir, 3)
        served = await cache.generate(tiny_model_dir, "", n=1)
    finally:
        await cache.close()
    assert served.tweets and all(tidy_candidate(t) == t for t in served.tweets)


async def test_requests_waiting_together_for_one_model_share_one_call(folder: Path) -> None:
    gate = threading.Event()
    generators: list[CountingGenerator] = []

    class Gated(CountingGenerator):
        def generate(self, prompt: str, **kwargs) -> GenerationResult:
            if prompt == "hold":
                assert gate.wait(10), "the test never opened the gate"
            return super().generate(prompt, **kwargs)

    def loader(path: Path) -> CountingGenerator:
        generators.append(Gated(path))
        return generators[-1]

    cache = ModelCache(max_models=2, max_bytes=10_000, loader=loader, max_workers=1)
    try:
        holding = asyncio.ensure_future(cache.generate(folder, "hold", n=1))
        await asyncio.sleep(0.05)  # the only worker is busy now
        waiting = [asyncio.ensure_future(cache.generate(folder, "Today", n=k)) for k in (1, 2, 1)]
        seeded = asyncio.ensure_future(cache.generate(folder, "Today", n=1, seed=4))
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*waiting)
        await holding
        await seeded
    finally:
        await cache.close()
    calls = [c for c in generators[0].calls if c[0] == "Today"]
    assert ("Today", 4, ()) in calls  # the three unseeded requests: one call of 4 tweets
    assert len(calls) == 2  # plus the seeded one, on its own
    tweets = [t for r in results for t in r.tweets]
    assert [len(r.tweets) for r in results] == [1, 2, 1] and len(set(tweets)) == 4
