"""Splits, per-epoch oversampled shuffles, EOS joining and block packing."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import torch

from training.cleaning import DataTable, HandleData
from training.dataset import (
    DatasetSplit,
    PackedBlocks,
    build_eval_blocks,
    build_train_blocks,
    collate_trimmed,
    eos_token_id,
    split_tweets,
)
from training.errors import DataError, InputError, ModelError
from training.handles import Handle


def _table(**tweets_by_handle: list[str]) -> DataTable:
    return DataTable(
        [HandleData(Handle(name), len(t), 0, 0, list(t)) for name, t in tweets_by_handle.items()]
    )


def _tweets_in(blocks: PackedBlocks, tokenizer) -> list[str]:
    """Decode the packed stream back into tweets (split at EOS), in stream order."""
    eos = eos_token_id(tokenizer)
    stream = blocks.blocks.flatten().tolist()
    tweets, current = [], []
    for token in stream:
        if token == eos:
            if current:
                tweets.append(tokenizer.decode(current))
            current = []
        else:
            current.append(token)
    return tweets


# --- split_tweets ------------------------------------------------------------------------------


def test_split_holds_out_ten_percent_of_each_handle_by_tweet(long_tweets) -> None:
    table = _table(a=long_tweets("a", 100), b=long_tweets("b", 30))
    split = split_tweets(table)
    assert len(split.train["a"]) == 90 and len(split.train["b"]) == 27
    assert len(split.validation) == 13
    for name in "ab":
        assert set(split.train[name]) | {v for v in split.validation if v.startswith(name)} == set(
            table.handles["ab".index(name)].kept
        )
        assert not set(split.train[name]) & set(split.validation)


def test_split_is_seeded(long_tweets) -> None:
    table = _table(a=long_tweets("a", 50))
    assert split_tweets(table, seed=1) == split_tweets(table, seed=1)
    assert split_tweets(table, seed=1).validation != split_tweets(table, seed=2).validation


def test_split_keeps_at_least_one_validation_tweet_from_two(long_tweets) -> None:
    split = split_tweets(_table(a=long_tweets("a", 2), b=long_tweets("b", 1)))
    assert len(split.train["a"]) == 1 and len(split.train["b"]) == 1
    assert len(split.validation) == 1 and split.validation[0].startswith("a ")


def test_split_with_zero_fraction_holds_nothing_out(long_tweets) -> None:
    split = split_tweets(_table(a=long_tweets("a", 20)), val_fraction=0.0)
    assert split.validation == [] and len(split.train["a"]) == 20


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_refuses_a_fraction_outside_zero_to_one(fraction: float, long_tweets) -> None:
    with pytest.raises(InputError, match="validation fraction"):
        split_tweets(_table(a=long_tweets("a", 5)), val_fraction=fraction)


# --- eos_token_id ------------------------------------------------------------------------------


def test_eos_is_endoftext_for_a_gpt2_style_tokenizer(gpt2_style_tokenizer) -> None:
    assert eos_token_id(gpt2_style_tokenizer) == gpt2_style_tokenizer.convert_tokens_to_ids(
        "<|endoftext|>"
    )


def test_eos_is_the_models_own_token_otherwise(own_eos_tokenizer) -> None:
    assert eos_token_id(own_eos_tokenizer) == own_eos_tokenizer.convert_tokens_to_ids("</s>")


def test_eos_falls_back_to_endoftext_when_no_eos_is_declared(gpt2_style_tokenizer) -> None:
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=gpt2_style_tokenizer.backend_tokenizer)
    assert bare.eos_token_id is None
    assert eos_token_id(bare) == eos_token_id(gpt2_style_tokenizer)


def test_eos_missing_entirely_is_one_sentence(own_eos_tokenizer) -> None:
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=own_eos_tokenizer.backend_tokenizer)
    with pytest.raises(ModelError, match="no end-of-text token"):
        eos_token_id(bare)


# --- build_train_blocks ------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer_fixture", ["gpt2_style_tokenizer", "own_eos_tokenizer"])
def test_stream_is_eos_joined_without_spaces(request, tokenizer_fixture: str) -> None:
    tokenizer = request.getfixturevalue(tokenizer_fixture)
    split = DatasetSplit(train={"a": ["coffee first", "then code"]})
    blocks = build_train_blocks(split, tokenizer, block_size=10_000, epochs=1, seed=0)
    stream = blocks.blocks[0].tolist()
    eos = eos_token_id(tokenizer)
    encode = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    options = [
        [eos, *encode(x), eos, *encode(y), eos]
        for x, y in (("coffee first", "then code"), ("then code", "coffee first"))
    ]
    assert stream in options
    assert tokenizer.decode(stream).count(tokenizer.convert_ids_to_tokens(eos)) == 3


def test_a_tweet_cannot_forge_the_separator(gpt2_style_tokenizer) -> None:
    split = DatasetSplit(train={"a": ["fake <|endoftext|> separator"]})
    blocks = build_train_blocks(split, gpt2_style_tokenizer, block_size=10_000, epochs=1, seed=0)
    stream = blocks.blocks[0].tolist()
    assert stream.count(eos_token_id(gpt2_style_tokenizer)) == 2


def test_each_epoch_contains_every_tweet_once_for_one_handle(gpt2_style_tokenizer) -> None:
    tweets = [f"tweet {i} about coffee" for i in range(20)]
    blocks = build_train_blocks(
        DatasetSplit(train={"a": tweets}), gpt2_style_tokenizer, block_size=10**6, epochs=4, seed=0
    )
    decoded = _tweets_in(blocks, gpt2_style_tokenizer)
    assert len(decoded) == 80
    for epoch in range(4):
        assert sorted(decoded[epoch * 20 : (epoch + 1) * 20]) == sorted(tweets)


def test_shuffles_differ_per_epoch_and_repeat_with_the_same_seed(gpt2_style_tokenizer) -> None:
    split = DatasetSplit(train={"a": [f"tweet {i} about coffee" for i in range(30)]})

    def build(seed: int) -> PackedBlocks:
        return build_train_blocks(
            split, gpt2_style_tokenizer, block_size=10**6, epochs=3, seed=seed
        )

    decoded = _tweets_in(build(7), gpt2_style_tokenizer)
    epochs = [decoded[i * 30 : (i + 1) * 30] for i in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]
    assert torch.equal(build(7).blocks, build(7).blocks)
    assert not torch.equal(build(7).blocks, build(8).blocks)


def test_smaller_handles_are_oversampled_to_the_largest_by_characters(gpt2_style_tokenizer) -> None:
    big = [f"big tweet {i:02d} " + "x" * 87 for i in range(30)]  # 30 tweets, 3,000 chars
    assert sum(map(len, big)) == 3000
    small = [f"small {i} " + "y" * 42 for i in range(7)]  # 7 tweets, 350 chars
    assert sum(map(len, small)) == 350
    split = DatasetSplit(train={"big": big, "small": small})
    blocks = build_train_blocks(split, gpt2_style_tokenizer, block_size=10**6, epochs=2, seed=3)
    decoded = _tweets_in(blocks, gpt2_style_tokenizer)
    for epoch in range(2):
        n = len(decoded) // 2
        counts = Counter(decoded[epoch * n : (epoch + 1) * n])
        assert all(counts[t] == 1 for t in big)
        small_chars = sum(len(t) * counts[t] for t in small)
        # cycled until the big handle's 3,000 characters are reached, and not one tweet more:
        # 8 full cycles (2,800) plus 4 of the 7 tweets (200)
        assert small_chars == 3000
        assert sorted(counts[t] for t in small) == [8, 8, 8, 9, 9, 9, 9]


def test_oversampling_is_interleaved_not_appended(gpt2_style_tokenizer) -> None:
    split = DatasetSplit(
        train={
            "a": [f"alpha {i} text" for i in range(40)],
            "b": [f"beta {i} text" for i in range(40)],
        }
    )
    decoded = _tweets_in(
        build_train_blocks(split, gpt2_style_tokenizer, block_size=10**6, epochs=1, seed=0),
        gpt2_style_tokenizer,
    )
    first_half = decoded[:40]
    assert 5 < sum(t.startswith("alpha") for t in first_half) < 35


def test_stream_is_packed_into_full_blocks_without_padding(gpt2_style_tokenizer) -> None:
    split = DatasetSplit(train={"a": [f"tweet number {i} about the weather" for i in range(50)]})
    whole = build_train_blocks(split, gpt2_style_tokenizer, block_size=10**6, epochs=2, seed=1)
    total = whole.num_tokens
    blocks = build_train_blocks(split, gpt2_style_tokenizer, block_size=16, epochs=2, seed=1)
    assert blocks.blocks.shape == (total // 16, 16)
    assert blocks.blocks.dtype == torch.long
    assert torch.equal(blocks.blocks.flatten(), whole.blocks[0, : (total // 16) * 16])
    assert len(blocks) == total // 16 and blocks.num_tokens == (total // 16) * 16
    item = blocks[3]
    assert torch.equal(item["input_ids"], blocks.blocks[3])
    assert torch.equal(item["labels"], item["input_ids"])


def test_a_stream_shorter_than_one_block_stays_one_short_block(gpt2_style_tokenizer) -> None:
    split = DatasetSplit(train={"a": ["just one tweet"]})
    blocks = build_train_blocks(split, gpt2_style_tokenizer, block_size=1024, epochs=1, seed=0)
    assert len(blocks) == 1 and 3 <= blocks.blocks.shape[1] < 1024


def test_training_without_tweets_is_one_sentence(gpt2_style_tokenizer) -> None:
    with pytest.raises(DataError, match="no training tweets"):
        build_train_blocks(
            DatasetSplit(train={"a": []}), gpt2_style_tokenizer, block_size=8, epochs=1, seed=0
        )


@pytest.mark.parametrize(("block_size", "epochs"), [(0, 1), (8, 0)])
def test_bad_block_size_or_epochs_is_one_sentence(
    gpt2_style_tokenizer, block_size: int, epochs: int
) -> None:
    with pytest.raises(InputError):
        build_train_blocks(
            DatasetSplit(train={"a": ["x y z"]}),
            gpt2_style_tokenizer,
            block_size=block_size,
            epochs=epochs,
            seed=0,
        )


def test_building_3200_tweets_for_4_epochs_is_fast(gpt2_style_tokenizer, long_tweets) -> None:
    split = DatasetSplit(train={"a": long_tweets("a", 3200), "b": long_tweets("b", 1000)})
    tokenized = {}
    real_call = type(gpt2_style_tokenizer).__call__

    def counting_call(self, texts, **kwargs):
        tokenized["calls"] = tokenized.get("calls", 0) + 1
        start = time.process_time()
        result = real_call(self, texts, **kwargs)
        tokenized["seconds"] = time.process_time() - start
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(gpt2_style_tokenizer), "__call__", counting_call)
        start = time.process_time()
        blocks = build_train_blocks(split, gpt2_style_tokenizer, block_size=1024, epochs=4, seed=0)
        elapsed = time.process_time() - start
    assert tokenized["calls"] == 1  # every tweet tokenized once, in one batch
    assert elapsed - tokenized["seconds"] < 1.0
    assert len(blocks) > 100


# --- build_eval_blocks -------------------------------------------------------------------------


def test_eval_blocks_are_one_pass_in_the_same_format(own_eos_tokenizer) -> None:
    split = DatasetSplit(train={"a": ["ignored"]}, validation=["coffee first", "then code"])
    blocks = build_eval_blocks(split, own_eos_tokenizer, block_size=10_000)
    assert _tweets_in(blocks, own_eos_tokenizer) == ["coffee first", "then code"]
    assert blocks.blocks[0, 0] == blocks.blocks[0, -1] == eos_token_id(own_eos_tokenizer)


def test_eval_blocks_without_validation_tweets_are_empty(gpt2_style_tokenizer) -> None:
    blocks = build_eval_blocks(DatasetSplit(train={"a": ["x"]}), gpt2_style_tokenizer, block_size=8)
    assert len(blocks) == 0 and blocks.blocks.shape == (0, 8)


def test_aligned_eval_blocks_open_every_block_with_a_tweet_and_mask_the_padding(
    gpt2_style_tokenizer,
) -> None:
    tweets = [f"tea {i} and" + " biscuits" * (i % 4) for i in range(12)]
    split = DatasetSplit(train={"a": ["ignored"]}, validation=tweets)
    eos = eos_token_id(gpt2_style_tokenizer)
    blocks = build_eval_blocks(split, gpt2_style_tokenizer, block_size=40, align=True)
    assert blocks.lengths is not None and len(blocks) > 1
    assert (blocks.blocks[:, 0] == eos).all()  # every block opens a tweet after the separator
    # Every validation tweet once, whole, in order (none starts or ends in another block).
    text_only = PackedBlocks(
        torch.stack(
            [
                b.masked_fill(torch.arange(40) >= n, eos)
                for b, n in zip(blocks.blocks, blocks.lengths, strict=True)
            ]
        )
    )
    assert _tweets_in(text_only, gpt2_style_tokenizer) == tweets
    for index in range(len(blocks)):
        labels = blocks[index]["labels"]
        n = int(blocks.lengths[index])
        assert (labels[n:] == -100).all() and (labels[:n] != -100).all()
    # The fixed cuts of the same split start mid-tweet.
    fixed = build_eval_blocks(split, gpt2_style_tokenizer, block_size=40)
    assert fixed.lengths is None and not (fixed.blocks[:, 0] == eos).all()


def test_a_batch_is_cut_after_its_last_text_column_and_its_loss_does_not_change(
    gpt2_style_tokenizer,
) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    tweets = [f"tea {i} and" + " biscuits" * (i % 4) for i in range(12)]
    split = DatasetSplit(train={"a": ["ignored"]}, validation=tweets)
    blocks = build_eval_blocks(split, gpt2_style_tokenizer, block_size=40, align=True)
    rows = [blocks[i] for i in range(2)]
    batch = collate_trimmed(rows)
    longest = int(blocks.lengths[:2].max())
    assert longest < 40 and batch["input_ids"].shape == (2, longest)
    assert torch.equal(batch["input_ids"], torch.stack([r["input_ids"] for r in rows])[:, :longest])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(gpt2_style_tokenizer), n_embd=32, n_layer=2, n_head=2)
    ).eval()
    whole = {key: torch.stack([r[key] for r in rows]) for key in ("input_ids", "labels")}
    with torch.no_grad():
        assert model(**batch).loss.item() == pytest.approx(model(**whole).loss.item(), rel=1e-5)
    # Fixed cuts hold no padding: their batches pass whole.
    fixed = build_eval_blocks(split, gpt2_style_tokenizer, block_size=40)
    assert collate_trimmed([fixed[0], fixed[1]])["input_ids"].shape == (2, 40)


def test_aligned_eval_blocks_without_validation_tweets_are_empty(gpt2_style_tokenizer) -> None:
    split = DatasetSplit(train={"a": ["x"]})
    blocks = build_eval_blocks(split, gpt2_style_tokenizer, block_size=8, align=True)
    assert len(blocks) == 0 and blocks.num_tokens == 0


def test_packed_blocks_work_with_a_dataloader(gpt2_style_tokenizer) -> None:
    split = DatasetSplit(train={"a": [f"tweet {i} about tea" for i in range(40)]})
    blocks = build_train_blocks(split, gpt2_style_tokenizer, block_size=8, epochs=1, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(blocks, batch_size=4)))
    assert batch["input_ids"].shape == (4, 8) and torch.equal(batch["labels"], batch["input_ids"])


def test_a_handle_of_empty_strings_does_not_break_oversampling(gpt2_style_tokenizer) -> None:
    split = DatasetSplit(train={"a": ["", ""], "b": ["coffee first"]})
    blocks = build_train_blocks(split, gpt2_style_tokenizer, block_size=10**6, epochs=1, seed=0)
    assert _tweets_in(blocks, gpt2_style_tokenizer) == ["coffee first"]
    assert blocks.blocks[0].tolist().count(eos_token_id(gpt2_style_tokenizer)) == 4
