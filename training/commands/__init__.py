"""One module per ``doppeltweet`` subcommand, plus the arguments several of them share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from training.cleaning import DataTable
    from training.handles import Handle


def add_handle_and_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``HANDLE…`` and where their tweets come from (``--from``, ``--api``, ``--bluesky``,
    ``--mastodon``).

    ``data`` and ``train`` read tweets the same way, so they take the same arguments; the n-th
    ``--from`` belongs to the n-th handle (see :func:`training.pipeline.handles_and_specs`).
    """
    parser.add_argument(
        "handles",
        nargs="+",
        metavar="HANDLE",
        help="1 to 3 handles: @jack, bluesky:alice.bsky.social or mastodon:@alice@mastodon.social",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--from",
        dest="paths",
        action="append",
        metavar="PATH",
        help="an X archive (zip, data/ folder or .js file), a Mastodon archive (zip or .tar.gz), "
        "a CSV/JSONL file or a .txt file (one post per line); "
        "once for all handles or once per handle, in the same order",
    )
    where.add_argument(
        "--api", action="store_true", help="read the X API v2 (paid, needs X_BEARER_TOKEN)"
    )
    where.add_argument(
        "--bluesky", action="store_true", help="read the public Bluesky feed (free, no login)"
    )
    where.add_argument(
        "--mastodon",
        action="store_true",
        help="read the public posts from the handle's Mastodon server (free, no login)",
    )


def handles_and_specs_of(args: argparse.Namespace) -> tuple[list[Handle], list[str]]:
    """The handles and source specs the arguments of :func:`add_handle_and_source_arguments`
    name (:func:`training.pipeline.handles_and_specs` checks them)."""
    from training.pipeline import handles_and_specs

    return handles_and_specs(
        args.handles,
        paths=args.paths or [],
        api=args.api,
        bluesky=args.bluesky,
        mastodon=args.mastodon,
    )


def add_models_dir_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--models-dir DIR``: the model store ``train`` writes and ``tweet`` and ``models`` read."""
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the model store (default: DOPPELTWEET_MODELS_DIR or ./models)",
    )


def print_data_table(table: DataTable, console: Console) -> None:
    """The seed's data table (one column per handle), as ``data`` and ``train`` show it."""
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=f"Training data for {table.model_name}")
    grid.add_column("Data")
    for data in table.handles:
        grid.add_column(Text(data.handle.name), justify="right")
    for field, label in (
        ("tweets_downloaded", "Tweets downloaded"),
        ("retweets", "Retweets"),
        ("short_tweets", "Short tweets"),
        ("tweets_kept", "Tweets kept"),
        ("chars_kept", "Characters kept"),
    ):
        grid.add_row(label, *(f"{getattr(data, field):,}" for data in table.handles))
    for label, cells in table.skip_rows():
        grid.add_row(label, *("-" if cell is None else f"{cell:,}" for cell in cells))
    console.print(grid)
