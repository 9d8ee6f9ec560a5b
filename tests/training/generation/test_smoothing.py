"""SmoothQuant-style scaling: the same function in float32, flatter activations for int8."""

from __future__ import annotations

import pytest
import torch

from training.generation import smoothing
from training.generation.smoothing import smooth


def _gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    ).eval()
    with torch.no_grad():  # real models' norms and biases are not ones and zeros
        for block in model.transformer.h:
            for ln in (block.ln_1, block.ln_2):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.normal_(0, 0.1)
                ln.weight[3] = 40.0  # an outlier channel, as real models have
            block.attn.c_attn.bias.normal_(0, 0.1)
    return model


def _llama(kv_heads: int = 2) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=kv_heads,
            max_position_embeddings=32,
            attention_bias=True,  # as Qwen2's q/k/v have
            tie_word_embeddings=True,
        )
    ).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.uniform_(0.5, 1.5)
                norm.weight[5] = 40.0
            layer.self_attn.v_proj.bias.normal_(0, 0.1)
    return model


def _blocks(n: int = 4, length: int = 24) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 97, (length,), generator=generator) for _ in range(n)]


def _logits(model: torch.nn.Module, blocks: list[torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.stack([model(input_ids=block[None]).logits[0] for block in blocks])


@pytest.mark.parametrize(
    ("build", "layers"),
    [(_gpt2, 3 * 2), (_llama, 4 * 2), (lambda: _llama(kv_heads=4), 4 * 2)],
    ids=["gpt2", "llama-gqa", "llama-mha"],
)
def test_smoothing_leaves_the_float32_function_unchanged(build, layers: int) -> None:
    model = build()
    calibration, held_out = _blocks(), _blocks(3, 20)
    before = _logits(model, held_out)
    weights = {name: p.clone() for name, p in model.named_parameters()}
    assert smooth(model, calibration) == layers
    assert any(not torch.equal(weights[name], p) for name, p in model.named_parameters())
    torch.testing.assert_close(_logits(model, held_out), before, rtol=1e-4, atol=1e-4)


def test_smoothing_flattens_the_outlier_channel() -> None:
    model = _llama()
    probe = model.model.layers[0].self_attn.q_proj

    def spread() -> float:
        amax = smoothing._input_maxima(model, {probe}, _blocks())[probe]
        return float(amax.max() / amax.median())

    before = spread()
    smooth(model, _blocks())
    assert spread() < before / 3  # the outlier's range moved into the weights


def test_an_unknown_architecture_is_left_alone() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10))
    weights = [p.clone() for p in model.parameters()]
    assert smooth(model, _blocks()) == 0
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))
    assert smoothing._llama_folds(model) == []


def test_the_migration_strength_must_be_between_0_and_1() -> None:
    with pytest.raises(ValueError, match="alpha"):
        smooth(_gpt2(), _blocks(), alpha=1.0)


def test_a_llama_shaped_model_without_a_head_count_is_left_alone() -> None:
    model = _llama()
    from types import SimpleNamespace

    model.__dict__["config"] = SimpleNamespace()  # no head count: v -> o cannot be grouped
    assert smooth(model, _blocks()) == 0
