"""The training requests service, without Discord: intake, source and option rules, ownership,
and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import BotSettings
from bot.jobs import JobRunner
from bot.services import uploads
from bot.services.training_requests import (
    TrainingRequests,
    check_options,
    no_source_sentence,
    training_command,
)
from bot.store import Store
from training.errors import InputError
from training.handles import parse_handle, parse_handles

GUILD, CHANNEL, USER, OTHER = 11, 22, 33, 44


class FakeUpload:
    """An attachment: a name, an announced size, and the bytes it saves."""

    def __init__(self, filename: str, data: bytes, size: int | None = None) -> None:
        self.filename = filename
        self.data = data
        self.size = len(data) if size is None else size

    async def save(self, fp: Path) -> int:
        fp.write_bytes(self.data)
        return len(self.data)


@pytest.fixture
def requests(store: Store, bot_settings: BotSettings) -> TrainingRequests:
    runner = JobRunner(store, bot_settings, python="python")
    return TrainingRequests(store, bot_settings, runner)


def _upload_folders(settings: BotSettings) -> list[Path]:
    root = settings.guild_uploads_dir(GUILD)
    return list(root.iterdir()) if root.exists() else []


async def test_an_x_handle_without_files_or_api_is_told_what_to_attach(
    requests: TrainingRequests,
) -> None:
    with pytest.raises(InputError) as refused:
        await requests.receive(GUILD, parse_handles(["@jack"]))
    assert str(refused.value) == no_source_sentence("!")


async def test_network_handles_need_no_files_and_no_api(requests: TrainingRequests) -> None:
    handles = parse_handles(["bluesky:alice.bsky.social", "@bob@social.example"])
    received = await requests.receive(GUILD, handles)
    assert received.sources == ["bluesky", "mastodon"] and received.saved == []
    with pytest.raises(InputError, match="reads X handles only"):
        await requests.receive(GUILD, handles, use_api=True)


async def test_an_upload_larger_than_announced_is_refused_and_deleted(
    requests: TrainingRequests, bot_settings: BotSettings
) -> None:
    limit = bot_settings.max_attachment_bytes
    liar = FakeUpload("tweets.csv", b"x" * (limit + 1), size=10)
    with pytest.raises(InputError, match=r"tweets\.csv is .* over this bot's"):
        await requests.receive(GUILD, parse_handles(["@jack"]), files=[liar])
    assert _upload_folders(bot_settings) == []


async def test_files_and_api_together_are_refused_before_anything_is_saved(
    requests: TrainingRequests, bot_settings: BotSettings
) -> None:
    with pytest.raises(InputError, match="either an attachment or `api`"):
        await requests.receive(
            GUILD, parse_handles(["@jack"]), use_api=True, files=[FakeUpload("a.csv", b"t\n")]
        )
    assert _upload_folders(bot_settings) == []


async def test_a_refused_request_leaves_no_upload_behind(
    requests: TrainingRequests, bot_settings: BotSettings, store: Store
) -> None:
    received = await requests.receive(
        GUILD, parse_handles(["@jack"]), files=[FakeUpload("tweets.csv", b"text\nhi\n")]
    )
    assert received.saved[0].is_file()
    await store.set_guild_setting(GUILD, "epochs", 0)  # an option no job may have
    with pytest.raises(InputError, match="number of epochs"):
        await requests.queue(GUILD, CHANNEL, USER, received)
    assert _upload_folders(bot_settings) == []


def test_options_are_known_keys_with_usable_values(bot_settings: BotSettings) -> None:
    with pytest.raises(InputError, match="'speed' is not a training option"):
        check_options(bot_settings, {"speed": 3})
    with pytest.raises(InputError, match="Hugging Face model id"):
        check_options(bot_settings, {"base_model": "../../etc"})
    with pytest.raises(InputError, match="either on or off"):
        check_options(bot_settings, {"lora": "yes"})
    assert check_options(bot_settings, {"max_steps": 5}) == {"max_steps": 5}


async def test_an_own_model_name_taken_by_another_member_is_refused(
    requests: TrainingRequests, store: Store, bot_settings: BotSettings
) -> None:
    await store.upsert_model(
        GUILD,
        "me-ada",
        handles=[parse_handle("@ada")],
        sources=[],
        base_model="tiny",
        lora=False,
        path=bot_settings.guild_models_dir(GUILD) / "me-ada",
        trained_by=OTHER,
        owner_id=OTHER,
    )
    with pytest.raises(InputError, match="own model of a member who had your username"):
        await requests.check_own_model(GUILD, USER, "me-ada")
    await requests.check_own_model(GUILD, OTHER, "me-ada")
    await requests.train_me_enabled(GUILD, False)
    with pytest.raises(InputError, match="switched `!train me` off"):
        await requests.check_own_model(GUILD, OTHER, "me-ada")


async def test_the_command_line_names_sources_options_and_the_budget(
    requests: TrainingRequests, bot_settings: BotSettings
) -> None:
    job = await requests.submit(
        GUILD, CHANNEL, USER, parse_handles(["bluesky:alice.bsky.social"]), ["bluesky"]
    )
    models = bot_settings.guild_models_dir(GUILD)
    argv = training_command(job, bot_settings, python="py", models_dir=models, budget_s=60)
    assert argv[:5] == ["py", "-m", "training", "train", "bluesky:alice.bsky.social"]
    assert "--bluesky" in argv and "--from" not in argv
    assert argv[argv.index("--models-dir") + 1] == str(models)
    assert argv[argv.index("--time-budget") + 1] == "60"
    saved = uploads.upload_path(bot_settings, GUILD, "t.csv")
    saved.write_text("text\nhi\n", encoding="utf-8")
    own = await requests.submit(
        GUILD, CHANNEL, USER, parse_handles(["@bob"]), [str(saved)], {"epochs": 2}, name="me-bob"
    )
    argv = training_command(own, bot_settings, python="py", models_dir=models, budget_s=60)
    assert argv[argv.index("--from") + 1] == str(saved.resolve())
    assert argv[argv.index("--name") + 1] == "me-bob"
    assert argv[argv.index("--epochs") + 1] == "2" and "--time-budget" not in argv
