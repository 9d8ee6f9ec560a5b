"""The models service, without Discord: found by handle, deleted with everything they keep."""

from __future__ import annotations

import pytest
from discord_world import add_model
from service_fakes import RecordingCache, models_for

from bot.config import BotSettings
from bot.jobs import JobRunner
from bot.services import uploads
from bot.services.models import Models
from bot.store import Store
from training.errors import InputError
from training.handles import parse_handle

GUILD, USER = 5, 6


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
