"""The tweet separator (training.json records it, generation reads it) and tweet-aligned blocks."""

from __future__ import annotations

import pytest
import torch

from training.cleaning import DataTable, HandleData
from training.dataset import (
    build_eval_blocks,
    build_train_blocks,
    eos_token_id,
    recorded_separator_id,
    separator_record,
    separator_token_id,
    split_tweets,
)
from training.errors import ModelError
from training.handles import Handle


def _table(tweets: list[str]) -> DataTable:
    return DataTable([HandleData(Handle("alice"), len(tweets), 0, 0, list(tweets))])


# --- which token separates tweets --------------------------------------------------------------


def test_a_chat_model_separates_tweets_with_endoftext_not_its_end_of_turn(chat_tokenizer) -> None:
    assert chat_tokenizer.eos_token == "<|im_end|>"
    assert separator_token_id(chat_tokenizer) == chat_tokenizer.convert_tokens_to_ids(
        "<|endoftext|>"
    )
    assert separator_token_id(chat_tokenizer) != eos_token_id(chat_tokenizer)


def test_gpt2_and_own_eos_tokenizers_keep_their_eos(gpt2_style_tokenizer, own_eos_tokenizer):
    assert separator_token_id(gpt2_style_tokenizer) == eos_token_id(gpt2_style_tokenizer)
    assert separator_token_id(own_eos_tokenizer) == own_eos_tokenizer.convert_tokens_to_ids("</s>")


def test_the_training_stream_uses_the_separator(chat_tokenizer) -> None:
    split = split_tweets(_table(["one two three", "four five six"]), val_fraction=0.0)
    blocks = build_train_blocks(split, chat_tokenizer, block_size=1024, epochs=1, seed=0)
    stream = blocks.blocks[0].tolist()
    sep = chat_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert stream.count(sep) == 3 and stream[0] == stream[-1] == sep
    assert chat_tokenizer.eos_token_id not in stream


def test_the_record_round_trips_and_old_models_keep_their_eos(chat_tokenizer) -> None:
    sep = separator_token_id(chat_tokenizer)
    record = {"separator": separator_record(chat_tokenizer, sep)}
    assert record["separator"] == {"id": sep, "token": "<|endoftext|>"}
    assert recorded_separator_id(record, chat_tokenizer) == sep
    # A model trained before the separator was recorded was trained with the tokenizer's EOS.
    assert recorded_separator_id({}, chat_tokenizer) == chat_tokenizer.eos_token_id


@pytest.mark.parametrize(
    "entry",
    [
        {"id": 0, "token": "<|im_end|>"},  # id and token disagree
        {"id": 10**6, "token": "<|endoftext|>"},  # no such id
        {"id": True, "token": "<|endoftext|>"},
        {"token": "<|endoftext|>"},
        "<|endoftext|>",
    ],
)
def test_a_damaged_separator_record_is_one_sentence(chat_tokenizer, entry) -> None:
    with pytest.raises(ModelError, match=r"^The tweet separator in training\.json .* again\.$"):
        recorded_separator_id({"separator": entry}, chat_tokenizer)


# --- tweet-aligned blocks ----------------------------------------------------------------------


def _units(block: torch.Tensor, length: int, sep: int) -> list[list[int]]:
    """The tweets of one aligned block (its text part split at the separator)."""
    text = block[:length].tolist()
    assert text[0] == sep and text[-1] == sep
    tweets, current = [], []
    for token in text[1:]:
        if token == sep:
            tweets.append(current)
            current = []
        else:
            current.append(token)
    return tweets


