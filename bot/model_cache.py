"""The models ``!tweet`` and auto-posts generate from, kept loaded and evicted least-recently-used.

Loads and generations run off the event loop (in a small thread pool and, in the bot, a worker
process behind it: :mod:`bot.model_process`), bounded by a count and by the models' memory; the
ready-tweet pools, the batching of alike requests and the fast slots of LoRA models are described
in docs/generation.md ("The bot's model cache").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from training.generation import GenerationResult

log = logging.getLogger(__name__)

#: Worker threads for loading and generating: two models generate at once (CTranslate2 uses one
#: core per generation; torch generations take turns, each using every core).
DEFAULT_WORKERS = 2
#: Most LoRA models served by llama.cpp kept at once: each is an adapter on a base loaded once,
#: so they are bounded by memory (``max_bytes``) rather than by ``max_models``.
DEFAULT_MAX_ADAPTERS = 1000

#: A cold LoRA model used this many times since the least recently used fast one was last used
#: takes that one's fast slot (docs/generation.md): enough that two models used in turn do not
#: swap slots at every request.
DISPLACE_AFTER_USES = 3
#: The file that makes a model folder a LoRA adapter (``training.generation.ADAPTER_CONFIG``).
_ADAPTER_CONFIG = "adapter_config.json"


class Generator(Protocol):
    """What the cache needs of a loaded model (``training.generation.TweetGenerator``)."""

    @property
    def memory_bytes(self) -> int: ...

    def generate(
        self, prompt: str, *, n: int = 1, seed: int | None = None, exclude: Collection[str] = ()
    ) -> GenerationResult: ...


#: ``loader(path)`` loads with the default backend; ``loader(path, backend="torch")`` is called only
#: with ``fast_models`` set, for a LoRA model beyond the fast slots.
Loader = Callable[..., Generator]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One cached model, as ``!models`` shows it."""

    path: Path
    memory_bytes: int
    loaded_at: datetime
    last_used_at: datetime
    uses: int
    load_seconds: float
    #: ``"llamacpp"``, ``"ctranslate2"`` or ``"torch"`` (empty when the loader does not say).
    backend: str = ""


@dataclass(eq=False)
class _Entry:
    generator: Generator
    stamp: tuple[int, ...]
    memory_bytes: int
    loaded_at: datetime
    last_used_at: datetime
    load_seconds: float
    uses: int = 0
    lora: bool = False
    backend: str = ""
    #: The weights the model shares with others (a LoRA base: its key and bytes; "" for none),
    #: counted once per key in the memory bound.
    shared_key: str = ""
    shared_bytes: int = 0
    #: Ready prompt-less tweets, oldest first.
    pool: list[str] = field(default_factory=list)
    refill: asyncio.Task[None] | None = None
    #: Loading this cold LoRA model on the fast backend, to replace its torch handle.
    promotion: asyncio.Task[None] | None = None
    #: ``time.monotonic()`` of the last few uses, oldest first.
    recent_uses: deque[float] = field(default_factory=lambda: deque(maxlen=DISPLACE_AFTER_USES))
    #: Live requests waiting for a worker, by (prompt, exclude): joined into one call.
    batches: dict[tuple[str, tuple[str, ...]], _Batch] = field(default_factory=dict)

    @property
    def used_at(self) -> float:
        """``time.monotonic()`` of the latest use (0 before the first)."""
        return self.recent_uses[-1] if self.recent_uses else 0.0

    def touch(self) -> None:
        """Count one use of the model, now."""
        self.uses += 1
        self.last_used_at = datetime.now(UTC)
        self.recent_uses.append(time.monotonic())


