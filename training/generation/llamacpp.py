"""The llama.cpp engine: loaded GGUF files, their contexts and the sampler.

One loaded base serves every adapter on it; a session takes one of the base's contexts (at most
:data:`CONTEXTS` per base), sets the model's adapter on it and samples the round's rows as
sequences of one batch, the prompt decoded once and shared. Sampling is done in numpy with the
session's own random generator (docs/generation.md). :mod:`training.generation.llamacpp_build`
makes the files this loads.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import logging
import math
import os
import secrets
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from training.generation.settings import GenerationSettings, nucleus
from training.generation.stop import TweetEnd

log = logging.getLogger(__name__)

#: The backend's name (:attr:`TweetGenerator.backend`, the model card, ``!models``).
KIND = "llamacpp"
#: Inside a model folder: the model's llama.cpp files and their record.
ENGINE_DIR = "llamacpp"
ADAPTER_FILE = "adapter.gguf"
MODEL_FILE = "model.gguf"
#: Inside ``<store>/.bases``: the shared Q8_0 bases.
BASES_SUBDIR = "llamacpp"
#: Contexts per loaded base: how many of its models generate at the same moment.
CONTEXTS = 2
#: Sequences one context decodes together (a full round of candidates in one pass), and the
#: tokens each may hold.
_SEQUENCES, _ROW_TOKENS = GenerationSettings().num_candidates, 256
#: Tokens one decode call takes at most.
_BATCH_TOKENS = 512


class LlamaUnavailable(Exception):
    """llama.cpp cannot serve this model (the message says why); the next path serves it."""


@functools.lru_cache(maxsize=1)
def llamacpp_installed() -> bool:
    """Whether llama-cpp-python is installed and its library loads on this machine."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError) as error:  # e.g. built for another CPU, a missing libgomp
        log.warning("llama-cpp-python is installed but does not load: %s", error)
        return False
    return True


_LIB_LOCK = threading.Lock()
_LIB: Any = None


