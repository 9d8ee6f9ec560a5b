"""``doppeltweet models``: list the trained models in the model store."""

from __future__ import annotations

import argparse
import json

from training.commands import add_models_dir_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand."""
    parser = subparsers.add_parser(
        "models",
        help="list trained models",
        description="List the models in the model store: name, handles, base model, size, "
        "date and validation perplexity before → after training.",
    )
    add_models_dir_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON list on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the listing; an empty store is not an error."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from training.config import get_settings
    from training.store import ModelStore

    store = ModelStore(args.models_dir or get_settings().models_dir)
    infos = store.list()
    damaged = store.damaged()
    if args.json:
        rows = [info.to_json() for info in infos] + [bad.to_json() for bad in damaged]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    console = Console(highlight=False, soft_wrap=True)
    for bad in damaged:
        console.print(Text(f"Damaged: {bad.problem}"))
    if not infos and damaged:
        return 0
    if not infos:
        console.print(
            Text(f"No models in {store.root} yet: train one with `doppeltweet train @handle`.")
        )
        return 0
    grid = Table(title=f"Models in {store.root}")
    for column in ("Model", "Handles", "Base", "Size", "Trained", "Perplexity"):
        grid.add_column(column, justify="right" if column in ("Size", "Perplexity") else "left")
    for info in infos:
        base = info.base_model + (" + LoRA" if info.lora else "")
        grid.add_row(
            Text(info.name),
            Text(" ".join(f"@{h}" for h in info.handles)),
            Text(base),
            _size(info.size_bytes),
            info.created_at.strftime("%Y-%m-%d %H:%M"),
            _perplexity(info.perplexity_before, info.perplexity_after),
        )
    console.print(grid)
    return 0


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _perplexity(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "–"
    return f"{before:.1f} → {after:.1f}"
