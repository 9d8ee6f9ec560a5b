"""Fixtures for the training library's tests: tiny offline tokenizers and tweet factories."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from training.handles import Handle
from training.sources.base import RawTweet

_TOKENIZER_CORPUS = [
    "My dream is to eat pizza on the moon with my friends",
    "@bob thanks for the #tip, it worked 🎉",
    "Just shipped a new release of the project, go try it",
    "the quick brown fox jumps over the lazy dog again and again",
    "Coffee first, then code, then more coffee ☕",
] * 4


def _train_bpe(special_tokens: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS, trainer)
    return tokenizer


@pytest.fixture(scope="session")
def gpt2_style_tokenizer():
    """A byte-level BPE whose EOS is GPT-2's ``<|endoftext|>`` (built offline, never downloaded)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(["<|endoftext|>"]), eos_token="<|endoftext|>"
    )


@pytest.fixture(scope="session")
def own_eos_tokenizer():
    """A byte-level BPE with its own EOS (``</s>``) and no ``<|endoftext|>``, like SmolLM2/Llama."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(["<s>", "<pad>", "</s>"]), eos_token="</s>"
    )


@pytest.fixture(scope="session")
def chat_tokenizer():
    """Like SmolLM2-Instruct: EOS is the end of a chat turn (``<|im_end|>``), and
    ``<|endoftext|>``, the pretraining document separator, is a special token too."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<|endoftext|>",  # as SmolLM2's tokenizer says
    )


@pytest.fixture
def make_tweet() -> Callable[..., RawTweet]:
    """Build a RawTweet with only the fields a test cares about."""
    counter = iter(range(10**9))

    def make(text: str, *, is_retweet: bool = False, is_reply: bool = False) -> RawTweet:
        return RawTweet(
            id=str(next(counter)),
            created_at=None,
            text=text,
            is_retweet=is_retweet,
            is_reply=is_reply,
            source="test",
        )

    return make


@pytest.fixture
def long_tweets() -> Callable[[str, int], list[str]]:
    """``n`` distinct tweets by a handle, each ~100 characters of real words (never short)."""

    def make(prefix: str, n: int) -> list[str]:
        return [
            f"{prefix} tweet number {i} says something thoughtful about coffee, code and the "
            f"weather today {i}"
            for i in range(n)
        ]

    return make


class FakeSource:
    """A TweetSource serving fixed tweets per handle name, recording what was fetched."""

    kind = "fake"

    def __init__(self, tweets: dict[str, Sequence[RawTweet]]) -> None:
        self.tweets = tweets
        self.fetched: list[str] = []

    def fetch(self, handle: Handle) -> list[RawTweet]:
        self.fetched.append(handle.name)
        return list(self.tweets.get(handle.name, []))


@pytest.fixture
def fake_source_factory() -> type[FakeSource]:
    """The FakeSource class, for tests that stand in for a real tweet source."""
    return FakeSource
