"""Generate tweets from a trained model: huggingtweets' sampling, plus the filters that make a
candidate postable (docs/generation.md, "How a tweet is made"). This is the public API; the
modules behind it are listed in docs/ARCHITECTURE.md.
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
