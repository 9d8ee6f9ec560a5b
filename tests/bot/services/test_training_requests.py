"""The training requests service, without Discord: intake, source and option rules, ownership,
and the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from service_fakes import (
    CHANNEL,
    GUILD,
    OTHER_GUILD,
    OTHER_USER,
    USER,
    MakeRunner,
    requests_for,
    submit,
    upload,
)

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
        trained_by=OTHER_USER,
        owner_id=OTHER_USER,
    )
    with pytest.raises(InputError, match="own model of a member who had your username"):
        await requests.check_own_model(GUILD, USER, "me-ada")
    await requests.check_own_model(GUILD, OTHER_USER, "me-ada")
    await requests.train_me_enabled(GUILD, False)
    with pytest.raises(InputError, match="switched `!train me` off"):
        await requests.check_own_model(GUILD, OTHER_USER, "me-ada")


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


# -- the command line, as the training process receives it -------------------------------------


async def test_job_options_and_settings_become_training_arguments(
    make_runner: MakeRunner, argv_log: Path, make_settings: Callable[..., BotSettings]
) -> None:
    bases = {"ja": "Qwen/Qwen2.5-0.5B"}
    settings = make_settings(train_epochs=2, base_by_language=bases)
    runner, rec = await make_runner(settings)
    job = await submit(runner, base_model="tiny", lora=True, max_steps=2)
    await rec.wait(lambda: rec.ended(job.id))
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv[argv.index("--base-model") + 1] == "tiny"
    # The training process picks among them by the language of the cleaned tweets.
    assert json.loads(argv[argv.index("--base-by-language") + 1]) == bases
    assert "--lora" in argv
    assert argv[argv.index("--max-steps") + 1] == "2"
    assert argv[argv.index("--epochs") + 1] == "2"
    assert rec.finished[0][1].model.lora is True


async def test_api_and_bluesky_sources_become_their_flags(
    make_runner: MakeRunner, argv_log: Path
) -> None:
    runner, rec = await make_runner()
    job = await requests_for(runner).submit(
        GUILD, CHANNEL, USER, [parse_handle("bluesky:alice.bsky.social")], ["bluesky"]
    )
    await rec.wait(lambda: rec.ended(job.id))
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv[3] == "bluesky:alice.bsky.social" and "--bluesky" in argv
    assert "--from" not in argv and "--base-by-language" not in argv  # none set


async def test_handles_keep_their_typed_order_so_each_file_stays_with_its_handle(
    make_runner: MakeRunner, argv_log: Path
) -> None:
    runner, rec = await make_runner()
    bob, alice = upload(runner, "bob.csv"), upload(runner, "alice.csv")
    job = await requests_for(runner).submit(
        GUILD, CHANNEL, USER, [parse_handle("@bob"), parse_handle("@alice")], [bob, alice]
    )
    assert job.model_name == "alice-bob"
    await rec.wait(lambda: rec.ended(job.id))
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv[3:5] == ["bob", "alice"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--from"] == [bob, alice]


async def test_a_servers_settings_fill_the_options_a_job_leaves_unset(
    make_runner: MakeRunner, argv_log: Path, store: Store
) -> None:
    await store.set_guild_setting(GUILD, "base_model", "tiny")
    await store.set_guild_setting(GUILD, "max_steps", 7)
    runner, rec = await make_runner()
    first = await submit(runner, "@alice")
    second = await submit(runner, "@bob", base_model="gpt2")
    await rec.wait(lambda: rec.ended(first.id) and rec.ended(second.id))
    assert first.options == {"base_model": "tiny", "max_steps": 7}
    runs = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert [r[r.index("--base-model") + 1] for r in runs] == ["tiny", "gpt2"]
    assert [r[r.index("--max-steps") + 1] for r in runs] == ["7", "7"]


async def test_a_job_without_epochs_or_steps_trains_for_the_budget(
    make_runner: MakeRunner, argv_log: Path
) -> None:
    runner, rec = await make_runner()
    budgeted = await submit(runner, "@alice")
    capped = await submit(runner, "@bob", user=OTHER_USER, max_steps=4)
    await rec.wait(lambda: rec.ended(budgeted.id) and rec.ended(capped.id))
    first, second = (json.loads(line) for line in argv_log.read_text().splitlines())
    assert first[first.index("--time-budget") + 1] == "300"
    assert "--time-budget" not in second and second[second.index("--max-steps") + 1] == "4"


# -- refused before queueing -------------------------------------------------------------------


async def test_invalid_options_are_refused_before_queueing(make_runner: MakeRunner) -> None:
    runner, _ = await make_runner(start=False)
    with pytest.raises(InputError, match="not a training option"):
        await submit(runner, learning_rate=1)
    with pytest.raises(InputError, match="whole number"):
        await submit(runner, max_steps=0)
    for path in ("/etc", "../models/alice", "a/b/c"):
        with pytest.raises(InputError, match="Hugging Face model id"):
            await submit(runner, base_model=path)
    assert await runner.queue(GUILD) == []


async def test_sources_outside_the_servers_uploads_are_refused(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    runner, _ = await make_runner(start=False)
    outside = tmp_path / "tweets.csv"
    outside.write_text("text\nhi\n")
    with pytest.raises(InputError, match="uploaded in this server"):
        await requests_for(runner).submit(
            GUILD, CHANNEL, USER, parse_handles(["a"]), [str(outside)]
        )
    other_servers = upload(runner, guild=OTHER_GUILD)
    with pytest.raises(InputError, match="uploaded in this server"):
        await requests_for(runner).submit(
            GUILD, CHANNEL, USER, parse_handles(["a"]), [other_servers]
        )
    with pytest.raises(InputError, match="Attach an X archive"):
        await requests_for(runner).submit(GUILD, CHANNEL, USER, parse_handles(["a"]), [])


async def test_sources_must_be_uploads_or_one_remote_source(make_runner: MakeRunner) -> None:
    runner, _ = await make_runner(start=False)
    two = parse_handles(["a", "b"])
    with pytest.raises(InputError, match="not a mix"):
        await requests_for(runner).submit(GUILD, CHANNEL, USER, two, ["api", upload(runner)])
    with pytest.raises(InputError, match=r"one per handle \(2\), not 3"):
        await requests_for(runner).submit(
            GUILD, CHANNEL, USER, two, [upload(runner) for _ in range(3)]
        )
