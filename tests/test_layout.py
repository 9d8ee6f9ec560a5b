"""The package layout's promises: the training library stands alone, without Discord."""

from __future__ import annotations

import json
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
