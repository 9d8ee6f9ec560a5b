"""Fixtures for the generation tests: tiny model folders, one torch thread, a fresh cache."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.training.generation.tiny_models import (
    COFFEE,
    DREAM,
    GENERIC_TWEETS,
    NEWS,
    one_torch_thread,
    overfit,
    write_records,
)
from training.basemodels import build_tiny_model
from training.generation import clear_generator_cache


@pytest.fixture
def single_torch_thread() -> Iterator[None]:
    """Torch on one thread for the test (tests that train in shared fixtures name it per test)."""
    with one_torch_thread():
        yield


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_generator_cache()
    yield
    clear_generator_cache()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_tiny_model(GENERIC_TWEETS, tmp_path_factory.mktemp("models") / "alice")
    write_records(folder, GENERIC_TWEETS)
    return folder


@pytest.fixture(scope="module")
def overfit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [DREAM, COFFEE, NEWS]
    folder = build_tiny_model(texts * 5, tmp_path_factory.mktemp("models") / "parrot")
    with one_torch_thread():
        overfit(folder, texts)
    write_records(folder, [DREAM, COFFEE], handles=("parrot",))
    return folder


@pytest.fixture(scope="module")
def lora_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base folder, a full copy of it, and three LoRA adapters on it (one a no-op)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lora")
    base = build_tiny_model(GENERIC_TWEETS, root / ".bases" / "tiny-base")
    full = root / "full"
    shutil.copytree(base, full)
    write_records(full, GENERIC_TWEETS)
    dirs = {"base": base, "full": full}
    for name, scale in (("noop", 0.0), ("lora_a", 2.0), ("lora_b", -2.0)):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True)
        peft_model = get_peft_model(model, config)
        torch.manual_seed(len(name))
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    param.copy_(torch.randn_like(param) * scale)
        folder = root / name
        peft_model.save_pretrained(folder)
        for tok_file in base.glob("tokenizer*"):
            shutil.copy(tok_file, folder / tok_file.name)
        write_records(folder, GENERIC_TWEETS, base_model=str(base), lora=True)
        dirs[name] = folder
    return dirs
