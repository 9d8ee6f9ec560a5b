"""BotSettings: the environment and .env, its sections, secrets kept secret, per-server paths, the
docs tables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import Field, SecretStr, ValidationError

from bot.config import (
    SECTIONS,
    BotSettings,
    DiscordSettings,
    PostingSettings,
    StorageSettings,
    env_names,
    is_secret,
    secret_env_names,
)
from bot.config_docs import bot_tables, configuration_doc
from training.errors import InputError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine's environment or a .env in the working folder."""
    for name in list(os.environ):
        if name.startswith(("DOPPELTWEET_", "DISCORD_", "X_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_match_the_documented_ones() -> None:
    settings = BotSettings()
    assert settings.prefix == "!" and settings.owner_ids == frozenset()
    assert settings.db_file == Path("data/doppeltweet.db")
    assert (settings.max_concurrent_jobs, settings.max_queued_jobs_per_user) == (1, 2)
    assert settings.max_attachment_bytes == 10 * 1024 * 1024
    assert (settings.tweet_cooldown_s, settings.cache_max_models) == (10, 4)
    assert settings.cache_max_bytes == 4096 * 1024 * 1024
    assert (settings.base_model, settings.lora, settings.timezone) == ("smollm2-135m", True, "UTC")
    assert settings.discord_token is None and not settings.x_posting_configured


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "abc.def")
    monkeypatch.setenv("DOPPELTWEET_OWNER_IDS", " 12, 34 ,")
    monkeypatch.setenv("DOPPELTWEET_PREFIX", "?")
    monkeypatch.setenv("DOPPELTWEET_DATA_DIR", "/srv/dt")
    monkeypatch.setenv("DOPPELTWEET_MAX_CONCURRENT_JOBS", "2")
    monkeypatch.setenv("DOPPELTWEET_LORA", "true")
    monkeypatch.setenv("DOPPELTWEET_TRAIN_MAX_STEPS", "50")
    monkeypatch.setenv("DOPPELTWEET_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("DISCORD_API_BASE", "http://127.0.0.1:9999/api/v10")
    settings = BotSettings()
    assert settings.token() == "abc.def"
    assert settings.owner_ids == frozenset({12, 34})
    assert settings.prefix == "?" and settings.max_concurrent_jobs == 2 and settings.lora
    assert settings.train_max_steps == 50 and settings.timezone == "Europe/Berlin"
    assert settings.db_file == Path("/srv/dt/doppeltweet.db")
    assert settings.discord_api_base == "http://127.0.0.1:9999/api/v10"


def test_settings_come_from_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "DISCORD_TOKEN=from-dotenv\nDOPPELTWEET_DB_PATH=/var/lib/dt.db\nDOPPELTWEET_OWNER_IDS=7\n",
        encoding="utf-8",
    )
    settings = BotSettings()
    assert settings.token() == "from-dotenv"
    assert settings.db_file == Path("/var/lib/dt.db") and settings.owner_ids == frozenset({7})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DOPPELTWEET_OWNER_IDS", "12,alice"),
        ("DOPPELTWEET_TIMEZONE", "Mars/Olympus"),
        ("DOPPELTWEET_MAX_CONCURRENT_JOBS", "0"),
        ("DOPPELTWEET_MAX_ATTACHMENT_MB", "-1"),
        ("DOPPELTWEET_PREFIX", ""),
        ("DOPPELTWEET_BASE_BY_LANGUAGE", "Qwen/Qwen2.5-0.5B"),
        ("DOPPELTWEET_BASE_BY_LANGUAGE", '{"japanese": "Qwen/Qwen2.5-0.5B"}'),
        ("DOPPELTWEET_BASE_BY_LANGUAGE", '{"ja": ""}'),
    ],
)
def test_bad_values_are_refused_at_startup(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        BotSettings()


def test_secrets_never_show_in_a_repr_or_a_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "DISCORD_TOKEN": "discord-secret-1",
        "X_CONSUMER_KEY": "x-secret-2",
        "X_CONSUMER_SECRET": "x-secret-3",
        "X_ACCESS_TOKEN": "x-secret-4",
        "X_ACCESS_TOKEN_SECRET": "x-secret-5",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    settings = BotSettings()
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert not any(value in shown for value in secrets.values())
    assert settings.x_posting_configured


def test_a_missing_token_is_one_sentence_saying_how_to_set_it() -> None:
    with pytest.raises(InputError, match=r"^Set DISCORD_TOKEN .*developer portal\.$"):
        BotSettings().token()


def test_each_server_gets_its_own_folders(tmp_path: Path) -> None:
    settings = BotSettings(data_dir=tmp_path)
    assert settings.guild_models_dir(123) == tmp_path / "guilds" / "123" / "models"
    assert settings.guild_uploads_dir(123) == tmp_path / "guilds" / "123" / "uploads"
    for bad in (0, -5, True, "123", "../../etc"):
        with pytest.raises(InputError, match="not a Discord server id"):
            settings.guild_models_dir(bad)  # type: ignore[arg-type]


def test_the_configuration_docs_show_the_current_table() -> None:
    table = bot_tables()
    assert DOCS.read_text(encoding="utf-8") == configuration_doc(), (
        "docs/configuration.md is out of date: regenerate it with "
        "`python -m bot.config_docs > docs/configuration.md`"
    )
    for name, field in BotSettings.model_fields.items():
        assert field.description, f"{name} needs a description for the docs"
    assert "`DISCORD_TOKEN`" in table and "`DOPPELTWEET_OWNER_IDS`" in table


def test_bases_per_language_come_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BotSettings().base_by_language == {}
    monkeypatch.setenv(
        "DOPPELTWEET_BASE_BY_LANGUAGE", '{"ja": "Qwen/Qwen2.5-0.5B", "zh": " Qwen/Qwen2.5-1.5B "}'
    )
    assert BotSettings().base_by_language == {
        "ja": "Qwen/Qwen2.5-0.5B",
        "zh": "Qwen/Qwen2.5-1.5B",
    }


def test_the_sections_make_up_the_settings_each_field_once() -> None:
    assert BotSettings.__bases__ == tuple(reversed(SECTIONS))
    in_sections = [name for section in SECTIONS for name in section.model_fields]
    assert in_sections == list(BotSettings.model_fields), "a field is in no section, or in two"
    for section in SECTIONS:
        for name, field in section.model_fields.items():
            assert repr(BotSettings.model_fields[name]) == repr(field)
    titles = [section.SECTION for section in SECTIONS]
    assert all(titles) and len(set(titles)) == len(titles)
    for section in SECTIONS:
        assert f"### {section.SECTION}\n" in bot_tables()
        assert f"#### {section.SECTION}\n\n| Variable |" in bot_tables(level=4)
    with pytest.raises(ValueError, match="heading level"):
        bot_tables(level=7)


def test_a_section_alone_reads_what_the_whole_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("discord_token", "abc.def")
    monkeypatch.setenv("DOPPELTWEET_OWNER_IDS", "12,34")
    monkeypatch.setenv("doppeltweet_data_dir", "/srv/dt")
    monkeypatch.setenv("Mastodon_Access_Token", "m-token")
    monkeypatch.setenv("DOPPELTWEET_SERVE_PORT", "8080")
    monkeypatch.setenv("DOPPELTWEET_RAY_NUM_GPUS", "1")
    monkeypatch.setenv("DOPPELTWEET_BASE_BY_LANGUAGE", '{"ja": "Qwen/Qwen2.5-0.5B"}')
    whole = BotSettings().model_dump()
    for section in SECTIONS:
        assert section().model_dump() == {name: whole[name] for name in section.model_fields}
    assert DiscordSettings().token() == "abc.def"
    assert StorageSettings().db_file == Path("/srv/dt/doppeltweet.db")
    assert PostingSettings().mastodon_access_token == SecretStr("m-token")
    monkeypatch.setenv("DOPPELTWEET_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValidationError):
        PostingSettings()


def test_the_secrets_are_the_fields_typed_secret_whatever_their_section() -> None:
    bot_secrets = secret_env_names([BotSettings])
    assert {
        "DISCORD_TOKEN",
        "DOPPELTWEET_DISCORD_TOKEN",
        "DOPPELTWEET_GENERATION_TOKEN",
        "X_CONSUMER_KEY",
        "X_CONSUMER_SECRET",
        "X_ACCESS_TOKEN",
        "X_ACCESS_TOKEN_SECRET",
        "BLUESKY_APP_PASSWORD",
        "MASTODON_ACCESS_TOKEN",
    } <= bot_secrets
    assert bot_secrets == secret_env_names(SECTIONS)
    assert "BLUESKY_HANDLE" not in bot_secrets and "DOPPELTWEET_OWNER_IDS" not in bot_secrets
    assert "DISCORD_TOKEN" not in secret_env_names([BotSettings], kept=["discord_token"])

    class WithWebhook(BotSettings):
        webhook_secret: SecretStr = Field(default=SecretStr(""), description="A new secret.")

    assert is_secret(WithWebhook.model_fields["webhook_secret"])
    assert secret_env_names([WithWebhook]) == bot_secrets | {"DOPPELTWEET_WEBHOOK_SECRET"}


def test_the_docs_name_every_secret_the_models_have() -> None:
    intro = configuration_doc().split("## The bot", 1)[0]
    for name, field in BotSettings.model_fields.items():
        if is_secret(field):
            shown = [env for env in env_names(BotSettings, name) if f"`{env}`" in intro]
            assert shown, f"{name} is a secret the docs do not name"
    assert "`BLUESKY_HANDLE`" not in intro
