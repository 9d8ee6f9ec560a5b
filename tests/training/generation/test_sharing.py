"""Tokenizers shared between models whose tokenizer files are identical."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from tests.training.generation.tiny_models import (
    FAST,
)
from training.generation import (
    TweetGenerator,
)

# Per test, because training in shared fixtures sets torch to every core again.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_models_with_identical_tokenizer_files_share_one_tokenizer(
    lora_dirs: dict[str, Path], overfit_dir: Path
) -> None:

    from training.generation import sharing

    first = TweetGenerator.load(lora_dirs["lora_a"], device="cpu")
    second = TweetGenerator.load(lora_dirs["lora_b"], device="cpu")
    other = TweetGenerator.load(overfit_dir, device="cpu")  # trained on other tweets
    assert first._tokenizer is second._tokenizer
    assert other._tokenizer is not first._tokenizer
    assert second.generate("I think", n=1, seed=0, settings=FAST).tweets
    del first, second, other
    gc.collect()
    assert len(sharing._TOKENIZERS) == 0  # held only by the models that use them
