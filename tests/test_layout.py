"""The package layout's promises: the training library stands alone, without Discord."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

# ``training`` is not imported here: from tests/ it would resolve to the tests/training folder.
ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import importlib, json, pkgutil, sys
import training
names = sorted(
    m.name for m in pkgutil.walk_packages(training.__path__, "training.")
    if not m.name.endswith("__main__")
)
for name in names:
    importlib.import_module(name)
print(json.dumps({
    "imported": names,
    "discord": sorted(m for m in sys.modules if m == "discord" or m.startswith("discord.")),
    "bot": sorted(m for m in sys.modules if m == "bot" or m.startswith("bot.")),
}))
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, list[str]]:
    """Import every training module in a fresh interpreter and report what got loaded."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_every_training_module_never_imports_discord_or_the_bot(probe) -> None:
    assert probe["discord"] == []
    assert probe["bot"] == []


def test_the_probe_imports_every_training_module(probe) -> None:
    on_disk = {
        ".".join(("training", *p.relative_to(ROOT / "training").with_suffix("").parts))
        for p in (ROOT / "training").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert on_disk
    assert on_disk <= set(probe["imported"])


_FOLDER = re.compile(r"[a-z_]+/")


def architecture_modules(text: str) -> set[str]:
    """The modules docs/ARCHITECTURE.md's tree lists: each ``name.py`` at the start of a line,
    under the folders opened (``name/``) at lesser indents above it."""
    tree = text.split("```", 2)[1]
    folders: list[tuple[int, str]] = []
    listed: set[str] = set()
    for line in tree.splitlines():
        words = line.split()
        if not words:
            continue
        indent = len(line) - len(line.lstrip(" "))
        first = words[0]
        if _FOLDER.fullmatch(first) or first.endswith(".py"):
            while folders and folders[-1][0] >= indent:
                folders.pop()
            if first.endswith(".py"):
                listed.add("".join(name for _, name in folders) + first)
            else:
                folders.append((indent, first))
    return listed


def test_architecture_reads_its_tree_by_folder() -> None:
    text = "```\nbot/   the bot\n  a.py   x\n  sub/   y\n    b.py   z\n  c.py   w\n```\n"
    assert architecture_modules(text) == {"bot/a.py", "bot/sub/b.py", "bot/c.py"}


def test_architecture_lists_every_module_of_bot_and_training() -> None:
    listed = architecture_modules((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    on_disk = {
        p.relative_to(ROOT).as_posix()
        for package in ("bot", "training")
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py"
    }
    assert sorted(on_disk - listed) == [], "modules missing from docs/ARCHITECTURE.md"
    assert sorted(listed - on_disk) == [], "docs/ARCHITECTURE.md lists modules that are gone"
