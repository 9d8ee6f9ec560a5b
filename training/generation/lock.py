"""The locks generation needs, and only those: different models sample at the same time.

What may not run at once, and the lock that says so (taken in this order, never the reverse):

* **one model** — a :class:`~training.generation.TweetGenerator`'s own lock: one generation per
  model at a time (concurrent requests for a model are batched into one call by the bot's cache
  anyway), and ``close`` waits for a running generation;
* **one shared LoRA base** — the base's lock (``_SharedBase.lock``): generating activates the
  model's adapter on the base other models share, and attaching or removing an adapter changes
  the base's modules;
* **torch sampling** — :data:`TORCH_RNG_LOCK`: ``generate`` draws from torch's process-global
  random generator (it takes no generator of its own), so a seeded call is reproducible only if
  no other torch call draws meanwhile; on CPU one torch generation already uses every core;
* **seeding CTranslate2** — :data:`CT2_SEED_LOCK`: ``ctranslate2.set_random_seed`` is global to
  the process and a generator's worker thread reads it when it first samples, so a seeded call
  and a generator's first sampling hold it; later unseeded calls of different models run at
  once (each CTranslate2 generation uses one core here);
* **one tokenizer** — :func:`tokenizer_lock`, held only around each encode or decode call:
  models trained on one base share one tokenizer object, and a fast tokenizer raises "Already
  borrowed" when two threads use it at once.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

TORCH_RNG_LOCK = threading.RLock()
CT2_SEED_LOCK = threading.RLock()

_TOKENIZER_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_TOKENIZER_LOCKS_GUARD = threading.Lock()


def tokenizer_lock(tokenizer: Any) -> threading.RLock:
    """The lock of ``tokenizer`` (one per tokenizer object, freed with it)."""
    with _TOKENIZER_LOCKS_GUARD:
        lock = _TOKENIZER_LOCKS.get(tokenizer)
        if lock is None:
            lock = _TOKENIZER_LOCKS[tokenizer] = threading.RLock()
        return lock
