"""LoRA models on one shared base: loading, sharing its weights, their own adapters, closing."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.training.generation.tiny_models import (
    FAST,
)
from training.errors import ModelError
from training.generation import (
    TweetGenerator,
)

# Per test, because training in shared fixtures sets torch to every core again.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _base_weight(generator: TweetGenerator) -> torch.Tensor:
    return generator.model.get_base_model().transformer.h[0].attn.c_attn.base_layer.weight


def test_lora_models_on_one_base_share_its_weights(lora_dirs: dict[str, Path]) -> None:
    first = TweetGenerator.load(lora_dirs["lora_a"], device="cpu", backend="torch")
    second = TweetGenerator.load(lora_dirs["lora_b"], device="cpu", backend="torch")
    assert first.is_lora and second.is_lora
    assert first.model is second.model
    assert _base_weight(first).data_ptr() == _base_weight(second).data_ptr()
    base_bytes = TweetGenerator.load(lora_dirs["full"], device="cpu", backend="torch").memory_bytes
    assert second.memory_bytes < 10 * 2**20
    assert second.memory_bytes < base_bytes / 10
    assert first.shared_bytes == second.shared_bytes == base_bytes
    first.close()
    second.close()


def test_a_noop_adapter_generates_exactly_what_its_base_does(lora_dirs: dict[str, Path]) -> None:
    lora = TweetGenerator.load(lora_dirs["noop"], device="cpu")
    full = TweetGenerator.load(lora_dirs["full"], device="cpu")
    assert lora.generate(n=3, seed=4, settings=FAST) == full.generate(n=3, seed=4, settings=FAST)
    lora.close()


def test_each_lora_model_generates_with_its_own_adapter(lora_dirs: dict[str, Path]) -> None:
    a = TweetGenerator.load(lora_dirs["lora_a"], device="cpu")
    b = TweetGenerator.load(lora_dirs["lora_b"], device="cpu")
    a_first = a.generate(n=3, seed=4, settings=FAST)
    b_first = b.generate(n=3, seed=4, settings=FAST)
    assert a_first.tweets != b_first.tweets
    # Switching back and forth gives each model its own output again.
    assert a.generate(n=3, seed=4, settings=FAST) == a_first
    assert b.generate(n=3, seed=4, settings=FAST) == b_first
    a.close()
    b.close()


def test_concurrent_generation_from_threads_matches_sequential(lora_dirs: dict[str, Path]) -> None:
    a = TweetGenerator.load(lora_dirs["lora_a"], device="cpu")
    b = TweetGenerator.load(lora_dirs["lora_b"], device="cpu")
    jobs = [(g, seed) for seed in range(2) for g in (a, b)]
    expected = [g.generate(n=2, seed=s, settings=FAST) for g, s in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda job: job[0].generate(n=2, seed=job[1], settings=FAST), jobs))
    assert got == expected
    a.close()
    b.close()


def test_closing_a_lora_model_frees_its_adapter_but_not_its_neighbours(
    lora_dirs: dict[str, Path],
) -> None:
    a = TweetGenerator.load(lora_dirs["lora_a"], device="cpu", backend="torch")
    b = TweetGenerator.load(lora_dirs["lora_b"], device="cpu", backend="torch")
    before = a.generate(n=2, seed=1, settings=FAST)
    adapters = set(a.model.peft_config)
    b.close()
    assert set(a.model.peft_config) == adapters - {b._backend.loaded.adapter}
    assert a.generate(n=2, seed=1, settings=FAST) == before
    with pytest.raises(ModelError, match="unloaded"):
        b.generate()
    a.close()


def test_a_dropped_lora_model_is_detached_at_the_next_load(lora_dirs: dict[str, Path]) -> None:
    keep = TweetGenerator.load(lora_dirs["lora_a"], device="cpu", backend="torch")
    dropped = TweetGenerator.load(lora_dirs["lora_b"], device="cpu", backend="torch")
    dropped_adapter = dropped._backend.loaded.adapter
    del dropped
    gc.collect()
    again = TweetGenerator.load(lora_dirs["noop"], device="cpu", backend="torch")
    assert dropped_adapter not in keep.model.peft_config
    keep.close()
    again.close()
