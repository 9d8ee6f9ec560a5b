"""The stop rule: where a row ends while sampling (training.generation.stop)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.generation import (
    tidy_candidate,
)

# Per test, because training in shared fixtures sets torch to every core again.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_sampling_stops_a_row_at_a_newline(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    from training.generation.stop import TweetEnd

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    word = tokenizer(" coffee", add_special_tokens=False)["input_ids"][-1]
    stop = TweetEnd(tokenizer, 2, prompt_chars=5, max_chars=280)
    assert stop(torch.tensor([[0, word], [0, word]]), None).tolist() == [False, False]
    assert stop(torch.tensor([[0, word, newline], [0, word, word]]), None).tolist() == [True, False]


def test_sampling_stops_a_row_exactly_when_more_words_cannot_change_its_tweet(
    tiny_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    from training.generation.stop import TweetEnd

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    word = tokenizer(" coffee", add_special_tokens=False)["input_ids"]
    prompt = tokenizer("I think", add_special_tokens=False)["input_ids"]
    stop = TweetEnd(tokenizer, 1, prompt_chars=len("I think"), max_chars=30)
    ids = [0, *prompt]
    for _ in range(100):
        ids += word
        text = tokenizer.decode(ids[1:], skip_special_tokens=True)
        if stop(torch.tensor([ids]), None).tolist() == [True]:
            break
    # Stopped: whatever comes next, the tweet is the one cut from what was sampled...
    for more in (" coffee", " https://t.co/x", "s and tea", "www.x.com", " " + "x" * 50):
        assert tidy_candidate(text + more, 30) == tidy_candidate(text, 30)
    # ...and no later than one word after the words that fill the tweet: "I think" + 4 × " coffee"
    # (35 characters) ends in a word still being written; one more word settles it.
    assert text == "I think" + " coffee" * 5


def test_a_row_with_no_whitespace_is_stopped_once_far_too_long(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    from training.generation import stop as stop_rule
    from training.generation.stop import TweetEnd

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    letter = tokenizer("x", add_special_tokens=False)["input_ids"][0]
    stop = TweetEnd(tokenizer, 1, prompt_chars=0, max_chars=30)
    ids = [0]
    while stop(torch.tensor([ids]), None).tolist() == [False]:
        ids.append(letter)
        assert len(ids) < 1000
    chars = len(tokenizer.decode(ids[1:], skip_special_tokens=True))
    assert chars == 30 + stop_rule._RUNAWAY_SLACK + 1
