"""ModelCache: one shared load per model, LRU by count and memory, reloads, work off the loop."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from model_fakes import FakeGenerator

from bot.model_cache import DISPLACE_AFTER_USES, ModelCache
from training.errors import ModelError


class FakeLoader:
    """Counts loads; each model's size comes from ``sizes``; ``gate`` can hold a load back."""

    def __init__(self, sizes: dict[str, int] | None = None) -> None:
        self.sizes = sizes or {}
        self.loads: list[str] = []
        self.threads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail: set[str] = set()

    def __call__(self, path: Path) -> FakeGenerator:
        self.threads.append(threading.current_thread().name)
        assert self.gate.wait(10), "the test never opened the gate"
        self.loads.append(path.name)
        if path.name in self.fail:
            raise ModelError(f"The model in {path} is broken; train it again.")
        return FakeGenerator(path, self.sizes.get(path.name, 100))


@pytest.fixture
def models(tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    return make


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
async def cache(loader: FakeLoader) -> AsyncIterator[ModelCache]:
    made = ModelCache(max_models=2, max_bytes=10_000, loader=loader)
    yield made
    await made.close()


async def test_loading_and_generating_run_in_worker_threads(
    cache: ModelCache, loader: FakeLoader, models: Callable[[str], Path]
) -> None:
    result = await cache.generate(models("alice"), "My dream is", n=2, seed=1, exclude=["x"])
    assert result.tweets[0].startswith("My dream is alice v1 model")
    assert len(result.tweets) == 2 and result.rejected == 1
    assert loader.threads[0].startswith("model")
    assert threading.current_thread().name not in result.tweets[0]


async def test_concurrent_requests_share_one_load_while_the_loop_stays_responsive(
    cache: ModelCache, loader: FakeLoader, models: Callable[[str], Path]
) -> None:
    loader.gate.clear()
    folder = models("alice")
    requests = [asyncio.create_task(cache.generate(folder, f"p{i}")) for i in range(3)]
    ticks = 0
    for _ in range(5):  # the loop keeps running while a worker thread is stuck in the load
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 5 and not any(r.done() for r in requests)
    loader.gate.set()
    results = await asyncio.gather(*requests)
    assert [r.prompt for r in results] == ["p0", "p1", "p2"]
    assert loader.loads == ["alice"]
    await cache.generate(folder, "again")
    assert loader.loads == ["alice"]
    assert cache.loaded()[0].uses == 4


async def test_the_least_recently_used_model_is_evicted_beyond_the_count(
    cache: ModelCache, loader: FakeLoader, models: Callable[[str], Path]
) -> None:
    for name in ("a", "b", "a", "c"):
        await cache.generate(models(name), "hi")
    assert [m.path.name for m in cache.loaded()] == ["c", "a"]
    assert models("b") not in cache and models("a") in cache
    await cache.generate(models("b"), "hi")
    assert loader.loads == ["a", "b", "c", "b"]


async def test_models_are_evicted_until_their_memory_fits(models: Callable[[str], Path]) -> None:
    loader = FakeLoader({"a": 100, "b": 100, "c": 100, "huge": 1000})
    cache = ModelCache(max_models=10, max_bytes=250, loader=loader)
    try:
        await cache.generate(models("a"), "hi")
        await cache.generate(models("b"), "hi")
        assert cache.total_bytes == 200
        await cache.generate(models("c"), "hi")
        assert [m.path.name for m in cache.loaded()] == ["c", "b"] and cache.total_bytes == 200
        # A model bigger than the whole budget is still served; it just stands alone.
        await cache.generate(models("huge"), "hi")
        assert [m.path.name for m in cache.loaded()] == ["huge"]
        assert cache.loaded()[0].memory_bytes == 1000
    finally:
        await cache.close()


async def test_invalidate_drops_a_model_so_the_next_request_loads_it_again(
    cache: ModelCache, loader: FakeLoader, models: Callable[[str], Path]
) -> None:
    folder = models("alice")
    await cache.generate(folder, "hi")
    assert cache.invalidate(folder) is True
    assert cache.invalidate(folder) is False
    assert cache.loaded() == []
    await cache.generate(folder, "hi")
    assert loader.loads == ["alice", "alice"]


async def test_a_model_invalidated_while_loading_is_not_cached(
    cache: ModelCache, loader: FakeLoader, models: Callable[[str], Path]
) -> None:
    loader.gate.clear()
    folder = models("alice")
    request = asyncio.create_task(cache.generate(folder, "hi"))
    await asyncio.sleep(0.05)
    assert cache.invalidate(folder) is True
    loader.gate.set()
    await request  # the waiting request is still answered …
    assert folder not in cache  # … but the stale load is not kept


async def test_a_retrained_folder_is_loaded_afresh_without_invalidate(
    cache: ModelCache, loader: FakeLoader, models: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = models("alice")
    first = await cache.generate(folder, "hi")
    assert "v1" in first.tweets[0]
    staged = tmp_path / "staging"
    staged.mkdir()
    (staged / "version").write_text("2")
    shutil.rmtree(folder)
    os.replace(staged, folder)  # what the model store's atomic commit does
    second = await cache.generate(folder, "hi")
    assert "v2" in second.tweets[0]
    assert loader.loads == ["alice", "alice"] and len(cache.loaded()) == 1


async def test_a_failed_load_reaches_every_waiter_and_is_retried_later(
    cache: ModelCache, loader: FakeLoader, models: Callable[[str], Path]
) -> None:
    loader.fail.add("alice")
    loader.gate.clear()
    folder = models("alice")
    requests = [asyncio.create_task(cache.generate(folder, "hi")) for _ in range(2)]
    await asyncio.sleep(0.02)
    loader.gate.set()
    results = await asyncio.gather(*requests, return_exceptions=True)
    assert all(isinstance(r, ModelError) for r in results)
    assert loader.loads == ["alice"] and cache.loaded() == []
    loader.fail.clear()
    assert (await cache.generate(folder, "hi")).tweets
    assert loader.loads == ["alice", "alice"]


async def test_a_closed_cache_refuses_to_generate(
    loader: FakeLoader, models: Callable[[str], Path]
) -> None:
    cache = ModelCache(max_models=1, max_bytes=1000, loader=loader)
    await cache.generate(models("alice"), "hi")
    await cache.close()
    assert cache.loaded() == []
    with pytest.raises(RuntimeError, match="closed"):
        await cache.generate(models("alice"), "hi")


def test_a_cache_must_hold_something() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        ModelCache(max_models=0, max_bytes=10)


async def test_the_default_loader_serves_a_real_tiny_model(tiny_model_dir: Path) -> None:
    cache = ModelCache(max_models=1, max_bytes=2**30)
    try:
        result = await cache.generate(tiny_model_dir, "My dream is", n=2, seed=3)
        again = await cache.generate(tiny_model_dir, "My dream is", n=2, seed=3)
        [info] = cache.loaded()
    finally:
        await cache.close()
    assert result.candidates >= 1 and result.tweets == again.tweets
    assert all(t.startswith("My dream is") for t in result.tweets)
    assert info.path == tiny_model_dir.resolve() and info.memory_bytes > 0 and info.uses == 2


class BackendLoader:
    """Loads fakes that say their backend: the fast one unless ``backend="torch"`` is asked;
    fast loads wait for ``gate``."""

    FAST_BYTES = 121_000_000
    ADAPTER_BYTES = 10_000_000

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, path: Path, *, backend: str | None = None) -> FakeGenerator:
        if backend is None:
            assert self.gate.wait(10), "the test never opened the gate"
        self.calls.append((path.name, backend))
        lora_on_torch = backend == "torch" and (path / "adapter_config.json").is_file()
        generator = FakeGenerator(path, self.ADAPTER_BYTES if lora_on_torch else self.FAST_BYTES)
        generator.backend = backend or "ctranslate2"  # type: ignore[attr-defined]
        return generator


@asynccontextmanager
async def slotted(loader: BackendLoader, fast_models: int) -> AsyncIterator[ModelCache]:
    """A roomy cache with ``fast_models`` fast slots, closed afterwards."""
    cache = ModelCache(max_models=4, max_bytes=1 << 40, loader=loader, fast_models=fast_models)
    try:
        yield cache
    finally:
        await cache.close()


@pytest.fixture
def lora(models: Callable[[str], Path]) -> Callable[[str], Path]:
    """A model folder that holds a LoRA adapter (its ``adapter_config.json``)."""

    def make(name: str) -> Path:
        folder = models(name)
        (folder / "adapter_config.json").write_text("{}")
        return folder

    return make


async def test_lora_models_beyond_the_fast_slots_are_served_from_the_shared_base(
    models: Callable[[str], Path], lora: Callable[[str], Path]
) -> None:
    loader = BackendLoader()
    async with slotted(loader, 1) as cache:
        for folder in (lora("hot"), lora("cold1"), models("full"), lora("cold2")):
            await cache.generate(folder, "hi")
        assert loader.calls == [
            ("hot", None),
            ("cold1", "torch"),
            ("full", None),  # its own weights: the fast backend is the smaller one
            ("cold2", "torch"),
        ]
        backends = {m.path.name: m.backend for m in cache.loaded()}
        assert backends == {
            "hot": "ctranslate2",
            "cold1": "torch",
            "full": "ctranslate2",
            "cold2": "torch",
        }
        assert cache.fast_lora_models() == 1
        # Cold handles cost their adapter only, so four LoRA handles fit where two fast ones
        # would take a quarter of a gigabyte.
        cold = [m.memory_bytes for m in cache.loaded() if m.backend == "torch"]
        assert cold == [BackendLoader.ADAPTER_BYTES] * 2
        # The fast model is evicted (least recently used): its slot goes to the next LoRA load.
        await cache.generate(lora("new"), "hi")
        assert models("hot") not in cache and cache.fast_lora_models() == 0
        await cache.generate(lora("next"), "hi")
        assert loader.calls[-2:] == [("new", "torch"), ("next", None)]
        assert cache.fast_lora_models() == 1


async def test_concurrent_lora_loads_take_one_fast_slot_each(
    lora: Callable[[str], Path],
) -> None:
    folders = [lora(name) for name in ("a", "b", "c")]
    loader = BackendLoader()
    async with slotted(loader, 2) as cache:
        await asyncio.gather(*(cache.generate(f, "hi") for f in folders))
        chosen = [b for _, b in loader.calls]
        assert len(chosen) == 3 and chosen.count(None) == 2 and chosen.count("torch") == 1
        assert cache.fast_lora_models() == 2


async def test_without_fast_slots_the_loader_chooses(
    cache: ModelCache, loader: FakeLoader, models: Callable[[str], Path]
) -> None:
    folder = models("adapter")
    (folder / "adapter_config.json").write_text("{}")
    await cache.generate(folder, "hi")  # FakeLoader takes no backend: none is passed
    assert loader.loads == ["adapter"] and cache.fast_models is None
    with pytest.raises(ValueError, match="fast_models"):
        ModelCache(1, 1, fast_models=-1)


async def test_a_cold_handle_used_again_moves_to_a_free_fast_slot(
    lora: Callable[[str], Path],
) -> None:
    loader = BackendLoader()
    async with slotted(loader, 1) as cache:
        hot, cold = lora("hot"), lora("cold")
        await cache.generate(hot, "hi")
        await cache.generate(cold, "hi")
        assert cache._entries[cold].promotion is None  # no free slot: stays on the shared base
        assert cache.invalidate(hot)
        result = await cache.generate(cold, "hi")  # served at once by its torch handle
        assert result.tweets
        promotion = cache._entries[cold].promotion
        assert promotion is not None
        await promotion
        [model] = cache.loaded()
        assert (model.backend, model.memory_bytes) == ("ctranslate2", BackendLoader.FAST_BYTES)
        assert loader.calls[-1] == ("cold", None)
        assert cache.fast_lora_models() == 1
        # Once only: a model on the fast backend is not loaded again.
        await cache.generate(cold, "hi")
        assert loader.calls.count(("cold", None)) == 1


async def test_a_cold_handle_used_more_takes_the_slot_of_a_quiet_fast_one(
    lora: Callable[[str], Path],
) -> None:
    loader = BackendLoader()
    async with slotted(loader, 1) as cache:
        hot, cold = lora("hot"), lora("cold")
        await cache.generate(hot, "hi")
        await cache.generate(cold, "hi")  # use 1 (its load): served from the shared base
        await cache.generate(cold, "hi")  # use 2
        assert cache._entries[cold].promotion is None
        await cache.generate(hot, "hi")  # the fast one is used again: cold's count starts over
        for _ in range(DISPLACE_AFTER_USES - 1):
            await cache.generate(cold, "hi")
        assert cache._entries[cold].promotion is None
        await cache.generate(cold, "hi")  # its last 3 uses all came after hot's last one
        promotion = cache._entries[cold].promotion
        assert promotion is not None
        await promotion
        assert hot not in cache  # evicted: its next use loads it as a cold handle
        assert {m.path.name: m.backend for m in cache.loaded()} == {"cold": "ctranslate2"}
        assert cache.fast_lora_models() == 1
        await cache.generate(hot, "hi")
        assert loader.calls[-1] == ("hot", "torch")
        assert cache.fast_lora_models() == 1


async def test_a_quiet_fast_model_used_again_during_the_move_keeps_its_slot(
    lora: Callable[[str], Path],
) -> None:
    loader = BackendLoader()
    async with slotted(loader, 1) as cache:
        hot, cold = lora("hot"), lora("cold")
        await cache.generate(hot, "hi")
        loader.gate.clear()  # hold fast loads back: the promotion's, below
        for _ in range(DISPLACE_AFTER_USES):
            await cache.generate(cold, "hi")  # torch loads are not held
        promotion = cache._entries[cold].promotion
        assert promotion is not None
        await asyncio.sleep(0.05)
        assert not promotion.done()
        await cache.generate(hot, "hi")  # served by the fast handle at once
        loader.gate.set()
        await promotion
        backends = {m.path.name: m.backend for m in cache.loaded()}
        assert backends == {"hot": "ctranslate2", "cold": "torch"}
        assert cache.fast_lora_models() == 1
        assert cache._entries[cold].promotion is None  # a later run of uses may try again


async def test_a_promotion_is_dropped_when_the_model_is_invalidated_meanwhile(
    lora: Callable[[str], Path],
) -> None:
    loader = BackendLoader()
    async with slotted(loader, 0) as cache:
        folder = lora("cold")
        await cache.generate(folder, "hi")
        cache.fast_models = 1  # a slot frees up
        await cache.generate(folder, "hi")
        promotion = cache._entries[folder].promotion
        assert promotion is not None
        cache.invalidate(folder)
        await promotion
        assert folder not in cache and cache.fast_lora_models() == 0


class SharedBaseLoader(BackendLoader):
    """Cold LoRA handles on one shared base of ``BASE_BYTES``, as the torch backend reports it."""

    BASE_BYTES = 500_000_000

    def __call__(self, path: Path, *, backend: str | None = None) -> FakeGenerator:
        generator = super().__call__(path, backend=backend)
        on_base = backend == "torch" and (path / "adapter_config.json").is_file()
        generator.shared_key = "smollm2" if on_base else ""  # type: ignore[attr-defined]
        generator.shared_bytes = self.BASE_BYTES if on_base else 0  # type: ignore[attr-defined]
        return generator


async def test_the_memory_bound_counts_a_shared_base_once(
    lora: Callable[[str], Path],
) -> None:
    adapter, base = SharedBaseLoader.ADAPTER_BYTES, SharedBaseLoader.BASE_BYTES
    # Room for the base and three adapters, not four.
    cache = ModelCache(
        max_models=8, max_bytes=base + 3 * adapter, loader=SharedBaseLoader(), fast_models=0
    )
    try:
        await cache.generate(lora("a"), "hi")
        assert cache.total_bytes == base + adapter
        for name in ("b", "c"):
            await cache.generate(lora(name), "hi")
        assert cache.total_bytes == base + 3 * adapter  # one base for three handles
        await cache.generate(lora("d"), "hi")
        assert [m.path.name for m in cache.loaded()] == ["d", "c", "b"]  # "a" made room
        assert cache.total_bytes == base + 3 * adapter
    finally:
        await cache.close()


class AdapterLoader:
    """Loads fakes served by llama.cpp: a LoRA folder is an adapter on a shared base."""

    ADAPTER_BYTES = 10_000_000
    BASE_BYTES = 150_000_000

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, path: Path, *, backend: str | None = None) -> FakeGenerator:
        self.calls.append(path.name)
        lora = (path / "adapter_config.json").is_file()
        generator = FakeGenerator(path, self.ADAPTER_BYTES if lora else self.BASE_BYTES)
        generator.backend = "llamacpp"  # type: ignore[attr-defined]
        if lora:
            generator.shared_key = "llamacpp:base"  # type: ignore[attr-defined]
            generator.shared_bytes = self.BASE_BYTES  # type: ignore[attr-defined]
        return generator


