"""``doppeltweet bot`` with a data dir or database it cannot use: one sentence, a non-zero exit,
before anything connects to Discord (so a supervisor's restarts do not crash-loop on a traceback).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.client import open_store
from bot.config import BotSettings
from bot.endpoints import apply_discord_endpoints
from bot.store import StorageError


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    for name in ("DOPPELTWEET_DB_PATH", "DISCORD_API_BASE", "DISCORD_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)
    # A token that is never used: the storage check comes before any connection.
    monkeypatch.setenv("DISCORD_TOKEN", "not.a.real.token")
    yield
    apply_discord_endpoints(None, None)


def _one_sentence(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_a_data_dir_that_cannot_be_made_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("DOPPELTWEET_DATA_DIR", str(blocker / "data"))

    assert main([]) != 0

    line = _one_sentence(capsys.readouterr().err)
    assert line.startswith("error: The bot cannot use its data dir")
    assert "DOPPELTWEET_DATA_DIR" in line


def test_a_damaged_database_file_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "doppeltweet.db").write_bytes(b"this is not SQLite at all " * 100)
    monkeypatch.setenv("DOPPELTWEET_DATA_DIR", str(data))

    assert main([]) != 0

    line = _one_sentence(capsys.readouterr().err)
    assert line.startswith("error: The bot cannot use its database")
    assert "not a database" in line


def test_a_database_locked_by_another_process_at_start_is_one_sentence(
    tmp_path: Path,
) -> None:
    import asyncio

    from bot.store import Store

    path = tmp_path / "bot.db"
    sqlite3.connect(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageError, match="database is locked"):
            asyncio.run(Store.open(path, busy_timeout_ms=50))
    finally:
        other.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_data_dir_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    monkeypatch.setenv("DOPPELTWEET_DATA_DIR", str(data))
    try:
        assert main([]) != 0
    finally:
        data.chmod(0o755)
    assert _one_sentence(capsys.readouterr().err).startswith("error: The bot cannot use")


async def test_a_read_only_database_file_is_refused_at_open(
    make_settings: Callable[..., BotSettings],
) -> None:
    # Read-only through SQLite itself (works even as root): the first write fails at once.
    settings = make_settings()
    store = await open_store(settings)
    await store.close()
    uri = f"file:{settings.db_file}?mode=ro"
    import aiosqlite

    original = aiosqlite.connect

    def read_only(path: object, **kwargs: object):  # type: ignore[no-untyped-def]
        return original(uri, uri=True, **kwargs)

    import bot.store as store_module

    monkey = pytest.MonkeyPatch()
    monkey.setattr(store_module.aiosqlite, "connect", read_only)
    try:
        with pytest.raises(StorageError, match=r"readonly|read-only"):
            await store_module.Store.open(settings.db_file)
    finally:
        monkey.undo()
