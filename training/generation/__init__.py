"""Generate tweets from a trained model: huggingtweets' sampling, plus the filters it lacked.

huggingtweets sampled ten continuations of ``<|endoftext|>`` + prompt and cut each at the first
newline. That is the default here too (:class:`GenerationSettings`), and every candidate then goes
through filters that make it postable: URLs stripped, whitespace collapsed, at most 280 characters
(cut at a word boundary), and rejected when it adds nothing to the prompt, copies a training tweet
(see :class:`CopyFilter`), repeats a tweet this call already returned, or repeats one the caller
asks to avoid (``exclude``: the bot's earlier posts). The result says how many were rejected, and
why.

One concern per module:

* :mod:`~training.generation.settings` — limits, :class:`GenerationSettings`, the result;
* :mod:`~training.generation.text` — tidying a candidate and the copy filter;
* :mod:`~training.generation.pool` — torch models, LoRA adapters on one shared base;
* :mod:`~training.generation.backends` — what samples token rows (torch, CTranslate2);
* :mod:`~training.generation.stop` — the stop rule (a row ends once its tweet is settled);
* :mod:`~training.generation.sharing` — tokenizers shared between models;
* :mod:`~training.generation.generator` — :class:`TweetGenerator`;
* :mod:`~training.generation.cache` — the per-process cache (:func:`get_generator`).
"""

from training.generation.cache import CACHE_SIZE, clear_generator_cache, get_generator
from training.generation.generator import TweetGenerator
from training.generation.settings import (
    ADAPTER_CONFIG,
    DATASET_FILE,
    DEFAULT_PROMPT,
    EXAMPLE_PROMPT,
    MAX_PROMPT_CHARS,
    MAX_TWEETS,
    MIN_NEW_TOKENS,
    REJECT_COPY,
    REJECT_EMPTY,
    REJECT_EXCLUDED,
    REJECT_GLUED,
    REJECT_REPEAT,
    TRAINING_FILE,
    TWEET_CHARS,
    GenerationResult,
    GenerationSettings,
    check_count,
    check_prompt,
)
from training.generation.text import (
    CopyFilter,
    fold_lookalikes,
    normalize,
    normalized_words,
    tidy_candidate,
)

__all__ = [
    "ADAPTER_CONFIG",
    "CACHE_SIZE",
    "DATASET_FILE",
    "DEFAULT_PROMPT",
    "EXAMPLE_PROMPT",
    "MAX_PROMPT_CHARS",
    "MAX_TWEETS",
    "MIN_NEW_TOKENS",
    "REJECT_COPY",
    "REJECT_EMPTY",
    "REJECT_EXCLUDED",
    "REJECT_GLUED",
    "REJECT_REPEAT",
    "TRAINING_FILE",
    "TWEET_CHARS",
    "CopyFilter",
    "GenerationResult",
    "GenerationSettings",
    "TweetGenerator",
    "check_count",
    "check_prompt",
    "clear_generator_cache",
    "fold_lookalikes",
    "get_generator",
    "normalize",
    "normalized_words",
    "tidy_candidate",
]
