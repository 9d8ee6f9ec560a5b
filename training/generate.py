"""The generation API under its first name: everything lives in :mod:`training.generation`.

Kept so that ``from training.generate import ...`` (the CLI, the bot, benchmarks, Ray Serve)
keeps working; new code may import from :mod:`training.generation` directly.
"""

from training.generation import *  # noqa: F403
from training.generation import __all__ as _public
from training.generation.cache import _CACHE, _CACHE_LOCK, _folder_stamp
from training.generation.folder import _read_dataset, _read_training_record
from training.generation.lock import _CT2_SEED_LOCK, _TORCH_RNG_LOCK
from training.generation.pool import _BASES, _BASES_LOCK
from training.generation.sharing import _TOKENIZERS, _token_texts
from training.generation.stop import _RUNAWAY_SLACK, _settled_chars, _TweetEnd

__all__ = [
    *_public,
    "_BASES",
    "_BASES_LOCK",
    "_CACHE",
    "_CACHE_LOCK",
    "_CT2_SEED_LOCK",
    "_RUNAWAY_SLACK",
    "_TOKENIZERS",
    "_TORCH_RNG_LOCK",
    "_TweetEnd",
    "_folder_stamp",
    "_read_dataset",
    "_read_training_record",
    "_settled_chars",
    "_token_texts",
]