def test_aligned_blocks_start_every_block_at_a_tweet_and_hold_whole_tweets(
    gpt2_style_tokenizer, long_tweets
) -> None:
    tweets = long_tweets("t", 40)
    longest = max(len(gpt2_style_tokenizer(t)["input_ids"]) for t in tweets)
    size = 3 * longest  # two or three tweets a block
    split = split_tweets(_table(tweets), val_fraction=0.0)
    blocks = build_train_blocks(
        split, gpt2_style_tokenizer, block_size=size, epochs=2, seed=3, align=True
    )
    sep = eos_token_id(gpt2_style_tokenizer)
    assert blocks.lengths is not None and blocks.blocks.shape[1] == size
    seen: list[str] = []
    for block, length in zip(blocks.blocks, blocks.lengths.tolist(), strict=True):
        for ids in _units(block, length, sep):
            seen.append(gpt2_style_tokenizer.decode(ids))
        assert (block[length:] == sep).all()
    # Every tweet of both epochs, whole, each in one block; nothing split across blocks.
    assert sorted(seen) == sorted(tweets * 2)
    assert blocks.num_tokens == int(blocks.lengths.sum()) < blocks.blocks.numel()


def test_aligned_blocks_leave_the_padding_out_of_the_loss(gpt2_style_tokenizer) -> None:
    split = split_tweets(_table(["one two three", "four five six seven"]), val_fraction=0.0)
    blocks = build_train_blocks(
        split, gpt2_style_tokenizer, block_size=64, epochs=1, seed=0, align=True
    )
    item = blocks[0]
    length = int(blocks.lengths[0])
    assert set(item) == {"input_ids", "labels"}  # right padding: causal attention never sees it
    assert item["labels"][:length].tolist() == item["input_ids"][:length].tolist()
    assert (item["labels"][length:] == -100).all()


def test_right_padding_does_not_change_what_the_text_tokens_see(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from training.basemodels import build_tiny_model

    folder = build_tiny_model(["hello there friend", "another tweet here"] * 20, tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    text = torch.tensor([[5, 6, 7, 8, 9]])
    padded = torch.cat([text, torch.zeros((1, 4), dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(text).logits
        with_pad = model(padded).logits[:, :5]
    assert torch.allclose(alone, with_pad, atol=1e-5)


def test_a_tweet_longer_than_a_block_gets_its_own_block_cut_at_the_end(
    gpt2_style_tokenizer,
) -> None:
    long = " ".join(["coffee first then code"] * 10)
    split = split_tweets(_table(["short one", long, "short two"]), val_fraction=0.0)
    blocks = build_train_blocks(
        split, gpt2_style_tokenizer, block_size=20, epochs=1, seed=0, align=True
    )
    sep = eos_token_id(gpt2_style_tokenizer)
    firsts = [int(b[0]) for b in blocks.blocks]
    assert firsts == [sep] * len(blocks)
    full = [i for i, n in enumerate(blocks.lengths.tolist()) if n == 20]
    assert len(full) == 1  # the long tweet, cut at the block's end
    assert gpt2_style_tokenizer.decode(blocks.blocks[full[0], 1:].tolist()) in long


def test_stream_blocks_stay_huggingtweets_fixed_cuts(gpt2_style_tokenizer, long_tweets) -> None:
    split = split_tweets(_table(long_tweets("t", 30)), val_fraction=0.0)
    fixed = build_train_blocks(split, gpt2_style_tokenizer, block_size=16, epochs=1, seed=0)
    assert fixed.lengths is None
    assert set(fixed[0]) == {"input_ids", "labels"}
    assert build_eval_blocks(split, gpt2_style_tokenizer, block_size=16).lengths is None


# --- what training records ---------------------------------------------------------------------


def test_a_trained_model_records_its_separator_and_aligned_blocks(tiny_model_dir) -> None:
    import json

    from transformers import AutoTokenizer

    record = json.loads((tiny_model_dir / "training.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert record["separator"] == {"id": tokenizer.eos_token_id, "token": "<|endoftext|>"}
    assert record["config"]["align_blocks"] is True
    # Padding is not counted as trained text.
    metrics = record["metrics"]
    assert metrics["train_tokens"] < metrics["train_blocks"] * record["config"]["block_size"]
