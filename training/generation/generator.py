"""The generator: samples candidates from a backend and keeps those that pass the filters."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from training.errors import InputError, ModelError
from training.generation.backends import Backend, TorchBackend
from training.generation.folder import (
    model_handles,
    read_dataset,
    read_training_record,
    resolve_device,
)
from training.generation.lock import tokenizer_lock
from training.generation.pool import (
    LoraModel,
    OwnModel,
    attach_lora,
    load_full,
    purge_released,
    recorded_base,
)
from training.generation.settings import (
    ADAPTER_CONFIG,
    DEFAULT_PROMPT,
    FRAGMENT_OPENINGS,
    GENERATION_BACKENDS,
    MIN_NEW_TOKENS,
    REJECT_COPY,
    REJECT_DEGENERATE,
    REJECT_EMPTY,
    REJECT_EXCLUDED,
    REJECT_FRAGMENT,
    REJECT_GLUED,
    REJECT_REPEAT,
    TRAINING_FILE,
    GenerationResult,
    GenerationSettings,
    check_count,
    check_prompt,
)
from training.generation.sharing import shared_tokenizer, token_texts
from training.generation.stop import TweetEnd
from training.generation.text import (
    CopyFilter,
    glues,
    has_content,
    is_degenerate,
    last_word,
    normalize,
    tidy_candidate,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

#: The most prompt tokens token healing gives back (one word rarely has more).
_HEAL_MAX_TOKENS = 4
#: Healing answers a model keeps (:meth:`TweetGenerator._healing`).
_HEALINGS_KEPT = 512


class TweetGenerator:
    """A loaded model that writes tweets; safe to share between threads.

    One generation of a model runs at a time; different models generate at once as far as their
    backends allow (see :mod:`training.generation.lock`).

    Build it with :meth:`load` (or :func:`get_generator` to reuse one per process).
    """

    def __init__(
        self,
        *,
        path: Path,
        tokenizer: PreTrainedTokenizerBase,
        backend: Backend,
        device: torch.device,
        handles: tuple[str, ...],
        copy_filter: CopyFilter,
        eos_id: int,
    ) -> None:
        self.path = path
        self.device = device
        self.copy_filter = copy_filter
        self._tokenizer = tokenizer
        self._backend = backend
        self._handles = handles
        self._max_positions = backend.max_positions
        self._eos_id = eos_id
        self._closed = False
        self._lock = threading.RLock()
        self._tokenizer_lock = tokenizer_lock(tokenizer)
        # (piece, whole word) -> the first tokens healing allows: a scan of the whole vocabulary
        # (about 4 ms for SmolLM2's 49,152 tokens), so each answer is kept.
        self._healings: dict[tuple[str, bool], list[int] | None] = {}

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        device: str | torch.device | None = None,
        backend: str | None = None,
    ) -> TweetGenerator:
        """Load a model folder: full weights, or a LoRA adapter attached to its shared base.

        ``backend`` is ``"auto"`` (the default, from ``DOPPELTWEET_GENERATION_BACKEND``): on a
        CPU llama.cpp (:mod:`training.generation.llamacpp`: the model's files made and checked on
        first use when training did not make them) when installed and the model passed its
        check, else CTranslate2 (:mod:`training.generation.fast`) when installed, else torch;
        ``"llamacpp"`` or ``"ctranslate2"`` that engine only, then torch; ``"torch"`` always
        torch (and on a GPU). Also reads ``dataset.jsonl`` (the
        cleaned training tweets) for the copy filter. A missing or broken folder raises
        :class:`ModelError`.
        """
        path = Path(model_dir).expanduser().resolve()
        if not path.is_dir():
            raise ModelError(f"There is no model folder at {path}; train the model first.")
        record = read_training_record(path)
        rows = read_dataset(path)
        texts = [text for _, text in rows]
        torch_device = resolve_device(device)
        purge_released()

        from training.dataset import recorded_separator_id

        tokenizer = shared_tokenizer(path)
        # The token training put between tweets (training.json says which; a model trained
        # before it did used the tokenizer's EOS), so a prompt starts where a tweet starts and a
        # tweet ends where the model ends one.
        eos_id = recorded_separator_id(record, tokenizer)

        lora = (path / ADAPTER_CONFIG).is_file()
        base_name = recorded_base(record) if lora else None
        if lora and (not isinstance(base_name, str) or not base_name.strip()):
            # ``base_model_path`` is where training found the base (a converted built-in's
            # folder); ``base_model`` is the name the user chose, which can rebuild that folder.
            raise ModelError(
                f"The LoRA model in {path} does not name its base model in {TRAINING_FILE}; "
                "train it again."
            )
        chosen: Backend | None = None
        engines = _engines(backend, torch_device)
        if "llamacpp" in engines:
            from training.generation.llamacpp import open_backend

            chosen = open_backend(path, eos_id, base_name, texts)
        if chosen is None and "ctranslate2" in engines:
            chosen = _open_fast(path, tokenizer, eos_id, base_name, texts)
        if chosen is None:
            if lora:
                loaded: OwnModel | LoraModel = attach_lora(path, base_name, texts, torch_device)
            else:
                loaded = OwnModel(load_full(path, torch_device))
            chosen = TorchBackend(loaded, torch_device, eos_id)
        return cls(
            path=path,
            tokenizer=tokenizer,
            backend=chosen,
            device=torch_device,
            handles=model_handles(record, rows, path.name),
            copy_filter=CopyFilter.for_folder(path, texts),
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
    def backend(self) -> str:
        """Which backend samples: ``"torch"``, ``"ctranslate2"`` or ``"llamacpp"``."""
        return self._backend.kind

    @property
    def model(self) -> torch.nn.Module:
        """The torch module that generates (for a LoRA model: the shared base with adapters);
        ModelError for a model served by the fast backend, which has none."""
        if not isinstance(self._backend, TorchBackend):
            raise ModelError(f"The model {self.name} is served by {self.backend}, not torch.")
        return self._backend.model

    @property
    def is_lora(self) -> bool:
        """Whether this model is a LoRA adapter on a shared base (torch backend)."""
        return isinstance(self._backend, TorchBackend) and self._backend.is_lora

    @property
    def memory_bytes(self) -> int:
        """Parameter and buffer bytes this model alone holds (a LoRA model: its adapter only)."""
        with self._lock:
            return 0 if self._closed else self._backend.memory_bytes()

    @property
    def shared_bytes(self) -> int:
        """Bytes of the base weights a LoRA model shares with every LoRA model on that base.

        0 for a model with its own weights. A cache that budgets memory counts this once per base.
        """
        with self._lock:
            return 0 if self._closed else self._backend.shared_bytes()

    @property
    def shared_key(self) -> str:
        """Names the shared weights :attr:`shared_bytes` counts: models with the same key share
        them (one LoRA base); empty for a model that shares nothing."""
        with self._lock:
            return "" if self._closed else self._backend.shared_key()

    def close(self) -> None:
        """Free now what only this model holds (a LoRA adapter; the base with its last adapter).

        Only for the generator's sole owner: a closed generator refuses to generate. Dropping the
        last reference frees the same memory without this call.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
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
        settings = settings or GenerationSettings()
        text = check_prompt(prompt)
        check_count(n)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InputError(f"The seed must be a whole number of 0 or more, not {seed!r}.")
        # split_special_tokens: a prompt that spells out "<|endoftext|>" stays plain text. Under
        # the tokenizer's lock: models on one base share it, and a fast tokenizer raises "Already
        # borrowed" when two threads use it at once.
        with self._tokenizer_lock:
            encoded = self._tokenizer(text, add_special_tokens=False, split_special_tokens=True)
            prompt_ids = [self._eos_id, *encoded["input_ids"]]
            # Token healing: the prompt's last token(s) are given back to the model, whose first
            # token must start with that text, so a prompt is continued as the person would and
            # never glued to the next word. A prompt whose last word is one of the person's
            # words is complete: the continuation starts at a word boundary ("I" opens "I am",
            # "I'm", "I,", never "It's"); an unknown one ("big ne") may be finished ("news").
            whole_word = self._ends_with_whole_word(text)
            healed = self._heal(prompt_ids, whole_word=whole_word)
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
        with self._lock:
            if self._closed:
                raise ModelError(f"The model {self.name} was unloaded; load it again.")
            with self._backend.session(seed) as sampler:
                for round_index in range(settings.max_rounds):
                    batch = first_round if round_index == 0 else full_round
                    stop = TweetEnd(
                        self._tokenizer, batch, len(text) - heal_chars, settings.max_chars
                    )
                    rows = sampler.sample(
                        prompt_ids,
                        batch,
                        settings=settings,
                        max_length=max_length,
                        first_tokens=healing,
                        stop=stop,
                    )
                    for row in rows:
                        candidates += 1
                        with self._tokenizer_lock:
                            reason, tweet = self._judge(
                                row, len(prompt_ids), text, settings, avoid, seen
                            )
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

    def _heal(
        self, prompt_ids: list[int], *, whole_word: bool = False
    ) -> tuple[int, list[int], int] | None:
        """How to heal the prompt ``EOS + ids``: (tokens to back off, the ids
        the first sampled token may be, characters given back), or None when nothing extends it.

        The last word's tokens are backed off (at most :data:`_HEAL_MAX_TOKENS`) when some token
        starts with that word's text, else the last token alone, else nothing (a special token,
        part of a multi-byte character). With ``whole_word`` a token may only add a word
        boundary to the text given back (:func:`glues`).
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
            healing = self._healing(piece, whole_word) if piece and "\ufffd" not in piece else None
            if healing is not None:
                return back, healing, len(piece)
        return None

    def _ends_with_whole_word(self, prompt: str) -> bool:
        """Whether ``prompt`` ends with a word the person's training tweets use whole (so the
        user finished it); False after a space, punctuation or an ideograph (nothing to keep
        whole) and for a word the person never wrote (it may be unfinished: ``big ne``)."""
        word = last_word(prompt)
        return bool(word) and self.copy_filter.knows_word(word)

    def _healing(self, piece: str, whole_word: bool = False) -> list[int] | None:
        """The token ids the first sampled token may be (each starts with ``piece`` and, for a
        ``whole_word``, adds no letter to its last word; later tokens are free); None when no
        token does."""
        key = (piece, whole_word)
        if key in self._healings:
            return self._healings[key]
        texts = token_texts(self._tokenizer)
        allowed = [
            i
            for i, t in enumerate(texts)
            if t.startswith(piece)
            and i != self._eos_id
            and not (whole_word and glues(piece, t[len(piece) :]))
        ] or None
        if len(self._healings) >= _HEALINGS_KEPT:
            self._healings.pop(next(iter(self._healings)))  # the oldest answer
        self._healings[key] = allowed
        return allowed

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
        if not has_content(added) or not tweet:
            return REJECT_EMPTY, tweet
        if not prompt and tweet[0] in FRAGMENT_OPENINGS:
            return REJECT_FRAGMENT, tweet
        if full.startswith(prompt) and glues(prompt, tail) and self._ends_with_whole_word(prompt):
            # The first token kept the word whole but the next one extended it ("I" + "n").
            return REJECT_GLUED, tweet
        if is_degenerate(tweet):
            return REJECT_DEGENERATE, tweet
        if self.copy_filter.is_copy(tweet):
            return REJECT_COPY, tweet
        key = normalize(tweet)
        if key in avoid:
            return REJECT_EXCLUDED, tweet
        if key in seen:
            return REJECT_REPEAT, tweet
        return None, tweet


def _engines(backend: str | None, device: torch.device) -> tuple[str, ...]:
    """The CPU engines to try for a load, in order, before torch (see
    :meth:`TweetGenerator.load`): llama.cpp, then CTranslate2, each when installed."""
    from training.config import get_settings
    from training.generation.fast import fast_installed
    from training.generation.llamacpp import llamacpp_installed

    choice = backend or get_settings().generation_backend
    if choice not in GENERATION_BACKENDS:
        raise InputError(
            f"Unknown generation backend {choice!r}: use {', '.join(GENERATION_BACKENDS)}."
        )
    if choice == "torch" or device.type != "cpu":
        return ()
    engines = []
    if choice in ("auto", "llamacpp") and llamacpp_installed():
        engines.append("llamacpp")
    if choice in ("auto", "ctranslate2") and fast_installed():
        engines.append("ctranslate2")
    return tuple(engines)


def _open_fast(
    path: Path,
    tokenizer: PreTrainedTokenizerBase,
    eos_id: int,
    base_name: str | None,
    texts: list[str],
) -> Backend | None:
    """The fast backend for ``path`` (converting it first when needed), or None: use torch."""
    from training.config import get_settings
    from training.generation.fast import FastBackend, FastUnavailable
    from training.generation.fast_build import (
        build_fast_artifact,
        conversion_failed,
        fast_artifact,
    )

    threads = get_settings().generation_threads
    folder = fast_artifact(path)
    for attempt in range(2):
        try:
            if folder is None:
                if conversion_failed(path):
                    return None
                log.info("Converting %s for fast generation (once per training).", path.name)
                folder = build_fast_artifact(path, base_name=base_name, texts=texts)
            return FastBackend(folder, tokenizer, eos_id, threads=threads)
        except FastUnavailable as error:
            log.warning("Fast generation is off for %s: %s; using torch.", path.name, error)
            # A damaged artifact is converted again once; a failed conversion is final.
            folder = None
            if attempt or conversion_failed(path):
                return None
        except OSError as error:
            log.warning("Fast generation is off for %s: %s; using torch.", path.name, error)
            return None
    return None
