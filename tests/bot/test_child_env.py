"""The bot's secrets never reach its training or generation processes, however they are spelled.

Settings are read case-blind, so ``discord_token`` in the environment is the Discord token; the
filters must treat it so.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from service_fakes import MakeRunner

from bot import model_process
from bot.child_env import child_environment, secret_env_names, training_env_names
from bot.config import BotSettings
from bot.jobs import JobRunner
from bot.launchers.ray_jobs import job_env

#: Each secret setting of the bot, in the spellings pydantic-settings accepts.
BOT_SECRETS = {
    "discord_token": "discord-secret",
    "Mastodon_Access_Token": "mastodon-secret",
    "doppeltweet_x_consumer_secret": "x-consumer-secret",
    "X_Access_Token": "x-access-secret",
    "x_access_token_secret": "x-access-token-secret",
    "DOPPELTWEET_x_consumer_key": "x-consumer-key",
    "bluesky_app_password": "bluesky-secret",
    "DoppelTweet_Generation_Token": "generation-secret",
}
PLAIN = {
    "PATH": "/usr/bin",
    "HOME": "/home/bot",
    "doppeltweet_max_tweets": "5000",
    "DOPPELTWEET_MODELS_DIR": "/models",
    "doppeltweet_allow_private_servers": "true",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**BOT_SECRETS, **PLAIN}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("x_bearer_token", "x-read-token")
    monkeypatch.setenv("HF_TOKEN", "hub-token")
    monkeypatch.setenv("DOPPELTWEET_OWNER_IDS", "1234")


def _leaks(env: dict[str, str]) -> set[str]:
    return {value for value in BOT_SECRETS.values() if value in env.values()}


def test_these_spellings_are_the_bots_secrets(environment: None) -> None:
    settings = BotSettings(_env_file=None)
    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == "discord-secret"
    assert settings.mastodon_access_token is not None
    assert settings.mastodon_access_token.get_secret_value() == "mastodon-secret"
    assert settings.generation_token is not None


def test_the_training_process_gets_no_secret_of_the_bot(environment: None) -> None:
    env = JobRunner._environment()
    assert _leaks(env) == set()
    assert "DOPPELTWEET_OWNER_IDS" not in env  # a bot setting, of no use to training
    for name, value in PLAIN.items():
        assert env[name] == value
    # The training settings' own secrets: the X API source and the Hub push need them.
    assert env["x_bearer_token"] == "x-read-token" and env["HF_TOKEN"] == "hub-token"


async def test_the_training_process_gets_no_discord_or_x_posting_secrets(
    make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "discord-secret")
    monkeypatch.setenv("X_ACCESS_TOKEN_SECRET", "x-secret")
    monkeypatch.setenv("X_BEARER_TOKEN", "reading-is-training-work")
    posting = ("BLUESKY_APP_PASSWORD", "MASTODON_ACCESS_TOKEN", "DOPPELTWEET_MASTODON_ACCESS_TOKEN")
    for name in posting:
        monkeypatch.setenv(name, "posting-secret")
    env = JobRunner._environment()
    assert "DISCORD_TOKEN" not in env and "X_ACCESS_TOKEN_SECRET" not in env
    assert not [name for name in posting if name in env]
    assert "posting-secret" not in env.values()
    assert env["X_BEARER_TOKEN"] == "reading-is-training-work"


def test_the_generation_process_gets_no_secret_of_the_bot(
    environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[dict[str, str]] = []

    def popen(*args: Any, **kwargs: Any) -> Any:
        started.append(kwargs["env"])
        raise OSError("not started in this test")

    monkeypatch.setattr(subprocess, "Popen", popen)
    with pytest.raises(model_process.ModelError):
        model_process._Worker(threads=1)
    (env,) = started
    assert _leaks(env) == set()
    assert "x_bearer_token" not in env and env["HF_TOKEN"] == "hub-token"
    assert env["PATH"] == "/usr/bin"


def test_a_ray_job_gets_training_settings_only_whatever_their_case(environment: None) -> None:
    import os

    env = job_env(dict(os.environ), extra=["home"])
    assert _leaks(env) == set() and "x_bearer_token" not in env
    assert env["doppeltweet_max_tweets"] == "5000" and env["HOME"] == "/home/bot"
    assert env["doppeltweet_allow_private_servers"] == "true"


def test_every_secret_field_is_known_by_every_name_it_is_read_from() -> None:
    names = secret_env_names()
    for field in ("DISCORD_TOKEN", "DOPPELTWEET_DISCORD_TOKEN", "DOPPELTWEET_GENERATION_TOKEN"):
        assert field in names
    assert "X_BEARER_TOKEN" in names and "X_BEARER_TOKEN" not in secret_env_names(
        ["x_bearer_token"]
    )
    assert "DOPPELTWEET_MAX_TWEETS" in training_env_names()
    assert not names & training_env_names()
    assert child_environment({"Discord_Token": "x", "LANG": "C"}) == {"LANG": "C"}


def test_every_secret_is_removed_in_any_case_and_nothing_else() -> None:
    names = secret_env_names()
    assert "DISCORD_TOKEN" in names and "MASTODON_ACCESS_TOKEN" in names
    spelled = {f(name): "secret" for name in names for f in (str.lower, str.title, str.upper)}
    assert child_environment({**spelled, "LANG": "C"}) == {"LANG": "C"}
    kept = child_environment({"hf_token": "hub", "X_BEARER_TOKEN": "x"}, secrets_kept=["hf_token"])
    assert kept == {"hf_token": "hub"}
