"""The CTranslate2 engine: sampling from a model's fast artifact (made by
:mod:`training.generation.fast_build`) on the CPU, in the weight type the artifact records.

Seeding is process-wide in CTranslate2; :attr:`FastBackend.session` takes ``CT2_SEED_LOCK``
only for a seeded call and a generator's very first sampling (docs/generation.md says why).
"""

from __future__ import annotations

import atexit
import gc
import importlib.util
import json
import os
import secrets
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.generation.settings import GenerationSettings, nucleus
from training.generation.stop import TweetEnd

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Inside ``fast/``: what the artifact was made from.
SOURCE_FILE = "doppeltweet-source.json"
#: What an artifact made before the weight type was recorded holds.
LEGACY_QUANTIZATION = "int8"
#: CTranslate2's "no seed set" value (a random seed per worker thread).
_RANDOM_SEED = 0xFFFFFFFF


class FastUnavailable(Exception):
    """The fast backend cannot serve this model (the message says why); use torch."""


def fast_installed() -> bool:
    """Whether the ``ctranslate2`` package is installed."""
    return importlib.util.find_spec("ctranslate2") is not None


def generation_threads(quantization: str, threads: int = 0) -> int:
    """The CPU threads one generation of a model in ``quantization`` uses: ``threads`` when set
    (> 0), else 1 for int8 (its small kernels gain nothing from a second thread) and up to 2 for
    float32, never more than this process may run on (benchmarks/README.md measures both)."""
    if threads > 0:
        return threads
    if quantization.startswith("int8"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(2, cores or 1))


#: Every open fast backend, closed before the interpreter shuts down (see :func:`_close_all`).
_OPEN: weakref.WeakSet[FastBackend] = weakref.WeakSet()
#: Whether :func:`_close_all` is registered with ``atexit`` (on the first open backend).
_closing_at_exit = False


def _close_all() -> None:
    """Drop every CTranslate2 generator while Python still runs: one left to the interpreter's
    shutdown with two or more threads aborts the process about every other time ("terminate
    called without an active exception", exit status 134), after a CLI run printed its tweets."""
    for backend in list(_OPEN):
        backend.close()
    gc.collect()


def _close_all_at_exit() -> None:
    """Register :func:`_close_all` once, on the first open backend: after ctranslate2's import,
    so it runs before anything ctranslate2 registered."""
    global _closing_at_exit
    if not _closing_at_exit:
        atexit.register(_close_all)
        _closing_at_exit = True


class FastBackend:
    """Samples with CTranslate2 (CPU, in the artifact's weight type); see the module docstring."""

    kind = "ctranslate2"

    def __init__(
        self, folder: Path, tokenizer: PreTrainedTokenizerBase, eos_id: int, *, threads: int = 0
    ) -> None:
        self.folder = folder
        self.eos_id = eos_id
        try:
            source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
            self.max_positions = int(source["max_positions"])
            self.quantization = str(source.get("quantization", LEGACY_QUANTIZATION))
            self.threads = generation_threads(self.quantization, threads)
            self.generator: Any = self._open()
        except Exception as error:  # a damaged artifact: torch serves the model instead
            raise FastUnavailable(
                f"the fast artifact is damaged ({type(error).__name__})"
            ) from error
        from training.generation.lock import tokenizer_lock

        with tokenizer_lock(tokenizer):
            self._tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        # Whether the long-lived generator's worker thread has sampled (and so is seeded).
        self._seeded_thread = False
        self._eos_token = self._tokens[eos_id]
        self._bytes = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        _OPEN.add(self)
        _close_all_at_exit()

    def _open(self) -> Any:
        import ctranslate2

        # The recorded type, not "default": CTranslate2 would silently compute in another one.
        return ctranslate2.Generator(
            str(self.folder),
            device="cpu",
            compute_type=self.quantization,
            inter_threads=1,
            intra_threads=self.threads,
        )

    @contextmanager
    def session(self, seed: int | None) -> Iterator[_FastSampler]:
        import ctranslate2
        import numpy as np

        from training.generation.lock import CT2_SEED_LOCK

        if seed is None:
            rng = np.random.default_rng(secrets.randbits(63))
            sampler = _FastSampler(self, self.generator, rng)
            if self._seeded_thread:
                yield sampler
                return
            # The worker thread seeds itself when it first samples: not while another call's
            # seed is set (its tweets would repeat that call's).
            with CT2_SEED_LOCK:
                self._seeded_thread = True
                yield sampler
            return
        # A worker thread seeds its generator when it first samples, so the seed stays set until
        # this call is over; seeded calls and first samplings take turns on the seed lock.
        with CT2_SEED_LOCK:
            ctranslate2.set_random_seed(seed % _RANDOM_SEED)
            try:
                generator = self._open()
                yield _FastSampler(self, generator, np.random.default_rng(seed))
            finally:
                ctranslate2.set_random_seed(_RANDOM_SEED)

    def memory_bytes(self) -> int:
        return self._bytes

    def shared_bytes(self) -> int:
        return 0

    def shared_key(self) -> str:
        return ""

    def close(self) -> None:
        self.generator = None


class _FastSampler:
    def __init__(self, backend: FastBackend, generator: Any, rng: Any) -> None:
        self.backend = backend
        self.generator = generator
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
        tokens = self.backend._tokens
        heads = [list(prompt_ids) for _ in range(batch)]
        if first_tokens is not None:
            for row, token in enumerate(self._first(prompt_ids, batch, settings, first_tokens)):
                heads[row].append(token)
                stop.push(row, token, lambda row=row: heads[row][1:])
        rows = [list(head) for head in heads]
        start = [[tokens[i] for i in head] for head in heads]
        top_k = settings.top_k if settings.top_k > 0 else len(tokens)

        def step(result: Any) -> bool:
            row = result.batch_id
            rows[row].append(result.token_id)
            return stop.push(row, result.token_id, lambda: rows[row][1:])

        results = self.generator.generate_batch(
            start,
            max_length=max(1, max_length - len(heads[0])),
            min_length=max(0, settings.min_length - len(heads[0])),
            sampling_topk=top_k if settings.do_sample else 1,
            sampling_topp=settings.top_p if settings.do_sample else 1.0,
            sampling_temperature=settings.temperature,
            include_prompt_in_result=False,
            end_token=self.backend._eos_token,
            callback=step,
        )
        return [head + result.sequences_ids[0] for head, result in zip(heads, results, strict=True)]

    def _first(
        self, prompt_ids: list[int], batch: int, settings: GenerationSettings, allowed: list[int]
    ) -> list[int]:
        """The first sampled token of each row, from ``allowed`` only (token healing), drawn
        with the call's own random generator under the same top-k/top-p/temperature rule."""
        import numpy as np

        start = [[self.backend._tokens[i] for i in prompt_ids]]
        logits = np.asarray(self.generator.forward_batch(start), dtype=np.float64)[0, -1]
        ids = np.array(allowed)
        scores = logits[ids] / settings.temperature
        if not settings.do_sample:
            return [int(ids[int(np.argmax(scores))])] * batch
        order, probs = nucleus(scores, settings)
        return [int(ids[i]) for i in self.rng.choice(order, size=batch, p=probs)]
