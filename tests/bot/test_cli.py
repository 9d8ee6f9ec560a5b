"""``doppeltweet bot``: --help, and one sentence for every configuration mistake before connecting.

Running the bot end to end (gateway, REST, SIGTERM) is covered by test_smoke_loopback.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.endpoints import apply_discord_endpoints

_SETTINGS_ENV = (
    "DISCORD_TOKEN",
    "DOPPELTWEET_DISCORD_TOKEN",
    "DISCORD_API_BASE",
    "DISCORD_GATEWAY_URL",
    "DOPPELTWEET_MAX_CONCURRENT_JOBS",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No .env and none of a developer's settings: each test sets what it needs."""
    monkeypatch.chdir(tmp_path)
    for name in _SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOPPELTWEET_DATA_DIR", str(tmp_path / "data"))
    yield
    apply_discord_endpoints(None, None)


def test_help_names_the_required_token_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: doppeltweet bot")
    assert "DISCORD_TOKEN (required)" in out


def test_an_unknown_option_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--verbose"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --verbose" in capsys.readouterr().err


def test_a_missing_token_is_one_sentence_and_exit_code_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main([]) == 2
    assert capsys.readouterr().err == (
        "error: Set DISCORD_TOKEN (in the environment or .env) to the bot token from the "
        "Discord developer portal.\n"
    )
    assert not (tmp_path / "data").exists()


def test_a_blank_token_counts_as_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "   ")
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("error: Set DISCORD_TOKEN")


def test_the_token_can_come_from_a_dotenv_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "DISCORD_TOKEN=secret-token-from-dotenv\nDISCORD_API_BASE=ftp://example.com\n",
        encoding="utf-8",
    )
    assert main([]) == 2  # the token was found: the endpoint is what is refused
    err = capsys.readouterr().err
    assert err.startswith("error: DISCORD_API_BASE must start with http:// or https://")
    assert "secret-token-from-dotenv" not in err


def test_an_invalid_setting_is_one_sentence_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token")
    monkeypatch.setenv("DOPPELTWEET_MAX_CONCURRENT_JOBS", "0")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: The setting MAX_CONCURRENT_JOBS is invalid: "
        "Input should be greater than or equal to 1.\n"
    )
    assert "secret-token" not in err
