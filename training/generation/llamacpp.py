"""The llama.cpp backend: one Q8_0 base per base model, each LoRA adapter applied at run time.

Files. A base model is written once, in Q8_0, to ``<store>/.bases/llamacpp/<identity>.gguf``
(:func:`base_file`: made under a file lock and renamed into place, so concurrent makers wait for
one another and a crash leaves no half file). A LoRA model's adapter is written in f16 to
``llamacpp/adapter.gguf`` inside its folder (~10 MB for SmolLM2's); a model with weights of its
own gets ``llamacpp/model.gguf``. ``llamacpp/source.json`` records what the folder was made from
and the quality check; a retrained model is a new folder, an artifact of other weights is made
again, and the whole ``llamacpp/`` folder is renamed into place at once.

The quality check. Each model is measured when its files are made: the perplexity of its own
held-out tweets under llama.cpp (the Q8_0 base and the adapter) against torch in float32 (the
base with the adapter, unmerged). Within ``DOPPELTWEET_LLAMACPP_MAX_PPL_INCREASE_PCT`` (1 %)
the model is served by llama.cpp; beyond it the record says so and the next exact path serves it.

Running. One loaded base serves every adapter on it; a session takes one of the base's contexts
(at most :data:`CONTEXTS` per base, each generating at once with its own threads), sets the
model's adapter on it (llama.cpp applies adapters per context) and samples the round's rows as
sequences of one batch: the prompt is decoded once and its cache shared by every row. Sampling
(temperature, top-k, top-p, the first token from a healed prompt's choices, no EOS before
``min_length``) is done in numpy with the session's own random generator, so a seed gives the
same tweets and the process's random state is never touched; stop strings are checked in Python
(:class:`~training.generation.stop._TweetEnd`).
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import secrets
import shutil
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.generation.settings import ADAPTER_CONFIG, GenerationSettings, nucleus
from training.generation.stop import _TweetEnd

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: The backend's name (:attr:`TweetGenerator.backend`, the model card, ``!models``).
KIND = "llamacpp"
#: Inside a model folder: the model's llama.cpp files and their record.
ENGINE_DIR = "llamacpp"
ADAPTER_FILE = "adapter.gguf"
MODEL_FILE = "model.gguf"
_RECORD = "source.json"
#: Inside ``<store>/.bases``: the shared Q8_0 bases.
BASES_SUBDIR = "llamacpp"
#: Contexts per loaded base: how many of its models generate at the same moment.
CONTEXTS = 2
#: Sequences one context decodes together, and the tokens each may hold.
_SEQUENCES, _ROW_TOKENS = 8, 256
#: Tokens one decode call takes at most.
_BATCH_TOKENS = 512
#: The quality check scores at most this many held-out blocks of min(128, context) tokens.
_CHECK_BLOCKS, _CHECK_BLOCK_TOKENS = 16, 128


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


def _max_increase_pct() -> float:
    from training.config import get_settings

    return float(get_settings().llamacpp_max_ppl_increase_pct)


# -- files --------------------------------------------------------------------------------------


def _folder_stamp(folder: Path) -> str:
    """Sizes and times of a base folder's weight files (a changed base is a new identity)."""
    parts = []
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json"):
        file = folder / name
        if file.is_file():
            stat = file.stat()
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return ",".join(parts)


def base_identity(base_name: str, model_dir: Path, texts: list[str]) -> tuple[str, str]:
    """(what to load the base from, the digest naming its Q8_0 file)."""
    from training.generation.gguf_files import WRITER_VERSION
    from training.generation.pool import _base_source

    source, key = _base_source(base_name, model_dir, texts)
    folder = Path(source)
    stamp = _folder_stamp(folder) if folder.is_dir() else ""
    digest = hashlib.sha256(f"{key}\0{stamp}\0{WRITER_VERSION}\0Q8_0".encode()).hexdigest()[:32]
    return source, digest


