"""Fine-tune a causal LM on one model's tweets with huggingtweets' recipe, and store the result.

The steps, top to bottom in :func:`train_model`:

1. load the base model (``training.basemodels``) and, with ``lora``, wrap it in a peft adapter;
2. split the tweets 90/10 by tweet and pack every epoch's seeded shuffle into fixed token
   blocks (``training.dataset``); the blocks are already in epoch order, so the Trainer makes ONE
   sequential pass over them (a random sampler would undo the per-epoch shuffles and the
   oversampling);
3. measure validation loss / perplexity (on fixed cuts of the validation tweets and on
   tweet-aligned blocks of them), train (AdamW, cosine, optionally warmed up; bf16 autocast
   where the device computes it natively, else fp32) for the epochs or, with a time budget,
   for the steps that fit it (``training.budget``), measure again;
4. write weights, tokenizer, dataset, ``training.json``, ``loss.png`` and the model card into a
   staging folder and swap it in atomically (``training.store``).

SIGTERM and SIGINT stop training at the next step boundary; nothing is saved and the previous model
stays in place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import platform
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.budget import EVAL_AFTER_FACTOR, StepBudget, save_reserve_s
from training.errors import DoppeltweetError, InputError, ModelError
from training.progress import ProgressReporter
from training.store import CARD_FILE, LOSS_PLOT_FILE, TRAINING_FILE, ModelInfo, ModelStore

if TYPE_CHECKING:
    import torch

    from training.cleaning import DataTable
    from training.dataset import DatasetSplit

log = logging.getLogger(__name__)

#: huggingtweets' learning rate, found by their sweep for GPT-2 on tweets (full fine-tunes).
HUGGINGTWEETS_LR = 1.372e-4
#: The learning rate of a LoRA adapter when none is given: adapters start at zero and train only
#: a few million weights, so they need a rate >10x a full fine-tune's (docs/training.md compares).
DEFAULT_LORA_LR = 2e-3
#: Which layers a LoRA adapter trains: every attention projection, or every linear layer.
LORA_TARGETS = ("attention", "all-linear")
#: How a LoRA adapter starts, by ``TrainConfig.lora_init``: peft's default (B = 0, so the model
#: starts as the base), PiSSA (the adapter holds each weight's principal singular directions,
#: found with 4 subspace iterations) or OLoRA (a QR decomposition of each weight). The last two
#: move those directions out of the base weights while training; the saved adapter is converted
#: back to a plain LoRA of twice the rank on the unchanged base.
LORA_INITS: dict[str, bool | str] = {"default": True, "pissa": "pissa_niter_4", "olora": "olora"}
#: ``TrainConfig.precision`` values.
PRECISIONS = ("auto", "fp32", "bf16")
#: GPT-2's window, used when a model's config does not say its own.
MAX_BLOCK_SIZE = 1024
#: Tokens per training block by default (or the model's window, if smaller). huggingtweets trained
#: on one 1,024-token block per step; the default step is the same 1,024 tokens as 8 blocks of 128.
#: A block still holds ~5 tweets (they average ~23 tokens) and more than any generation reads
#: (a tweet of 280 characters is rarely over 100 tokens), while attention's cost, which grows with
#: the block, shrinks: on CPU a step trains 1.3x (SmolLM2) to 1.65x (GPT-2) more tokens per second.
DEFAULT_BLOCK_SIZE = 128
#: Blocks per step by default: 8 x 128 = huggingtweets' 1,024 tokens per optimizer step.
DEFAULT_BATCH_SIZE = 8
#: Blocks per step when a time budget decides the steps on a CPU: a CPU trains as many tokens a
#: second one block at a time as eight, and within a budget eight times the steps learn more
#: (docs/training.md, *A time budget*).
BUDGET_CPU_BATCH_SIZE = 1
#: The adapters' dropout unless a time budget decides the steps on a CPU (then none).
DEFAULT_LORA_DROPOUT = 0.05
#: Blocks per evaluation step, whatever the training batch: the validation loss is a mean of
#: per-batch means, so a fixed evaluation batch keeps perplexities comparable between runs.
EVAL_BATCH_SIZE = DEFAULT_BATCH_SIZE
#: huggingtweets' epochs: all of them without a time budget, the cap with one.
DEFAULT_EPOCHS = 4
REPORT_TO = ("none", "wandb", "tensorboard")
TRAINING_FORMAT = 1

# LoRA targets by architecture: every attention projection (peft's own defaults cover only some).
_LORA_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "phi3": ["qkv_proj", "o_proj"],
    "gpt_neox": ["query_key_value", "dense"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj"],
}


class TrainingStopped(ModelError):
    """Training was interrupted by SIGTERM/SIGINT; nothing was saved."""

    exit_code = 130


@dataclass
class TrainConfig:
    """Everything that decides a run; recorded verbatim in ``training.json``."""

    base_model: str = "gpt2"
    lora: bool = False
    epochs: int = DEFAULT_EPOCHS
    #: ``None``: huggingtweets' 1.372e-4 for a full fine-tune, ``DEFAULT_LORA_LR`` for LoRA.
    learning_rate: float | None = None
    #: Tokens per block; ``None`` means min(``DEFAULT_BLOCK_SIZE``, the model's window).
    block_size: int | None = None
    #: Blocks per step; ``None``: ``BUDGET_CPU_BATCH_SIZE`` when a time budget decides the steps
    #: on a CPU, else ``DEFAULT_BATCH_SIZE`` (huggingtweets' 1,024 tokens per step).
    batch_size: int | None = None
    max_steps: int | None = None
    #: Wall-clock seconds for the whole run, loading to saved model (``None``: no budget, train
    #: every epoch); the steps that fit are measured on the first ones (``training.budget``).
    #: ``epochs`` and ``max_steps`` still cap it.
    time_budget_s: float | None = None
    seed: int = 42
    val_fraction: float = 0.1
    report_to: str = "none"
    lora_r: int = 16
    lora_alpha: int = 32
    #: ``None``: ``DEFAULT_LORA_DROPOUT``, or 0 when a time budget decides the steps on a CPU
    #: (such a run reads most tweets once, and the dropout masks cost a sixth of a CPU step).
    lora_dropout: float | None = None
    #: ``attention`` (every attention projection) or ``all-linear`` (attention and MLP).
    lora_targets: str = "all-linear"
    #: LoRA+: the learning rate of the adapters' B matrices is this many times A's (1: off), by
    #: peft's ``create_loraplus_optimizer``.
    loraplus_lr_ratio: float = 1.0
    #: rsLoRA: scale the adapter by alpha/sqrt(r) instead of alpha/r.
    use_rslora: bool = False
    #: How the adapter starts: one of ``LORA_INITS``.
    lora_init: str = "default"
    #: Adapt only the top N transformer layers (``None``: all); the backward pass then stops
    #: at the lowest adapted layer.
    lora_layers: int | None = None
    #: The share of the steps over which the learning rate rises linearly from 0 to its peak
    #: before the cosine (0: none, huggingtweets' schedule).
    warmup_ratio: float = 0.0
    #: Compile the model with ``torch.compile`` (the Trainer's ``torch_compile``).
    torch_compile: bool = False
    #: One of ``PRECISIONS``: ``auto`` trains and evaluates in bf16 autocast over fp32 weights
    #: where the device computes bf16 natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX),
    #: else in fp32; ``fp32`` always in fp32; ``bf16`` insists on bf16.
    precision: str = "auto"
    #: Tweet-aligned blocks (each starts with EOS and a tweet's opening, padded after its last
    #: whole tweet) instead of huggingtweets' fixed cuts of the stream, which start mid-tweet:
    #: prompt-less generation opens a tweet after EOS at the head of the text, which fixed cuts
    #: almost never train (docs/training.md, *Choosing the recipe*).
    align_blocks: bool = True
    #: Stop when the validation loss has not improved for this many evaluations (0: never) and
    #: keep the best weights seen; the loss is measured every ``eval_steps`` steps.
    early_stopping_patience: int = 0
    eval_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    #: The Hub repository the model will be pushed to (only used for the card's snippet).
    hub_repo: str | None = None
    #: Prompt-less tweets the new model writes for the card's real-vs-generated table (0: none).
    likeness_samples: int = 20

    @property
    def effective_learning_rate(self) -> float:
        """The rate training uses: the one given, else the default of the method (full/LoRA)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LORA_LR if self.lora else HUGGINGTWEETS_LR

    def validate(self) -> None:
        """Refuse nonsensical values before any expensive work starts."""
        rate = self.effective_learning_rate
        checks = [
            (self.epochs >= 1, f"Train for at least one epoch, not {self.epochs}."),
            (
                rate > 0 and math.isfinite(rate),
                f"The learning rate must be a positive number, not {rate}.",
            ),
            (
                self.block_size is None or 8 <= self.block_size <= 32768,
                f"The block size must be between 8 and 32768 tokens, not {self.block_size}.",
            ),
            (
                self.batch_size is None or 1 <= self.batch_size <= 1024,
                f"The batch size must be between 1 and 1024, not {self.batch_size}.",
            ),
            (
                self.max_steps is None or self.max_steps >= 1,
                f"--max-steps must be at least 1, not {self.max_steps}.",
            ),
            (
                self.time_budget_s is None
                or (math.isfinite(self.time_budget_s) and self.time_budget_s > 0),
                f"The time budget must be a positive number of seconds, not {self.time_budget_s}.",
            ),
            (
                0.0 <= self.val_fraction < 0.5,
                "The validation fraction must be at least 0 and below 0.5, "
                f"not {self.val_fraction}.",
            ),
            (
                self.report_to in REPORT_TO,
                f"--report-to must be one of {', '.join(REPORT_TO)}, not {self.report_to!r}.",
            ),
            (self.lora_r >= 1, f"The LoRA rank must be at least 1, not {self.lora_r}."),
            (
                0 <= self.likeness_samples <= 20,
                f"Write 0 to 20 comparison tweets, not {self.likeness_samples}.",
            ),
            (
                self.lora_dropout is None or 0.0 <= self.lora_dropout < 1.0,
                "The LoRA dropout must be in [0, 1).",
            ),
            (
                self.lora_targets in LORA_TARGETS,
                f"The LoRA targets must be one of {', '.join(LORA_TARGETS)}, "
                f"not {self.lora_targets!r}.",
            ),
            (
                self.early_stopping_patience >= 0,
                "The early-stopping patience must be 0 (off) or more evaluations, "
                f"not {self.early_stopping_patience}.",
            ),
            (self.eval_steps >= 1, f"Evaluate every 1 or more steps, not {self.eval_steps}."),
            (
                math.isfinite(self.loraplus_lr_ratio) and self.loraplus_lr_ratio >= 1,
                f"The LoRA+ learning-rate ratio must be 1 (off) or more, "
                f"not {self.loraplus_lr_ratio}.",
            ),
            (
                self.precision in PRECISIONS,
                f"The precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}.",
            ),
            (
                self.lora_init in LORA_INITS,
                f"The LoRA initialisation must be one of {', '.join(LORA_INITS)}, "
                f"not {self.lora_init!r}.",
            ),
            (
                self.lora_layers is None or self.lora_layers >= 1,
                f"Adapt at least the top 1 layer, not {self.lora_layers}.",
            ),
            (
                0.0 <= self.warmup_ratio <= 0.5,
                f"The warm-up must be a share of the steps from 0 to 0.5, not {self.warmup_ratio}.",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        lora_only = {
            "--loraplus-ratio": self.loraplus_lr_ratio != 1.0,
            "--rslora": self.use_rslora,
            "--lora-init": self.lora_init != "default",
            "--lora-layers": self.lora_layers is not None,
        }
        given = [flag for flag, on in lora_only.items() if on]
        if given and not self.lora:
            raise InputError(
                f"{', '.join(given)} shape a LoRA adapter: add --lora or leave them out."
            )
        if self.report_to != "none" and not _tracker_installed(self.report_to):
            raise InputError(
                f"--report-to {self.report_to} needs the {self.report_to} package: "
                f"run `pip install {self.report_to}` or leave --report-to out."
            )


def _tracker_installed(name: str) -> bool:
    import importlib.util

    if name == "tensorboard":
        return any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX"))
    return importlib.util.find_spec(name) is not None


def train_model(
    table: DataTable,
    config: TrainConfig,
    store: ModelStore,
    reporter: ProgressReporter,
    *,
    started: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    languages: dict[str, Any] | None = None,
) -> ModelInfo:
    """Fine-tune ``config.base_model`` on ``table``'s tweets and install it in ``store``.

    ``config.time_budget_s`` counts from ``started`` (a ``clock`` reading: the CLI passes the
    moment it began, so fetching counts too; default: now); ``clock`` is injectable for tests.
    ``languages`` (the person's main languages and what the base writes, from
    ``doppeltweet train``) is kept in ``training.json`` and shown in the card.
    Raises :class:`TrainingStopped` on SIGTERM/SIGINT and another :class:`ModelError` /
    :class:`InputError` for anything a user can fix; the store keeps the previous model then.
    A full disk (while caching the base model or saving the new one) is one such sentence.
    """
    try:
        return _train_model(
            table,
            config,
            store,
            reporter,
            clock() if started is None else started,
            clock,
            languages,
        )
    except Exception as error:
        if isinstance(error, DoppeltweetError) or not _out_of_space(error):
            raise
        raise ModelError(
            f"The disk ran out of room while training {table.model_name}, so nothing new was "
            "saved and the previous model was kept; free some space and train again."
        ) from error


def _train_model(
    table: DataTable,
    config: TrainConfig,
    store: ModelStore,
    reporter: ProgressReporter,
    started_at: float,
    clock: Callable[[], float],
    languages: dict[str, Any] | None,
) -> ModelInfo:
    config.validate()
    name = table.model_name
    started = time.monotonic()
    timings: dict[str, float] = {}
    with (
        _stop_on_signals() as stop,
        store.staging(name) as staging,
        contextlib.ExitStack() as cleanup,
    ):
        from training.basemodels import load_base_model, pick_device
        from training.dataset import (
            DatasetSplit,
            build_eval_blocks,
            build_train_blocks,
            separator_record,
            separator_token_id,
            split_tweets,
        )

        device = pick_device()
        config = resolved_for_device(config, device.type)
        reporter.phase("loading", f"loading base model {config.base_model}")
        t0 = time.monotonic()
        _seed_everything(config.seed)
        texts = [text for data in table.handles for text in data.kept]
        model, tokenizer = load_base_model(
            config.base_model, texts=texts, models_dir=store.root, device=None
        )
        # GPT-2's class name does not reveal it is a causal LM, so transformers falls back to the
        # causal loss but the Trainer then counts every label instead of the shifted ones,
        # under-reporting the loss (and perplexity) by a factor (T-1)/T. Say it explicitly.
        if getattr(model, "loss_type", None) is None:
            model.loss_type = "ForCausalLM"
        fuse_activations(model)
        window = _model_window(model)
        block_size = config.block_size or min(DEFAULT_BLOCK_SIZE, window)
        if block_size > window:
            raise InputError(
                f"The block size {block_size} is longer than {config.base_model}'s context of "
                f"{window} tokens; use --block-size {window} or less."
            )
        base_for_record = _base_path_for_lora(config, store)
        if config.lora:
            model = _wrap_lora(model, config)
        initial_adapter: Path | None = None
        if config.lora and config.lora_init != "default":
            initial_adapter = Path(
                cleanup.enter_context(tempfile.TemporaryDirectory(prefix="doppeltweet-lora-init-"))
            )
            save_initial_adapter(model, initial_adapter)
        split = split_tweets(table, config.val_fraction, seed=config.seed)
        train_blocks = build_train_blocks(
            split,
            tokenizer,
            block_size=block_size,
            epochs=config.epochs,
            seed=config.seed,
            align=config.align_blocks,
        )
        # huggingtweets' fixed cuts of the validation tweets: measured unless a time budget runs
        # tweet-aligned training, where the tweet-aligned perplexity says it all and the second
        # pair of evaluations would cost a tenth of the budget.
        fixed_cuts = config.time_budget_s is None or not config.align_blocks
        eval_blocks = build_eval_blocks(
            split if fixed_cuts else DatasetSplit(train=split.train),
            tokenizer,
            block_size=block_size,
        )
        # The validation tweets packed as aligned training packs them (each block opens a tweet
        # after the separator, padding left out of the loss): measured whatever the recipe.
        tweet_eval_blocks = build_eval_blocks(split, tokenizer, block_size=block_size, align=True)
        # Early stopping watches the loss of the blocks training optimises.
        stopping_blocks = tweet_eval_blocks if config.align_blocks else eval_blocks
        timings["load_s"] = time.monotonic() - t0
        stop.check()

        use_bf16 = resolved_bf16(config, device)
        budget = _budget(config, train_blocks, clock, device)
        with tempfile.TemporaryDirectory(prefix="doppeltweet-trainer-") as scratch:
            output_dir = _output_dir(config, store, name, Path(scratch))
            trainer, recorder = _make_trainer(
                model,
                config,
                train_blocks,
                stopping_blocks,
                output_dir=output_dir,
                device=device,
                bf16=use_bf16,
                reporter=reporter,
                stop=stop,
                tokens_per_step=block_size * config.batch_size,
                budget=budget,
            )
            t0, clock_t0 = time.monotonic(), clock()
            reporter.phase("evaluating", "validation loss before training")
            val_before = _evaluate(trainer, eval_blocks, recorder, stopping_blocks is eval_blocks)
            tweet_before = _evaluate(
                trainer, tweet_eval_blocks, recorder, stopping_blocks is tweet_eval_blocks
            )
            timings["evaluate_before_s"] = time.monotonic() - t0
            stop.check()
            if budget is not None:
                # The evaluation after training takes up to half as long again as the one before.
                evaluation_s = clock() - clock_t0
                budget.reserve_s = EVAL_AFTER_FACTOR * evaluation_s + save_reserve_s(budget.seconds)
                budget.deadline = started_at + budget.seconds - budget.reserve_s

            reporter.phase("training", _training_sentence(trainer, train_blocks, budget))
            t0 = time.monotonic()
            trainer.train()
            timings["train_s"] = time.monotonic() - t0
            stop.check()

            t0 = time.monotonic()
            reporter.phase("evaluating", "validation loss after training")
            val_after = _evaluate(trainer, eval_blocks, recorder, stopping_blocks is eval_blocks)
            tweet_after = _evaluate(
                trainer, tweet_eval_blocks, recorder, stopping_blocks is tweet_eval_blocks
            )
            timings["evaluate_after_s"] = time.monotonic() - t0
            stop.check()

        reporter.phase("saving", f"writing the model to {store.path(name)}")
        t0 = time.monotonic()
        steps = len(recorder.losses)
        # The last batch may be short: count the blocks actually read, not steps × batch size.
        read = min(steps * config.batch_size, len(train_blocks))
        train_tokens = (
            read * block_size
            if train_blocks.lengths is None
            else int(train_blocks.lengths[:read].sum())
        )
        record = _training_record(
            table,
            config,
            block_size=block_size,
            base_path=base_for_record,
            separator=separator_record(tokenizer, separator_token_id(tokenizer)),
            device=device,
            dtype="bfloat16" if use_bf16 else "float32",
            metrics={
                "val_loss_before": val_before,
                "val_loss_after": val_after,
                "perplexity_before": _perplexity(val_before),
                "perplexity_after": _perplexity(val_after),
                "tweet_val_loss_before": tweet_before,
                "tweet_val_loss_after": tweet_after,
                "tweet_perplexity_before": _perplexity(tweet_before),
                "tweet_perplexity_after": _perplexity(tweet_after),
                "train_loss_first": recorder.losses[0] if steps else None,
                "stopped_early": recorder.stopped_early,
                "best_step": recorder.best_step,
                "eval_losses": [[step, loss] for step, loss in recorder.eval_losses],
                "train_loss_last": recorder.losses[-1] if steps else None,
                "learning_rate_first_step": recorder.lr_first,
                "learning_rate_last_step": recorder.lr_last,
                "steps": steps,
                "train_tokens": train_tokens,
                "train_blocks": len(train_blocks),
                "validation_blocks": len(eval_blocks),
                "tweet_validation_blocks": len(tweet_eval_blocks),
                "tokens_per_s": (
                    train_tokens / timings["train_s"] if timings["train_s"] > 0 else None
                ),
            },
            timings=timings,
        )
        if budget is not None:
            record["budget"] = budget.record(steps)
        if languages is not None:
            record["languages"] = languages
        _save(
            staging,
            model,
            tokenizer,
            table,
            config,
            record,
            recorder,
            store.path(name),
            initial_adapter,
        )
        timings["save_s"] = time.monotonic() - t0
        timings["total_s"] = time.monotonic() - started
        _write_json(staging / TRAINING_FILE, record)
        stop.check()
        if config.likeness_samples and split.validation:
            _add_likeness(staging, store.path(name), table, split, config, record, device, reporter)
            stop.check()
        # The llama.cpp files (the adapter, checked against float32) are part of the model
        # folder, so they are installed with it; a failure only means another path serves it.
        from training.generation.llamacpp_build import prepare as prepare_llamacpp

        llama = prepare_llamacpp(
            staging, lambda sentence: reporter.phase("saving", sentence), models_root=store.root
        )
        if llama is not None:
            _note_on_card(staging, llama)
        info = store.commit(staging, name)
    if llama is None or not llama.get("serves"):
        # The CTranslate2 artifact, built once now; a failure only means "convert later".
        from training.generation.fast_build import prepare_fast_artifact

        prepare_fast_artifact(Path(info.path), lambda sentence: reporter.phase("saving", sentence))
    return info


def _note_on_card(folder: Path, llama: dict[str, Any]) -> None:
    """Add the llama.cpp check's outcome to the model card (README.md), when it has one."""
    from training.generation.llamacpp_build import card_text

    card = folder / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8").rstrip("\n")
        card.write_text(f"{text}\n\n## Generation on a CPU\n\n{card_text(llama)}\n", "utf-8")


def _add_likeness(
    staging: Path,
    final: Path,
    table: DataTable,
    split: DatasetSplit,
    config: TrainConfig,
    record: dict[str, Any],
    device: Any,
    reporter: ProgressReporter,
) -> None:
    """Measure how like the person the saved model writes and how recognisable it is; record it
    and show it in the card.

    A failure here never costs the model: the card just goes without the table.
    """
    from training.card import render_card
    from training.likeness import measure_likeness

    reporter.phase(
        "saving", f"writing {config.likeness_samples} tweets to compare with the real ones"
    )
    t0 = time.monotonic()
    try:
        record["likeness"] = measure_likeness(
            staging,
            split.validation,
            samples=config.likeness_samples,
            seed=config.seed,
            device=str(device.type),
            train=[text for texts in split.train.values() for text in texts],
            handles=[data.handle.name for data in table.handles],
        )
    except (DoppeltweetError, RuntimeError, ValueError) as error:
        log.warning("the likeness table was skipped: %s", error)
        return
    record.setdefault("timings", {})["likeness_s"] = time.monotonic() - t0
    model_ref = config.hub_repo or str(final.resolve())
    card = render_card(table, record, model_ref=model_ref)
    (staging / CARD_FILE).write_text(card, "utf-8")
    _write_json(staging / TRAINING_FILE, record)


#: errno values that mean "the disk (or this process's share of it) is full".
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _out_of_space(error: BaseException) -> bool:
    """Whether a save failed for want of disk space (an OSError, or safetensors' and torch's
    own errors, which only say so in their text)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return True
        text = str(current)
        if any(
            marker in text
            for marker in ("No space left on device", "Disk quota exceeded", "File too large")
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def trainer_steps(trainer: Any, train_blocks: Any) -> int:
    """The optimizer steps one pass will take (``max_steps`` caps it)."""
    per_epoch = math.ceil(len(train_blocks) / trainer.args.per_device_train_batch_size)
    return min(per_epoch, trainer.args.max_steps) if trainer.args.max_steps > 0 else per_epoch


def resolved_for_device(config: TrainConfig, device_type: str) -> TrainConfig:
    """``config`` with the batch size and the LoRA dropout its device and budget call for,
    where they were left open."""
    return replace(
        config,
        batch_size=resolved_batch_size(config, device_type),
        lora_dropout=resolved_lora_dropout(config, device_type),
    )


def resolved_lora_dropout(config: TrainConfig, device_type: str) -> float:
    """The adapters' dropout: the one asked for, else none for a time budget on a CPU (a
    sixth of each step goes to drawing the masks, and a budgeted run reads most tweets once),
    else ``DEFAULT_LORA_DROPOUT``."""
    if config.lora_dropout is not None:
        return config.lora_dropout
    if config.time_budget_s is not None and device_type == "cpu":
        return 0.0
    return DEFAULT_LORA_DROPOUT


def resolved_batch_size(config: TrainConfig, device_type: str) -> int:
    """The blocks per step a run trains: the one asked for, else the default for its device
    and budget."""
    if config.batch_size is not None:
        return config.batch_size
    if config.time_budget_s is not None and device_type == "cpu":
        return BUDGET_CPU_BATCH_SIZE
    return DEFAULT_BATCH_SIZE


def resolved_bf16(config: TrainConfig, device: torch.device) -> bool:
    """Whether a run trains in bf16 autocast: ``auto`` where the device computes bf16 natively,
    never for ``fp32``; ``bf16`` where it cannot is refused."""
    from training.basemodels import native_bf16

    if config.precision == "fp32":
        return False
    native = native_bf16(device)
    if config.precision == "bf16" and not native:
        raise InputError(
            f"This {device.type.upper()} does not compute bf16 natively; use --precision auto "
            "or fp32."
        )
    return native


def _budget(
    config: TrainConfig, train_blocks: Any, clock: Callable[[], float], device: Any
) -> StepBudget | None:
    """The step budget of a run with a time budget; its deadline is set once the evaluation
    before training has been timed."""
    if config.time_budget_s is None:
        return None
    cap = math.ceil(len(train_blocks) / config.batch_size)
    if config.max_steps is not None:
        cap = min(cap, config.max_steps)
    sync = None
    if device.type == "cuda":  # CUDA runs ahead of the host: time what the device has done
        import torch

        sync = torch.cuda.synchronize
    return StepBudget(
        seconds=config.time_budget_s,
        deadline=math.inf,
        cap=max(1, cap),
        clock=clock,
        sync=sync,
        warmup_ratio=config.warmup_ratio,
    )


def _training_sentence(trainer: Any, train_blocks: Any, budget: StepBudget | None) -> str:
    """The training phase's message: the steps, or the budget they are fitted to."""
    if budget is None:
        return f"{trainer_steps(trainer, train_blocks)} steps"
    return (
        f"a {budget.seconds:g}-second budget: at most {budget.cap} steps, as many as fit "
        "after timing the first ones"
    )


# Signals ---------------------------------------------------------------------------------------


class _StopFlag:
    """Set by SIGTERM/SIGINT; training checks it at each step and between phases."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def check(self) -> None:
        if self.signal is not None:
            name = signal.Signals(self.signal).name
            raise TrainingStopped(
                f"Training was stopped by {name} before it finished; the previous model was kept."
            )


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread signals cannot be caught: the caller handles interruption.
        with contextlib.suppress(ValueError):
            previous[signum] = signal.signal(signum, flag)
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# Model and Trainer -----------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def fuse_activations(model: Any) -> int:
    """Swap GPT-2's ``gelu_new`` modules for PyTorch's fused tanh GELU; returns how many.

    ``NewGELUActivation`` spells the tanh approximation out in Python, eight element-wise kernels
    forward and more backward, each a pass over the MLP's activations; ``GELUTanh`` computes the
    same function (to float rounding) in one. A GPT-2 step on CPU trains ~9 % more tokens per
    second. Only the modules change: the config, and so the saved model, still says ``gelu_new``.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


def _model_window(model: Any) -> int:
    config = model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return MAX_BLOCK_SIZE


def _base_path_for_lora(config: TrainConfig, store: ModelStore) -> str | None:
    """Where a LoRA adapter's base lives, for ``training.json`` (``None`` for full fine-tunes)."""
    from training.basemodels import BASES_DIR, SMOLLM2_NAME, TINY_NAME

    if not config.lora:
        return None
    if config.base_model == TINY_NAME:
        # Rebuilt on load: its tokenizer and seeded initial weights follow from dataset.jsonl.
        return TINY_NAME
    if config.base_model == SMOLLM2_NAME:
        return str((store.root / BASES_DIR / SMOLLM2_NAME).resolve())
    path = Path(config.base_model).expanduser()
    return str(path.resolve()) if path.is_dir() else config.base_model


def _wrap_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    model_type = getattr(model.config, "model_type", "")
    targets: list[str] | str | None = _LORA_TARGETS.get(model_type)
    if config.lora_targets == "all-linear":
        # peft's shorthand: every linear (or GPT-2 Conv1D) layer but the output head.
        targets = "all-linear"
    if config.lora_init == "olora" and model_type == "gpt2":
        # peft's OLoRA reads every weight as (out, in); GPT-2's Conv1D stores (in, out).
        raise InputError(
            "OLoRA cannot start an adapter on GPT-2's transposed layers; use --lora-init pissa "
            "or leave --lora-init out."
        )
    layers: list[int] | None = None
    if config.lora_layers is not None:
        total = getattr(model.config, "num_hidden_layers", None)
        if not isinstance(total, int) or total < 1:
            raise ModelError(
                f"{config.base_model} does not say how many layers it has, so --lora-layers "
                "cannot pick the top ones; leave --lora-layers out."
            )
        if config.lora_layers > total:
            raise InputError(
                f"{config.base_model} has {total} layers, so --lora-layers must be {total} or "
                f"fewer, not {config.lora_layers}."
            )
        layers = list(range(total - config.lora_layers, total))
        if targets == "all-linear":  # peft picks layers only from a list of module names
            targets = _linear_module_names(model)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=(DEFAULT_LORA_DROPOUT if config.lora_dropout is None else config.lora_dropout),
        target_modules=targets,
        fan_in_fan_out=model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
        use_rslora=config.use_rslora,
        init_lora_weights=LORA_INITS[config.lora_init],
        layers_to_transform=layers,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as error:
        raise ModelError(
            f"LoRA does not know which layers of a {model_type or 'this'} model to adapt; "
            "train without --lora."
        ) from error


def _linear_module_names(model: Any) -> list[str]:
    """The names (last part) of every linear layer but the output head: what peft's
    ``all-linear`` adapts, spelled out."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear | Conv1D) and module is not head
        }
    )


def save_initial_adapter(model: Any, folder: Path) -> None:
    """Save a PiSSA/OLoRA adapter as it starts, before any step: the saved adapter is later
    converted against it into a plain LoRA on the unchanged base (peft's
    ``path_initial_model_for_weight_conversion``)."""
    lora = model.peft_config["default"]
    init = lora.init_lora_weights
    lora.init_lora_weights = True  # loading it back must not decompose the base again
    try:
        model.save_pretrained(folder, save_embedding_layers=False)
    finally:
        lora.init_lora_weights = init


class _LossRecorder:
    """Keeps every step's loss as a detached tensor: no device sync until it is read."""

    def __init__(self) -> None:
        self._pending: list[Any] = []
        self._values: list[float] = []
        #: (step, validation loss) of each evaluation during training (early stopping only).
        self.eval_losses: list[tuple[int, float]] = []
        self.best_step: int | None = None
        self.stopped_early = False
        #: Set while an evaluation of another set than early stopping's runs: not counted.
        self.muted = False
        #: The learning rate of the first and of the latest optimizer step.
        self.lr_first: float | None = None
        self.lr_last: float | None = None

    def add(self, loss: Any) -> None:
        self._pending.append(loss.detach())

    def last(self) -> float | None:
        if self._pending:
            return float(self._pending[-1].float().item())
        return self._values[-1] if self._values else None

    @property
    def losses(self) -> list[float]:
        if self._pending:
            import torch

            self._values.extend(torch.stack(self._pending).float().cpu().tolist())
            self._pending.clear()
        return self._values


def _output_dir(config: TrainConfig, store: ModelStore, name: str, scratch: Path) -> Path:
    """TensorBoard logs go under ``<models dir>/.runs/``; otherwise nothing is written at all."""
    if config.report_to == "tensorboard":
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return store.root / ".runs" / f"{name}-{stamp}"
    return scratch


def _make_trainer(
    model: Any,
    config: TrainConfig,
    train_blocks: Any,
    eval_blocks: Any,
    *,
    output_dir: Path,
    device: torch.device,
    bf16: bool,
    reporter: ProgressReporter,
    stop: _StopFlag,
    tokens_per_step: int,
    budget: StepBudget | None = None,
) -> tuple[Any, _LossRecorder]:
    from transformers import (
        PrinterCallback,
        ProgressCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from training.dataset import collate_trimmed

    recorder = _LossRecorder()
    tracking = config.report_to != "none"
    early_stopping = config.early_stopping_patience > 0 and len(eval_blocks) > 0

    class RecordingTrainer(Trainer):
        """Records each training step's loss (kept on the device, read only when reported)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                recorder.add(result[0] if return_outputs else result)
            return result

        def create_scheduler(self, num_training_steps, optimizer=None):  # type: ignore[no-untyped-def]
            if budget is None or self.lr_scheduler is not None:
                return super().create_scheduler(num_training_steps, optimizer)
            from torch.optim.lr_scheduler import LambdaLR

            # The same cosine, over the run's progress in time: its lambda reads the share of
            # the training time spent, so the schedule ends at the deadline (training.budget).
            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, budget.lr_factor)
            self._created_lr_scheduler = True
            return self.lr_scheduler

    class ProgressReporting(TrainerCallback):
        """Turns Trainer steps into progress events and honours a stop request."""

        def __init__(self) -> None:
            self.started = 0.0
            self.last_report = -math.inf

        def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self.started = time.monotonic()

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
            if optimizer is not None and optimizer.param_groups:
                recorder.lr_last = float(optimizer.param_groups[0]["lr"])
                if recorder.lr_first is None:
                    recorder.lr_first = recorder.lr_last
            return control

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if stop.requested:
                control.should_training_stop = True
                return control
            now = time.monotonic()
            step, total = state.global_step, state.max_steps
            if budget is not None:
                if budget.after_step(step):
                    control.should_training_stop = True
                total = step if control.should_training_stop else budget.total
            if step != 1 and step < total and now - self.last_report < 0.25:
                return control
            self.last_report = now
            elapsed = now - self.started
            rate = step * tokens_per_step / elapsed if elapsed > 0 else None
            eta = (total - step) * elapsed / step if step else None
            reporter.step(step, total, recorder.last(), rate, eta)
            return control

    class EarlyStopping(TrainerCallback):
        """Stops when the validation loss has not improved for ``patience`` evaluations and
        puts the best weights seen back (only the trained ones: a LoRA adapter's are small)."""

        def __init__(self) -> None:
            self.patience = config.early_stopping_patience
            self.best_loss = math.inf
            self.best_state: dict[str, Any] | None = None
            self.waited = 0

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[no-untyped-def]
            if recorder.muted:  # a validation set early stopping does not watch
                return control
            loss = (metrics or {}).get("eval_loss")
            seen = recorder.eval_losses and recorder.eval_losses[-1][0] == state.global_step
            if loss is None or seen:  # the Trainer may evaluate the last step twice
                return control
            recorder.eval_losses.append((state.global_step, float(loss)))
            if loss < self.best_loss:
                self.best_loss, self.waited = float(loss), 0
                recorder.best_step = state.global_step
                self.best_state = {
                    name: p.detach().clone()
                    for name, p in model.named_parameters()
                    if p.requires_grad
                }
            else:
                self.waited += 1
                if self.waited >= self.patience:
                    recorder.stopped_early = True
                    control.should_training_stop = True
            return control

        def on_train_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if self.best_state is None or recorder.best_step == state.global_step:
                return control
            import torch

            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in self.best_state:
                        p.copy_(self.best_state[name])
            return control

    optimizer = None
    if config.lora and config.loraplus_lr_ratio != 1.0:
        import torch
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=config.effective_learning_rate,
            loraplus_lr_ratio=config.loraplus_lr_ratio,
            weight_decay=config.weight_decay,
            fused=True,
        )
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        gradient_accumulation_steps=1,
        num_train_epochs=1,  # the blocks already hold every epoch, in order
        max_steps=config.max_steps or -1,
        train_sampling_strategy="sequential",
        learning_rate=config.effective_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,  # below 1: a share of the steps
        torch_compile=config.torch_compile,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        # One fused kernel per step: on CPU the unfused AdamW costs ~3x more per update.
        optim="adamw_torch_fused",
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        use_cpu=device.type == "cpu",
        save_strategy="no",
        eval_strategy="steps" if early_stopping else "no",
        eval_steps=config.eval_steps,
        logging_strategy="steps" if tracking else "no",
        logging_steps=10,
        report_to=[] if not tracking else [config.report_to],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=device.type == "cuda",
        remove_unused_columns=False,
    )
    trainer = RecordingTrainer(
        model=model,
        args=args,
        train_dataset=train_blocks,
        eval_dataset=eval_blocks if len(eval_blocks) else None,
        data_collator=collate_trimmed,
        callbacks=[ProgressReporting(), *([EarlyStopping()] if early_stopping else [])],
        optimizers=(optimizer, None),
    )
    # stdout belongs to the progress stream: the Trainer's own printing and bars must not touch it.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer, recorder


def _evaluate(
    trainer: Any, blocks: Any, recorder: _LossRecorder, counted: bool = True
) -> float | None:
    """The validation loss on ``blocks`` (``None`` for no blocks); ``counted``: early stopping
    sees it (only the set it watches)."""
    if not len(blocks):
        return None
    recorder.muted = not counted
    try:
        loss = trainer.evaluate(eval_dataset=blocks)["eval_loss"]
    finally:
        recorder.muted = False
    return float(loss)


def _perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else math.inf


# Saving ----------------------------------------------------------------------------------------


def _training_record(
    table: DataTable,
    config: TrainConfig,
    *,
    block_size: int,
    base_path: str | None,
    separator: dict[str, Any],
    device: torch.device,
    dtype: str,
    metrics: dict[str, Any],
    timings: dict[str, float],
) -> dict[str, Any]:
    resolved = asdict(config)
    resolved["block_size"] = block_size
    resolved["learning_rate"] = config.effective_learning_rate
    return {
        "format": TRAINING_FORMAT,
        "name": table.model_name,
        "handles": [data.handle.name for data in table.handles],
        "platforms": {data.handle.name: data.handle.platform for data in table.handles},
        "base_model": config.base_model,
        "base_model_path": base_path,
        "lora": config.lora,
        # The token between tweets in training; generation starts and ends a tweet with it.
        "separator": separator,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": resolved,
        "seeds": {"seed": config.seed, "data_seed": config.seed, "split_seed": config.seed},
        "device": device.type,
        "dtype": dtype,
        "versions": _versions(),
        "metrics": {k: _json_number(v) for k, v in metrics.items()},
        "timings": timings,
        "data_table": table.to_dict(),
    }


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("doppeltweet", "torch", "transformers", "tokenizers", "peft", "accelerate"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def _save(
    staging: Path,
    model: Any,
    tokenizer: Any,
    table: DataTable,
    config: TrainConfig,
    record: dict[str, Any],
    recorder: _LossRecorder,
    final_path: Path,
    initial_adapter: Path | None = None,
) -> None:
    from training.card import render_card

    if config.lora:
        # Where ``pipeline(model=folder)`` / peft will look for the base weights.
        model.peft_config["default"].base_model_name_or_path = record["base_model_path"]
    elif hasattr(model, "config"):
        model.config.use_cache = True
    if config.lora:
        # The vocabulary is never changed, and the "was it?" check would query the Hub. A
        # PiSSA/OLoRA adapter is saved as the plain LoRA it amounts to on the unchanged base.
        model.save_pretrained(
            staging,
            save_embedding_layers=False,
            path_initial_model_for_weight_conversion=(
                None if initial_adapter is None else str(initial_adapter)
            ),
        )
    else:
        model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    table.save(staging)
    _plot_loss(staging / LOSS_PLOT_FILE, recorder.losses, record["metrics"])
    model_ref = config.hub_repo or str(final_path.resolve())
    (staging / CARD_FILE).write_text(render_card(table, record, model_ref=model_ref), "utf-8")


def _plot_loss(path: Path, losses: list[float], metrics: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if losses:
            ax.plot(range(1, len(losses) + 1), losses, label="training loss", linewidth=1)
        points = [
            (0, metrics.get("val_loss_before")),
            (len(losses), metrics.get("val_loss_after")),
        ]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            ax.scatter(*zip(*points, strict=True), color="C1", zorder=3, label="validation loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def log_to_stderr() -> None:
    """Send library logging to stderr at WARNING so stdout stays free for progress lines."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    # Deprecation notices between transformers and peft are for their developers, not our users.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
        hf_logging.disable_progress_bar()
