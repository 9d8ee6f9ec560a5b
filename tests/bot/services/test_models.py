"""The models service, without Discord: found by handle, deleted with everything they keep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from discord_world import add_model
from service_fakes import (
    CHANNEL,
    GUILD,
    OTHER_USER,
    USER,
    MakeRunner,
    RecordingCache,
    models_for,
    submit,
)

from bot.config import BotSettings
from bot.jobs import JobRunner
from bot.services import uploads
from bot.services.models import Models
from bot.store import Store
from training.errors import InputError
from training.handles import parse_handle, parse_handles


@pytest.fixture
def cache() -> RecordingCache:
    return RecordingCache()


@pytest.fixture
def models(store: Store, bot_settings: BotSettings, cache: RecordingCache) -> Models:
    return models_for(JobRunner(store, bot_settings, python="python"), cache)


async def test_a_handle_finds_its_own_model_before_a_shared_one(
    models: Models, store: Store, bot_settings: BotSettings
) -> None:
    with pytest.raises(InputError, match="no models yet"):
        await models.find(GUILD, None)
    await add_model(store, bot_settings, GUILD, "alice", "bob")
    assert (await models.find(GUILD, parse_handle("@alice"))).name == "alice-bob"
    await add_model(store, bot_settings, GUILD, "alice")
    assert (await models.find(GUILD, parse_handle("@alice"))).name == "alice"
    with pytest.raises(InputError, match="train one with `!train @carol`"):
        await models.find(GUILD, parse_handle("@carol"))


async def test_delete_takes_folder_uploads_record_and_cached_copy(
    models: Models, store: Store, bot_settings: BotSettings, cache: RecordingCache
) -> None:
    upload = uploads.upload_path(bot_settings, GUILD, "alice.csv")
    upload.write_text("text\nhi\n", encoding="utf-8")
    folder = await add_model(store, bot_settings, GUILD, "alice", sources=(str(upload),))
    deleted = await models.delete(GUILD, parse_handle("@alice"))
    assert deleted.name == "alice"
    assert not folder.exists() and not upload.parent.exists()
    assert await store.get_model(GUILD, "alice") is None
    assert cache.invalidated == [folder]
    with pytest.raises(InputError, match="no model called alice in this server"):
        await models.delete(GUILD, "alice")


# -- retrain and delete through the job runner -------------------------------------------------


async def test_retrain_reuses_the_sources_of_the_last_training(
    make_runner: MakeRunner, argv_log: Path
) -> None:
    runner, rec = await make_runner()
    first = await submit(runner)
    await rec.wait(lambda: rec.ended(first.id))
    again = await models_for(runner).retrain(GUILD, CHANNEL, OTHER_USER, "alice")
    await rec.wait(lambda: rec.ended(again.id))
    assert again.sources == first.sources
    runs = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert runs[0] == runs[1]
    with pytest.raises(InputError, match="no model called carol in this server; known: alice"):
        await models_for(runner).retrain(GUILD, CHANNEL, USER, "carol")


async def test_retrain_without_known_sources_says_to_train_again(
    make_runner: MakeRunner, store: Store
) -> None:
    await store.upsert_model(
        GUILD,
        "alice",
        handles=parse_handles(["alice"]),
        sources=[],
        base_model="gpt2",
        lora=False,
        path=Path("/nowhere"),
        trained_by=USER,
    )
    runner, _ = await make_runner(start=False)
    with pytest.raises(InputError, match="does not know what alice was trained from"):
        await models_for(runner).retrain(GUILD, CHANNEL, USER, "alice")


async def test_delete_model_removes_its_folder_record_and_uploads(
    make_runner: MakeRunner, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, rec = await make_runner()
    job = await submit(runner)
    await rec.wait(lambda: rec.ended(job.id))
    folder = rec.finished[0][1].path
    upload_folder = Path(job.sources[0]).parent

    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    again = await models_for(runner).retrain(GUILD, CHANNEL, USER, "alice")
    with pytest.raises(InputError, match=f"cancel it with !cancel {again.id} first"):
        await models_for(runner).delete(GUILD, "alice")
    await runner.cancel(again.id, guild_id=GUILD, user_id=USER, is_admin=False)

    deleted = await models_for(runner).delete(GUILD, "alice")
    assert deleted.name == "alice"
    assert not folder.exists() and not upload_folder.exists()
    assert await store.get_model(GUILD, "alice") is None
    assert runner.settings.guild_uploads_dir(GUILD).is_dir()
