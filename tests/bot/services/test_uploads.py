"""The uploads service: saved where training may read them, deleted in one place."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_fakes import CHANNEL, GUILD, USER, MakeRunner, models_for, submit

from bot.config import BotSettings
from bot.services import uploads
from bot.services.uploads import safe_filename, upload_path
from bot.store import Store
from training.errors import InputError
from training.sources.formats import READABLE_SUFFIXES


def _saved(settings: BotSettings, name: str = "tweets.csv") -> Path:
    path = uploads.upload_path(settings, GUILD, name)
    path.write_text("text\nhello\n", encoding="utf-8")
    return path


def test_several_files_share_one_data_folder_and_must_be_js(bot_settings: BotSettings) -> None:
    paths = uploads.upload_paths(bot_settings, GUILD, ["tweets.js", "note-tweet.js"])
    assert {p.parent.name for p in paths} == {uploads.UPLOAD_ARCHIVE_FOLDER}
    assert len({p.parent for p in paths}) == 1
    with pytest.raises(InputError, match=r"each must be a \.js file"):
        uploads.upload_paths(bot_settings, GUILD, ["tweets.js", "tweets.csv"])
    with pytest.raises(InputError, match="same name"):
        uploads.upload_paths(bot_settings, GUILD, ["tweets.js", "TWEETS.js"])


def test_remove_saved_takes_the_files_and_their_fresh_folders(bot_settings: BotSettings) -> None:
    paths = uploads.upload_paths(bot_settings, GUILD, ["tweets.js", "note-tweet.js"])
    for path in paths:
        path.write_text("[]", encoding="utf-8")
    upload_folder = paths[0].parent.parent
    uploads.remove_saved(paths)
    assert not upload_folder.exists()
    assert bot_settings.guild_uploads_dir(GUILD).is_dir()


async def test_discard_keeps_what_a_model_trains_from_and_skips_remote_sources(
    bot_settings: BotSettings, tmp_path: Path
) -> None:
    kept, dropped = _saved(bot_settings), _saved(bot_settings)
    outside = tmp_path / "elsewhere" / "tweets.csv"
    outside.parent.mkdir()
    outside.write_text("text\n", encoding="utf-8")
    await uploads.discard(
        bot_settings,
        GUILD,
        [str(kept), str(dropped), str(outside), "api", "bluesky", "mastodon"],
        keep={str(kept)},
    )
    assert kept.is_file() and not dropped.parent.exists() and outside.is_file()
    assert bot_settings.guild_uploads_dir(GUILD).is_dir()


@pytest.mark.parametrize("suffix", READABLE_SUFFIXES)
def test_every_format_training_reads_is_accepted(bot_settings: BotSettings, suffix: str) -> None:
    path = uploads.upload_path(bot_settings, GUILD, f"My Archive{suffix.upper()}")
    assert path.name.lower().endswith(suffix)


@pytest.mark.parametrize("name", ["tweets.exe", "tweets.csv.gz", "archive.rar", "noext"])
def test_a_format_training_cannot_read_is_refused(bot_settings: BotSettings, name: str) -> None:
    with pytest.raises(InputError, match="is not a file I can train from: attach an X archive"):
        uploads.upload_path(bot_settings, GUILD, name)
    assert not bot_settings.guild_uploads_dir(GUILD).exists()


# -- names, folders, and how long uploads are kept ---------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("tweets.csv", "tweets.csv"),
        ("../../etc/passwd.csv", "passwd.csv"),
        ("..\\..\\evil.JSONL", "evil.jsonl"),
        ("résumé tweets (1).csv", "resume_tweets_1.csv"),
        (".hidden.js", "hidden.js"),
        ("%%%.zip", "upload.zip"),
    ],
)
def test_safe_filename_keeps_only_a_harmless_base_name(given: str, expected: str) -> None:
    assert safe_filename(given) == expected


async def test_upload_paths_are_unique_folders_inside_the_servers_uploads(
    make_runner: MakeRunner, bot_settings: BotSettings
) -> None:
    runner, _ = await make_runner(start=False)
    first = upload_path(runner.settings, GUILD, "../../../tweets.csv")
    second = upload_path(runner.settings, GUILD, "tweets.csv")
    uploads = bot_settings.guild_uploads_dir(GUILD).resolve()
    assert first.parent.parent == uploads == second.parent.parent
    assert first.parent != second.parent and first.name == second.name == "tweets.csv"
    with pytest.raises(InputError, match="not a file I can train from"):
        upload_path(runner.settings, GUILD, "payload.exe")


async def test_uploads_are_kept_only_while_a_model_trains_from_them(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    runner, rec = await make_runner()
    monkeypatch.setenv("FAKE_TRAINING_MODE", "error")
    failed = await submit(runner)
    await rec.wait(lambda: rec.ended(failed.id))
    assert not Path(failed.sources[0]).exists()  # nothing will ever train from it

    monkeypatch.setenv("FAKE_TRAINING_MODE", "succeed")
    first = await submit(runner)
    await rec.wait(lambda: rec.ended(first.id))
    monkeypatch.setenv("FAKE_TRAINING_MODE", "crash")
    retry = await models_for(runner).retrain(GUILD, CHANNEL, USER, "alice")
    await rec.wait(lambda: rec.ended(retry.id))
    assert Path(first.sources[0]).is_file()  # !retrain still needs it

    monkeypatch.setenv("FAKE_TRAINING_MODE", "succeed")
    newer = await submit(runner)
    await rec.wait(lambda: rec.ended(newer.id))
    assert not Path(first.sources[0]).exists()  # replaced by the newer file
    assert Path(newer.sources[0]).is_file()
    assert (await store.get_model(GUILD, "alice")).sources == newer.sources  # type: ignore[union-attr]
