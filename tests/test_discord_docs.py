"""docs/discord.md stays true to the code: invite permissions, intents, settings, Docker volume."""

from __future__ import annotations

import re
from pathlib import Path

import discord
import pytest

from bot.client import bot_intents
from bot.config import BotSettings

DOC = Path(__file__).resolve().parents[1] / "docs" / "discord.md"

#: What the invite asks for, by discord.py's names (the table in docs/discord.md, in order).
INVITE_PERMISSIONS = (
    "view_channel",
    "send_messages",
    "embed_links",
    "attach_files",
    "read_message_history",
    "use_application_commands",
)


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_permission_table_bits_and_total_match_discord_py(doc: str) -> None:
    permissions = discord.Permissions(**dict.fromkeys(INVITE_PERMISSIONS, True))
    rows = re.findall(r"^\| [^|]+ \| `1 << (\d+)` = (\d+) \|", doc, flags=re.MULTILINE)
    assert len(rows) == len(INVITE_PERMISSIONS)
    bits = [int(shift) for shift, _ in rows]
    assert all(1 << int(shift) == int(value) for shift, value in rows)
    expected_bits = sorted(
        getattr(discord.Permissions, name).flag.bit_length() - 1 for name in INVITE_PERMISSIONS
    )
    assert sorted(bits) == expected_bits
    assert f"**`{permissions.value}`**" in doc


def test_invite_url_is_the_one_discord_py_builds(doc: str) -> None:
    permissions = discord.Permissions(**dict.fromkeys(INVITE_PERMISSIONS, True))
    url = discord.utils.oauth_url(
        0, permissions=permissions, scopes=("bot", "applications.commands")
    ).replace("client_id=0", "client_id=YOUR_APPLICATION_ID")
    assert url in doc


def test_documented_intents_value_is_what_the_bot_requests(doc: str) -> None:
    intents = bot_intents()
    assert intents.message_content and not intents.members and not intents.presences
    assert f"intents value `{intents.value}`" in doc


def test_every_setting_the_page_names_exists(doc: str) -> None:
    known = {"DISCORD_TOKEN", "DISCORD_API_BASE", "DISCORD_GATEWAY_URL"}
    for name, field in BotSettings.model_fields.items():
        known.add(f"DOPPELTWEET_{name.upper()}")
        alias = field.validation_alias
        known.update(getattr(alias, "choices", ()))
    known.add("DOPPELTWEET_MODELS_DIR")  # the pipeline CLI's store, set by the image
    named = set(re.findall(r"\b(?:DOPPELTWEET|DISCORD)_[A-Z_]+\b", doc))
    assert named, "the page names no settings"
    assert named <= known, f"unknown settings in docs/discord.md: {sorted(named - known)}"


def test_env_example_carries_no_token_shaped_secret(doc: str) -> None:
    example = doc.split("```sh\n# .env", 1)[1].split("```", 1)[0]
    token = re.search(r"^DISCORD_TOKEN=(.*)$", example, flags=re.MULTILINE)
    assert token and token[1] == "paste-the-bot-token-here"
    # Real bot tokens are three base64 parts joined by dots.
    assert not re.search(r"[\w-]{20,}\.[\w-]{5,}\.[\w-]{20,}", doc)
