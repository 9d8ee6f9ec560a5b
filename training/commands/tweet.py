"""``doppeltweet tweet``: write tweets in a trained model's style."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from training.commands import add_models_dir_argument
from training.errors import InputError

DEFAULT_COUNT = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tweet`` subcommand."""
    from training.generation import EXAMPLE_PROMPT, MAX_PROMPT_CHARS, MAX_TWEETS

    parser = subparsers.add_parser(
        "tweet",
        help="generate tweets with a trained model",
        usage=(
            "doppeltweet tweet @HANDLE [@HANDLE ...] [PROMPT] [-n N] [--seed S] [--json] "
            "[--models-dir DIR] [--device DEVICE]"
        ),
        description=(
            "Generate tweets in the style of the model trained on the named handles "
            f'(e.g. `doppeltweet tweet @alice @bob "{EXAMPLE_PROMPT}" -n 5`). Without a prompt '
            "the model opens the tweet as the person would (a reply, a mention, their own first "
            "words); a prompt's last word may be finished by the model (token healing). "
            "Sampling follows huggingtweets (top-p 0.95, temperature 1.0, 10 candidates); "
            "candidates are cut at the first line, stripped of URLs and broken emoji, kept to "
            "280 characters ending at a sentence or word, and rejected when they copy a "
            "training tweet or repeat one another."
        ),
    )
    parser.add_argument(
        "words",
        nargs="+",
        metavar="@HANDLE | PROMPT",
        help=(
            "1 to 3 handles (@jack, bluesky:alice.bsky.social, @alice@mastodon.social; the first "
            "may omit the @), then "
            f"optionally the tweet's first words (e.g. “{EXAMPLE_PROMPT}”; default: none, the "
            f"model opens the tweet; at most {MAX_PROMPT_CHARS} characters)"
        ),
    )
    parser.add_argument(
        "-n",
        "--count",
        type=int,
        default=DEFAULT_COUNT,
        metavar="N",
        help=f"how many tweets to write, 1 to {MAX_TWEETS} (default {DEFAULT_COUNT})",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="S", help="a seed for reproducible tweets"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"model", "prompt", "tweets", "candidates", "rejected"} as JSON on stdout',
    )
    add_models_dir_argument(parser)
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or mps (default: the fastest available)"
    )
    parser.set_defaults(func=run)


def split_words(words: list[str]) -> tuple[list[str], str | None]:
    """Split the positional words into handles and an optional prompt.

    The first word is always a handle; later words are handles when they start with ``@``,
    ``bluesky:`` or ``mastodon:``, and one last word that does not is the prompt.
    """
    from training.handles import is_handle_word as is_handle

    handles = [words[0]]
    rest = words[1:]
    prompt = None
    if rest and not is_handle(rest[-1]):
        prompt = rest.pop()
    for word in rest:
        if not is_handle(word):
            raise InputError(
                f"Put the prompt last and quote it, e.g. doppeltweet tweet @alice "
                f'"My dream is" (got {word!r} among the handles).'
            )
        handles.append(word)
    return handles, prompt


def run(args: argparse.Namespace) -> int:
    """Generate and print; exits 1 when no candidate passed the filters."""
    from training.config import get_settings
    from training.generation import DEFAULT_PROMPT, check_count, check_prompt, get_generator
    from training.handles import model_name, parse_handles
    from training.store import ModelStore

    handle_words, prompt = split_words(list(args.words))
    name = model_name(parse_handles(handle_words))
    # Checked before the (slow) model load, so a typo fails at once.
    prompt = check_prompt(DEFAULT_PROMPT if prompt is None else prompt)
    check_count(args.count)
    models_dir = args.models_dir if args.models_dir is not None else get_settings().models_dir
    info = ModelStore(models_dir).get(name)

    _quiet_transformers()
    generator = get_generator(info.path, device=args.device)
    result = generator.generate(prompt, n=args.count, seed=args.seed)

    if args.json:
        print(json.dumps({"model": name, **result.to_json()}, ensure_ascii=False))
    else:
        for number, tweet in enumerate(result.tweets, 1):
            print(f"{number}. {tweet}")
        print(_summary(result.candidates, result.rejected, result.rejected_reasons))
    if not result.tweets:
        print(
            "error: no candidate passed the filters; try another prompt or seed.", file=sys.stderr
        )
        return 1
    return 0


def _summary(candidates: int, rejected: int, reasons: dict[str, int]) -> str:
    detail = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
    tail = f" ({detail})" if detail else ""
    return f"{candidates} candidates sampled, {rejected} rejected{tail}."


def _quiet_transformers() -> None:
    """Keep stdout/stderr to the tweets: no weight-loading bars or library deprecation notices."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
