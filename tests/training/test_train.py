"""Fine-tuning: train → save → reload, full and LoRA, with huggingtweets' recipe."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from tests.training.tiny_trainer import tiny_cpu_trainer
from training.cleaning import DataTable
from training.errors import InputError, ModelError
from training.progress import JsonProgress
from training.store import ModelStore
from training.train import (
    BUDGET_CPU_BATCH_SIZE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_LORA_DROPOUT,
    TrainConfig,
    resolved_batch_size,
    resolved_bf16,
    resolved_for_device,
    train_model,
)


def _validation_loss(
    model, tokenizer, table: DataTable, record: dict, *, align: bool = False
) -> float:
    """The validation loss recomputed from a reloaded model, the way the Trainer averages it
    (``align``: on tweet-aligned blocks, the padding left out of the loss)."""
    import torch

    from training.dataset import build_eval_blocks, split_tweets

    config = record["config"]
    split = split_tweets(table, config["val_fraction"], seed=config["seed"])
    packed = build_eval_blocks(split, tokenizer, block_size=config["block_size"], align=align)
    model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, len(packed), config["batch_size"]):
            items = [
                packed[i] for i in range(start, min(start + config["batch_size"], len(packed)))
            ]
            batch = torch.stack([item["input_ids"] for item in items])
            labels = torch.stack([item["labels"] for item in items])
            losses.append(model(input_ids=batch, labels=labels).loss.item())
    return sum(losses) / len(losses)


def test_trained_model_folder_has_everything_and_reloads(
    tiny_model_dir: Path, sample_table: DataTable
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "dataset.jsonl",
        "data_table.json",
        "training.json",
        "loss.png",
        "README.md",
    } <= names
    assert (tiny_model_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    record = json.loads((tiny_model_dir / "training.json").read_text())
    assert record["name"] == "alice" and record["handles"] == ["alice"]
    assert record["base_model"] == "tiny" and record["lora"] is False
    assert record["config"]["learning_rate"] == 2e-3 and record["seeds"]["seed"] == 7
    assert {"torch", "transformers", "peft", "python"} <= set(record["versions"])
    assert record["metrics"]["steps"] > 0
    assert record["metrics"]["perplexity_after"] < record["metrics"]["perplexity_before"]
    assert math.isclose(
        record["metrics"]["perplexity_after"], math.exp(record["metrics"]["val_loss_after"])
    )
    assert record["data_table"] == sample_table.to_dict()

    saved = DataTable.load(tiny_model_dir)
    assert saved.to_dict() == sample_table.to_dict()
    assert saved.handles[0].kept == sample_table.handles[0].kept

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    reloaded = _validation_loss(model, tokenizer, saved, record)
    assert reloaded == pytest.approx(record["metrics"]["val_loss_after"], abs=1e-4)
    aligned = _validation_loss(model, tokenizer, saved, record, align=True)
    assert aligned == pytest.approx(record["metrics"]["tweet_val_loss_after"], abs=1e-4)


def test_the_tweet_aligned_perplexity_is_recorded_before_and_after(tiny_model_dir: Path) -> None:
    metrics = json.loads((tiny_model_dir / "training.json").read_text())["metrics"]
    before, after = metrics["tweet_perplexity_before"], metrics["tweet_perplexity_after"]
    assert math.isfinite(before) and math.isfinite(after) and after < before
    assert math.isclose(after, math.exp(metrics["tweet_val_loss_after"]))
    assert metrics["tweet_validation_blocks"] > 0
    # A different measure from the fixed cuts of the stream (blocks starting mid-tweet).
    assert metrics["tweet_val_loss_after"] != pytest.approx(metrics["val_loss_after"], abs=1e-3)


def test_the_tweet_aligned_validation_loss_leaves_the_padding_out(
    tmp_path: Path, sample_table: DataTable
) -> None:
    import torch

    from training.basemodels import load_base_model
    from training.dataset import PackedBlocks, build_eval_blocks, split_tweets
    from training.train import _evaluate, _make_trainer, _StopFlag

    model, tokenizer = load_base_model(
        "tiny", texts=sample_table.handles[0].kept, models_dir=tmp_path
    )
    split = split_tweets(sample_table)
    aligned = build_eval_blocks(split, tokenizer, block_size=32, align=True)
    fixed = build_eval_blocks(split, tokenizer, block_size=32)
    assert aligned.lengths is not None and aligned.num_tokens < aligned.blocks.numel()
    trainer, recorder = _make_trainer(
        model,
        TrainConfig(base_model="tiny", batch_size=4),
        fixed,
        aligned,
        output_dir=tmp_path / "out",
        device=torch.device("cpu"),
        bf16=False,
        reporter=JsonProgress(io.StringIO()),
        stop=_StopFlag(),
        tokens_per_step=32 * 4,
    )
    loss = _evaluate(trainer, aligned, recorder)
    assert loss is not None and math.isfinite(loss)
    # Other tokens where the padding is: the same loss, as padding is out of it.
    pad = torch.arange(32) >= aligned.lengths.unsqueeze(1)
    noise = torch.randint(
        0, len(tokenizer), aligned.blocks.shape, generator=torch.Generator().manual_seed(0)
    )
    noisy = aligned.blocks.masked_scatter(pad, noise[pad])
    assert _evaluate(trainer, PackedBlocks(noisy, aligned.lengths), recorder) == pytest.approx(
        loss, abs=1e-5
    )
    # Counted in the loss, that padding would change it; and the fixed cuts measure another thing.
    assert _evaluate(trainer, PackedBlocks(noisy), recorder) != pytest.approx(loss, abs=1e-3)
    assert _evaluate(trainer, fixed, recorder) != pytest.approx(loss, abs=1e-3)


def test_lora_saves_only_the_adapter_and_reloads_on_its_recorded_base(
    tmp_path: Path, sample_table: DataTable
) -> None:
    from peft import PeftModel

    from training.basemodels import load_base_model

    store = ModelStore(tmp_path)
    config = TrainConfig(
        base_model="tiny",
        lora=True,
        epochs=1,
        block_size=64,
        batch_size=8,
        max_steps=3,
        learning_rate=5e-3,
        precision="fp32",  # its recorded loss is compared exactly with a reload's
    )
    info = train_model(sample_table, config, store, JsonProgress(io.StringIO()))

    names = {p.name for p in info.path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert "model.safetensors" not in names
    record = json.loads((info.path / "training.json").read_text())
    assert record["lora"] is True and record["base_model"] == "tiny"
    assert record["metrics"]["steps"] == 3  # --max-steps caps the run
    assert info.lora and info.base_model == "tiny"

    saved = DataTable.load(info.path)
    texts = [t for data in saved.handles for t in data.kept]
    base, tokenizer = load_base_model("tiny", texts=texts, models_dir=tmp_path)
    model = PeftModel.from_pretrained(base, info.path)
    reloaded = _validation_loss(model, tokenizer, saved, record)
    assert reloaded == pytest.approx(record["metrics"]["val_loss_after"], abs=1e-4)
    assert record["metrics"]["val_loss_after"] != record["metrics"]["val_loss_before"]


def test_a_default_run_trains_8_blocks_of_128_tokens_per_step(
    tmp_path: Path, sample_table: DataTable
) -> None:
    config = TrainConfig(base_model="tiny", epochs=1, max_steps=1)
    info = train_model(sample_table, config, ModelStore(tmp_path), JsonProgress(io.StringIO()))
    record = json.loads((info.path / "training.json").read_text())
    assert (record["config"]["block_size"], record["config"]["batch_size"]) == (128, 8)
    assert record["metrics"]["steps"] == 1


def test_gpt2_s_gelu_is_fused_without_changing_the_model(tmp_path: Path) -> None:
    import torch
    from transformers.activations import NewGELUActivation

    from training.basemodels import load_base_model
    from training.train import fuse_activations

    model, _ = load_base_model("tiny", texts=["one two three four"] * 50, models_dir=tmp_path)
    model.eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        assert fuse_activations(model) == model.config.n_layer
        after = model(input_ids=ids).logits
    assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-5)
    assert model.config.activation_function == "gelu_new"  # what is saved does not change
    assert fuse_activations(model) == 0


def test_the_trainer_reads_the_blocks_in_epoch_order(
    tmp_path: Path, sample_table: DataTable
) -> None:
    import torch

    config = TrainConfig(base_model="tiny", batch_size=4)
    trainer, _, blocks = tiny_cpu_trainer(tmp_path, sample_table, config, epochs=2)
    seen = torch.cat([batch["input_ids"] for batch in trainer.get_train_dataloader()])
    assert torch.equal(seen, blocks.blocks)


def test_the_optimizer_is_huggingtweets_adamw_as_one_fused_kernel(
    tmp_path: Path, sample_table: DataTable
) -> None:
    import torch

    from training.train import HUGGINGTWEETS_LR

    trainer, _, _ = tiny_cpu_trainer(tmp_path, sample_table, TrainConfig(base_model="tiny"))
    optimizer = trainer.create_optimizer()
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert group["fused"] is True and group["lr"] == HUGGINGTWEETS_LR


def test_unknown_base_model_fails_before_anything_is_written(
    tmp_path: Path, sample_table: DataTable
) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(ModelError, match="Unknown base model"):
        train_model(
            sample_table, TrainConfig(base_model="not a model"), store, JsonProgress(io.StringIO())
        )
    assert not any(p.name.startswith(".staging") for p in tmp_path.iterdir())
    assert store.list() == []


def test_a_block_longer_than_the_models_context_is_refused(
    tmp_path: Path, sample_table: DataTable
) -> None:
    config = TrainConfig(base_model="tiny", block_size=4096)
    with pytest.raises(InputError, match=r"longer than tiny's context of 512 tokens"):
        train_model(sample_table, config, ModelStore(tmp_path), JsonProgress(io.StringIO()))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "at least one epoch"),
        ("learning_rate", -1.0, "learning rate"),
        ("learning_rate", float("nan"), "learning rate"),
        ("block_size", 4, "block size"),
        ("batch_size", 0, "batch size"),
        ("max_steps", 0, "--max-steps"),
        ("val_fraction", 0.9, "validation fraction"),
        ("report_to", "mlflow", "--report-to"),
        ("lora_r", 0, "LoRA rank"),
        ("lora_targets", "mlp", "LoRA targets"),
        ("early_stopping_patience", -1, "early-stopping patience"),
        ("eval_steps", 0, "Evaluate every"),
    ],
)
def test_nonsensical_settings_are_refused_in_one_sentence(
    field: str, value: object, message: str
) -> None:
    config = TrainConfig(**{field: value})
    with pytest.raises(InputError, match=message):
        config.validate()


def test_a_tracker_that_is_not_installed_is_refused_before_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a),
    )
    with pytest.raises(InputError, match=r"--report-to wandb needs the wandb package"):
        TrainConfig(report_to="wandb").validate()


def test_huggingtweets_recipe_is_the_default() -> None:
    config = TrainConfig()
    assert (config.base_model, config.epochs, config.effective_learning_rate) == (
        "gpt2",
        4,
        1.372e-4,
    )
    # 8 blocks of min(128, context) tokens: huggingtweets' 1,024 tokens per step, in short blocks.
    assert config.batch_size is None and config.block_size is None
    assert resolved_batch_size(config, "cpu") == resolved_batch_size(config, "cuda") == 8
    assert DEFAULT_BLOCK_SIZE * DEFAULT_BATCH_SIZE == 1024
    assert config.report_to == "none" and config.lora is False


def test_a_time_budget_on_a_cpu_trains_one_block_per_step_unless_a_batch_is_asked_for() -> None:
    budgeted = TrainConfig(time_budget_s=300)
    assert resolved_batch_size(budgeted, "cpu") == BUDGET_CPU_BATCH_SIZE == 1
    assert resolved_batch_size(budgeted, "cuda") == DEFAULT_BATCH_SIZE
    assert resolved_batch_size(TrainConfig(time_budget_s=300, batch_size=4), "cpu") == 4
    assert resolved_batch_size(TrainConfig(batch_size=2), "cpu") == 2


def test_a_time_budget_on_a_cpu_trains_without_adapter_dropout_unless_asked() -> None:
    budgeted = TrainConfig(time_budget_s=300, lora=True)
    assert resolved_for_device(budgeted, "cpu").lora_dropout == 0.0
    assert resolved_for_device(budgeted, "cuda").lora_dropout == DEFAULT_LORA_DROPOUT == 0.05
    assert resolved_for_device(TrainConfig(lora=True), "cpu").lora_dropout == 0.05
    asked = TrainConfig(time_budget_s=300, lora=True, lora_dropout=0.1)
    assert resolved_for_device(asked, "cpu").lora_dropout == 0.1
    resolved = resolved_for_device(budgeted, "cpu")
    assert (resolved.batch_size, resolved.time_budget_s) == (1, 300)


@pytest.mark.parametrize("native", [True, False])
def test_the_precision_is_bf16_exactly_where_the_device_computes_it_natively(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert resolved_bf16(TrainConfig(), cpu) is native
    assert resolved_bf16(TrainConfig(precision="fp32"), cpu) is False
    if native:
        assert resolved_bf16(TrainConfig(precision="bf16"), cpu) is True
    else:
        with pytest.raises(InputError, match=r"^This CPU does not compute bf16 natively; use"):
            resolved_bf16(TrainConfig(precision="bf16"), cpu)
    assert resolved_bf16(TrainConfig(), torch.device("mps")) is False
    with pytest.raises(InputError, match=r"^The precision must be one of auto, fp32, bf16"):
        TrainConfig(precision="fp16").validate()


def test_amx_alone_is_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from training.basemodels import native_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert native_bf16(torch.device("cpu")) is True


def test_a_lora_adapter_defaults_to_its_own_rate_and_an_explicit_rate_wins() -> None:
    from training.train import DEFAULT_LORA_LR, HUGGINGTWEETS_LR

    assert TrainConfig(lora=True).effective_learning_rate == DEFAULT_LORA_LR
    assert TrainConfig(lora=False).effective_learning_rate == HUGGINGTWEETS_LR
    assert DEFAULT_LORA_LR > 5 * HUGGINGTWEETS_LR  # an adapter needs a far higher rate
    assert TrainConfig(lora=True, learning_rate=3e-4).effective_learning_rate == 3e-4
    # The defaults picked by benchmarks/bench_quality.py (docs/training.md).
    config = TrainConfig(lora=True)
    assert (config.lora_targets, config.lora_r, config.early_stopping_patience) == (
        "all-linear",
        16,
        0,
    )


def test_the_record_holds_the_rate_training_really_used(
    tmp_path: Path, sample_table: DataTable
) -> None:
    from training.train import DEFAULT_LORA_LR

    config = TrainConfig(
        base_model="tiny",
        lora=True,
        epochs=1,
        block_size=32,
        batch_size=4,
        max_steps=1,
        likeness_samples=0,
    )
    info = train_model(sample_table, config, ModelStore(tmp_path), JsonProgress(io.StringIO()))
    record = json.loads((info.path / "training.json").read_text())
    assert record["config"]["learning_rate"] == DEFAULT_LORA_LR


@pytest.mark.parametrize(("native", "dtype"), [(True, "bfloat16"), (False, "float32")])
def test_a_run_trains_and_records_the_precision_the_cpu_computes(
    tmp_path: Path,
    sample_table: DataTable,
    monkeypatch: pytest.MonkeyPatch,
    native: bool,
    dtype: str,
) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    config = TrainConfig(
        base_model="tiny", lora=True, block_size=32, batch_size=4, max_steps=2, likeness_samples=0
    )
    info = train_model(sample_table, config, ModelStore(tmp_path), JsonProgress(io.StringIO()))
    record = json.loads((info.path / "training.json").read_text())
    assert (record["device"], record["dtype"], record["config"]["precision"]) == (
        "cpu",
        dtype,
        "auto",
    )
    assert record["metrics"]["steps"] == 2
    assert math.isfinite(record["metrics"]["tweet_val_loss_after"])


def test_all_linear_lora_adapts_the_mlp_too(tmp_path: Path, sample_table: DataTable) -> None:
    from training.basemodels import load_base_model
    from training.train import _wrap_lora

    texts = sample_table.handles[0].kept

    def adapted(targets: str) -> set[str]:
        model, _ = load_base_model("tiny", texts=texts, models_dir=tmp_path)
        wrapped = _wrap_lora(model, TrainConfig(lora=True, lora_targets=targets))
        return {
            n.split(".lora_A")[0].rsplit(".", 1)[-1]
            for n, _ in wrapped.named_parameters()
            if ".lora_A" in n
        }

    assert adapted("attention") == {"c_attn", "c_proj"}
    assert {"c_attn", "c_proj", "c_fc"} <= adapted("all-linear")


@pytest.mark.parametrize(
    ("align_blocks", "watched"), [(True, "tweet_val_loss"), (False, "val_loss")]
)
def test_early_stopping_stops_when_validation_loss_rises_and_keeps_the_best_weights(
    tmp_path: Path, sample_table: DataTable, align_blocks: bool, watched: str
) -> None:
    # Early stopping watches the validation loss of the blocks training reads: tweet-aligned
    # ones with aligned training, the fixed cuts without.
    # A rate far too high makes the validation loss climb after the first evaluations.
    config = TrainConfig(
        base_model="tiny",
        epochs=3,
        block_size=32,
        batch_size=4,
        learning_rate=0.5,
        max_steps=40,
        early_stopping_patience=1,
        eval_steps=2,
        likeness_samples=0,
        align_blocks=align_blocks,
    )
    info = train_model(sample_table, config, ModelStore(tmp_path), JsonProgress(io.StringIO()))
    metrics = json.loads((info.path / "training.json").read_text())["metrics"]
    losses = dict((step, loss) for step, loss in metrics["eval_losses"])
    assert metrics["stopped_early"] is True and metrics["steps"] < 40
    best = min(losses.values())
    assert losses[metrics["best_step"]] == best
    # The saved model is the best one, not the last one trained.
    assert metrics[f"{watched}_after"] == pytest.approx(best, abs=1e-4)
    assert metrics[f"{watched}_after"] < losses[max(losses)]
    # Only the watched set is recorded: the first entry is its loss before training.
    assert losses[0] == pytest.approx(metrics[f"{watched}_before"], abs=1e-6)
