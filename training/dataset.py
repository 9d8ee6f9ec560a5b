"""Turn cleaned tweets into the token blocks huggingtweets trained on.

huggingtweets wrote every epoch as ``EOS t1 EOS t2 … EOS`` (no spaces around EOS) with a fresh
shuffle per epoch, oversampled each handle up to the largest handle's character count so that no
handle drowns out another, and cut the token stream into fixed blocks. We do the same, with two
choices made explicit: each tweet is tokenized once (the epochs only reorder token ids), and
consecutive epochs share their boundary EOS, so the whole stream is ``EOS t… EOS t… EOS`` without a
doubled EOS.

The blocks are in epoch order: a trainer must iterate them sequentially (no sampler shuffle), or
the per-epoch shuffles and the oversampling would be undone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from training.cleaning import DataTable
from training.errors import DataError, InputError, ModelError

GPT2_EOS = "<|endoftext|>"


@dataclass
class DatasetSplit:
    """Training tweets per handle (for per-handle oversampling) and pooled validation tweets."""

    train: dict[str, list[str]]
    validation: list[str] = field(default_factory=list)


def split_tweets(table: DataTable, val_fraction: float = 0.1, seed: int = 42) -> DatasetSplit:
    """Hold out ``val_fraction`` of each handle's tweets (at least one when it has two or more).

    The split is by tweet, not by block, so no validation tweet is ever half-seen in training; it is
    seeded per handle so adding a handle does not reshuffle the others.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(
            f"The validation fraction must be at least 0 and below 1, not {val_fraction}."
        )
    train: dict[str, list[str]] = {}
    validation: list[str] = []
    for data in table.handles:
        tweets = list(data.kept)
        n_val = round(len(tweets) * val_fraction)
        if val_fraction > 0 and len(tweets) >= 2:
            n_val = min(max(n_val, 1), len(tweets) - 1)
        held_out = set(
            random.Random(f"{seed}:{data.handle.name}").sample(range(len(tweets)), n_val)
        )
        train[data.handle.name] = [t for i, t in enumerate(tweets) if i not in held_out]
        validation.extend(t for i, t in enumerate(tweets) if i in held_out)
    return DatasetSplit(train, validation)


