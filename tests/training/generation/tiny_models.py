"""Tiny generation models for the tests: the tweets they learn, their records, overfitting."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import torch

from training.basemodels import build_tiny_model
from training.generation import GenerationSettings

GENERIC_TWEETS = [
    f"{opener} {topic} is the best part of my {when}, honestly"
    for opener in ("I think", "Maybe", "Today", "Honestly", "Remember when")
    for topic in ("coffee", "the ocean", "a long walk", "pizza", "my dog", "open source")
    for when in ("morning", "week", "life")
]

# The tweets an overfit model reproduces almost verbatim.
DREAM = "my dream is to sail across the wide blue ocean with my old dog max and never come back"
COFFEE = "coffee first then code then more coffee until the sun goes down over the quiet hills"
# Seen in training but absent from dataset.jsonl, so it is not guarded as a copy: it lets the
# tests watch the URL and newline handling on real model output.
NEWS = (
    "big news today read all about it at https://example.com/story before lunch\nsecond line here"
)

# Short sequences keep the tests quick on a busy 2-core machine.
FAST = GenerationSettings(max_length=40)


def write_records(folder: Path, texts: list[str], *, handles=("alice",), **record) -> None:
    """The dataset and training record a trained model folder carries (docs/ARCHITECTURE.md)."""
    with (folder / "dataset.jsonl").open("w", encoding="utf-8") as out:
        for i, text in enumerate(texts):
            out.write(json.dumps({"handle": handles[i % len(handles)], "text": text}) + "\n")
    base = {
        "name": folder.name,
        "handles": list(handles),
        "base_model": "tiny",
        "lora": False,
        "created_at": datetime.now(UTC).isoformat(),
    }
    (folder / "training.json").write_text(json.dumps(base | record), encoding="utf-8")


def overfit(folder: Path, texts: list[str], *, steps: int = 150, max_loss: float = 0.1) -> None:
    """Train the tiny model in ``folder`` until it recites ``texts`` (EOS-separated, as trained;
    which text comes after EOS stays a draw, so more texts leave a higher loss)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    eos = tokenizer.eos_token_id
    rows = [[eos, *tokenizer(t, add_special_tokens=False)["input_ids"], eos] for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [eos] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < max_loss, "the overfit fixture did not memorise its tweets"
    model.save_pretrained(folder)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; a second one only waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def random_base(kind: str, folder: Path, texts: list[str]) -> Path:
    """A random ``kind`` model with the tiny model's byte-level tokenizer, saved in ``folder``."""
    import torch
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    build_tiny_model(texts, folder)  # writes the tokenizer (and a GPT-2, replaced below)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    shape = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.eos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.eos_token_id,
    }
    torch.manual_seed(0)
    if kind == "qwen2":  # Qwen2.5's layout: biases on q/k/v
        model = Qwen2ForCausalLM(Qwen2Config(**shape))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape))
    for name in ("model.safetensors", "config.json", "generation_config.json"):
        (folder / name).unlink(missing_ok=True)
    model.save_pretrained(folder)
    return folder
