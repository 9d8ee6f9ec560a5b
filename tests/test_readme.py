"""The README's tables and commands stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from bot.config_docs import bot_tables, config_table
from bot.exts.meta import COMMANDS
from training.cli import COMMANDS as CLI_COMMANDS
from training.config import TrainingSettings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_shows_the_current_configuration_tables() -> None:
    assert bot_tables(level=4) in README, (
        "regenerate the README's bot tables with bot.config_docs.bot_tables(level=4)"
    )
    assert config_table(TrainingSettings) in README, "regenerate the README's training table"


def test_readme_lists_every_discord_command_as_the_commands_doc_does() -> None:
    commands_doc = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    rows = [line for line in commands_doc.splitlines() if line.startswith("| `!")]
    assert rows, "docs/commands.md lost its table"
    for row in rows:
        assert row in README, f"README's commands table differs from docs/commands.md: {row[:60]}"
    listed = set(re.findall(r"^\| `!(\w+)", README, flags=re.MULTILINE))
    assert {usage.split()[0] for usage, _, _ in COMMANDS} <= listed


def test_readme_names_the_two_setup_commands_and_every_cli_command() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), f"no `{target}` target"
    for command in CLI_COMMANDS:
        assert f"doppeltweet {command}" in README


def test_readme_links_only_to_files_that_exist() -> None:
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)\)", README):
        assert (ROOT / target).exists(), f"README links to missing {target}"
