"""Generate tweets from a trained model: huggingtweets' sampling, plus the filters it lacked.

huggingtweets sampled ten continuations of ``<|endoftext|>`` + prompt and cut each at the first
newline. That is the default here too (:class:`GenerationSettings`), and every candidate then goes
through filters that make it postable: URLs stripped, whitespace collapsed, at most 280 characters
(cut at a word boundary), and rejected when it adds nothing to the prompt, copies a training tweet
(see :class:`CopyFilter`), repeats a tweet this call already returned, or repeats one the caller
asks to avoid (``exclude``: the bot's earlier posts). The result says how many were rejected, and
why.

A model is loaded once per process (:func:`get_generator`) and shared by the bot's worker threads.
LoRA models on the same base share one copy of the base weights: the base is loaded once into a
process-wide pool and each model's adapter is attached to it by name and activated, under the
sampling lock, for the duration of one generation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
import threading
import unicodedata
import warnings
import weakref
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import InputError, ModelError
from training.textrules import (
    collapse_punctuation,
    drop_broken_emoji,
    fit_tweet,
    strip_link_residue,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

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

TRAINING_FILE = "training.json"
DATASET_FILE = "dataset.jsonl"
ADAPTER_CONFIG = "adapter_config.json"

#: How far past ``max_chars`` a sampled row may run before it is stopped: room for the URLs that
#: tidying removes afterwards.
_RUNAWAY_SLACK = 200

_URL = re.compile(r"\S*(?:\bhttps?:|\bwww\.)\S*", re.IGNORECASE)
_NEWLINE = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]")
_LAST_SPACE = re.compile(r"\s(?=\S*$)")

# Sampling draws from torch's global random generator (``generate`` takes no generator), so every
# generation in the process holds this lock: a seeded call is then reproducible whatever other
# threads do, and the shared LoRA base is never switched to another adapter mid-generation. On CPU
# torch already spreads one generation over every core, so serialising costs no throughput.
_SAMPLING_LOCK = threading.RLock()


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


# --------------------------------------------------------------------------------------------
# Text filters


#: Invisible characters that separate words (zero-width space, word joiner, BOM, Mongolian vowel
#: separator): folded to a space before matching.
_INVISIBLE_SPACES = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u180e"), " ")
#: Latin look-alikes among Cyrillic and Greek letters (lower case: matching is case-blind), so a
#: copy or a link spelled with a Cyrillic "а" or a Greek "ο" is still recognised.
_LOOKALIKES = str.maketrans(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501\u04bb\u051b\u051d"
    "\u0261\u03bf\u03b1\u03bd\u03c1\u03b9\u03ba\u03c5\u03c7\u0432\u043a\u043c\u043d\u0442",
    "aeopcyxijsdhqwgoavpikuxbkmht",
)


def fold_lookalikes(text: str, *, joined: bool = False) -> str:
    """``text`` as it reads: invisible format characters out, look-alike letters made Latin.

    Zero-width spaces and their kin become spaces (or vanish with ``joined``, for a word split by
    one); every other format character (Unicode Cf: zero-width joiners, soft hyphens, direction
    marks) is removed; NFKC folds compatibility forms (full-width letters, ligatures); Cyrillic
    and Greek letters that look Latin become Latin. Only for matching: what is posted keeps its
    characters (an emoji's zero-width joiners included).
    """
    if not joined:
        text = text.translate(_INVISIBLE_SPACES)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", text).casefold().translate(_LOOKALIKES)


def normalized_words(text: str, *, joined: bool = False) -> list[str]:
    """Words compared case-, punctuation- and whitespace-blind, so "Hello, World!" == "hello world".

    Punctuation (Unicode category P*, which includes ``@`` and ``#``) becomes a space; emoji and
    other symbols stay, as they carry meaning in tweets. Invisible characters and look-alike
    letters are folded first (:func:`fold_lookalikes`).
    """
    folded = fold_lookalikes(text, joined=joined)
    spaced = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in folded)
    return spaced.split()


def normalize(text: str) -> str:
    """The comparison key of a text: :func:`normalized_words` joined by single spaces."""
    return " ".join(normalized_words(text))


def tidy_candidate(text: str, max_chars: int = TWEET_CHARS) -> str:
    """Make a raw continuation postable: first line only, no URLs, single spaces, ≤ ``max_chars``.

    The cut at the first newline is huggingtweets'; URLs are removed the way training data was
    cleaned (a URL in a generated tweet is made up and leads nowhere); emoji parts that lost their
    emoji and degenerate punctuation runs go (:mod:`training.textrules`); a tweet over the limit
    ends at its last sentence end that keeps half the limit, else its last word boundary, never
    inside a grapheme; a separator left dangling at the end (``:``, `` -``) goes.
    """
    line = _NEWLINE.split(text, maxsplit=1)[0]
    # Control characters and the replacement character (a multi-byte character cut by the token
    # limit) are never meant to be posted.
    line = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in line if ch != "\ufffd")
    line = " ".join(word for word in line.split() if not _is_link(word))
    line = collapse_punctuation(drop_broken_emoji(line))
    line = " ".join(line.split())
    return strip_link_residue(fit_tweet(line, max_chars)).rstrip()


def _is_link(word: str) -> bool:
    """Whether ``word`` is (or holds) a link, read through invisible and look-alike characters."""
    return bool(_URL.search(word) or _URL.search(fold_lookalikes(word, joined=True)))


def _has_content(text: str) -> bool:
    """Whether ``text`` holds a letter, digit or symbol (an emoji counts; punctuation does not)."""
    return any(unicodedata.category(ch)[0] in "LNS" for ch in text)


class CopyFilter:
    """Rejects candidates that reproduce a training tweet verbatim or nearly.

    A candidate is a copy when, compared by :func:`normalize`:

    * it equals a training tweet; or
    * it shares a run of ``ngram`` (8) consecutive words with one training tweet — the length at
      which a word sequence stops being a common phrase and becomes a quotation; or
    * a run of ``max(min_run, ceil(share × its words))`` words — at least 6 and 80 % of a short
      candidate — appears in one training tweet, which catches a short tweet copied with a word
      changed or dropped.

    Shorter shared phrases ("thank you so much", "I can't wait for the") are the style the model
    is meant to learn, so they pass.
    """

    def __init__(
        self, texts: Iterable[str], *, ngram: int = 8, min_run: int = 6, share: float = 0.8
    ) -> None:
        import numpy as np

        if not 2 <= min_run <= ngram:
            raise InputError("The copy filter's min_run must be between 2 and its n-gram length.")
        self.ngram = ngram
        self.min_run = min_run
        self.share = share
        # Every key is kept as a 64-bit digest in a sorted array: 8 bytes an n-gram where a set of
        # strings costs ~100, so a 3,000-tweet filter takes ~1 MB instead of ~12 MB. Two different
        # n-grams share a digest with odds of ~1e-9 for a million of them.
        exact: list[int] = []
        runs: dict[int, list[int]] = {k: [] for k in range(min_run, ngram + 1)}
        for text in texts:
            words = normalized_words(text)
            if not words:
                continue
            exact.append(_digest(" ".join(words)))
            for k, digests in runs.items():
                digests.extend(_digest(gram) for gram in _grams(words, k))
        self._exact = np.unique(np.array(exact, dtype=np.uint64))
        self._runs = {k: np.unique(np.array(d, dtype=np.uint64)) for k, d in runs.items()}

    def __len__(self) -> int:
        """How many distinct training tweets the filter knows."""
        return int(self._exact.size)

    @property
    def nbytes(self) -> int:
        """Bytes of the digest arrays (what the filter costs a cached model)."""
        return int(self._exact.nbytes + sum(a.nbytes for a in self._runs.values()))

    def is_copy(self, text: str) -> bool:
        """Whether ``text`` copies a training tweet (see the class docstring for the rule)."""
        # Twice when the text holds invisible characters: read as separators and as nothing.
        variants = {tuple(normalized_words(text)), tuple(normalized_words(text, joined=True))}
        return any(self._copies(list(words)) for words in variants if words)

    def _copies(self, words: list[str]) -> bool:
        if _contains(self._exact, [_digest(" ".join(words))]):
            return True
        run = min(self.ngram, max(self.min_run, math.ceil(self.share * len(words))))
        if len(words) < run:
            return False
        return _contains(self._runs[run], [_digest(gram) for gram in _grams(words, run)])


def _grams(words: list[str], k: int) -> Iterable[str]:
    return (" ".join(words[i : i + k]) for i in range(len(words) - k + 1))


def _digest(text: str) -> int:
    """A stable 64-bit digest of ``text`` (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _contains(sorted_keys: Any, keys: list[int]) -> bool:
    """Whether any of ``keys`` is in the sorted uint64 array ``sorted_keys``."""
    import numpy as np

    if not keys or sorted_keys.size == 0:
        return False
    wanted = np.array(keys, dtype=np.uint64)
    at = np.searchsorted(sorted_keys, wanted)
    found = at < sorted_keys.size
    return bool(np.any(sorted_keys[at[found]] == wanted[found]))


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


# --------------------------------------------------------------------------------------------
# Models: a full model of its own, or a LoRA adapter on a shared base


class _OwnModel:
    """A model folder with its own weights: nothing is shared, nothing to switch."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def activate(self) -> None:
        """Nothing to do: the weights are this model's alone."""

    def memory_bytes(self) -> int:
        return _tensor_bytes(self.model)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


class _SharedBase:
    """One base model in memory with every LoRA adapter attached to it by name.

    Adapters are attached with peft's ``load_adapter`` and made active with ``set_adapter`` before
    each generation, so N LoRA models cost one base plus N small adapters.
    """

    def __init__(self, key: tuple[str, str], base: torch.nn.Module) -> None:
        self.key = key
        self.base = base
        self.peft: Any = None
        self.adapters: set[str] = set()
        self.released: set[str] = set()
        self._counter = 0

    def attach(self, adapter_dir: Path, label: str) -> str:
        """Load the adapter in ``adapter_dir`` under a fresh name and return that name."""
        from peft import PeftModel

        self._counter += 1
        name = f"{re.sub(r'[^A-Za-z0-9_]', '_', label)}_{self._counter}"
        with _SAMPLING_LOCK:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, adapter_dir, adapter_name=name)
            else:
                self.peft.load_adapter(adapter_dir, adapter_name=name)
            self.peft.eval()
            self.adapters.add(name)
        return name

    def activate(self, name: str) -> None:
        self.peft.set_adapter(name, inference_mode=True)

    def adapter_bytes(self, name: str) -> int:
        """Bytes of the parameters that belong to adapter ``name`` only."""
        seen: set[int] = set()
        total = 0
        for param_name, tensor in self.peft.named_parameters():
            if name in param_name.split(".") and tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
        return total

    def base_bytes(self) -> int:
        """Bytes of the base's own parameters and buffers (every adapter excluded)."""
        adapters = self.adapters | self.released
        seen: set[int] = set()
        total = 0
        named = [*self.peft.named_parameters(), *self.peft.named_buffers()]
        for name, tensor in named:
            if adapters & set(name.split(".")) or tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
        return total

    def drop(self, name: str) -> bool:
        """Remove adapter ``name``; True when no adapter is left (the base may then be freed)."""
        with _SAMPLING_LOCK:
            if name not in self.adapters:
                return not self.adapters
            self.adapters.discard(name)
            if self.adapters:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.peft.delete_adapter(name)
            return not self.adapters


class _LoraModel:
    """A LoRA model folder: its adapter on a :class:`_SharedBase`."""

    def __init__(self, pool: _SharedBase, adapter: str) -> None:
        self.pool = pool
        self.adapter = adapter
        self.model = pool.peft

    def activate(self) -> None:
        self.pool.activate(self.adapter)

    def memory_bytes(self) -> int:
        return self.pool.adapter_bytes(self.adapter)

    def close(self) -> None:
        _release_adapter(self.pool, self.adapter)


# The base pool: (base name or resolved folder, device) -> _SharedBase. Lock order: _BASES_LOCK,
# then _SAMPLING_LOCK.
_BASES: dict[tuple[str, str], _SharedBase] = {}
_BASES_LOCK = threading.RLock()


def _release_adapter(pool: _SharedBase, adapter: str) -> None:
    with _BASES_LOCK:
        pool.released.discard(adapter)
        if pool.drop(adapter) and _BASES.get(pool.key) is pool:
            del _BASES[pool.key]


def _mark_released(pool: _SharedBase, adapter: str) -> None:
    # Runs from a garbage-collection finaliser, possibly inside another generation on this thread,
    # so it only records the adapter; the next load removes it (see _purge_released).
    pool.released.add(adapter)


def _purge_released() -> None:
    with _BASES_LOCK:
        for pool in list(_BASES.values()):
            for adapter in list(pool.released):
                _release_adapter(pool, adapter)


def _recorded_base(record: dict[str, Any]) -> str | None:
    name, where = record.get("base_model"), record.get("base_model_path")
    if isinstance(where, str) and where.strip() and (Path(where).is_dir() or not name):
        return where
    return name if isinstance(name, str) else None


def _base_source(base_name: str, model_dir: Path, texts: list[str]) -> tuple[str, str]:
    """(what to load, the pool key): models on the same key really share identical base weights.

    A folder is keyed by its resolved path and a Hub id by itself. The built-in ``tiny`` base is
    rebuilt from the model's own tweets, so two tiny bases are the same only for the same tweets:
    its key includes a digest of them.
    """
    from training.basemodels import TINY_NAME

    name = base_name.strip()
    if name == TINY_NAME:
        digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()
        return name, f"{name}:{digest}"
    candidate = Path(name).expanduser()
    if not candidate.is_absolute():
        candidate = model_dir / candidate
    if candidate.is_dir():
        resolved = str(candidate.resolve())
        return resolved, resolved
    return name, name


def _attach_lora(
    model_dir: Path, base_name: str, texts: list[str], device: torch.device
) -> _LoraModel:
    from safetensors import SafetensorError

    from training.basemodels import load_base_model

    source, base_key = _base_source(base_name, model_dir, texts)
    key = (base_key, str(device))
    with _BASES_LOCK:
        pool = _BASES.get(key)
        if pool is None:
            base, _ = load_base_model(
                source, texts=texts, models_dir=model_dir.parent, device=device
            )
            base.eval()
            pool = _SharedBase(key, base)
            _BASES[key] = pool
        try:
            adapter = pool.attach(model_dir, model_dir.name)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
            if not pool.adapters:
                del _BASES[key]
            raise ModelError(
                f"The LoRA adapter in {model_dir} is damaged or does not fit its base model "
                f"{base_name!r}; train the model again."
            ) from error
    return _LoraModel(pool, adapter)


def _tensor_bytes(module: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


# --------------------------------------------------------------------------------------------
# The generator


def _read_training_record(model_dir: Path) -> dict[str, Any]:
    path = model_dir / TRAINING_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(
            f"The model in {model_dir} has an unreadable {TRAINING_FILE}; train it again."
        ) from error
    if not isinstance(record, dict):
        raise ModelError(
            f"The model in {model_dir} has a malformed {TRAINING_FILE}; train it again."
        )
    return record


def _read_dataset(model_dir: Path) -> list[tuple[str, str]]:
    path = model_dir / DATASET_FILE
    if not path.is_file():
        raise ModelError(
            f"The model in {model_dir} has no {DATASET_FILE}, so its tweets cannot be checked for "
            "copies; train it again."
        )
    rows: list[tuple[str, str]] = []
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise ValueError(f"line {number} has no text")
                rows.append((str(row.get("handle") or ""), row["text"]))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelError(
            f"The model in {model_dir} has a corrupt {DATASET_FILE}; train it again."
        ) from error
    return rows


def _resolve_device(device: str | torch.device | None) -> torch.device:
    import torch

    if device is None:
        from training.basemodels import pick_device

        return pick_device()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"Unknown device {device!r}: use cpu, cuda or mps.") from error


class TweetGenerator:
    """A loaded model that writes tweets; safe to share between threads.

    Build it with :meth:`load` (or :func:`get_generator` to reuse one per process).
    """

    def __init__(
        self,
        *,
        path: Path,
        tokenizer: PreTrainedTokenizerBase,
        backend: _OwnModel | _LoraModel,
        device: torch.device,
        handles: tuple[str, ...],
        copy_filter: CopyFilter,
        max_positions: int,
        eos_id: int,
    ) -> None:
        self.path = path
        self.device = device
        self.copy_filter = copy_filter
        self._tokenizer = tokenizer
        self._backend = backend
        self._handles = handles
        self._max_positions = max_positions
        self._eos_id = eos_id
        self._closed = False
        # A LoRA adapter outlives nothing: when the last reference to this generator goes, its
        # adapter is removed from the shared base at the next load.
        self._finalizer = (
            weakref.finalize(self, _mark_released, backend.pool, backend.adapter)
            if isinstance(backend, _LoraModel)
            else None
        )

    @classmethod
    def load(cls, model_dir: Path, *, device: str | torch.device | None = None) -> TweetGenerator:
        """Load a model folder: full weights, or a LoRA adapter attached to its shared base.

        Also reads ``dataset.jsonl`` (the cleaned training tweets) for the copy filter. A missing
        or broken folder raises :class:`ModelError`.
        """
        path = Path(model_dir).expanduser().resolve()
        if not path.is_dir():
            raise ModelError(f"There is no model folder at {path}; train the model first.")
        record = _read_training_record(path)
        rows = _read_dataset(path)
        texts = [text for _, text in rows]
        torch_device = _resolve_device(device)
        _purge_released()

        from training.dataset import eos_token_id

        tokenizer = _shared_tokenizer(path)
        # The token training put between tweets, so a prompt starts where a tweet starts.
        eos_id = eos_token_id(tokenizer)

        if (path / ADAPTER_CONFIG).is_file():
            # ``base_model_path`` is where training found the base (a converted built-in's
            # folder); ``base_model`` is the name the user chose, which can rebuild that folder.
            base_name = _recorded_base(record)
            if not isinstance(base_name, str) or not base_name.strip():
                raise ModelError(
                    f"The LoRA model in {path} does not name its base model in {TRAINING_FILE}; "
                    "train it again."
                )
            backend: _OwnModel | _LoraModel = _attach_lora(path, base_name, texts, torch_device)
        else:
            backend = _OwnModel(_load_full(path, torch_device))

        config = backend.model.config
        max_positions = int(
            getattr(config, "n_positions", None)
            or getattr(config, "max_position_embeddings", None)
            or 1024
        )
        return cls(
            path=path,
            tokenizer=tokenizer,
            backend=backend,
            device=torch_device,
            handles=_handles(record, rows, path.name),
            copy_filter=CopyFilter(texts),
            max_positions=max_positions,
            eos_id=eos_id,
        )

    @property
    def name(self) -> str:
        """The model's name (its folder's name, e.g. ``alice-bob``)."""
        return self.path.name

    @property
    def handles(self) -> tuple[str, ...]:
        """The handles the model learned from, without ``@``."""
        return self._handles

    @property
    def model(self) -> torch.nn.Module:
        """The torch module that generates (for a LoRA model: the shared base with adapters)."""
        return self._backend.model

    @property
    def is_lora(self) -> bool:
        """Whether this model is a LoRA adapter on a shared base."""
        return isinstance(self._backend, _LoraModel)

    @property
    def memory_bytes(self) -> int:
        """Parameter and buffer bytes this model alone holds (a LoRA model: its adapter only)."""
        with _SAMPLING_LOCK:
            return 0 if self._closed else self._backend.memory_bytes()

    @property
    def shared_bytes(self) -> int:
        """Bytes of the base weights a LoRA model shares with every LoRA model on that base.

        0 for a model with its own weights. A cache that budgets memory counts this once per base.
        """
        with _SAMPLING_LOCK:
            if self._closed or not isinstance(self._backend, _LoraModel):
                return 0
            return self._backend.pool.base_bytes()

    def close(self) -> None:
        """Free now what only this model holds (a LoRA adapter; the base with its last adapter).

        Only for the generator's sole owner: a closed generator refuses to generate. Dropping the
        last reference frees the same memory without this call.
        """
        with _SAMPLING_LOCK:
            if self._closed:
                return
            self._closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        self._backend.close()

    def generate(
        self,
        prompt: str = DEFAULT_PROMPT,
        *,
        n: int = 1,
        seed: int | None = None,
        exclude: Collection[str] = (),
        settings: GenerationSettings | None = None,
    ) -> GenerationResult:
        """Write up to ``n`` tweets that start with ``prompt``.

        Samples ``num_candidates`` continuations of EOS + prompt per round (on CPU the first round
        samples only ``n``), for up to ``max_rounds`` rounds until ``n`` pass the filters. The
        same ``seed`` on the same model and arguments gives the same tweets. ``exclude`` lists
        texts that must not come back (compared by :func:`normalize`).
        """
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        settings = settings or GenerationSettings()
        text = check_prompt(prompt)
        check_count(n)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InputError(f"The seed must be a whole number of 0 or more, not {seed!r}.")
        # split_special_tokens: a prompt that spells out "<|endoftext|>" stays plain text. Under
        # the lock: a fast tokenizer raises "Already borrowed" when two threads use it at once.
        with _SAMPLING_LOCK:
            encoded = self._tokenizer(text, add_special_tokens=False, split_special_tokens=True)
            prompt_ids = [self._eos_id, *encoded["input_ids"]]
            # Token healing: the prompt's last word is given back to the model, whose first
            # token must start with that text ("Today" may become "Today's" or "Today,"), so a
            # prompt is continued as the person would and never glued to the next word.
            healed = self._heal(prompt_ids)
        healing, heal_chars = None, 0
        if healed is not None:
            backed_off, healing, heal_chars = healed
            prompt_ids = prompt_ids[:-backed_off]
        max_length = min(settings.max_length, self._max_positions)
        if len(prompt_ids) + MIN_NEW_TOKENS > max_length:
            raise InputError(
                f"The prompt is {len(prompt_ids) - 1} tokens long; keep it under "
                f"{max_length - MIN_NEW_TOKENS} tokens for this model."
            )
        config = GenerationConfig(
            do_sample=settings.do_sample,
            top_p=settings.top_p,
            top_k=settings.top_k,
            temperature=settings.temperature,
            min_length=min(settings.min_length, max_length - 1),
            max_length=max_length,
            eos_token_id=self._eos_id,
            pad_token_id=self._eos_id,
        )
        avoid = {normalize(t) for t in exclude}
        full_round = max(settings.num_candidates, n)
        # On a GPU a round of ten rows costs what one row costs; on a CPU every row adds work (and
        # a round lasts as long as its longest row), while most candidates pass the filters. So a
        # CPU's first round samples only the n tweets asked for, and the full rounds follow only
        # when something was rejected. Either way the tweets returned are the first n sampled
        # candidates that pass, so the rounds' sizes change the speed, not what is picked.
        first_round = n if self.device.type == "cpu" else full_round
        tweets: list[str] = []
        seen: set[str] = set()
        reasons: Counter[str] = Counter()
        candidates = 0
        fork_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with _SAMPLING_LOCK, torch.random.fork_rng(devices=fork_devices):
            if self._closed:
                raise ModelError(f"The model {self.name} was unloaded; load it again.")
            # fork_rng puts the global state back afterwards, so an unseeded call must draw its
            # own seed: sampling from the forked state as it is would repeat the same tweets.
            torch.manual_seed(seed if seed is not None else secrets.randbits(63))
            self._backend.activate()
            for round_index in range(settings.max_rounds):
                batch = first_round if round_index == 0 else full_round
                input_ids = torch.tensor([prompt_ids] * batch, device=self.device)
                stop = StoppingCriteriaList(
                    [_TweetEnd(self._tokenizer, batch, len(text) - heal_chars, settings.max_chars)]
                )
                with torch.inference_mode():
                    output = self.model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        generation_config=config,
                        stopping_criteria=stop,
                        prefix_allowed_tokens_fn=healing,
                    )
                for row in output.tolist():
                    candidates += 1
                    reason, tweet = self._judge(row, len(prompt_ids), text, settings, avoid, seen)
                    if reason is not None:
                        reasons[reason] += 1
                        continue
                    seen.add(normalize(tweet))
                    if len(tweets) < n:
                        tweets.append(tweet)
                if len(tweets) >= n:
                    break
        return GenerationResult(
            prompt=text,
            tweets=tweets,
            candidates=candidates,
            rejected=sum(reasons.values()),
            rejected_reasons=dict(sorted(reasons.items())),
        )

    def _heal(self, prompt_ids: list[int]) -> tuple[int, Any, int] | None:
        """How to heal the prompt ``EOS + ids``: (tokens to back off, the
        ``prefix_allowed_tokens_fn``, characters given back), or None when nothing can extend it.

        The last word's tokens are backed off (at most :data:`_HEAL_MAX_TOKENS`) when some token
        starts with that word's text, else the last token alone, else nothing (a special token,
        part of a multi-byte character).
        """
        ids = prompt_ids[1:]
        if not ids:
            return None
        word = 1
        for k in range(1, min(_HEAL_MAX_TOKENS, len(ids)) + 1):
            piece = self._tokenizer.decode(ids[-k:], skip_special_tokens=True)
            if any(ch.isspace() for ch in piece.strip()):
                break
            word = k
            if piece[:1].isspace():
                break
        for back in dict.fromkeys((word, 1)):
            piece = self._tokenizer.decode(ids[-back:], skip_special_tokens=True)
            healing = self._healing(piece) if piece and "\ufffd" not in piece else None
            if healing is not None:
                return back, healing, len(piece)
        return None

    def _healing(self, piece: str) -> Any:
        """The ``prefix_allowed_tokens_fn`` whose first sampled token must start with ``piece``
        (later tokens are free); None when no token does."""
        import torch

        texts = _token_texts(self._tokenizer)
        allowed = [i for i, t in enumerate(texts) if t.startswith(piece) and i != self._eos_id]
        if not allowed:
            return None
        first = torch.tensor(allowed, dtype=torch.long, device=self.device)
        every = torch.arange(self.model.get_output_embeddings().weight.shape[0], device=self.device)
        start: list[int] = []

        def allowed_tokens(batch_id: int, sequence: torch.Tensor) -> torch.Tensor:
            if not start:
                start.append(sequence.shape[-1])
            return first if sequence.shape[-1] == start[0] else every

        return allowed_tokens

    def _judge(
        self,
        row: list[int],
        prompt_len: int,
        prompt: str,
        settings: GenerationSettings,
        avoid: set[str],
        seen: set[str],
    ) -> tuple[str | None, str]:
        """(rejection reason or None, the tidied tweet) for one sampled sequence."""
        new = row[prompt_len:]
        if self._eos_id in new:
            new = new[: new.index(self._eos_id)]
        full = self._tokenizer.decode(row[1:prompt_len] + new, skip_special_tokens=True)
        # What the model added: after the prompt's text (a healed prompt's last word is sampled).
        tail = (
            full[len(prompt) :]
            if full.startswith(prompt)
            else self._tokenizer.decode(new, skip_special_tokens=True)
        )
        added = tidy_candidate(tail, settings.max_chars)
        tweet = tidy_candidate(full, settings.max_chars)
        if not _has_content(added) or not tweet:
            return REJECT_EMPTY, tweet
        if self.copy_filter.is_copy(tweet):
            return REJECT_COPY, tweet
        key = normalize(tweet)
        if key in avoid:
            return REJECT_EXCLUDED, tweet
        if key in seen:
            return REJECT_REPEAT, tweet
        return None, tweet


class _TweetEnd:
    """Stops each sampled row as soon as more tokens cannot change its tweet.

    That is after a newline (everything after the first one is cut), or once the part of the row
    that is settled — everything before its last whitespace, tidied as :func:`tidy_candidate`
    tidies — is already longer than ``max_chars``: the tweet is cut to ``max_chars`` at a word
    boundary from that settled part alone, so sampling on would only burn time (on CPU a long row
    costs as much as the rest of the round). A row of ``max_chars`` + ``_RUNAWAY_SLACK``
    characters with no whitespace is stopped too. A transformers ``StoppingCriteria`` by
    protocol: ``__call__`` returns one bool per row.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, batch: int, prompt_chars: int, max_chars: int
    ) -> None:
        self._tokenizer = tokenizer
        self._max_chars = max_chars
        # Characters of each row's tweet so far (the prompt's, then every sampled piece's).
        self._chars = [prompt_chars] * batch
        self._done = [False] * batch

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        pieces = self._tokenizer.batch_decode(input_ids[:, -1:], skip_special_tokens=True)
        for row, piece in enumerate(pieces):
            if self._done[row]:
                continue
            self._chars[row] += len(piece)
            if _NEWLINE.search(piece) or self._chars[row] > self._max_chars + _RUNAWAY_SLACK:
                self._done[row] = True
            elif self._chars[row] > self._max_chars:
                # Decoded afresh from the tokens, exactly as the candidate will be judged.
                text = self._tokenizer.decode(input_ids[row, 1:].tolist(), skip_special_tokens=True)
                self._done[row] = _settled_chars(text) > self._max_chars
        return torch.tensor(self._done, dtype=torch.bool, device=input_ids.device)


#: The most prompt tokens token healing gives back (one word rarely has more).
_HEAL_MAX_TOKENS = 4
#: Each tokenizer's tokens decoded one by one (for token healing), shared while it lives.
_TOKEN_TEXTS: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def _token_texts(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The text of every token id of ``tokenizer`` (special tokens as ""); call under the lock."""
    texts = _TOKEN_TEXTS.get(tokenizer)
    if texts is None:
        ids = [[i] for i in range(len(tokenizer))]
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        _TOKEN_TEXTS[tokenizer] = texts
    return texts


def _settled_chars(text: str) -> int:
    """The tidied length of ``text``'s first line before its last whitespace (:class:`_TweetEnd`).

    Tidying is word by word (URLs are whole words, whitespace collapses), so words that a
    whitespace already ends tidy the same whatever is sampled after them.
    """
    line = _NEWLINE.split(text, maxsplit=1)[0]
    last = _LAST_SPACE.search(line)
    if last is None:
        return 0
    return len(tidy_candidate(line[: last.start()], max_chars=len(line) + 1))


#: The files a tokenizer is read from; two folders with the same bytes in these share one tokenizer.
_TOKENIZER_FILES = (
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

_TOKENIZERS: weakref.WeakValueDictionary[str, PreTrainedTokenizerBase] = (
    weakref.WeakValueDictionary()
)
_TOKENIZERS_LOCK = threading.Lock()


def _shared_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer in ``path``, shared with every loaded model whose tokenizer files are equal.

    Every model folder carries its base's tokenizer (~9 MB in memory for a 49k vocabulary), so
    LoRA handles on one base would otherwise each hold an identical copy. Tokenizers are only
    used under the sampling lock, so sharing one between generators is safe.
    """
    from transformers import AutoTokenizer

    digest = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        file = path / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
    key = digest.hexdigest()
    with _TOKENIZERS_LOCK:
        tokenizer = _TOKENIZERS.get(key)
        if tokenizer is not None:
            return tokenizer
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelError(
                f"The model in {path} has no usable tokenizer files; train it again."
            ) from error
        _TOKENIZERS[key] = tokenizer
        return tokenizer


def _load_full(path: Path, device: torch.device) -> torch.nn.Module:
    import torch
    from transformers import AutoModelForCausalLM

    if not (path / "config.json").is_file():
        raise ModelError(f"The model in {path} has no weights (no config.json); train it again.")
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
        raise ModelError(
            f"The weights in {path} cannot be loaded; train the model again."
        ) from error
    model.to(device)
    model.eval()
    return model


def _handles(record: dict[str, Any], rows: list[tuple[str, str]], name: str) -> tuple[str, ...]:
    recorded = record.get("handles")
    if isinstance(recorded, list) and recorded:
        values = [h.get("name") if isinstance(h, dict) else h for h in recorded]
        names = [str(v).lstrip("@").lower() for v in values if v]
        if names:
            return tuple(sorted(set(names)))
    from_rows = {h.lstrip("@").lower() for h, _ in rows if h}
    return tuple(sorted(from_rows)) if from_rows else tuple(name.split("-"))


# --------------------------------------------------------------------------------------------
# The per-process cache

#: How many generators :func:`get_generator` keeps; the least recently used is dropped first.
CACHE_SIZE = 4

_CACHE: OrderedDict[tuple[str, str], tuple[tuple[int, ...], TweetGenerator]] = OrderedDict()
_CACHE_LOCK = threading.RLock()


def _folder_stamp(path: Path) -> tuple[int, ...]:
    """Changes whenever the model is retrained (the folder is replaced, training.json rewritten)."""
    try:
        folder = path.stat()
        record = path / TRAINING_FILE
        stamp = record.stat() if record.is_file() else (path / DATASET_FILE).stat()
    except OSError as error:
        raise ModelError(f"There is no model folder at {path}; train the model first.") from error
    return (folder.st_ino, stamp.st_ino, stamp.st_mtime_ns, stamp.st_size)


def get_generator(model_dir: Path, *, device: str | torch.device | None = None) -> TweetGenerator:
    """The process's generator for ``model_dir``: loaded once, reloaded after a retrain.

    Keyed by the resolved folder and its ``training.json`` modification time, so a model that was
    trained again (the folder atomically replaced) is loaded afresh and the old one released.
    """
    path = Path(model_dir).expanduser().resolve()
    key = (str(path), "" if device is None else str(device))
    with _CACHE_LOCK:
        stamp = _folder_stamp(path)
        cached = _CACHE.get(key)
        if cached is not None and cached[0] == stamp:
            _CACHE.move_to_end(key)
            return cached[1]
        if cached is not None:
            # Not closed: a caller may still hold the old generator; it is freed with its last
            # reference (a LoRA adapter at the next load).
            del _CACHE[key]
            cached = None
            _purge_released()
        generator = TweetGenerator.load(path, device=device)
        _CACHE[key] = (stamp, generator)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return generator


def clear_generator_cache() -> None:
    """Forget every cached generator; each is freed once no caller holds it any more."""
    with _CACHE_LOCK:
        _CACHE.clear()
    _purge_released()