def base_file(models_root: Path, digest: str, make: Callable[[Path], None]) -> Path:
    """``<models_root>/.bases/llamacpp/<digest>.gguf``, made by ``make(temporary path)`` when
    missing: under an exclusive file lock (another process making it is waited for) and renamed
    into place when complete."""
    from training.basemodels import BASES_DIR

    folder = models_root / BASES_DIR / BASES_SUBDIR
    target = folder / f"{digest}.gguf"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{digest}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if target.is_file():
                return target
            temporary = folder / f".{digest}-{secrets.token_hex(4)}.tmp"
            try:
                make(temporary)
                os.replace(temporary, target)
            finally:
                temporary.unlink(missing_ok=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def read_record(model_dir: Path) -> dict[str, Any] | None:
    """The model's llama.cpp record when it was made from the model's current weights."""
    from training.generation.fast import source_stamp

    try:
        record = json.loads((model_dir / ENGINE_DIR / _RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("stamp") != source_stamp(model_dir):
        return None
    check = record.get("check")
    if not isinstance(check, dict) or check.get("bound_pct") != _max_increase_pct():
        return None
    return record


def build_artifact(
    model_dir: Path, *, base_name: str | None, texts: list[str], models_root: Path | None = None
) -> dict[str, Any]:
    """Write ``model_dir``'s llama.cpp files (and its base's, when missing), run the quality
    check and return the record. Made beside the model and renamed into place whole.

    Raises :class:`LlamaUnavailable` when the model cannot be written for llama.cpp; a model
    that fails the check gets a record that says so (``serves`` false).
    """
    import torch

    from training.generation.fast import _check_texts, source_stamp
    from training.generation.folder import _read_training_record
    from training.generation.gguf_files import GGUFUnsupported, write_adapter, write_base
    from training.generation.sharing import _shared_tokenizer

    if not llamacpp_installed():
        raise LlamaUnavailable("llama-cpp-python is not installed")
    root = models_root or model_dir.parent
    stamp = source_stamp(model_dir)
    work = model_dir / f".llamacpp-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        from training.dataset import recorded_separator_id

        tokenizer = _shared_tokenizer(model_dir)
        eos_id = recorded_separator_id(_read_training_record(model_dir), tokenizer)
        out = work / ENGINE_DIR
        out.mkdir()
        record: dict[str, Any] = {"stamp": stamp}
        if base_name:
            from peft import PeftModel

            from training.basemodels import load_base_model

            source, digest = base_identity(base_name, model_dir, texts)
            base, base_tokenizer = load_base_model(
                source, texts=texts, models_dir=root, device=torch.device("cpu")
            )
            base.eval()
            base_path = base_file(
                root,
                digest,
                lambda path: write_base(base, base_tokenizer, eos_id, path, name=base_name),
            )
            write_adapter(model_dir, base.config, out / ADAPTER_FILE)
            reference = PeftModel.from_pretrained(base, model_dir).eval()
            record.update(kind="lora", base=base_path.name)
            weights, adapter = base_path, out / ADAPTER_FILE
        else:
            from training.generation.pool import _load_full

            reference = _load_full(model_dir, torch.device("cpu"))
            write_base(reference, tokenizer, eos_id, out / MODEL_FILE, name=model_dir.name)
            record.update(kind="full")
            weights, adapter = out / MODEL_FILE, None
        from training.generation.backends import max_positions_of

        record["max_positions"] = max_positions_of(reference.config)
        _, held_out = _check_texts(model_dir, texts)
        record["check"] = _quality_check(reference, weights, adapter, tokenizer, held_out)
        record["serves"] = bool(record["check"].get("passed"))
        (out / _RECORD).write_text(json.dumps(record), encoding="utf-8")
        final = model_dir / ENGINE_DIR
        if final.exists():
            stale = model_dir / f".llamacpp-stale-{secrets.token_hex(4)}"
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(out, final)
        return record
    except GGUFUnsupported as error:
        # Final for these weights: the record says why, and no later load tries again.
        record = {
            "stamp": stamp,
            "serves": False,
            "check": {"bound_pct": _max_increase_pct(), "passed": False, "reason": str(error)},
        }
        final = model_dir / ENGINE_DIR
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir()
        (final / _RECORD).write_text(json.dumps(record), encoding="utf-8")
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _quality_check(
    reference: Any,
    weights: Path,
    adapter: Path | None,
    tokenizer: PreTrainedTokenizerBase,
    held_out: list[str],
) -> dict[str, Any]:
    """Perplexity of ``held_out`` under llama.cpp against the torch float32 ``reference``."""
    from training.generation.backends import max_positions_of
    from training.generation.fast import _blocks, torch_nll

    bound = _max_increase_pct()
    size = min(_CHECK_BLOCK_TOKENS, max_positions_of(reference.config))
    rows = _blocks(held_out, tokenizer, size)[:_CHECK_BLOCKS]
    count = sum(len(row) - 1 for row in rows)
    if count == 0:
        return {"bound_pct": bound, "passed": False, "reason": "no held-out tweets to measure"}
    expected = torch_nll(reference, rows)
    model = _Model(weights, threads=0)
    try:
        handle = model.load_adapter(adapter) if adapter is not None else None
        with model.context() as context:
            context.use(handle)
            measured = sum(context.nll([int(t) for t in row.tolist()]) for row in rows)
    finally:
        model.close()
    increase = 100 * math.expm1((measured - expected) / count)
    return {
        "bound_pct": bound,
        "passed": abs(increase) <= bound,
        "ppl_increase_pct": round(increase, 3),
        "torch_ppl": round(math.exp(expected / count), 3),
        "llamacpp_ppl": round(math.exp(measured / count), 3),
        "scored_tokens": count,
    }


def prepare(
    model_dir: Path,
    announce: Callable[[str], None] | None = None,
    *,
    models_root: Path | None = None,
) -> dict[str, Any] | None:
    """Make ``model_dir``'s llama.cpp files now (at save time) when llama.cpp would serve it;
    the record, or None when it is not wanted or cannot be made. Never raises: the model is
    served by the next path (or converted again on its first load)."""
    from training.config import get_settings
    from training.generation.folder import _read_dataset, _read_training_record
    from training.generation.pool import _recorded_base

    try:
        if get_settings().generation_backend not in ("auto", KIND) or not llamacpp_installed():
            return None
        existing = read_record(model_dir)
        if existing is not None:
            return existing
        record = _read_training_record(model_dir)
        texts = [text for _, text in _read_dataset(model_dir)]
        base_name = _recorded_base(record) if (model_dir / ADAPTER_CONFIG).is_file() else None
        if announce is not None:
            announce(
                "preparing fast CPU generation: writing the llama.cpp files and checking them "
                "against float32 on held-out tweets"
            )
        return build_artifact(model_dir, base_name=base_name, texts=texts, models_root=models_root)
    except Exception as error:  # any failure only means: the next path serves the model
        log.warning("The llama.cpp files of %s were not made: %s", model_dir.name, error)
        return None


# -- the engine ---------------------------------------------------------------------------------


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


def generation_threads() -> int:
    """Threads one llama.cpp generation uses (``DOPPELTWEET_GENERATION_THREADS``, 0: up to 2)."""
    from training.config import get_settings

    threads = get_settings().generation_threads
    if threads > 0:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(2, cores or 1))


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
                if context.adapter is not None and context.adapter == adapter:
                    context.use(None)
            _lib().llama_adapter_lora_free(adapter)

    @contextmanager
    def context(self) -> Iterator[_Context]:
        """An idle context (a new one while fewer than :data:`CONTEXTS` exist, else wait)."""
        with self._ready:
            while not self._free and self._made >= CONTEXTS:
                self._ready.wait()
            if self._closed:
                raise LlamaUnavailable("the model was unloaded")
            if self._free:
                context = self._free.pop()
            else:
                context = _Context(self)
                self._made += 1
        try:
            yield context
        finally:
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
        status = _lib().llama_decode(self.ptr, batch)
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
        with self.model.context() as context:
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
        stop: _TweetEnd,
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
        stop: _TweetEnd,
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


def _refusal(record: dict[str, Any]) -> str:
    check = record.get("check") or {}
    return str(
        check.get("reason")
        or f"+{check.get('ppl_increase_pct')} % perplexity, over {check.get('bound_pct')} %"
    )


def engine_line(model_dir: Path) -> str:
    """Which engine serves ``model_dir`` on this machine's CPU, and why not llama.cpp when it
    was refused (``!models``): e.g. ``llama.cpp`` or ``torch (llama.cpp: +2.1 % perplexity,
    over 1.0 %)``."""
    from training.config import get_settings
    from training.generation.fast import fast_installed

    choice = get_settings().generation_backend
    record = read_record(model_dir)
    serves = record is None or bool(record.get("serves"))
    if choice in ("auto", KIND) and llamacpp_installed() and serves:
        return "llama.cpp"
    fallback = "CTranslate2" if choice in ("auto", "ctranslate2") and fast_installed() else "torch"
    if record is not None and not record.get("serves") and choice in ("auto", KIND):
        return f"{fallback} (llama.cpp: {_refusal(record)})"
    return fallback


def card_text(record: dict[str, Any] | None) -> str:
    """The model card's sentence about CPU generation with llama.cpp."""
    if record is None:
        return "llama.cpp files were not made for this model; CTranslate2 or torch serves it."
    check = record.get("check") or {}
    if record.get("serves"):
        shape = (
            "a shared Q8_0 base with this model's LoRA applied at run time"
            if record.get("kind") == "lora"
            else "its own Q8_0 weights"
        )
        return (
            f"On a CPU llama.cpp serves it ({shape}): {check.get('ppl_increase_pct')} % "
            f"perplexity over float32 on {check.get('scored_tokens')} held-out tokens "
            f"(bound {check.get('bound_pct')} %)."
        )
    return f"llama.cpp does not serve it ({_refusal(record)}); CTranslate2 or torch does."
