"""One auto-post's steps, without Discord: what pauses a schedule and where a post goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.config import BotSettings
from bot.services import autoposts
from bot.store import ModelRecord, Schedule, Store
from training.errors import ModelError
from training.handles import parse_handles


@dataclass
class Result:
    tweets: list[str]
    rejected: int = 0


@dataclass
class ScriptedCache:
    """A model cache that answers with one scripted result, or raises one error."""

    result: Result | None = None
    error: Exception | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def generate(self, path: Path, prompt: str, **options: Any) -> Result:
        self.calls.append({"prompt": prompt, **options})
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _schedule(**fields: Any) -> Schedule:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    values: dict[str, Any] = {
        "id": 1,
        "guild_id": 10,
        "model_name": "jack",
        "channel_id": 20,
        "kind": "interval",
        "spec": "6h",
        "timezone": "UTC",
        "jitter_s": 0,
        "to_x": False,
        "ai_label": True,
        "paused": False,
        "paused_reason": None,
        "created_by": 1,
        "created_at": now,
        "last_run_at": None,
        "to_bluesky": False,
        "to_mastodon": False,
        "prompt": "",
    }
    values.update(fields)
    return Schedule(**values)


def _model(tmp_path: Path) -> ModelRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return ModelRecord(
        guild_id=10,
        name="jack",
        handles=tuple(parse_handles(["@jack"])),
        sources=("api",),
        base_model="tiny",
        lora=False,
        path=tmp_path,
        trained_by=1,
        created_at=now,
        updated_at=now,
    )


async def test_a_model_with_nothing_new_to_say_pauses_its_schedule(
    store: Store, tmp_path: Path
) -> None:
    cache = ScriptedCache(Result([], rejected=12))
    with pytest.raises(autoposts.Paused, match="12 tries were repeats") as paused:
        await autoposts.generate(
            cache,  # type: ignore[arg-type]
            store,
            _schedule(),
            _model(tmp_path),
            public=str,
        )
    assert paused.value.tell


async def test_an_unusable_model_pauses_with_the_public_sentence(
    store: Store, tmp_path: Path
) -> None:
    cache = ScriptedCache(error=ModelError("The model at /srv/x is damaged."))
    with pytest.raises(autoposts.Paused, match=r"^hidden$"):
        await autoposts.generate(
            cache,  # type: ignore[arg-type]
            store,
            _schedule(prompt="Hello"),
            _model(tmp_path),
            public=lambda text: "hidden",
        )
    assert cache.calls[0]["prompt"] == "Hello" and cache.calls[0]["exclude"] == []


async def test_a_post_naming_accounts_stays_off_the_networks_when_so_set(
    bot_settings: BotSettings,
) -> None:
    bot_settings.public_mentions = "skip"
    asked: list[str] = []

    def poster_of(key: str) -> Any:
        asked.append(key)
        raise AssertionError("no poster is needed")

    text, targets, errors = await autoposts.choose_networks(
        "hi @jack", _schedule(to_bluesky=True), bot_settings, poster_of
    )
    assert (text, targets, errors, asked) == ("hi @jack", [], [], [])
