"""The bases docs/training.md recommends per budget, by architecture: a folder of a Llama-shaped
(SmolLM2-360M / 1.7B) or Qwen2-shaped (Qwen2.5) model trains with LoRA on every linear layer,
is converted to the fast path under ``auto`` (smoothed, int8 checked) and writes tweets through
both backends with the same filters.

The weights are random and tiny (the Hub is not reachable here), so this tests the code path a
real user's ``--base-model Qwen/Qwen2.5-0.5B`` takes, not the quality such a base reaches.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.training.generation.tiny_models import random_base
from training.generation.fast_build import FAST_DIR, fast_artifact

#: These tests are about the CTranslate2 path, which ``auto`` tries after llama.cpp.
pytestmark = pytest.mark.usefixtures("ctranslate2_engine")


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_a_recommended_architecture_trains_with_lora_and_serves_fast(
    kind: str, tmp_path: Path, sample_table
) -> None:
    from training.generation import TweetGenerator
    from training.progress import JsonProgress
    from training.store import ModelStore
    from training.train import TrainConfig, train_model

    base = random_base(kind, tmp_path / f"{kind}-base", list(sample_table.handles[0].kept))
    config = TrainConfig(
        base_model=str(base),
        lora=True,
        lora_targets="all-linear",
        epochs=1,
        block_size=64,
        batch_size=8,
        max_steps=2,
    )
    info = train_model(
        sample_table, config, ModelStore(tmp_path / "store"), JsonProgress(io.StringIO())
    )
    record = json.loads((info.path / "training.json").read_text())
    assert record["metrics"]["steps"] == 2
    assert (info.path / "adapter_config.json").is_file()

    artifact = fast_artifact(info.path)
    assert artifact is not None and artifact == info.path / FAST_DIR
    source = json.loads((artifact / "doppeltweet-source.json").read_text())
    assert source["quantization"] in {"int8", "float32"}
    auto = source["auto"]
    assert "reason" not in auto, auto  # int8 was measured against float32
    assert auto["smoothed_layers"] == 4 * 2  # per layer: norm→qkv, norm→mlp, v→o, up→down

    fast = TweetGenerator.load(info.path, device="cpu")
    torch_generator = TweetGenerator.load(info.path, device="cpu", backend="torch")
    assert fast.backend == "ctranslate2" and torch_generator.backend == "torch"
    for generator in (fast, torch_generator):
        result = generator.generate(n=3, seed=1)
        assert result.candidates >= 1
        for tweet in result.tweets:
            assert 0 < len(tweet) <= 280 and tweet == tweet.strip()
