"""The uploads service: saved where training may read them, deleted in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import BotSettings
from bot.services import uploads
from training.errors import InputError
from training.sources.formats import READABLE_SUFFIXES

GUILD = 7


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
