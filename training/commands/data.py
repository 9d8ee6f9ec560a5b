"""``doppeltweet data``: fetch and clean tweets, show the data table, optionally save them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from training.commands import (
    add_handle_and_source_arguments,
    handles_and_specs_of,
    print_data_table,
)
from training.errors import InputError

if TYPE_CHECKING:
    from training.cleaning import DataTable

DEFAULT_SAMPLES = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` subcommand."""
    parser = subparsers.add_parser(
        "data",
        help="fetch and clean tweets and show the data table",
        description=(
            "Fetch a handle's tweets, clean them exactly as huggingtweets did and show the data "
            "table (downloaded / retweets / short / kept) with a few cleaned samples. The X "
            "archive (--from the zip, its data/ folder or tweets.js), CSV/JSONL and .txt files are "
            "free; --api reads the paid X API (about $0.005 a post, ~$16 for 3,200 tweets; needs "
            "X_BEARER_TOKEN)."
        ),
    )
    add_handle_and_source_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="print only the data table as JSON on stdout"
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE.jsonl", help="write the cleaned tweets as JSONL"
    )
    parser.add_argument(
        "--samples",
        type=_non_negative,
        default=DEFAULT_SAMPLES,
        metavar="N",
        help=f"cleaned tweets to show per handle (default {DEFAULT_SAMPLES})",
    )
    parser.set_defaults(func=run)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, not {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Collect, check, show and (optionally) save; too little data shows the table, then fails."""
    from training.cleaning import TooLittleData
    from training.config import get_settings
    from training.pipeline import collect

    handles, specs = handles_and_specs_of(args)
    out = _checked_out_path(args.out) if args.out is not None else None

    table = collect(handles, specs, get_settings())
    try:
        warnings = table.check()
    except TooLittleData:
        _show(table, args)
        raise
    _show(table, args)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if out is not None:
        table.write_dataset(out)
        if not args.json:
            kept = sum(data.tweets_kept for data in table.handles)
            print(f"Wrote {kept} cleaned tweets to {out}.", file=sys.stderr)
    return 0


def _checked_out_path(path: Path) -> Path:
    """Refuse an output path we could not write, before spending time (or API money) fetching."""
    path = path.expanduser()
    if path.is_dir():
        raise InputError(f"--out {path} is a folder; name a file such as tweets.jsonl.")
    if not path.parent.is_dir():
        raise InputError(
            f"--out {path} cannot be written: its folder {path.parent} does not exist."
        )
    return path


def _show(table: DataTable, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(table.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    print_data_table(table, console)
    if args.samples == 0:
        return
    for data in table.handles:
        if not data.kept:
            continue
        console.print(Text(f"Newest cleaned tweets by {data.handle}:", style="bold"))
        for text in data.kept[: args.samples]:
            # Text, not markup: a tweet containing "[bold]" or ":smile:" is shown as written.
            console.print(Text(f"  {text}"))