def eos_token_id(tokenizer: Any) -> int:
    """The id between tweets: the model's own EOS, else GPT-2's ``<|endoftext|>`` if it has one."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        return eos
    vocab = tokenizer.get_vocab()
    if GPT2_EOS in vocab:
        return int(vocab[GPT2_EOS])
    raise ModelError(
        f"The tokenizer has no end-of-text token (neither an EOS token nor {GPT2_EOS}), "
        "so tweets cannot be separated."
    )


def separator_token_id(tokenizer: Any) -> int:
    """The id training puts between tweets (and generation starts a tweet after).

    ``<|endoftext|>`` when the tokenizer has it as a special token: GPT-2's EOS, and the document
    separator SmolLM2 and Qwen were pretrained with. A chat model's EOS is an end of turn
    (SmolLM2-Instruct's ``<|im_end|>``, after which it expects ``<|im_start|>``), so starting a
    tweet after it starts from a context the base never saw at the head of a text. Any other
    tokenizer: its own EOS (:func:`eos_token_id`). ``training.json`` records the choice
    (:func:`separator_record`) and generation reads it back (:func:`recorded_separator_id`).
    """
    special = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    added = getattr(tokenizer, "get_added_vocab", None)
    if callable(added):
        special |= set(added())
    if GPT2_EOS in special:
        # SmolLM2 names it its unknown token as well: still the token, so checked by its text.
        token_id = tokenizer.convert_tokens_to_ids(GPT2_EOS)
        if isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == GPT2_EOS:
            return token_id
    return eos_token_id(tokenizer)


def separator_record(tokenizer: Any, separator_id: int) -> dict[str, Any]:
    """What ``training.json`` keeps about the separator: its id and its token's text."""
    return {"id": separator_id, "token": tokenizer.convert_ids_to_tokens(separator_id)}


def recorded_separator_id(record: dict[str, Any], tokenizer: Any) -> int:
    """The separator a model was trained with: ``record["separator"]`` (what ``training.json``
    says), or, for a model trained before it was recorded, the tokenizer's EOS (what training
    used then). ModelError when the record names a token the tokenizer does not have."""
    entry = record.get("separator")
    if entry is None:
        return eos_token_id(tokenizer)
    token_id = entry.get("id") if isinstance(entry, dict) else None
    token = entry.get("token") if isinstance(entry, dict) else None
    if (
        isinstance(token_id, bool)
        or not isinstance(token_id, int)
        or not isinstance(token, str)
        or not 0 <= token_id < len(tokenizer)
        or tokenizer.convert_ids_to_tokens(token_id) != token
    ):
        raise ModelError(
            f"The tweet separator in training.json ({entry!r}) is not a token of this model's "
            "tokenizer; train the model again."
        )
    return token_id


class PackedBlocks(Dataset):
    """Fixed-size token blocks, each a causal-LM example whose labels are its inputs.

    ``lengths`` (tweet-aligned blocks): how many leading tokens of each block are text; the rest
    is padding, masked out of the loss. It needs no attention mask: it comes after every text
    token, and causal attention never looks ahead (so the fast causal kernels stay in use).
    """

    def __init__(self, blocks: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        if blocks.dim() != 2 or blocks.dtype != torch.long:
            raise ValueError("blocks must be a 2-D LongTensor [n_blocks, block_size].")
        if lengths is not None and lengths.shape != (blocks.shape[0],):
            raise ValueError("lengths must hold one length per block.")
        self.blocks = blocks
        self.lengths = lengths

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        block = self.blocks[index]
        if self.lengths is None:
            return {"input_ids": block, "labels": block}
        pad = torch.arange(block.shape[0]) >= self.lengths[index]
        return {"input_ids": block, "labels": block.masked_fill(pad, -100)}

    @property
    def num_tokens(self) -> int:
        """Text tokens the blocks hold (what one pass over them trains on; padding not counted)."""
        if self.lengths is None:
            return self.blocks.numel()
        return int(self.lengths.sum())


def collate_trimmed(features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack ``features`` (``PackedBlocks`` items) into a batch, cut after the last column that
    holds text in any row: a tweet-aligned block's trailing padding is out of the loss and,
    attention being causal, seen by no text token, so computing it is waste (about a tenth of
    each block). Fixed cuts have no padding and pass whole."""
    input_ids = torch.stack([feature["input_ids"] for feature in features])
    labels = torch.stack([feature["labels"] for feature in features])
    text = (labels != -100).any(dim=0).nonzero()
    end = int(text.max()) + 1 if len(text) else labels.shape[1]
    return {"input_ids": input_ids[:, :end], "labels": labels[:, :end]}


@dataclass
class _Tokenized:
    """Every tweet tokenized once, as units ``EOS t``; an epoch is a selection of units."""

    units: torch.Tensor  # all units back to back: EOS t1 EOS t2 …
    offsets: torch.Tensor  # where each tweet's unit starts in ``units``
    lengths: torch.Tensor  # each unit's length (the tweet's tokens + 1)
    eos: int


def _tokenize(tokenizer: Any, texts: Sequence[str]) -> _Tokenized:
    eos = separator_token_id(tokenizer)
    # split_special_tokens: a tweet that literally says "<|endoftext|>" must not forge a separator.
    ids = tokenizer(
        list(texts),
        add_special_tokens=False,
        return_attention_mask=False,
        split_special_tokens=True,
    )["input_ids"]
    lengths = torch.tensor([len(x) + 1 for x in ids], dtype=torch.long)
    units = torch.tensor([t for x in ids for t in (eos, *x)], dtype=torch.long)
    return _Tokenized(units, torch.cumsum(lengths, 0) - lengths, lengths, eos)


def _eos_stream(tok: _Tokenized, order: torch.Tensor) -> torch.Tensor:
    """``EOS t[o0] EOS t[o1] … EOS`` for the tweets selected by ``order``, as one gather."""
    counts = tok.lengths[order]
    total = int(counts.sum())
    # Position p of the output, inside the unit that starts at s, reads units[offset + p - s].
    shift = torch.repeat_interleave(tok.offsets[order] - (torch.cumsum(counts, 0) - counts), counts)
    body = tok.units[shift + torch.arange(total)]
    return torch.cat([body, torch.tensor([tok.eos], dtype=torch.long)])


def _pack_aligned(tok: _Tokenized, order: torch.Tensor, block_size: int) -> PackedBlocks:
    """Tweet-aligned blocks: each starts with EOS and a tweet's first token, holds whole tweets
    (``EOS t EOS t … EOS``) and is padded after its closing EOS (the padding is left out of the
    loss); a tweet that does not fit starts the next block. A tweet longer than a block gets a
    block of its own, cut at the block's end.

    So every block trains exactly what prompt-less generation asks (a tweet's opening after EOS
    at the head of the text), where fixed blocks of the stream start mid-tweet, and EOS is
    first in only ~1 block of 25.
    """
    blocks: list[torch.Tensor] = []
    lengths: list[int] = []
    current: list[torch.Tensor] = []
    used = 0

    def close() -> None:
        nonlocal current, used
        if not current:
            return
        body = torch.cat([*current, torch.tensor([tok.eos], dtype=torch.long)])[:block_size]
        lengths.append(len(body))
        pad = torch.full((block_size - len(body),), tok.eos, dtype=torch.long)
        blocks.append(torch.cat([body, pad]))
        current, used = [], 0

    for index in order.tolist():
        start, length = int(tok.offsets[index]), int(tok.lengths[index])
        if current and used + length + 1 > block_size:
            close()
        current.append(tok.units[start : start + length])
        used += length
        if used + 1 >= block_size:
            close()
    close()
    if not blocks:
        return PackedBlocks(
            torch.zeros((0, block_size), dtype=torch.long), torch.zeros(0, dtype=torch.long)
        )
    return PackedBlocks(torch.stack(blocks), torch.tensor(lengths, dtype=torch.long))


def _check_block_size(block_size: int) -> None:
    if block_size < 1:
        raise InputError(f"The block size must be a positive number of tokens, not {block_size}.")


def _pack(stream: torch.Tensor, block_size: int) -> PackedBlocks:
    """Cut the stream into full blocks (remainder dropped); a stream under one block stays whole."""
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        return PackedBlocks(stream.clone().unsqueeze(0))
    return PackedBlocks(stream[: n_blocks * block_size].clone().view(n_blocks, block_size))


def _oversampled(chars: torch.Tensor, target: int, generator: torch.Generator) -> torch.Tensor:
    """Local indices of one handle's tweets for one epoch: whole cycles plus a shuffled part."""
    n = len(chars)
    total = int(chars.sum())
    if total == 0:  # only empty strings: nothing to balance, take each once
        return torch.arange(n)
    cycles, rest = divmod(target, total)
    parts = [torch.arange(n).repeat(cycles)]
    if rest:
        extra = torch.randperm(n, generator=generator)
        taken = int(torch.searchsorted(torch.cumsum(chars[extra], 0), rest)) + 1
        parts.append(extra[:taken])
    return torch.cat(parts)


def build_train_blocks(
    split: DatasetSplit,
    tokenizer: Any,
    *,
    block_size: int,
    epochs: int,
    seed: int,
    align: bool = False,
) -> PackedBlocks:
    """All epochs of training text as blocks, in epoch order (iterate them sequentially).

    Per epoch every handle is cycled up to the largest handle's character count, then the pooled
    tweets get a fresh shuffle seeded with ``seed + epoch``: the same seed gives the same blocks.
    ``align``: tweet-aligned, padded blocks (:func:`_pack_aligned`) instead of huggingtweets'
    fixed cuts of the stream.
    """
    _check_block_size(block_size)
    if epochs < 1:
        raise InputError(f"Train for at least one epoch, not {epochs}.")
    handles = [name for name, tweets in split.train.items() if tweets]
    if not handles:
        raise DataError("There are no training tweets left after the validation split.")
    tok = _tokenize(tokenizer, [t for name in handles for t in split.train[name]])

    starts, chars = [], []
    start = 0
    for name in handles:
        starts.append(start)
        chars.append(torch.tensor([len(t) for t in split.train[name]], dtype=torch.long))
        start += len(split.train[name])
    target = max(int(c.sum()) for c in chars)

    orders = []
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(seed + epoch)
        picked = torch.cat(
            [
                first + _oversampled(c, target, generator)
                for first, c in zip(starts, chars, strict=True)
            ]
        )
        orders.append(picked[torch.randperm(len(picked), generator=generator)])
    if align:
        return _pack_aligned(tok, torch.cat(orders), block_size)
    return _pack(_eos_stream(tok, torch.cat(orders)), block_size)


def build_eval_blocks(
    split: DatasetSplit, tokenizer: Any, *, block_size: int, align: bool = False
) -> PackedBlocks:
    """The validation tweets once, in order; no tweets gives no blocks.

    Default: huggingtweets' fixed cuts of the stream (blocks start mid-tweet; the same for every
    recipe). ``align``: tweet-aligned blocks packed exactly as training packs them
    (:func:`_pack_aligned`: each starts with the separator and a tweet's opening, the padding is
    left out of the loss), so the loss measures what aligned training optimises.
    """
    _check_block_size(block_size)
    if not split.validation:
        empty = torch.zeros((0, block_size), dtype=torch.long)
        return PackedBlocks(empty, torch.zeros(0, dtype=torch.long) if align else None)
    tok = _tokenize(tokenizer, split.validation)
    order = torch.arange(len(split.validation))
    if align:
        return _pack_aligned(tok, order, block_size)
    return _pack(_eos_stream(tok, order), block_size)
