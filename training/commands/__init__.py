"""One module per ``doppeltweet`` subcommand, plus the arguments several of them share."""

from __future__ import annotations

import argparse


def add_handle_and_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``HANDLE…`` and where their tweets come from (``--from`` / ``--api`` / ``--bluesky``).

    ``data`` and ``train`` read tweets the same way, so they take the same arguments; the n-th
    ``--from`` belongs to the n-th handle (see :func:`training.pipeline.handles_and_specs`).
    """
    parser.add_argument(
        "handles",
        nargs="+",
        metavar="HANDLE",
        help="1 to 3 handles: @jack, or bluesky:alice.bsky.social",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--from",
        dest="paths",
        action="append",
        metavar="PATH",
        help="an X archive (zip, data/ folder or .js file) or a CSV/JSONL file; "
        "once for all handles or once per handle, in the same order",
    )
    where.add_argument(
        "--api", action="store_true", help="read the X API v2 (paid, needs X_BEARER_TOKEN)"
    )
    where.add_argument(
        "--bluesky", action="store_true", help="read the public Bluesky feed (free, no login)"
    )