class _Batch:
    """Requests sharing one generate call; closed once a worker starts it."""

    def __init__(self, n: int) -> None:
        self.total = n
        self.offsets = [0]
        self.started = False
        self.future: asyncio.Future[GenerationResult] | None = None
        self._lock = threading.Lock()

    def join(self, n: int, limit: int) -> bool:
        """Add a request of ``n`` tweets; False once the call started or if it grew too big."""
        with self._lock:
            if self.started or self.total + n > limit:
                return False
            self.offsets.append(self.total)
            self.total += n
            return True

    def run(self, generator: Generator, prompt: str, exclude: tuple[str, ...]) -> GenerationResult:
        with self._lock:
            self.started = True
            total = self.total
        return generator.generate(prompt, n=total, exclude=exclude)


def _default_loader(path: Path, *, backend: str | None = None) -> Generator:
    from training.generation import TweetGenerator

    return TweetGenerator.load(path, backend=backend)


def _stamp(path: Path) -> tuple[int, ...]:
    """Changes when a retrain atomically replaces the model folder (a new directory inode) or
    rewrites its training record; not when files are added beside them (the fast artifact)."""
    try:
        info = os.stat(path)
    except OSError:
        return ()
    try:
        record = os.stat(path / "training.json")
    except OSError:
        return (info.st_ino, info.st_dev)
    return (info.st_ino, info.st_dev, record.st_ino, record.st_mtime_ns, record.st_size)


def _is_adapter(entry: _Entry) -> bool:
    """Whether ``entry`` is a llama.cpp adapter on a shared base: counted by ``max_adapters``
    (and the memory bound), not by ``max_models``."""
    return entry.lora and entry.backend == "llamacpp"


def _key(model_dir: Path | str) -> Path:
    return Path(model_dir).expanduser().resolve()