def _quiet(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's log: errors go to this module's logger, the rest is dropped."""
    if level == 4 and text:  # GGML_LOG_LEVEL_ERROR
        log.warning("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


def _lib() -> Any:
    """The ``llama_cpp`` module, initialised once (backend, quiet log)."""
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            import llama_cpp

            callback = llama_cpp.llama_log_callback(_quiet)
            llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _LIB = llama_cpp
            _LIB._doppeltweet_log = callback  # kept alive as long as the library
        return _LIB


@functools.lru_cache(maxsize=1)
def uses_openmp() -> bool:
    """Whether this llama.cpp build runs its threads with OpenMP (llama-cpp-python's default
    build on Linux; this project builds without it: docs/generation.md)."""
    return b"OPENMP = 1" in (_lib().llama_print_system_info() or b"")


_FUNNEL_LOCK = threading.Lock()
_FUNNEL: ThreadPoolExecutor | None = None


def _decode_call(context: Any, batch: Any) -> int:
    """``llama_decode(context, batch)``, on the caller's thread, or under OpenMP on the one
    thread that makes every decode of this process.

    OpenMP gives each thread that starts parallel work a team of its own; once those teams
    hold more threads than the machine has cores, libgomp stops spinning at its barriers and
    sleeps instead, and every decode became 1.7 to 2.3 times slower (measured on 2 cores,
    docs/generation.md). Decodes from the cache's worker threads all go through one thread.
    """
    lib = _lib()
    if not uses_openmp():
        return int(lib.llama_decode(context, batch))
    global _FUNNEL
    with _FUNNEL_LOCK:
        if _FUNNEL is None:
            _FUNNEL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp-decode")
        funnel = _FUNNEL
    return int(funnel.submit(lib.llama_decode, context, batch).result())


def _cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def generation_threads() -> int:
    """Threads one llama.cpp generation uses at most (``DOPPELTWEET_GENERATION_THREADS``, 0: up
    to 2)."""
    from training.config import get_settings

    threads = get_settings().generation_threads
    if threads > 0:
        return threads
    return max(1, min(2, _cores()))


#: Contexts generating now in this process, over every model: they share the cores.
_BUSY = 0
_BUSY_LOCK = threading.Lock()


def _busy(change: int) -> None:
    global _BUSY
    with _BUSY_LOCK:
        _BUSY += change


def fair_threads(most: int, busy: int, cores: int) -> int:
    """Threads for one of ``busy`` generations running at once on ``cores`` cores, ``most`` at
    most: the cores are split between them, never oversubscribed (llama.cpp's threads wait
    for one another by spinning, so two generations of two threads on two cores run far
    slower than two of one)."""
    return max(1, min(most, cores // max(1, busy)))


class _Model:
    """One loaded GGUF model, its adapters and a small pool of contexts."""

    def __init__(self, path: Path, threads: int) -> None:
        lib = _lib()
        params = lib.llama_model_default_params()
        self.path = path
        self.ptr = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise LlamaUnavailable(f"llama.cpp cannot load {path.name}")
        vocab = lib.llama_model_get_vocab(self.ptr)
        self.n_vocab = int(lib.llama_vocab_n_tokens(vocab))
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(self.ptr))
        self.threads = threads or generation_threads()
        self.bytes = path.stat().st_size
        self._free: list[_Context] = []
        self._made = 0
        self._ready = threading.Condition()
        self._closed = False

    def load_adapter(self, path: Path) -> Any:
        adapter = _lib().llama_adapter_lora_init(self.ptr, str(path).encode())
        if not adapter:
            raise LlamaUnavailable(f"llama.cpp cannot load the adapter {path}")
        return adapter

    def free_adapter(self, adapter: Any) -> None:
        """Free ``adapter`` (no context may be using it: contexts are all idle or hold others)."""
        with self._ready:
            for context in self._free:
                if _same(context.adapter, adapter):
                    context.use(None)
            _lib().llama_adapter_lora_free(adapter)

    @contextmanager
    def context(self, adapter: Any = None) -> Iterator[_Context]:
        """An idle context, set to ``adapter`` (None: the bare model).

        An idle context already set to ``adapter`` is taken first, then a new one while fewer
        than :data:`CONTEXTS` exist, then the idle context used least recently; else it waits.
        Setting another adapter makes llama.cpp plan its graphs again on the next decode (a few
        milliseconds), so a handle asked again keeps its context.
        """
        with self._ready:
            while not self._free and self._made >= CONTEXTS:
                self._ready.wait()
            if self._closed:
                raise LlamaUnavailable("the model was unloaded")
            same = [c for c in self._free if _same(c.adapter, adapter)]
            if same:
                context = same[-1]
                self._free.remove(context)
            elif self._made < CONTEXTS:
                context = _Context(self)
                self._made += 1
            else:
                context = self._free.pop(0)  # the least recently used
        _busy(+1)
        try:
            yield context
        finally:
            _busy(-1)
            with self._ready:
                self._free.append(context)
                self._ready.notify()

    def close(self) -> None:
        with self._ready:
            if self._closed:
                return
            self._closed = True
            for context in self._free:
                context.close()
            self._free.clear()
            _lib().llama_model_free(self.ptr)
            self.ptr = None


def _same(one: Any, other: Any) -> bool:
    """Whether two adapter handles (ctypes pointers or None) name the same adapter."""
    if one is None or other is None:
        return one is None and other is None
    return bool(one == other)


class _Context:
    """A llama.cpp context: its cache holds :data:`_SEQUENCES` rows of up to
    :data:`_ROW_TOKENS` tokens (or fewer, longer rows)."""

    def __init__(self, model: _Model) -> None:
        lib = _lib()
        self.model = model
        params = lib.llama_context_default_params()
        self.n_ctx = _SEQUENCES * min(_ROW_TOKENS, model.n_ctx_train or _ROW_TOKENS)
        params.n_ctx = self.n_ctx
        params.n_batch = _BATCH_TOKENS
        params.n_ubatch = _BATCH_TOKENS
        params.n_seq_max = _SEQUENCES
        params.n_threads = model.threads
        params.n_threads_batch = model.threads
        params.kv_unified = True
        params.no_perf = True
        self.ptr = lib.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise LlamaUnavailable("llama.cpp cannot make a context for the model")
        self.memory = lib.llama_get_memory(self.ptr)
        self.batch = lib.llama_batch_init(_BATCH_TOKENS, 0, 1)
        self.adapter: Any = None
        self.threads = model.threads

    def use(self, adapter: Any) -> None:
        """Apply ``adapter`` (None: the bare model) to this context's decoding."""
        lib = _lib()
        if adapter is None:
            lib.llama_set_adapters_lora(self.ptr, None, 0, None)
        else:
            adapters = (lib.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(1.0)
            if lib.llama_set_adapters_lora(self.ptr, adapters, 1, scales) != 0:
                raise LlamaUnavailable("llama.cpp refused the adapter")
        self.adapter = adapter

    def clear(self) -> None:
        _lib().llama_memory_clear(self.memory, True)

    def copy_sequence(self, source: int, target: int) -> None:
        _lib().llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def decode(self, tokens: list[tuple[int, int, int, bool]]) -> None:
        """Decode ``(token, position, sequence, wants logits)`` entries (at most
        :data:`_BATCH_TOKENS`)."""
        batch = self.batch
        for i, (token, position, sequence, logits) in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = sequence
            batch.logits[i] = 1 if logits else 0
        batch.n_tokens = len(tokens)
        # Decodes made one at a time (OpenMP) each take every thread.
        busy = 1 if uses_openmp() else _BUSY
        threads = fair_threads(self.model.threads, busy, _cores())
        if threads != self.threads:
            _lib().llama_set_n_threads(self.ptr, threads, threads)
            self.threads = threads
        status = _decode_call(self.ptr, batch)
        if status != 0:
            raise LlamaUnavailable(f"llama.cpp could not decode (status {status})")

    def logits(self, index: int) -> Any:
        """A copy of the logits of the ``index``-th output of the last decode."""
        import numpy as np

        pointer = _lib().llama_get_logits_ith(self.ptr, index)
        return np.ctypeslib.as_array(pointer, shape=(self.model.n_vocab,)).copy()

    def prompt(self, ids: list[int]) -> Any:
        """Decode ``ids`` as sequence 0 of an empty cache; the last position's logits."""
        self.clear()
        for start in range(0, len(ids), _BATCH_TOKENS):
            chunk = ids[start : start + _BATCH_TOKENS]
            last = start + len(chunk) == len(ids)
            self.decode(
                [
                    (token, start + i, 0, last and i == len(chunk) - 1)
                    for i, token in enumerate(chunk)
                ]
            )
        return self.logits(-1)

    def nll(self, ids: list[int]) -> float:
        """The negative log-likelihood of ``ids[1:]`` given what precedes each token."""
        import numpy as np

        self.clear()
        total = 0.0
        for start in range(0, len(ids) - 1, _BATCH_TOKENS):
            chunk = ids[start : start + _BATCH_TOKENS]
            self.decode([(token, start + i, 0, True) for i, token in enumerate(chunk)])
            for i in range(len(chunk)):
                target = start + i + 1
                if target >= len(ids):
                    break
                row = self.logits(i).astype(np.float64)
                peak = row.max()
                total -= row[ids[target]] - peak - math.log(np.exp(row - peak).sum())
        return total

    def close(self) -> None:
        lib = _lib()
        lib.llama_batch_free(self.batch)
        lib.llama_free(self.ptr)
        self.ptr = None


# Loaded GGUF files by resolved path: a base is loaded once for all its adapters in a process.
_MODELS: dict[str, tuple[_Model, set[int]]] = {}
_MODELS_LOCK = threading.RLock()
#: Adapters whose backend was garbage-collected: freed at the next load (see _purge_released).
_RELEASED: list[tuple[_Model, Any, int]] = []


def _acquire(path: Path, owner: int) -> _Model:
    key = str(path.resolve())
    with _MODELS_LOCK:
        entry = _MODELS.get(key)
        if entry is None:
            entry = (_Model(path, threads=0), set())
            _MODELS[key] = entry
        entry[1].add(owner)
        return entry[0]


def _release(model: _Model, adapter: Any, owner: int) -> None:
    with _MODELS_LOCK:
        if adapter is not None:
            model.free_adapter(adapter)
        key = str(model.path.resolve())
        entry = _MODELS.get(key)
        if entry is None or entry[0] is not model:
            return
        entry[1].discard(owner)
        if not entry[1]:
            del _MODELS[key]
            model.close()


def _mark_released(model: _Model, adapter: Any, owner: int) -> None:
    # A garbage-collection finaliser may run inside a generation on this thread: only record.
    _RELEASED.append((model, adapter, owner))


def _purge_released() -> None:
    while _RELEASED:
        _release(*_RELEASED.pop())


def loaded_models() -> int:
    """How many GGUF models this process holds (bases and models of their own)."""
    with _MODELS_LOCK:
        return len(_MODELS)


class LlamaBackend:
    """Samples with llama.cpp: a model's adapter on a shared Q8_0 base, or its own GGUF."""

    kind = KIND

    def __init__(
        self,
        model_dir: Path,
        record: dict[str, Any],
        eos_id: int,
        max_positions: int,
        models_root: Path | None = None,
    ) -> None:
        from training.basemodels import BASES_DIR

        _purge_released()
        root = models_root or model_dir.parent
        if record.get("kind") == "lora":
            weights = root / BASES_DIR / BASES_SUBDIR / str(record.get("base"))
            adapter_path: Path | None = model_dir / ENGINE_DIR / ADAPTER_FILE
        else:
            weights, adapter_path = model_dir / ENGINE_DIR / MODEL_FILE, None
        if not weights.is_file() or (adapter_path is not None and not adapter_path.is_file()):
            raise LlamaUnavailable("the llama.cpp files are missing")
        self.eos_id = eos_id
        self.max_positions = max_positions
        self._owner = id(self)
        self.model = _acquire(weights, self._owner)
        try:
            self.adapter = (
                self.model.load_adapter(adapter_path) if adapter_path is not None else None
            )
        except LlamaUnavailable:
            _release(self.model, None, self._owner)
            raise
        self._bytes = (adapter_path or weights).stat().st_size
        self._lora = adapter_path is not None
        self._finalizer = weakref.finalize(
            self, _mark_released, self.model, self.adapter, self._owner
        )

    @contextmanager
    def session(self, seed: int | None) -> Iterator[_LlamaSampler]:
        import numpy as np

        rng = np.random.default_rng(seed if seed is not None else secrets.randbits(63))
        with self.model.context(self.adapter) as context:
            context.use(self.adapter)
            yield _LlamaSampler(self, context, rng)

    def memory_bytes(self) -> int:
        return self._bytes

    def shared_bytes(self) -> int:
        return self.model.bytes if self._lora else 0

    def shared_key(self) -> str:
        return f"{KIND}:{self.model.path}" if self._lora else ""

    def close(self) -> None:
        if self._finalizer.detach() is not None:
            _release(self.model, self.adapter, self._owner)


class _LlamaSampler:
    def __init__(self, backend: LlamaBackend, context: _Context, rng: Any) -> None:
        self.backend = backend
        self.context = context
        self.rng = rng

    def sample(
        self,
        prompt_ids: list[int],
        batch: int,
        *,
        settings: GenerationSettings,
        max_length: int,
        first_tokens: list[int] | None,
        stop: TweetEnd,
    ) -> list[list[int]]:
        max_length = min(max_length, self.context.n_ctx)
        per_chunk = max(1, min(_SEQUENCES, self.context.n_ctx // max_length))
        rows: list[list[int]] = []
        for offset in range(0, batch, per_chunk):
            count = min(per_chunk, batch - offset)
            rows.extend(
                self._rows(prompt_ids, count, offset, settings, max_length, first_tokens, stop)
            )
        return rows

    def _rows(
        self,
        prompt_ids: list[int],
        count: int,
        offset: int,
        settings: GenerationSettings,
        max_length: int,
        first_tokens: list[int] | None,
        stop: TweetEnd,
    ) -> list[list[int]]:
        """``count`` rows sampled together: the prompt decoded once, shared by every row."""
        context = self.context
        last = context.prompt(prompt_ids)
        for sequence in range(1, count):
            context.copy_sequence(0, sequence)
        rows = [list(prompt_ids) for _ in range(count)]
        logits = [last] * count
        active = list(range(count))
        allowed = first_tokens
        while active:
            going = []
            for row in active:
                token = self._pick(logits[row], len(rows[row]), settings, allowed)
                rows[row].append(token)
                done = (
                    token == self.backend.eos_id
                    or len(rows[row]) >= max_length
                    or stop.push(offset + row, token, lambda row=row: rows[row][1:])
                )
                if not done:
                    going.append(row)
            allowed = None
            active = going
            if active:
                context.decode([(rows[r][-1], len(rows[r]) - 1, r, True) for r in active])
                for index, row in enumerate(active):
                    logits[row] = context.logits(index)
        return rows

    def _pick(
        self, logits: Any, length: int, settings: GenerationSettings, allowed: list[int] | None
    ) -> int:
        """One token under the settings' rule (transformers' order: no EOS before
        ``min_length``, temperature, top-k, top-p), from ``allowed`` only when given."""
        import numpy as np

        scores = logits.astype(np.float64)
        ids = np.arange(scores.shape[0]) if allowed is None else np.asarray(allowed)
        if allowed is not None:
            scores = scores[ids]
        elif length < settings.min_length:
            scores[self.backend.eos_id] = -np.inf
        if not settings.do_sample:
            return int(ids[int(np.argmax(scores))])
        keep, probs = nucleus(scores / settings.temperature, settings)
        return int(ids[int(self.rng.choice(keep, p=probs))])


def open_backend(
    model_dir: Path, eos_id: int, base_name: str | None, texts: list[str]
) -> LlamaBackend | None:
    """The llama.cpp backend for ``model_dir`` (its files made first when missing, or made
    again once when they cannot be loaded: a base file removed, a damaged adapter), or None
    when llama.cpp does not serve it (the check failed, the model cannot be written)."""
    from training.generation.llamacpp_build import build_artifact, read_record

    record = read_record(model_dir)
    for attempt in range(2):
        if record is None:
            try:
                log.info("Writing %s for llama.cpp (once per training).", model_dir.name)
                record = build_artifact(model_dir, base_name=base_name, texts=texts)
            except Exception as error:  # writing or checking failed: the next path serves it
                log.warning("llama.cpp does not serve %s: %s", model_dir.name, error)
                return None
        if not record.get("serves"):
            return None
        try:
            return LlamaBackend(model_dir, record, eos_id, int(record.get("max_positions") or 1024))
        except LlamaUnavailable as error:
            log.warning("llama.cpp could not load %s (%s)", model_dir.name, error)
            if attempt:
                return None
            record = None
    return None


def score(weights: Path, adapter: Path | None, rows: list[Any]) -> float:
    """The negative log-likelihood of each row's tokens after its first under ``weights`` with
    ``adapter`` applied (None: the bare model), loaded just for this and freed after."""
    model = _Model(weights, threads=0)
    try:
        handle = model.load_adapter(adapter) if adapter is not None else None
        with model.context(handle) as context:
            context.use(handle)
            return sum(context.nll([int(t) for t in row.tolist()]) for row in rows)
    finally:
        model.close()
