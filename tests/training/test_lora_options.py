"""The LoRA and schedule options (LoRA+, rsLoRA, PiSSA/OLoRA, upper layers, warm-up, compile):
each really changes what is trained, is recorded, and is refused in one sentence when wrong."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.training.tiny_trainer import tiny_cpu_trainer
from training.cleaning import DataTable
from training.errors import InputError
from training.progress import JsonProgress
from training.store import ModelStore
from training.train import TrainConfig, train_model


def _wrapped(  # type: ignore[no-untyped-def]
    tmp_path: Path, table: DataTable, base: str = "tiny", **settings: object
):
    import torch

    from training.basemodels import load_base_model
    from training.train import _wrap_lora

    torch.manual_seed(0)
    model, _ = load_base_model(base, texts=table.handles[0].kept, models_dir=tmp_path)
    return _wrap_lora(model, TrainConfig(base_model=base, lora=True, **settings))


def _lora_modules(model):  # type: ignore[no-untyped-def]
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def test_every_option_is_off_by_default() -> None:
    config = TrainConfig()
    assert config.loraplus_lr_ratio == 1.0 and config.use_rslora is False
    assert config.lora_init == "default" and config.lora_layers is None
    assert config.warmup_ratio == 0.0 and config.torch_compile is False


def test_rslora_scales_the_adapter_by_alpha_over_the_root_of_the_rank(
    tmp_path: Path, sample_table: DataTable
) -> None:
    plain = _lora_modules(_wrapped(tmp_path, sample_table, lora_r=16, lora_alpha=32))
    rs = _lora_modules(_wrapped(tmp_path, sample_table, lora_r=16, lora_alpha=32, use_rslora=True))
    assert {m.scaling["default"] for m in plain.values()} == {32 / 16}
    assert {m.scaling["default"] for m in rs.values()} == {32 / 4}


def test_loraplus_trains_the_b_matrices_at_ratio_times_the_rate_of_a(
    tmp_path: Path, sample_table: DataTable
) -> None:
    config = TrainConfig(
        base_model="tiny", lora=True, learning_rate=1e-3, loraplus_lr_ratio=8.0, batch_size=4
    )
    trainer, model, _ = tiny_cpu_trainer(tmp_path, sample_table, config)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    rates: dict[str, set[float]] = {"lora_A": set(), "lora_B": set()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            kind = "lora_B" if "lora_B" in names[id(param)] else "lora_A"
            rates[kind].add(group["lr"])
    assert rates == {"lora_A": {1e-3}, "lora_B": {8e-3}}

    plain, _, _ = tiny_cpu_trainer(
        tmp_path, sample_table, TrainConfig(base_model="tiny", lora=True, learning_rate=1e-3)
    )
    assert {g["lr"] for g in plain.create_optimizer().param_groups} == {1e-3}


def _llama_base(folder: Path, texts: list[str]) -> Path:
    """A random 2-layer Llama (SmolLM2's layout) with the tiny model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from training.basemodels import build_tiny_model

    build_tiny_model(texts, folder)  # the tokenizer (and a GPT-2, replaced below)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    )
    for name in ("model.safetensors", "config.json", "generation_config.json"):
        (folder / name).unlink(missing_ok=True)
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_start_from_the_weights_not_from_zero(
    tmp_path: Path, sample_table: DataTable, init: str
) -> None:
    import torch

    base = str(_llama_base(tmp_path / "llama", list(sample_table.handles[0].kept)))
    default = _lora_modules(_wrapped(tmp_path, sample_table, base=base))
    mutated = _wrapped(tmp_path, sample_table, base=base, lora_init=init)
    modules = _lora_modules(mutated)
    assert all(torch.count_nonzero(m.lora_B["default"].weight) == 0 for m in default.values())
    assert all(torch.count_nonzero(m.lora_B["default"].weight) > 0 for m in modules.values())
    # The directions the adapter took are moved out of the base weights.
    untouched = _wrapped(tmp_path, sample_table, base=base)
    name = next(iter(modules))
    before = untouched.get_submodule(name).base_layer.weight
    after = mutated.get_submodule(name).base_layer.weight
    assert not torch.allclose(before, after)


def test_olora_on_gpt2_s_transposed_layers_is_one_sentence(
    tmp_path: Path, sample_table: DataTable
) -> None:
    with pytest.raises(InputError, match=r"^OLoRA cannot start an adapter on GPT-2's"):
        _wrapped(tmp_path, sample_table, lora_init="olora")


@pytest.mark.parametrize(("init", "kind"), [("pissa", "tiny"), ("olora", "llama")])
def test_pissa_and_olora_adapters_are_saved_as_a_plain_lora_on_the_unchanged_base(
    tmp_path: Path, sample_table: DataTable, init: str, kind: str
) -> None:
    from peft import PeftModel

    from training.basemodels import load_base_model
    from training.dataset import build_eval_blocks, split_tweets

    texts = list(sample_table.handles[0].kept)
    base_model = "tiny" if kind == "tiny" else str(_llama_base(tmp_path / "llama", texts))
    config = TrainConfig(
        base_model=base_model,
        lora=True,
        lora_init=init,
        epochs=1,
        block_size=64,
        batch_size=8,
        max_steps=3,
        learning_rate=5e-3,
        likeness_samples=0,
    )
    info = train_model(sample_table, config, ModelStore(tmp_path), JsonProgress(io.StringIO()))
    record = json.loads((info.path / "training.json").read_text())
    assert record["config"]["lora_init"] == init
    adapter = json.loads((info.path / "adapter_config.json").read_text())
    assert adapter["r"] == 2 * config.lora_r and adapter["init_lora_weights"] is True

    saved = DataTable.load(info.path)
    texts = [t for data in saved.handles for t in data.kept]
    base, tokenizer = load_base_model(base_model, texts=texts, models_dir=tmp_path)
    model = PeftModel.from_pretrained(base, info.path).eval()
    split = split_tweets(saved, 0.1, seed=config.seed)
    blocks = build_eval_blocks(split, tokenizer, block_size=64)
    import torch

    losses = []
    with torch.no_grad():
        for start in range(0, len(blocks), 8):
            items = [blocks[i] for i in range(start, min(start + 8, len(blocks)))]
            batch = torch.stack([item["input_ids"] for item in items])
            labels = torch.stack([item["labels"] for item in items])
            losses.append(model(input_ids=batch, labels=labels).loss.item())
    assert sum(losses) / len(losses) == pytest.approx(record["metrics"]["val_loss_after"], abs=1e-3)


def test_lora_layers_adapts_only_the_top_layers(tmp_path: Path, sample_table: DataTable) -> None:
    every = _lora_modules(_wrapped(tmp_path, sample_table))
    top = _lora_modules(_wrapped(tmp_path, sample_table, lora_layers=1))
    assert any(".h.0." in name for name in every)
    assert top and all(".h.1." in name for name in top)  # tiny has 2 layers: h.0 and h.1
    # Every linear layer of the top layers, as all-linear adapts them in all.
    kinds = {name.rsplit(".", 1)[-1] for name in every if ".h.1." in name}
    assert {name.rsplit(".", 1)[-1] for name in top} == kinds and "c_fc" in kinds


def test_more_lora_layers_than_the_model_has_is_one_sentence(
    tmp_path: Path, sample_table: DataTable
) -> None:
    with pytest.raises(InputError, match=r"^tiny has 2 layers, so --lora-layers must be 2 or "):
        _wrapped(tmp_path, sample_table, lora_layers=3)


def test_warmup_starts_below_the_peak_and_the_budget_schedule_warms_up_too(
    tmp_path: Path, sample_table: DataTable
) -> None:
    from training.budget import cosine_factor

    config = TrainConfig(
        base_model="tiny",
        lora=True,
        epochs=1,
        block_size=64,
        batch_size=8,
        max_steps=6,
        learning_rate=4e-3,
        warmup_ratio=0.5,
        likeness_samples=0,
    )
    info = train_model(sample_table, config, ModelStore(tmp_path), JsonProgress(io.StringIO()))
    metrics = json.loads((info.path / "training.json").read_text())["metrics"]
    assert metrics["learning_rate_first_step"] < 4e-3
    assert cosine_factor(0, 10, 0.2) == 0.0 and cosine_factor(1, 10, 0.2) == 0.5
    assert cosine_factor(2, 10, 0.2) == 1.0 and cosine_factor(10, 10, 0.2) == 0.0
    assert cosine_factor(0, 10) == 1.0


def test_torch_compile_reaches_the_trainer(tmp_path: Path, sample_table: DataTable) -> None:
    trainer, _, _ = tiny_cpu_trainer(
        tmp_path, sample_table, TrainConfig(base_model="tiny", torch_compile=True)
    )
    assert trainer.args.torch_compile is True
    plain, _, _ = tiny_cpu_trainer(tmp_path, sample_table, TrainConfig(base_model="tiny"))
    assert plain.args.torch_compile is False


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lora": True, "loraplus_lr_ratio": 0.5}, r"LoRA\+ learning-rate ratio must be 1"),
        ({"lora": True, "loraplus_lr_ratio": float("nan")}, r"LoRA\+ learning-rate ratio"),
        ({"lora": True, "lora_init": "gaussian"}, "LoRA initialisation must be one of"),
        ({"lora": True, "lora_layers": 0}, "top 1 layer"),
        ({"warmup_ratio": 0.9}, "warm-up must be a share"),
        ({"warmup_ratio": -0.1}, "warm-up must be a share"),
        ({"use_rslora": True}, r"^--rslora shape a LoRA adapter: add --lora"),
        (
            {"loraplus_lr_ratio": 4.0, "lora_layers": 3},
            r"^--loraplus-ratio, --lora-layers shape a LoRA adapter",
        ),
    ],
)
def test_bad_option_values_are_refused_in_one_sentence(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        TrainConfig(**settings).validate()  # type: ignore[arg-type]


def test_the_cli_passes_every_option_into_the_record(tmp_path: Path, sample_csv: Path) -> None:
    from training.cli import main

    argv = [
        "train",
        "@alice",
        "--from",
        str(sample_csv),
        "--base-model",
        "tiny",
        "--lora",
        "--max-steps",
        "2",
        "--block-size",
        "32",
        "--compare-samples",
        "0",
        "--loraplus-ratio",
        "4",
        "--rslora",
        "--lora-init",
        "pissa",
        "--lora-layers",
        "1",
        "--warmup",
        "0.25",
        "--precision",
        "fp32",
        "--models-dir",
        str(tmp_path),
        "--progress-json",
    ]
    assert main(argv) == 0
    config = json.loads((tmp_path / "alice" / "training.json").read_text())["config"]
    assert (config["loraplus_lr_ratio"], config["use_rslora"], config["lora_init"]) == (
        4.0,
        True,
        "pissa",
    )
    assert (config["lora_layers"], config["warmup_ratio"], config["torch_compile"]) == (
        1,
        0.25,
        False,
    )
    assert config["precision"] == "fp32"
    record = json.loads((tmp_path / "alice" / "training.json").read_text())
    assert record["dtype"] == "float32"


def test_a_bad_cli_option_is_one_sentence(
    tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main

    argv = ["train", "@alice", "--from", str(sample_csv), "--base-model", "tiny", "--lora"]
    assert main([*argv, "--warmup", "2", "--models-dir", str(tmp_path)]) != 0
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("error: The warm-up must be a share of the steps from 0 to 0.5, not 2.0.")
    )
    assert not (tmp_path / "alice").exists()
