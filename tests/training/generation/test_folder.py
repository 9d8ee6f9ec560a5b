"""Broken model folders: a missing folder, dataset, record or weights is a clear ModelError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.training.generation.tiny_models import (
    FAST,
)
from training.errors import ModelError
from training.generation import (
    TweetGenerator,
)

# Per test, because training in shared fixtures sets torch to every core again.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_a_missing_folder_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model folder"):
        TweetGenerator.load(tmp_path / "nobody", device="cpu")


def test_a_folder_without_dataset_is_a_model_error(tiny_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_dir, tmp_path / "alice")
    (broken / "dataset.jsonl").unlink()
    with pytest.raises(ModelError, match=r"dataset\.jsonl"):
        TweetGenerator.load(broken, device="cpu")


def test_a_corrupt_dataset_or_record_is_a_model_error(tiny_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_dir, tmp_path / "alice")
    (broken / "dataset.jsonl").write_text('{"handle": "alice", "text": "ok"}\n{not json\n')
    with pytest.raises(ModelError, match=r"corrupt dataset\.jsonl"):
        TweetGenerator.load(broken, device="cpu")
    shutil.copy(tiny_dir / "dataset.jsonl", broken / "dataset.jsonl")
    (broken / "training.json").write_text("{truncated")
    with pytest.raises(ModelError, match=r"training\.json"):
        TweetGenerator.load(broken, device="cpu")


def test_missing_or_damaged_weights_are_a_model_error(tiny_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_dir, tmp_path / "alice")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="weights"):
        TweetGenerator.load(broken, device="cpu")
    (broken / "config.json").unlink()
    with pytest.raises(ModelError, match="no weights"):
        TweetGenerator.load(broken, device="cpu")


def test_a_lora_model_without_its_base_name_is_a_model_error(
    lora_dirs: dict[str, Path], tmp_path: Path
) -> None:
    broken = shutil.copytree(lora_dirs["lora_a"], tmp_path / "alice")
    record = json.loads((broken / "training.json").read_text())
    del record["base_model"]
    (broken / "training.json").write_text(json.dumps(record))
    with pytest.raises(ModelError, match="base model"):
        TweetGenerator.load(broken, device="cpu")


def test_a_damaged_lora_adapter_is_a_model_error_and_leaves_no_base_behind(
    lora_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from training.generation import pool

    broken = shutil.copytree(lora_dirs["lora_a"], tmp_path / "alice")
    (broken / "adapter_model.safetensors").write_bytes(b"damaged")
    bases = set(pool._BASES)
    with pytest.raises(ModelError, match="damaged"):
        TweetGenerator.load(broken, device="cpu")
    assert set(pool._BASES) == bases


def test_a_missing_recorded_base_folder_falls_back_to_the_base_name(
    lora_dirs: dict[str, Path], tmp_path: Path
) -> None:
    folder = shutil.copytree(lora_dirs["lora_a"], tmp_path / "alice")
    record = json.loads((folder / "training.json").read_text())
    record |= {"base_model": str(lora_dirs["base"]), "base_model_path": str(tmp_path / "gone")}
    (folder / "training.json").write_text(json.dumps(record))
    generator = TweetGenerator.load(folder, device="cpu")
    assert generator.generate(n=1, seed=0, settings=FAST).tweets
    generator.close()
