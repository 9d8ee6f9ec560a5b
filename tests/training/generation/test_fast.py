"""The CTranslate2 int8 backend on tiny GPT-2 models: its artifact, its fallbacks, its rules."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
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
from training.errors import InputError
from training.generation import (
    GenerationSettings,
    TweetGenerator,
    get_generator,
    normalize,
    tidy_candidate,
)
from training.generation.artifact import source_stamp
from training.generation.fast_build import FAST_DIR, FAST_FAILED, fast_artifact
from training.generation.llamacpp import llamacpp_installed
from training.generation.stop import TweetEnd

pytest.importorskip("ctranslate2")

#: These tests are about the CTranslate2 path, which ``auto`` tries after llama.cpp.
pytestmark = pytest.mark.usefixtures("ctranslate2_engine")

SHORT = GenerationSettings(max_length=40)
#: The backend tests run on llama.cpp too where it is installed.
LLAMA = pytest.mark.skipif(not llamacpp_installed(), reason="llama-cpp-python is not installed")


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    folder = build_tiny_model(GENERIC_TWEETS, tmp_path / "alice")
    write_records(folder, GENERIC_TWEETS)
    return folder


@pytest.fixture(scope="module")
def parrot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that recites DREAM, COFFEE and NEWS (only the first two guarded as copies)."""
    texts = [DREAM, COFFEE, NEWS]
    folder = build_tiny_model(texts * 5, tmp_path_factory.mktemp("fast") / "parrot")
    with one_torch_thread():
        overfit(folder, texts)
    write_records(folder, [DREAM, COFFEE], handles=("parrot",))
    return folder


@pytest.fixture(scope="module")
def lora_training(tmp_path_factory: pytest.TempPathFactory, sample_table) -> tuple[Path, str]:
    """A trained LoRA model's folder and the progress lines its training wrote."""
    from training.progress import JsonProgress
    from training.store import ModelStore
    from training.train import TrainConfig, train_model

    store = ModelStore(tmp_path_factory.mktemp("fast-lora"))
    config = TrainConfig(
        base_model="tiny", lora=True, epochs=1, block_size=64, batch_size=8, max_steps=2
    )
    stream = io.StringIO()
    return train_model(sample_table, config, store, JsonProgress(stream)).path, stream.getvalue()


@pytest.fixture(scope="module")
def lora_dir(lora_training: tuple[Path, str]) -> Path:
    return lora_training[0]


def test_the_fast_artifact_is_made_on_first_load_and_reused(tiny_dir: Path) -> None:
    assert fast_artifact(tiny_dir) is None
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    assert generator.backend == "ctranslate2"
    artifact = fast_artifact(tiny_dir)
    assert artifact == tiny_dir / FAST_DIR and (artifact / "model.bin").is_file()
    made = (artifact / "model.bin").stat().st_mtime_ns
    assert TweetGenerator.load(tiny_dir, device="cpu").backend == "ctranslate2"
    assert (artifact / "model.bin").stat().st_mtime_ns == made
    assert not list(tiny_dir.glob(".fast-*"))  # no work folder left behind
    assert generator.memory_bytes > 0 and generator.shared_bytes == 0
    assert generator.generate(n=2, settings=SHORT).candidates >= 1


def test_a_lora_model_is_merged_then_converted(lora_dir: Path) -> None:
    generator = TweetGenerator.load(lora_dir, device="cpu")
    assert generator.backend == "ctranslate2" and not generator.is_lora
    result = generator.generate("I", n=2, seed=3, settings=SHORT)
    assert result.candidates >= 1
    torch_generator = TweetGenerator.load(lora_dir, device="cpu", backend="torch")
    assert torch_generator.backend == "torch" and torch_generator.is_lora


def test_training_builds_the_fast_artifact_once_the_model_is_stored(lora_dir: Path) -> None:
    folder = fast_artifact(lora_dir)
    assert folder is not None and (folder / "model.bin").is_file()
    assert not list(lora_dir.glob(".fast-*"))  # no work folder left beside it


def _phases(progress: str) -> list[tuple[str, str | None]]:
    events = [json.loads(line) for line in progress.splitlines() if line.strip()]
    return [(e["phase"], e["message"]) for e in events if e["step"] is None]


