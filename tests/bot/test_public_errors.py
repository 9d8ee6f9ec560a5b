"""Nothing private reaches Discord: every failure the bot relays is scanned for server paths.

Each failure that reaches a channel is driven for real against simcord: a training process whose
error names its upload and model folders, a model folder the real loader cannot load (``!tweet``
and an auto-post), an upload that is gone (``!retrain``), a database that fails under a command.
Then every request the bot sent to Discord is searched for the data dir.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
import simcord
from discord_world import CSV, World, add_model

from bot.client import create_bot
from bot.config import BotSettings
from bot.jobs import JobRunner
from bot.model_cache import ModelCache
from bot.public_errors import STORAGE, public_message
from bot.store import UNAVAILABLE, StorageError, Store

pytestmark = pytest.mark.timeout(120)

#: A training process as a careless library would write one: its error names server paths.
LEAKY_TRAINING = r"""#!{python}
import json, sys
args = sys.argv[1:]
source = args[args.index("--from") + 1]
models = args[args.index("--models-dir") + 1]
message = f"The file {{source}} could not be read, and {{models}}/x is locked."
print(json.dumps({{"phase": "loading", "message": f"loading base model {{models}}/base"}}),
      flush=True)
print(json.dumps({{"phase": "error", "message": message}}), flush=True)
sys.exit(1)
"""


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "The model in /srv/bot/data/guilds/123/models/alice has a corrupt dataset.jsonl.",
            "The model in alice has a corrupt dataset.jsonl.",
        ),
        ("'/srv/bot/data/guilds/1/uploads/x/tweets.zip' is gone.", "'tweets.zip' is gone."),
        ("Relative data/guilds/1/models/alice is broken.", "Relative alice is broken."),
        ("Could not reach https://public.api.bsky.app/xrpc/x.", None),
        ("Half and/or 1/2 of the data is fine.", None),
        (r"C:\bot\data\doppeltweet.db is locked.", "doppeltweet.db is locked."),
        ("~/doppeltweet/data/x.db is locked.", "x.db is locked."),
        ("The store at /srv/bot/data is read-only.", f"The store at {STORAGE} is read-only."),
    ],
)
def test_public_message_cuts_paths_to_their_names(text: str, shown: str | None) -> None:
    assert public_message(text, [Path("data"), Path("/srv/bot/data")]) == (shown or text)


def _leaky_python(tmp_path: Path) -> Path:
    script = tmp_path / "leaky-python"
    script.write_text(LEAKY_TRAINING.format(python=sys.executable), encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _sent(env: simcord.Env) -> list[str]:
    """Everything the bot sent to Discord, as text (contents, embeds, edits, uploads' JSON)."""
    return [
        json.dumps(request.json, ensure_ascii=False)
        for request in env.http_requests
        if request.json is not None
    ]


def _assert_private(env: simcord.Env, settings: BotSettings, tmp_path: Path) -> None:
    secrets = {str(settings.data_dir), str(settings.data_dir.resolve()), str(tmp_path)}
    sent = _sent(env)
    assert sent, "the bot sent nothing"
    for text in sent:
        for secret in secrets:
            assert secret not in text, f"a server path reached Discord: {text[:300]}"


async def test_no_failure_the_bot_relays_names_a_server_path(
    bot_settings: BotSettings, store: Store, tmp_path: Path
) -> None:
    runner = JobRunner(store, bot_settings, python=str(_leaky_python(tmp_path)))
    cache = ModelCache(2, 1 << 30)  # the real loader: TweetGenerator.load
    bot = create_bot(bot_settings, store=store, runner=runner, cache=cache)
    try:
        async with simcord.run(bot, settle_timeout=60) as env:
            world = World(env)

            # 1. A training process whose error (and progress) names the upload and model dir.
            await world.alice.send(world.channel, "!train @jack", attachments=[("t.csv", CSV)])
            assert "**Job #1 · jack** — Failed: The file t.csv could not be read" in (
                world.last_text()
            )

            # 2. A model folder the real loader cannot load: !tweet's sentence.
            await add_model(store, bot_settings, world.guild.id, "bob")
            await world.alice.send(world.channel, "!tweet @bob")
            assert world.handled_errors()  # the loader's ModelError was answered

            # 3. An upload that is gone from the storage: !retrain's sentence.
            gone = bot_settings.guild_uploads_dir(world.guild.id) / "x" / "gone.csv"
            await add_model(store, bot_settings, world.guild.id, "carol", sources=(str(gone),))
            await world.admin.send(world.channel, "!retrain @carol")
            assert "gone.csv" in world.last_text()
            world.handled_errors()

            # 4. An auto-post whose model cannot be loaded pauses and says why in the channel.
            schedule = await store.add_schedule(
                world.guild.id,
                "bob",
                world.channel.id,
                kind="interval",
                spec="6h",
                timezone="UTC",
                created_by=world.admin.id,
            )
            await bot.autoposter.run_schedule(schedule.id)
            await env.settle()
            assert "is paused" in world.last_text()

            _assert_private(env, bot_settings, tmp_path)
    finally:
        await runner.stop()
        await cache.close()


async def test_a_database_deleted_under_the_bot_is_one_sentence_and_no_crash(
    bot_settings: BotSettings, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = JobRunner(store, bot_settings, python=str(_leaky_python(tmp_path)))
    bot = create_bot(bot_settings, store=store, runner=runner)
    try:
        async with simcord.run(bot, settle_timeout=60) as env:
            world = World(env)
            await add_model(store, bot_settings, world.guild.id, "bob")
            await world.alice.send(world.channel, "!models")
            assert "bob" in world.last_text()

            store.path.unlink()
            for command in ("!models", "!jobs", "!tweet @bob"):
                await world.alice.send(world.channel, command)
                assert world.last_text() == UNAVAILABLE
            await world.alice.send(world.channel, "!train @jack", attachments=[("t.csv", CSV)])
            assert world.last_text() == UNAVAILABLE
            assert world.handled_errors() == [StorageError] * 4
            assert any(
                "cannot be used" in r.getMessage() and "deleted" in r.getMessage()
                for r in caplog.records
            )
            # Still connected and answering what needs no database.
            await world.alice.send(world.channel, "!help")
            assert world.last_text() != UNAVAILABLE
            _assert_private(env, bot_settings, tmp_path)
    finally:
        await runner.stop()


async def test_a_database_damaged_under_the_bot_is_one_sentence(
    bot_settings: BotSettings, tmp_path: Path
) -> None:
    path = tmp_path / "damaged.db"
    store = await Store.open(path)
    bot = create_bot(bot_settings, store=store)
    try:
        async with simcord.run(bot, settle_timeout=60) as env:
            world = World(env)
            # Garbage over every page, in place (the same file, so only SQLite can tell).
            size = path.stat().st_size
            with path.open("r+b") as handle:
                handle.write(b"\xde\xad" * (size // 2))
            for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
                if leftover.exists():
                    with leftover.open("r+b") as handle:
                        handle.write(b"\xde\xad" * (leftover.stat().st_size // 2))
            await world.alice.send(world.channel, "!models")
            assert world.last_text() == UNAVAILABLE
            assert world.handled_errors() == [StorageError]
    finally:
        await bot.runner.stop()
        await store.close()


async def test_a_locked_database_is_the_same_sentence_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    path = tmp_path / "locked.db"
    store = await Store.open(path, busy_timeout_ms=50)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageError) as caught:
            await store.set_guild_setting(1, "base_model", "gpt2")
        assert str(caught.value) == UNAVAILABLE
        assert any("database is locked" in r.getMessage() for r in caplog.records)
        other.execute("ROLLBACK")
        await store.set_guild_setting(1, "base_model", "gpt2")  # usable again
        assert await store.get_guild_setting(1, "base_model") == "gpt2"
    finally:
        other.close()
        await store.close()