class ModelCache:
    """An LRU of loaded models bounded by count and memory; generation runs in worker threads."""

    def __init__(
        self,
        max_models: int,
        max_bytes: int,
        *,
        loader: Loader | None = None,
        max_workers: int = DEFAULT_WORKERS,
        pool_size: int = 0,
        fast_models: int | None = None,
        max_adapters: int = DEFAULT_MAX_ADAPTERS,
    ) -> None:
        if max_models < 1 or max_bytes < 1 or max_adapters < 1:
            raise ValueError("the cache must hold at least one model and one byte")
        #: Most llama.cpp adapters kept (each on one shared base; the memory bound holds).
        self.max_adapters = max_adapters
        if fast_models is not None and fast_models < 0:
            raise ValueError("fast_models must be 0 or more (None: no limit)")
        #: Most LoRA models on the fast backend at once (None: no limit); see docs/generation.md.
        self.fast_models = fast_models
        # LoRA models loading now that were given a fast slot.
        self._fast_loading: set[Path] = set()
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._loader: Loader = loader or _default_loader
        self._entries: OrderedDict[Path, _Entry] = OrderedDict()
        self._loading: dict[Path, asyncio.Future[_Entry]] = {}
        # Bumped by invalidate(): a load that started before it must not fill the cache.
        self._epochs: dict[Path, int] = {}
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="model")
        self._closed = False
        self.pool_size = max(0, pool_size)
        # Live requests waiting for or running on a worker; refills wait while there are any.
        self._live = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def generate(
        self,
        model_dir: Path | str,
        prompt: str,
        *,
        n: int = 1,
        seed: int | None = None,
        exclude: Collection[str] = (),
    ) -> GenerationResult:
        """Generate tweets from the model in ``model_dir``, loading it first if needed.

        A prompt-less request for one unseeded tweet is served from the model's pool when it
        holds one that ``exclude`` does not name.
        """
        from training.generation import DEFAULT_PROMPT

        key = _key(model_dir)
        pooled = self.pool_size > 0 and prompt == DEFAULT_PROMPT and n == 1 and seed is None
        self._live += 1
        self._idle.clear()
        try:
            entry = await self._get(key)
            if pooled:
                tweet = self._take(entry, exclude)
                if tweet is not None:
                    return _pooled_result(tweet)
            loop = asyncio.get_running_loop()
            exclude = tuple(exclude)
            if seed is not None:
                return await loop.run_in_executor(
                    self._executor,
                    lambda: entry.generator.generate(prompt, n=n, seed=seed, exclude=exclude),
                )
            return await self._batched(entry, prompt, n, exclude)
        finally:
            self._live -= 1
            if not self._live:
                self._idle.set()
            if self.pool_size > 0 and not self._closed and self._entries.get(key) is not None:
                self._start_refill(self._entries[key])

    async def _batched(
        self, entry: _Entry, prompt: str, n: int, exclude: tuple[str, ...]
    ) -> GenerationResult:
        """Unseeded requests for one model, prompt and ``exclude`` that wait for a worker at the
        same time share one generate call (a batch of k tweets costs far less than k calls)."""
        from training.generation import MAX_TWEETS, GenerationResult

        group_key = (prompt, exclude)
        group = entry.batches.get(group_key)
        if group is None or not group.join(n, MAX_TWEETS):
            group = _Batch(n)
            entry.batches[group_key] = group
            loop = asyncio.get_running_loop()
            group.future = loop.run_in_executor(
                self._executor, functools.partial(group.run, entry.generator, prompt, exclude)
            )
        start = group.future
        offset = group.offsets[-1]
        try:
            result = await asyncio.shield(start)
        finally:
            if entry.batches.get(group_key) is group and group.started:
                del entry.batches[group_key]
        tweets = result.tweets[offset : offset + n]
        return GenerationResult(
            prompt=result.prompt,
            tweets=tweets,
            candidates=result.candidates,
            rejected=result.rejected,
            rejected_reasons=dict(result.rejected_reasons),
        )

    def _take(self, entry: _Entry, exclude: Collection[str]) -> str | None:
        from training.generation import normalize

        avoid = {normalize(text) for text in exclude}
        for index, tweet in enumerate(entry.pool):
            if normalize(tweet) not in avoid:
                del entry.pool[index]
                return tweet
        return None

    def _start_refill(self, entry: _Entry) -> None:
        if len(entry.pool) < self.pool_size and (entry.refill is None or entry.refill.done()):
            entry.refill = asyncio.ensure_future(self._refill(entry))

    async def _refill(self, entry: _Entry) -> None:
        """Top the entry's pool up in batches, each started only when no live request waits."""
        loop = asyncio.get_running_loop()
        while not self._closed and len(entry.pool) < self.pool_size:
            await self._idle.wait()
            if self._closed or not any(e is entry for e in self._entries.values()):
                return  # evicted, invalidated or reloaded: its pool goes with it
            wanted = self.pool_size - len(entry.pool)
            try:
                result = await loop.run_in_executor(
                    self._executor,
                    functools.partial(
                        entry.generator.generate, "", n=wanted, exclude=tuple(entry.pool)
                    ),
                )
            except Exception:  # the live path reports a broken model; the pool just stops
                log.exception("refilling the tweet pool failed")
                return
            if not result.tweets:
                return
            entry.pool.extend(result.tweets[:wanted])

    def pool_sizes(self) -> dict[Path, int]:
        """Ready tweets per loaded model."""
        return {path: len(e.pool) for path, e in self._entries.items()}

    async def _get(self, key: Path) -> _Entry:
        if self._closed:
            raise RuntimeError("the model cache is closed")
        stamp = _stamp(key)
        entry = self._entries.get(key)
        if entry is not None and not getattr(entry.generator, "alive", True):
            log.info("model %s lost its worker process; loading it again", key)
            del self._entries[key]
            entry = None
        if entry is not None and entry.stamp == stamp:
            self._entries.move_to_end(key)
            entry.touch()
            self._maybe_promote(key, entry)
            return entry
        if entry is not None:
            log.info("model %s was replaced on disk; loading it again", key)
            del self._entries[key]
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key, stamp, self._epochs.get(key, 0)))
            self._loading[key] = pending
            pending.add_done_callback(lambda _f: self._finish_load(key, pending))
        entry = await asyncio.shield(pending)
        entry.touch()
        return entry

    def _finish_load(self, key: Path, future: asyncio.Future[_Entry]) -> None:
        if self._loading.get(key) is future:
            del self._loading[key]

    def fast_lora_models(self) -> int:
        """LoRA models cached (or loading) on the fast backend: the fast slots in use."""
        cached = sum(1 for e in self._entries.values() if e.lora and e.backend == "ctranslate2")
        return cached + len(self._fast_loading)

    def _maybe_promote(self, key: Path, entry: _Entry) -> None:
        """Start moving a cold LoRA model to a free fast slot, or to the slot of a fast one that
        has gone quiet (docs/generation.md); one move at a time per model."""
        if (
            self.fast_models is None
            or not entry.lora
            or entry.backend != "torch"
            or entry.promotion is not None
            or self._closed
        ):
            return
        displaced: Path | None = None
        if self.fast_lora_models() >= self.fast_models:
            displaced = self._quiet_fast_model(entry)
            if displaced is None:
                return
        self._fast_loading.add(key)
        entry.promotion = asyncio.ensure_future(
            self._promote(key, entry, displaced, time.monotonic())
        )

    def _quiet_fast_model(self, entry: _Entry) -> Path | None:
        """The least recently used fast LoRA model, if ``entry``'s last few uses all came after
        its last one (and no slot is being filled already); else None."""
        if self._fast_loading or len(entry.recent_uses) < DISPLACE_AFTER_USES:
            return None
        fast = [(k, e) for k, e in self._entries.items() if e.lora and e.backend == "ctranslate2"]
        if not fast:
            return None
        key, quietest = min(fast, key=lambda item: item[1].used_at)
        return key if entry.recent_uses[0] > quietest.used_at else None

    async def _promote(
        self, key: Path, entry: _Entry, displaced: Path | None, decided_at: float
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._idle.wait()
            if self._closed or self._entries.get(key) is not entry:
                return
            generator = await loop.run_in_executor(
                self._executor, functools.partial(self._loader, key)
            )
            memory = int(await loop.run_in_executor(self._executor, lambda: generator.memory_bytes))
            shared = await loop.run_in_executor(self._executor, _shared, generator)
        except Exception:  # the torch handle keeps serving the model
            log.exception("moving model %s to the fast backend failed", key)
            return
        finally:
            self._fast_loading.discard(key)
        backend = str(getattr(generator, "backend", "") or "")
        # Only if the model is still cached as it was (not invalidated, evicted or reloaded).
        if backend != "ctranslate2" or self._closed or self._entries.get(key) is not entry:
            return
        if displaced is not None:
            quiet = self._entries.get(displaced)
            if quiet is not None and quiet.backend == "ctranslate2":
                if quiet.used_at > decided_at:  # used again meanwhile: both are in use
                    entry.promotion = None  # a later use may decide again
                    return
                del self._entries[displaced]
                log.info("model %s gave its fast slot to %s", displaced, key)
        entry.generator = generator
        entry.backend = backend
        entry.memory_bytes = memory
        entry.shared_key, entry.shared_bytes = shared
        log.info("model %s moved to the fast backend", key)
        self._evict(keep=key)

    async def _load(self, key: Path, stamp: tuple[int, ...], epoch: int) -> _Entry:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        lora = (key / _ADAPTER_CONFIG).is_file()
        cold = lora and self.fast_models is not None and self.fast_lora_models() >= self.fast_models
        if lora and not cold and self.fast_models is not None:
            self._fast_loading.add(key)
        try:
            if cold:
                load = functools.partial(self._loader, key, backend="torch")
            else:
                load = functools.partial(self._loader, key)
            generator = await loop.run_in_executor(self._executor, load)
        finally:
            self._fast_loading.discard(key)
        memory = int(await loop.run_in_executor(self._executor, lambda: generator.memory_bytes))
        shared_key, shared_bytes = await loop.run_in_executor(self._executor, _shared, generator)
        now = datetime.now(UTC)
        entry = _Entry(
            generator=generator,
            stamp=stamp,
            memory_bytes=memory,
            loaded_at=now,
            last_used_at=now,
            load_seconds=time.perf_counter() - started,
            lora=lora,
            backend=str(getattr(generator, "backend", "") or ""),
            shared_key=shared_key,
            shared_bytes=shared_bytes,
        )
        if cold:
            log.info("model %s served from its shared base: the fast slots are full", key)
        # Only cache it if nobody invalidated the model while it loaded.
        if self._epochs.get(key, 0) == epoch and not self._closed:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self._evict(keep=key)
        return entry

    def _evict(self, keep: Path) -> None:
        """Drop least-recently-used models until the count and memory bounds hold.

        The model just loaded stays even if it alone exceeds ``max_bytes``: it was asked for.
        Evicted models are not closed, since a generation may still use them; their memory is
        freed with the last reference.
        """
        while len(self._entries) > 1:
            adapters = [k for k, e in self._entries.items() if _is_adapter(e)]
            if self.total_bytes > self.max_bytes:
                candidates = list(self._entries)
            elif len(self._entries) - len(adapters) > self.max_models:
                candidates = [k for k, e in self._entries.items() if not _is_adapter(e)]
            elif len(adapters) > self.max_adapters:
                candidates = adapters
            else:
                break
            oldest = candidates[0]
            if oldest == keep:
                break
            evicted = self._entries.pop(oldest)
            log.info("evicted model %s (%d bytes)", oldest, evicted.memory_bytes)

    @property
    def total_bytes(self) -> int:
        """Memory the cached models take together: each model's own bytes, and the weights they
        share (a LoRA base) once per base."""
        shared: dict[str, int] = {}
        for e in self._entries.values():
            if e.shared_key:
                shared[e.shared_key] = max(shared.get(e.shared_key, 0), e.shared_bytes)
        return sum(e.memory_bytes for e in self._entries.values()) + sum(shared.values())

    def invalidate(self, model_dir: Path | str) -> bool:
        """Forget a model (retrained or deleted); True if it was cached or loading."""
        key = _key(model_dir)
        self._epochs[key] = self._epochs.get(key, 0) + 1
        removed = self._entries.pop(key, None) is not None
        loading = self._loading.pop(key, None) is not None
        return removed or loading

    def loaded(self) -> list[LoadedModel]:
        """The cached models, most recently used first."""
        return [
            LoadedModel(
                path=path,
                memory_bytes=e.memory_bytes,
                loaded_at=e.loaded_at,
                last_used_at=e.last_used_at,
                uses=e.uses,
                load_seconds=e.load_seconds,
                backend=e.backend,
            )
            for path, e in reversed(self._entries.items())
        ]

    def __contains__(self, model_dir: Any) -> bool:
        return _key(model_dir) in self._entries

    async def close(self) -> None:
        """Forget every model and stop the worker threads (waiting for running generations),
        then the loader's worker process when it has one (its ``close``)."""
        self._closed = True
        self._idle.set()
        tasks = [
            task
            for e in self._entries.values()
            for task in (e.refill, e.promotion)
            if task is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._entries.clear()
        self._loading.clear()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: self._executor.shutdown(wait=True))
        close = getattr(self._loader, "close", None)
        if callable(close):
            await loop.run_in_executor(None, close)


def _shared(generator: Generator) -> tuple[str, int]:
    """The weights ``generator`` shares with other models and their bytes (("", 0): none, or a
    loader whose models do not say)."""
    key = str(getattr(generator, "shared_key", "") or "")
    return (key, int(getattr(generator, "shared_bytes", 0) or 0)) if key else ("", 0)


def _pooled_result(tweet: str) -> GenerationResult:
    from training.generation import GenerationResult

    return GenerationResult(prompt="", tweets=[tweet], candidates=1, rejected=0)
