"""The locks generation needs, and only those, so different models sample at the same time.

docs/generation.md ("What runs at the same time") says what each lock keeps apart and the order
they are taken in.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

#: Held while torch samples: its random generator is process-global.
TORCH_RNG_LOCK = threading.RLock()
#: Held while CTranslate2's process-wide seed is set, or a generator first samples.
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
