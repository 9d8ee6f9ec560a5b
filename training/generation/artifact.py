"""What both CPU engines' build steps share: a model folder's source stamp, and the held-out
tweets and torch scores their quality checks measure against."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.generation.settings import ADAPTER_CONFIG, TRAINING_FILE

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: The files a model's weights are read from; their sizes and times are part of the source stamp.
_WEIGHT_FILES = (
    ADAPTER_CONFIG,
    "adapter_model.safetensors",
    "adapter_model.bin",
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
)


def source_stamp(model_dir: Path) -> str:
    """A digest of what an engine's artifact is made from: the training record and the
    weight files."""
    digest = hashlib.sha256()
    record = model_dir / TRAINING_FILE
    if record.is_file():
        digest.update(record.read_bytes())
    for name in _WEIGHT_FILES:
        file = model_dir / name
        if file.is_file():
            stat = file.stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def torch_nll(model: Any, rows: list[Any]) -> float:
    """A torch model's negative log-likelihood of each row's tokens after its first (what
    CTranslate2's ``score_batch`` of the same rows scores)."""
    import torch

    with torch.inference_mode():
        return sum(
            float(
                torch.nn.functional.cross_entropy(
                    model(input_ids=row[None]).logits[0, :-1], row[1:], reduction="sum"
                )
            )
            for row in rows
        )


def check_texts(model_dir: Path, texts: list[str]) -> tuple[list[str], list[str]]:
    """(calibration, held-out) tweets: the training's own split when the folder has its data
    table and record, else ``texts`` for both."""
    from training.cleaning import DataTable
    from training.dataset import split_tweets
    from training.errors import DoppeltweetError
    from training.generation.folder import read_training_record

    try:
        config = read_training_record(model_dir).get("config") or {}
        split = split_tweets(
            DataTable.load(model_dir),
            float(config.get("val_fraction", 0.1)),
            seed=int(config.get("seed", 42)),
        )
    except (DoppeltweetError, OSError, ValueError, TypeError):
        return texts, texts
    train = [text for tweets in split.train.values() for text in tweets]
    return (train, split.validation) if train and split.validation else (texts, texts)


def blocks(texts: list[str], tokenizer: PreTrainedTokenizerBase, size: int) -> list[Any]:
    """``texts`` in training's separator-joined stream, cut into blocks of ``size`` tokens."""
    from training.dataset import DatasetSplit, build_eval_blocks

    if not texts:
        return []
    return list(build_eval_blocks(DatasetSplit({}, list(texts)), tokenizer, block_size=size).blocks)
