"""Fixtures shared by the training and bot tests: the settings factories, a data table and a
tiny model.

Everything is built offline from synthetic tweets, so no test downloads a model. The trained model
is built once per session (a few seconds on 2 cores) and must be treated as read-only: copy it
(``shutil.copytree``) before changing it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from training.cleaning import DataTable, HandleData
from training.handles import parse_handle

if TYPE_CHECKING:
    from bot.config import BotSettings
    from training.config import TrainingSettings

_VOCABULARY = (
    "my dream is to build a rocket and fly to the moon with friends coffee code python "
    "today great people vote change future hope music city night morning team win learn "
    "new book read write garden rain sun happy thanks everyone"
)


def synthetic_tweets(count: int, seed: int = 0) -> list[str]:
    """``count`` deterministic tweet-like sentences (5–14 words, sometimes a #tag or emoji)."""
    rng = random.Random(seed)
    words_pool = _VOCABULARY.split()
    tweets = []
    for _ in range(count):
        words = [rng.choice(words_pool) for _ in range(rng.randint(5, 14))]
        if rng.random() < 0.2:
            words.append("#" + rng.choice(words_pool))
        if rng.random() < 0.1:
            words.append("🎉")
        tweets.append(" ".join(words).capitalize())
    return tweets


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., BotSettings]:
    """Builds the bot's test settings: every path in a temporary folder, owner 42, short grace
    periods, no .env read; keyword arguments change fields (validated as the environment is)."""
    from bot.config import BotSettings

    def make(**overrides: Any) -> BotSettings:
        fields: dict[str, Any] = {
            "_env_file": None,
            "data_dir": tmp_path / "data",
            "owner_ids": "42",
            "cancel_grace_s": 2,
            "progress_edit_interval_s": 1,
        }
        return BotSettings(**{**fields, **overrides})

    return make


@pytest.fixture
def make_training_settings() -> Callable[..., TrainingSettings]:
    """Builds the training library's settings without reading .env; keyword arguments change
    fields."""
    from training.config import TrainingSettings

    def make(**overrides: Any) -> TrainingSettings:
        return TrainingSettings(**{"_env_file": None, **overrides})

    return make


@pytest.fixture(scope="session")
def sample_table() -> DataTable:
    """One handle (@alice): 300 kept tweets (~20,000 characters), 25 retweets, 15 short ones."""
    kept = synthetic_tweets(300)
    return DataTable([HandleData(parse_handle("@alice"), 340, 25, 15, kept)])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, sample_table: DataTable) -> Path:
    """A tiny GPT-2 fully fine-tuned on ``sample_table`` and stored as ``<store>/alice``.

    The folder has everything a real model folder has (weights, tokenizer, dataset.jsonl,
    data_table.json, training.json, loss.png, README.md); its parent is the model store.
    """
    from training.progress import JsonProgress
    from training.store import ModelStore
    from training.train import TrainConfig, train_model

    store = ModelStore(tmp_path_factory.mktemp("models"))
    # fp32 whatever the CPU: the tests reload it and expect its recorded losses exactly.
    config = TrainConfig(
        base_model="tiny",
        epochs=1,
        block_size=64,
        batch_size=8,
        learning_rate=2e-3,
        seed=7,
        precision="fp32",
    )
    with open(store.root / ".progress.jsonl", "w", encoding="utf-8") as stream:
        info = train_model(sample_table, config, store, JsonProgress(stream))
    return info.path


@pytest.fixture(scope="session")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV (``created_at,text``) of 330 tweets by one person: 300 long ones, 20 RTs, 10 short."""
    import csv

    rows = [*synthetic_tweets(300), *(f"RT @bob: {t}" for t in synthetic_tweets(20, seed=1))]
    rows += [f"@bob thanks {i}!" for i in range(10)]
    path = tmp_path_factory.mktemp("csv") / "alice.csv"
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["created_at", "text"])
        for i, text in enumerate(rows):
            writer.writerow([f"2024-01-{1 + i % 28:02d}", text])
    return path


@pytest.fixture(scope="module")
def ctranslate2_engine() -> object:
    """Pins ``DOPPELTWEET_GENERATION_BACKEND=ctranslate2`` for a module whose tests are about the
    CTranslate2 path (``auto`` prefers llama.cpp where it is installed)."""
    from training.config import get_settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOPPELTWEET_GENERATION_BACKEND", "ctranslate2")
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()
