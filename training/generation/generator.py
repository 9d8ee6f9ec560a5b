"""The generator: samples candidates from a backend and keeps those that pass the filters."""

from __future__ import annotations

import secrets
import weakref
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import InputError, ModelError
from training.generation.folder import (
    _handles,
    _read_dataset,
    _read_training_record,
    _resolve_device,
)
from training.generation.lock import _SAMPLING_LOCK
from training.generation.pool import (
    _attach_lora,
    _load_full,
    _LoraModel,
    _mark_released,
    _OwnModel,
    _purge_released,
    _recorded_base,
)
from training.generation.settings import (
    ADAPTER_CONFIG,
    DEFAULT_PROMPT,
    MIN_NEW_TOKENS,
    REJECT_COPY,
    REJECT_EMPTY,
    REJECT_EXCLUDED,
    REJECT_REPEAT,
    TRAINING_FILE,
    GenerationResult,
    GenerationSettings,
    check_count,
    check_prompt,
)
from training.generation.sharing import _shared_tokenizer, _token_texts
from training.generation.stop import _TweetEnd
from training.generation.text import CopyFilter, _has_content, normalize, tidy_candidate

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

#: The most prompt tokens token healing gives back (one word rarely has more).
_HEAL_MAX_TOKENS = 4


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
