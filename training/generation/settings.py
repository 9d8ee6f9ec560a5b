"""Generation settings, limits and the result of one call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from training.errors import InputError

#: No prompt: the tweet starts where the model starts the person's tweets (after EOS alone), so
#: replies, @mentions and the person's own openings come out as often as the person writes them.
DEFAULT_PROMPT = ""
#: huggingtweets' example prompt (the model card widget's), documented, never forced.
EXAMPLE_PROMPT = "My dream is"
#: A tweet's length limit.
TWEET_CHARS = 280
#: The longest prompt accepted, in characters; a prompt is a tweet's beginning, not a tweet.
MAX_PROMPT_CHARS = 200
#: The most tweets one call may ask for.
MAX_TWEETS = 20
#: A prompt must leave at least this many tokens of room under ``max_length`` for the tweet.
MIN_NEW_TOKENS = 16

#: Rejection reasons, as counted in :attr:`GenerationResult.rejected_reasons`.
REJECT_EMPTY = "empty"
REJECT_COPY = "copy"
REJECT_REPEAT = "repeat"
REJECT_EXCLUDED = "excluded"
#: A prompt-less candidate that opens mid-sentence (". and so", ", then"): no tweet starts so.
REJECT_FRAGMENT = "fragment"
#: A candidate no one would post: a single word ("President", "()).SOTU"), no letter at all
#: ("2016 🔥"), or fewer than two words that hold a letter, digit or emoji ("() SOTU").
REJECT_DEGENERATE = "degenerate"
#: A prompt's last word extended by the continuation ("I" → "It's"): the user's word is kept.
REJECT_GLUED = "glued"
#: What a tweet never starts with: the middle of a sentence.
FRAGMENT_OPENINGS = frozenset(".,;:!?)]}-–—_/|")

TRAINING_FILE = "training.json"
DATASET_FILE = "dataset.jsonl"
#: The copy filter's digests of ``dataset.jsonl``, saved beside it on a model's first load.
COPY_FILTER_FILE = "copy_filter.npz"
ADAPTER_CONFIG = "adapter_config.json"

#: The files a tokenizer is read from (two folders with the same bytes in these share one
#: tokenizer; a merged model copies them for the converters).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
)

#: What may sample (``DOPPELTWEET_GENERATION_BACKEND``): the fastest available, or one by name.
GENERATION_BACKENDS = ("auto", "torch", "ctranslate2", "llamacpp")


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """How candidates are sampled and filtered; the defaults are huggingtweets' (FACTS §2).

    ``min_length`` and ``max_length`` count tokens of the whole sequence, prompt and leading EOS
    included, as in the original (``max_length=160`` leaves ~150 tokens for the tweet, more than
    280 characters need). ``top_k=50`` is the transformers default the original sampled with.
    The copy thresholds are explained in :class:`CopyFilter`.
    """

    do_sample: bool = True
    top_p: float = 0.95
    top_k: int = 50
    temperature: float = 1.0
    min_length: int = 10
    max_length: int = 160
    num_candidates: int = 10
    max_rounds: int = 5
    max_chars: int = TWEET_CHARS
    copy_ngram: int = 8
    copy_min_run: int = 6
    copy_share: float = 0.8

    def __post_init__(self) -> None:
        checks = [
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be 0 (off) or more"),
            (self.temperature > 0.0, "temperature must be above 0"),
            (0 <= self.min_length < self.max_length, "min_length must be below max_length"),
            (self.max_length > MIN_NEW_TOKENS, f"max_length must exceed {MIN_NEW_TOKENS}"),
            (1 <= self.num_candidates <= 100, "num_candidates must be 1 to 100"),
            (1 <= self.max_rounds <= 20, "max_rounds must be 1 to 20"),
            (20 <= self.max_chars <= 10_000, "max_chars must be 20 to 10000"),
            (2 <= self.copy_min_run <= self.copy_ngram, "copy_min_run must be 2 to copy_ngram"),
            (0.0 < self.copy_share <= 1.0, "copy_share must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"Invalid generation setting: {message}.")


@dataclass(slots=True)
class GenerationResult:
    """What one :meth:`TweetGenerator.generate` call produced.

    ``candidates`` counts every sampled continuation; ``rejected`` those the filters dropped
    (``rejected_reasons`` breaks it down). Candidates that passed after ``n`` tweets were found
    are neither returned nor counted as rejected, so ``len(tweets) <= candidates - rejected``.
    ``tweets`` may hold fewer than ``n`` when the model kept producing rejects.
    """

    prompt: str
    tweets: list[str]
    candidates: int
    rejected: int
    rejected_reasons: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's ``--json`` output, minus the model name)."""
        return {
            "prompt": self.prompt,
            "tweets": list(self.tweets),
            "candidates": self.candidates,
            "rejected": self.rejected,
            "rejected_reasons": dict(self.rejected_reasons),
        }


def check_prompt(prompt: str) -> str:
    """The prompt with whitespace collapsed (empty: the model picks the opening); InputError
    when it is not text or too long."""
    if not isinstance(prompt, str):
        raise InputError("The prompt must be text, e.g. “My dream is”.")
    text = " ".join(prompt.split())
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(
            f"The prompt is {len(text)} characters long; keep it to {MAX_PROMPT_CHARS} or fewer."
        )
    return text


def check_count(n: int) -> int:
    """``n`` when it is a sensible number of tweets to ask for; InputError otherwise."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TWEETS:
        raise InputError(f"Ask for 1 to {MAX_TWEETS} tweets, not {n!r}.")
    return n


def nucleus(scores: Any, settings: GenerationSettings) -> tuple[Any, Any]:
    """The candidates (indices into ``scores``, best first) and their probabilities under the
    settings' top-k, then top-p rule, for ``scores`` already divided by the temperature."""
    import numpy as np

    if 0 < settings.top_k < scores.shape[0]:
        keep = np.argpartition(-scores, settings.top_k - 1)[: settings.top_k]
    else:
        keep = np.arange(scores.shape[0])
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    probs = np.exp(scores[keep] - scores[keep[0]])
    probs /= probs.sum()
    cut = int(np.searchsorted(np.cumsum(probs), settings.top_p) + 1)
    return keep[:cut], probs[:cut] / probs[:cut].sum()