def test_training_says_when_it_prepares_fast_generation(lora_training: tuple[Path, str]) -> None:
    phases = _phases(lora_training[1])
    fast_lines = [i for i, (_, m) in enumerate(phases) if m and "fast CPU generation" in m]
    assert len(fast_lines) == 1, phases
    index = fast_lines[0]
    assert phases[index][0] == "saving"
    assert "checking int8 against float32" in phases[index][1]  # auto, the default
    writing = [i for i, (_, m) in enumerate(phases) if m and m.startswith("writing the model")]
    assert writing and writing[0] < index  # announced after the model is stored, not before


def test_no_fast_generation_phase_when_torch_serves(
    tmp_path: Path, sample_table, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.config import get_settings
    from training.progress import JsonProgress
    from training.store import ModelStore
    from training.train import TrainConfig, train_model

    monkeypatch.setenv("DOPPELTWEET_GENERATION_BACKEND", "torch")
    get_settings.cache_clear()
    try:
        stream = io.StringIO()
        config = TrainConfig(base_model="tiny", epochs=1, block_size=64, batch_size=8, max_steps=1)
        info = train_model(sample_table, config, ModelStore(tmp_path), JsonProgress(stream))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert fast_artifact(info.path) is None
    assert not [m for _, m in _phases(stream.getvalue()) if m and "fast CPU" in m]


def test_a_failed_conversion_after_training_leaves_the_model_trained(
    tmp_path: Path, sample_table, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.generation import fast_build
    from training.progress import JsonProgress
    from training.store import ModelStore
    from training.train import TrainConfig, train_model

    def broken(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("the converter crashed")

    monkeypatch.setattr(fast_build, "build_fast_artifact", broken)
    config = TrainConfig(base_model="tiny", epochs=1, block_size=64, batch_size=8, max_steps=1)
    info = train_model(sample_table, config, ModelStore(tmp_path), JsonProgress(io.StringIO()))
    assert (info.path / "training.json").is_file()
    assert fast_artifact(info.path) is None
    monkeypatch.undo()
    # The first load converts it instead.
    assert TweetGenerator.load(info.path, device="cpu").backend == "ctranslate2"
    assert fast_artifact(info.path) is not None


def test_the_torch_backend_can_be_chosen_and_a_bad_name_is_refused(tiny_dir: Path) -> None:
    assert TweetGenerator.load(tiny_dir, device="cpu", backend="torch").backend == "torch"
    assert not (tiny_dir / FAST_DIR).exists()
    with pytest.raises(InputError, match="Unknown generation backend"):
        TweetGenerator.load(tiny_dir, device="cpu", backend="llama.cpp")
    assert get_generator(tiny_dir, device="cpu", backend="torch").backend == "torch"
    assert get_generator(tiny_dir, device="cpu").backend == "ctranslate2"


def test_a_damaged_artifact_is_converted_again(tiny_dir: Path) -> None:
    TweetGenerator.load(tiny_dir, device="cpu")
    (tiny_dir / FAST_DIR / "model.bin").write_bytes(b"not a model")
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    assert generator.backend == "ctranslate2"
    assert (tiny_dir / FAST_DIR / "model.bin").stat().st_size > 1000
    assert generator.generate(n=1, settings=SHORT).candidates >= 1


def test_a_missing_or_half_artifact_is_rebuilt(tiny_dir: Path) -> None:
    TweetGenerator.load(tiny_dir, device="cpu")
    (tiny_dir / FAST_DIR / "model.bin").unlink()
    assert fast_artifact(tiny_dir) is None
    assert TweetGenerator.load(tiny_dir, device="cpu").backend == "ctranslate2"
    assert fast_artifact(tiny_dir) is not None


def test_an_artifact_of_older_weights_is_not_used(tiny_dir: Path) -> None:
    TweetGenerator.load(tiny_dir, device="cpu")
    old = source_stamp(tiny_dir)
    write_records(tiny_dir, GENERIC_TWEETS[:40])  # retrained in place: a new training record
    assert source_stamp(tiny_dir) != old
    assert fast_artifact(tiny_dir) is None
    TweetGenerator.load(tiny_dir, device="cpu")
    assert fast_artifact(tiny_dir) is not None


def test_a_model_that_cannot_be_converted_falls_back_to_torch(tiny_dir: Path) -> None:
    # What a failed conversion leaves: a note for these weights; loads then go straight to torch.
    (tiny_dir / FAST_FAILED).write_text(source_stamp(tiny_dir) + "\nValueError: unsupported\n")
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    assert generator.backend == "torch"
    assert not (tiny_dir / FAST_DIR).exists()
    assert generator.generate(n=1, settings=SHORT).candidates >= 1
    # Retrained: the note is for older weights, so the conversion is tried again and works.
    write_records(tiny_dir, GENERIC_TWEETS[:40])
    assert TweetGenerator.load(tiny_dir, device="cpu").backend == "ctranslate2"
    assert not (tiny_dir / FAST_FAILED).exists()


def test_a_file_where_the_artifact_belongs_is_replaced(tiny_dir: Path) -> None:
    TweetGenerator.load(tiny_dir, device="cpu")
    shutil.rmtree(tiny_dir / FAST_DIR)
    (tiny_dir / FAST_DIR).write_text("a file where the artifact folder belongs")
    assert TweetGenerator.load(tiny_dir, device="cpu").backend == "ctranslate2"
    assert (tiny_dir / FAST_DIR / "model.bin").is_file()


def test_seeded_fast_calls_repeat_and_leave_global_randomness_alone(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    first = generator.generate("I think", n=3, seed=11, settings=SHORT)
    second = generator.generate("I think", n=3, seed=11, settings=SHORT)
    assert first.tweets == second.tweets and first.tweets
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])


def test_unseeded_fast_calls_draw_fresh_randomness(tiny_dir: Path) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    seeded = generator.generate(n=3, seed=1, settings=SHORT).tweets
    draws = {tuple(generator.generate(n=3, settings=SHORT).tweets) for _ in range(4)}
    assert len(draws) > 1
    assert tuple(generator.generate(n=3, seed=1, settings=SHORT).tweets) == tuple(seeded)


@pytest.mark.parametrize("backend", ["torch", "ctranslate2", pytest.param("llamacpp", marks=LLAMA)])
def test_every_backend_applies_the_same_filters(parrot_dir: Path, backend: str) -> None:
    generator = TweetGenerator.load(parrot_dir, device="cpu", backend=backend)
    assert generator.backend == backend
    result = generator.generate(n=5, seed=0)
    # The parrot recites its guarded tweets: both are rejected as copies, on every backend.
    assert result.rejected_reasons.get("copy", 0) >= 1
    for tweet in result.tweets:
        assert normalize(tweet) not in {normalize(DREAM), normalize(COFFEE)}
        assert "http" not in tweet and "\n" not in tweet and len(tweet) <= 280
        assert tidy_candidate(tweet) == tweet
    excluded = generator.generate(n=3, seed=0, exclude=result.tweets)
    assert not {normalize(t) for t in result.tweets} & {normalize(t) for t in excluded.tweets}
    prompted = generator.generate("big news", n=2, seed=0)
    assert all(t.startswith("big news") for t in prompted.tweets)


@pytest.mark.parametrize("backend", ["torch", "ctranslate2", pytest.param("llamacpp", marks=LLAMA)])
def test_every_backend_stops_at_the_tweet_length(tiny_dir: Path, backend: str) -> None:
    generator = TweetGenerator.load(tiny_dir, device="cpu", backend=backend)
    settings = GenerationSettings(max_length=160, max_chars=40, do_sample=True)
    result = generator.generate(n=3, seed=2, settings=settings)
    assert all(len(t) <= 40 for t in result.tweets)


def test_the_stop_rule_is_the_same_token_by_token(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    text = " ".join(GENERIC_TWEETS[:6]) + "\nnext line"
    ids = [0, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    batched = TweetEnd(tokenizer, 1, 0, 40)
    stepped = TweetEnd(tokenizer, 1, 0, 40)
    for end in range(2, len(ids) + 1):
        done = bool(batched(torch.tensor([ids[:end]]), None)[0])
        assert stepped.push(0, ids[end - 1], lambda end=end: ids[1:end]) == done
        if done:
            break
    assert done


@pytest.fixture
def quantization(monkeypatch: pytest.MonkeyPatch):
    """Sets ``DOPPELTWEET_FAST_QUANTIZATION`` for the process (the settings are read once)."""
    from training.config import get_settings

    def use(value: str) -> None:
        monkeypatch.setenv("DOPPELTWEET_FAST_QUANTIZATION", value)
        get_settings.cache_clear()

    yield use
    monkeypatch.delenv("DOPPELTWEET_FAST_QUANTIZATION", raising=False)
    get_settings.cache_clear()


def _recorded(folder: Path) -> dict:
    return json.loads((folder / FAST_DIR / "doppeltweet-source.json").read_text())


def test_the_artifact_records_its_weight_type_and_is_rebuilt_for_another(
    tiny_dir: Path, quantization
) -> None:
    quantization("int8")
    first = TweetGenerator.load(tiny_dir, device="cpu")
    assert _recorded(tiny_dir)["quantization"] == "int8"
    assert first._backend.quantization == "int8"
    int8_bytes = (tiny_dir / FAST_DIR / "model.bin").stat().st_size
    assert fast_artifact(tiny_dir, "float32") is None
    quantization("float32")
    assert fast_artifact(tiny_dir) is None  # made with another type: stale
    second = TweetGenerator.load(tiny_dir, device="cpu")
    assert second.backend == "ctranslate2" and second._backend.quantization == "float32"
    assert _recorded(tiny_dir)["quantization"] == "float32"
    assert fast_artifact(tiny_dir) == tiny_dir / FAST_DIR
    assert (tiny_dir / FAST_DIR / "model.bin").stat().st_size > 2 * int8_bytes
    assert second.generate(n=1, settings=SHORT).candidates >= 1


def test_threads_follow_the_weight_type_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from training.generation.fast import generation_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    assert generation_threads("int8") == 1
    assert generation_threads("int8_float32") == 1
    assert generation_threads("float32") == 2  # capped at 2 on a bigger machine
    assert generation_threads("float32", 3) == 3 and generation_threads("int8", 2) == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0})
    assert generation_threads("float32") == 1  # never more than this process may use


def test_a_loaded_model_takes_its_weight_type_s_threads(tiny_dir: Path, quantization) -> None:
    cores = len(os.sched_getaffinity(0))
    quantization("float32")
    assert TweetGenerator.load(tiny_dir, device="cpu")._backend.threads == min(2, cores)
    quantization("int8")
    assert TweetGenerator.load(tiny_dir, device="cpu")._backend.threads == 1


def test_open_generators_are_closed_before_the_interpreter_exits(tiny_dir: Path) -> None:
    import subprocess
    import sys

    from training.generation import fast

    backend = TweetGenerator.load(tiny_dir, device="cpu")._backend
    assert backend in fast._OPEN and fast._closing_at_exit  # _close_all is registered
    fast._close_all()
    assert backend.generator is None
    # A CLI-like run with two threads per generation ends with status 0, not an abort.
    code = (
        "import sys; from pathlib import Path; from training.generation import TweetGenerator\n"
        f"g = TweetGenerator.load(Path({str(tiny_dir)!r}), device='cpu')\n"
        "assert g.backend == 'ctranslate2', g.backend\n"
        "[g.generate(n=2, seed=None) for _ in range(5)]\n"
    )
    env = {**os.environ, "DOPPELTWEET_GENERATION_THREADS": "2"}
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_an_artifact_without_a_recorded_type_is_an_int8_one(tiny_dir: Path, quantization) -> None:
    quantization("int8")
    TweetGenerator.load(tiny_dir, device="cpu")
    record = _recorded(tiny_dir)
    del record["quantization"]  # what artifacts made before the setting existed hold
    (tiny_dir / FAST_DIR / "doppeltweet-source.json").write_text(json.dumps(record))
    assert fast_artifact(tiny_dir) == tiny_dir / FAST_DIR
    quantization("float32")
    assert fast_artifact(tiny_dir) is None


def test_a_weight_type_this_cpu_lacks_means_torch_without_a_failure_note(
    tiny_dir: Path, quantization, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctranslate2

    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda device: {"float32"})
    quantization("int8")
    assert TweetGenerator.load(tiny_dir, device="cpu").backend == "torch"
    assert not (tiny_dir / FAST_DIR).exists() and not (tiny_dir / FAST_FAILED).exists()
    quantization("float32")  # another setting is tried at once
    assert TweetGenerator.load(tiny_dir, device="cpu").backend == "ctranslate2"


def test_an_unknown_weight_type_is_refused_by_the_settings(quantization) -> None:
    from pydantic import ValidationError

    from training.config import get_settings

    quantization("int4")
    with pytest.raises(ValidationError, match="fast_quantization"):
        get_settings()


def test_an_embedding_larger_than_the_tokenizer_is_still_converted(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_model(GENERIC_TWEETS, tmp_path / "padded")
    write_records(folder, GENERIC_TWEETS)
    tokens = len(AutoTokenizer.from_pretrained(folder))
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.resize_token_embeddings(tokens + 13)  # rows no token reaches, as padded models have
    model.save_pretrained(folder)
    tokenizer_files = {f.name: f.read_bytes() for f in folder.iterdir() if "token" in f.name}
    generator = TweetGenerator.load(folder, device="cpu")
    assert generator.backend == "ctranslate2" and not (folder / FAST_FAILED).exists()
    assert {f.name: f.read_bytes() for f in folder.iterdir() if "token" in f.name} == (
        tokenizer_files
    )  # the model's own tokenizer is untouched
    assert generator.generate(n=2, settings=SHORT).candidates >= 1


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch):
    """Sets ``DOPPELTWEET_FAST_MAX_PPL_INCREASE_PCT`` (auto's perplexity bound)."""
    from training.config import get_settings

    def use(value: float) -> None:
        monkeypatch.setenv("DOPPELTWEET_FAST_MAX_PPL_INCREASE_PCT", str(value))
        get_settings.cache_clear()

    yield use
    monkeypatch.delenv("DOPPELTWEET_FAST_MAX_PPL_INCREASE_PCT", raising=False)
    get_settings.cache_clear()


def test_auto_is_the_default_and_keeps_int8_within_the_bound(tiny_dir: Path, bound) -> None:
    from training.config import get_settings

    assert get_settings().fast_quantization == "auto"
    bound(100)
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    record = _recorded(tiny_dir)
    assert record["quantization"] == "int8" and generator._backend.quantization == "int8"
    check = record["auto"]
    assert check["bound_pct"] == 100 and check["scored_tokens"] > 0
    assert check["smoothed_layers"] == 3 * 2  # the tiny GPT-2's two blocks
    assert check["int8_ppl"] > 0 and check["float32_ppl"] > 0
    assert abs(check["int8_ppl_increase_pct"]) < 100
    assert not any(p.name.startswith(".fast-") for p in tiny_dir.iterdir())  # no work left
    assert generator.generate(n=1, settings=SHORT).candidates >= 1
    bound(50)  # another bound: the choice is made again
    assert fast_artifact(tiny_dir) is None


def test_auto_makes_float32_when_int8_costs_more_than_the_bound(
    tiny_dir: Path, bound, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.generation import fast_build

    measured = fast_build._int8_check

    def costly(*args, **kwargs):
        return {**measured(*args, **kwargs), "int8_ppl_increase_pct": 7.5}

    monkeypatch.setattr(fast_build, "_int8_check", costly)
    bound(3)
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    record = _recorded(tiny_dir)
    assert record["quantization"] == "float32" and generator._backend.quantization == "float32"
    assert record["auto"]["int8_ppl_increase_pct"] == 7.5
    assert fast_artifact(tiny_dir) == tiny_dir / FAST_DIR  # reused, not measured again
    assert fast_artifact(tiny_dir, "int8") is None


def test_auto_makes_float32_on_a_cpu_without_int8(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctranslate2

    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda device: {"float32"})
    generator = TweetGenerator.load(tiny_dir, device="cpu")
    assert generator.backend == "ctranslate2" and generator._backend.quantization == "float32"
    assert _recorded(tiny_dir)["auto"]["reason"] == "this CPU cannot compute in int8"


def test_auto_measures_on_the_training_s_own_held_out_tweets(lora_dir: Path) -> None:
    from training.cleaning import DataTable
    from training.dataset import split_tweets
    from training.generation.artifact import check_texts

    split = split_tweets(DataTable.load(lora_dir))
    calibration, held_out = check_texts(lora_dir, ["unused"])
    assert held_out == split.validation and held_out
    assert not set(held_out) & set(calibration)
    record = _recorded(lora_dir)  # made right after training, with the default setting
    assert record["quantization"] in {"int8", "float32"} and record["auto"]["scored_tokens"] > 0
