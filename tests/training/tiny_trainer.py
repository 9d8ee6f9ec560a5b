"""The Trainer ``train_model`` builds, for the tiny model on a CPU, without training it."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.cleaning import DataTable
from training.train import TrainConfig


def tiny_cpu_trainer(
    tmp_path: Path, table: DataTable, config: TrainConfig, *, epochs: int = 1
) -> tuple[Any, Any, Any]:
    """(the Trainer, the model it trains (LoRA-wrapped with ``config.lora``), its training
    blocks), with the batch size resolved as ``train_model`` resolves it on a CPU."""
    import torch

    from training.basemodels import load_base_model
    from training.dataset import build_eval_blocks, build_train_blocks, split_tweets
    from training.progress import JsonProgress
    from training.train import _make_trainer, _StopFlag, _wrap_lora, resolved_batch_size

    config = replace(config, batch_size=resolved_batch_size(config, "cpu"))
    model, tokenizer = load_base_model("tiny", texts=table.handles[0].kept, models_dir=tmp_path)
    if config.lora:
        model = _wrap_lora(model, config)
    split = split_tweets(table)
    blocks = build_train_blocks(split, tokenizer, block_size=32, epochs=epochs, seed=1)
    trainer, _ = _make_trainer(
        model,
        config,
        blocks,
        build_eval_blocks(split, tokenizer, block_size=32),
        output_dir=tmp_path / "out",
        device=torch.device("cpu"),
        bf16=False,
        reporter=JsonProgress(io.StringIO()),
        stop=_StopFlag(),
        tokens_per_step=32 * config.batch_size,
    )
    return trainer, model, blocks