async def test_llama_cpp_adapters_are_bounded_by_memory_not_by_the_model_count(
    models: Callable[[str], Path], lora: Callable[[str], Path]
) -> None:
    loader = AdapterLoader()
    budget = AdapterLoader.BASE_BYTES + 12 * AdapterLoader.ADAPTER_BYTES
    cache = ModelCache(max_models=2, max_bytes=budget, loader=loader, max_adapters=20)
    try:
        handles = [lora(f"handle{i}") for i in range(12)]
        for folder in handles:
            await cache.generate(folder, "hi")
        # Twelve handles on one base, though max_models is 2: each costs its adapter only.
        assert all(folder in cache for folder in handles)
        assert cache.total_bytes == budget
        await cache.generate(lora("handle12"), "hi")
        assert handles[0] not in cache and handles[1] in cache  # the memory bound evicts
    finally:
        await cache.close()
    mixed = ModelCache(max_models=2, max_bytes=1 << 40, loader=AdapterLoader(), max_adapters=3)
    try:
        for i in range(5):
            await mixed.generate(lora(f"h{i}"), "hi")
            await mixed.generate(models(f"own{i}"), "hi")
        # Models with weights of their own obey max_models; adapters max_adapters.
        names = [m.path.name for m in mixed.loaded()]
        assert names == ["own4", "h4", "own3", "h3", "h2"]
    finally:
        await mixed.close()
