"""The ``doppeltweet`` command line: the whole pipeline from a shell.

Each subcommand lives in ``training/commands/<name>.py`` with ``register(subparsers)`` that adds its
parser and sets ``func`` to a ``run(args) -> int``. Heavy imports (torch, transformers) happen
inside ``run`` so ``--help`` stays instant. Other packages add subcommands through the
``doppeltweet.commands`` entry-point group (the bot adds ``doppeltweet bot``); those are loaded only
when named, so the training library never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from training.errors import DoppeltweetError

#: Subcommand modules under ``training.commands``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("data", "train", "tweet", "models")

PLUGIN_GROUP = "doppeltweet.commands"


def _plugins() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="doppeltweet",
        description="Learn to tweet like a person: fetch tweets, clean them, fine-tune, generate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"training.commands.{name}").register(sub)
    for name in sorted(_plugins()):
        sub.add_parser(name, help=f"see `doppeltweet {name} --help`", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    plugins = _plugins()
    try:
        if args_list and args_list[0] in plugins:
            return int(plugins[args_list[0]].load()(args_list[1:]) or 0)
        args = build_parser().parse_args(args_list)
        return int(args.func(args) or 0)
    except DoppeltweetError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover - exercised through the console script
    sys.exit(main())
