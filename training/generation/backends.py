"""What samples token rows for the generator: a small interface, and the torch backend.

A backend turns ``EOS + prompt`` into sampled rows of token ids; everything else (healing the
prompt, the filters, rounds, the result) is the generator's, so every backend gives tweets under
the same rules. :mod:`training.generation.llamacpp` and :mod:`training.generation.fast` are
the CPU engines; a new backend is a new module with a class like :class:`TorchBackend`.
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

from training.generation.lock import TORCH_RNG_LOCK
from training.generation.pool import LoraModel, OwnModel, mark_released
from training.generation.settings import GenerationSettings
from training.generation.stop import TweetEnd

if TYPE_CHECKING:
    import torch


class Sampler(Protocol):
    """One generation's access to a backend (its randomness already set up)."""

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
        """``batch`` rows, each ``prompt_ids`` + sampled ids; the first sampled id is one of
        ``first_tokens`` when given; every row ends at EOS, ``max_length`` tokens or ``stop``."""
        ...


class Backend(Protocol):
    """A loaded model that samples; one generation at a time (the generator's own lock)."""

    #: ``"torch"``, ``"ctranslate2"`` or ``"llamacpp"`` (:attr:`TweetGenerator.backend`).
    kind: str
    #: The longest sequence the model takes.
    max_positions: int

    def session(self, seed: int | None) -> AbstractContextManager[Sampler]:
        """A context for one generation: seeded (reproducible) or, with None, fresh randomness;
        the process's global random state is left as it was. It holds whatever locks that
        takes (lock.py), and no more, so models of other backends or bases sample meanwhile."""
        ...

    def memory_bytes(self) -> int:
        """Bytes this model alone holds."""
        ...

    def shared_bytes(self) -> int:
        """Bytes shared with other models (a LoRA base), counted once per base by a cache."""
        ...

    def shared_key(self) -> str:
        """Which shared weights :meth:`shared_bytes` counts (the same for every model sharing
        them); empty when the model shares nothing."""
        ...

    def close(self) -> None:
        """Free what only this model holds."""
        ...


def max_positions_of(config: Any) -> int:
    """The longest sequence a transformers config allows (1,024 when it does not say)."""
    return int(
        getattr(config, "n_positions", None)
        or getattr(config, "max_position_embeddings", None)
        or 1024
    )


class TorchBackend:
    """transformers ``generate`` on a model of its own or a LoRA adapter on a shared base."""

    kind = "torch"

    def __init__(self, loaded: OwnModel | LoraModel, device: torch.device, eos_id: int) -> None:
        self.loaded = loaded
        self.device = device
        self.eos_id = eos_id
        self.max_positions = max_positions_of(loaded.model.config)
        # A LoRA adapter outlives nothing: when the last reference to this backend goes, its
        # adapter is removed from the shared base at the next load.
        self._finalizer = (
            weakref.finalize(self, mark_released, loaded.pool, loaded.adapter)
            if isinstance(loaded, LoraModel)
            else None
        )

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def is_lora(self) -> bool:
        return isinstance(self.loaded, LoraModel)

    @contextmanager
    def session(self, seed: int | None) -> Iterator[Sampler]:
        import torch

        fork_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        base = self.loaded.pool.lock if isinstance(self.loaded, LoraModel) else nullcontext()
        # Sampling draws from torch's global generator, so torch calls take turns; fork_rng puts
        # its state back afterwards, and an unseeded call draws its own seed (the forked state
        # as it is would repeat tweets). A LoRA model's adapter stays active on its shared base
        # until the call is over.
        with base, TORCH_RNG_LOCK, torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed if seed is not None else secrets.randbits(63))
            self.loaded.activate()
            yield self

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
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        config = GenerationConfig(
            do_sample=settings.do_sample,
            top_p=settings.top_p,
            top_k=settings.top_k,
            temperature=settings.temperature,
            min_length=min(settings.min_length, max_length - 1),
            max_length=max_length,
            eos_token_id=self.eos_id,
            pad_token_id=self.eos_id,
        )
        input_ids = torch.tensor([prompt_ids] * batch, device=self.device)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([stop]),
                prefix_allowed_tokens_fn=self._first_token_rule(first_tokens),
            )
        return output.tolist()

    def _first_token_rule(self, first_tokens: list[int] | None) -> Any:
        """transformers' ``prefix_allowed_tokens_fn``: the first sampled token from
        ``first_tokens``, later tokens free."""
        import torch

        if first_tokens is None:
            return None
        first = torch.tensor(first_tokens, dtype=torch.long, device=self.device)
        every = torch.arange(self.model.get_output_embeddings().weight.shape[0], device=self.device)
        start: list[int] = []

        def allowed_tokens(batch_id: int, sequence: torch.Tensor) -> torch.Tensor:
            if not start:
                start.append(sequence.shape[-1])
            return first if sequence.shape[-1] == start[0] else every

        return allowed_tokens

    def memory_bytes(self) -> int:
        return self.loaded.memory_bytes()

    def shared_bytes(self) -> int:
        return self.loaded.pool.base_bytes() if isinstance(self.loaded, LoraModel) else 0

    def shared_key(self) -> str:
        return "\0".join(self.loaded.pool.key) if isinstance(self.loaded, LoraModel) else ""

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        self.loaded.close()
