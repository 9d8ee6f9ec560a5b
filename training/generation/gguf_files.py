"""GGUF files for llama.cpp: a base model in Q8_0 and a LoRA adapter in f16.

Written with the ``gguf`` package's :class:`gguf.GGUFWriter` for GPT-2, the Llama family and
Qwen2, doing what llama.cpp's own converters do for them (docs/generation.md, "llama.cpp: one
shared base, an adapter per model"); llama.cpp gets token ids only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Changes whenever what this module writes changes (part of a base file's identity).
WRITER_VERSION = 1
#: A Q8_0 block holds this many weights: a row whose length is not a multiple stays float32.
_Q8_BLOCK = 32
#: The transformers model types written, and llama.cpp's architecture for each.
ARCHITECTURES = {"gpt2": "gpt2", "llama": "llama", "qwen2": "qwen2"}
#: GPT-2 layers stored as ``Conv1D`` (``[in, out]``).
_CONV1D = (".c_attn", ".c_proj", ".c_fc")
#: Buffers of a GPT-2 state dict that are no weights.
_SKIPPED = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


class GGUFUnsupported(Exception):
    """The model cannot be written for llama.cpp (the message says why)."""


def architecture(config: Any) -> str:
    """llama.cpp's architecture name for a transformers config; GGUFUnsupported otherwise."""
    model_type = str(getattr(config, "model_type", ""))
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise GGUFUnsupported(
            f"llama.cpp files are written for GPT-2, Llama and Qwen2, not {model_type}"
        )
    if arch != "gpt2":
        rope = getattr(config, "rope_scaling", None) or {}
        parameters = getattr(config, "rope_parameters", None) or {}
        kind = rope.get("rope_type") or parameters.get("rope_type") or "default"
        if kind != "default":
            raise GGUFUnsupported(f"rope scaling {kind!r} is not written for llama.cpp")
    return arch


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


def _permute(rows: Any, heads: int) -> Any:
    """llama.cpp's rotary layout of a query or key projection's rows (its converters' own)."""
    shape = rows.shape
    return rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _name_map(arch: str, blocks: int) -> Any:
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], blocks)


def _gguf_name(names: Any, hf_name: str) -> str:
    mapped = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise GGUFUnsupported(f"the weight {hf_name} has no llama.cpp name")
    return str(mapped)


def _heads(config: Any) -> tuple[int, int]:
    heads = int(config.num_attention_heads)
    return heads, int(getattr(config, "num_key_value_heads", None) or heads)


def _oriented(arch: str, config: Any, hf_name: str, array: Any) -> Any:
    """``array`` as llama.cpp stores the weight ``hf_name`` (``[out, in]``, rotary rows)."""
    if arch == "gpt2" and hf_name.endswith(tuple(f"{m}.weight" for m in _CONV1D)):
        return array.T
    if arch == "llama":
        heads, kv_heads = _heads(config)
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return _permute(array, heads)
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return _permute(array, kv_heads)
    return array


def _hyperparameters(writer: Any, arch: str, config: Any) -> None:
    if arch == "gpt2":
        writer.add_context_length(int(config.n_positions))
        writer.add_embedding_length(int(config.n_embd))
        writer.add_feed_forward_length(int(getattr(config, "n_inner", None) or 4 * config.n_embd))
        writer.add_head_count(int(config.n_head))
        writer.add_layer_norm_eps(float(config.layer_norm_epsilon))
        return
    heads, kv_heads = _heads(config)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(_rope_theta(config))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_rope_dimension_count(int(head_dim))
    writer.add_vocab_size(int(config.vocab_size))


def _vocabulary(writer: Any, tokenizer: PreTrainedTokenizerBase, rows: int, eos_id: int) -> None:
    """The byte-level BPE vocabulary (one entry per embedding row) and its merges."""
    import gguf

    vocab = tokenizer.get_vocab()
    by_id = {index: token for token, index in vocab.items()}
    special = {int(i) for i, added in tokenizer.added_tokens_decoder.items() if added.special}
    tokens: list[str] = []
    types: list[int] = []
    for index in range(rows):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise GGUFUnsupported("the tokenizer is not a fast (byte-level BPE) tokenizer")
    model = json.loads(backend.to_str()).get("model", {})
    if model.get("type") != "BPE":
        raise GGUFUnsupported("the tokenizer is not a byte-level BPE tokenizer")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eos_id)
    writer.add_eos_token_id(eos_id)
    writer.add_add_bos_token(False)


def write_base(
    model: Any, tokenizer: PreTrainedTokenizerBase, eos_id: int, out: Path, *, name: str
) -> None:
    """Write a transformers causal LM (float32 on CPU) to ``out`` with its 2-D weights in Q8_0.

    GGUFUnsupported for an architecture or tokenizer this module does not write.
    """
    import gguf
    import numpy as np

    config = model.config
    arch = architecture(config)
    blocks = int(getattr(config, "n_layer", None) or config.num_hidden_layers)
    names = _name_map(arch, blocks)
    state = {k: v.detach().to("cpu").float().numpy() for k, v in model.state_dict().items()}
    tied = bool(getattr(config, "tie_word_embeddings", True))
    rows = int(config.vocab_size)
    writer = gguf.GGUFWriter(str(out), arch)
    try:
        writer.add_name(name)
        writer.add_block_count(blocks)
        _hyperparameters(writer, arch, config)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
        _vocabulary(writer, tokenizer, rows, eos_id)
        for hf_name, array in state.items():
            if hf_name.endswith(_SKIPPED) or (tied and hf_name == "lm_head.weight"):
                continue
            data = np.ascontiguousarray(_oriented(arch, config, hf_name, array), dtype=np.float32)
            target = _gguf_name(names, hf_name)
            if data.ndim == 2 and data.shape[-1] % _Q8_BLOCK == 0:
                quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(target, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor(target, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def write_adapter(adapter_dir: Path, base_config: Any, out: Path) -> None:
    """Write the PEFT LoRA adapter in ``adapter_dir`` (for a base with ``base_config``) to ``out``
    as a llama.cpp LoRA adapter in f16.

    GGUFUnsupported for what llama.cpp's run-time LoRA cannot apply exactly (DoRA, per-layer
    ranks, extra trained modules, an unknown layer).
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    arch = architecture(base_config)
    settings = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if settings.get("peft_type", "LORA") != "LORA":
        raise GGUFUnsupported(f"the adapter is {settings.get('peft_type')}, not LoRA")
    for key in ("use_dora", "lora_bias", "rank_pattern", "alpha_pattern", "modules_to_save"):
        if settings.get(key):
            raise GGUFUnsupported(f"the adapter uses {key}, which llama.cpp does not apply")
    rank, alpha = int(settings["r"]), float(settings["lora_alpha"])
    # llama.cpp scales by alpha / rank; rank-stabilised LoRA by alpha / sqrt(rank).
    written_alpha = alpha * math.sqrt(rank) if settings.get("use_rslora") else alpha
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise GGUFUnsupported("the adapter has no adapter_model.safetensors")
    tensors = load_file(str(weights_file))
    blocks = int(getattr(base_config, "n_layer", None) or base_config.num_hidden_layers)
    names = _name_map(arch, blocks)
    pairs: dict[str, dict[str, Any]] = {}
    for key, array in tensors.items():
        for part, marker in (("a", ".lora_A.weight"), ("b", ".lora_B.weight")):
            if key.endswith(marker):
                module = key[: -len(marker)].removeprefix("base_model.model.")
                pairs.setdefault(module, {})[part] = array
                break
        else:
            raise GGUFUnsupported(f"the adapter holds {key}, which is no LoRA A or B")
    writer = gguf.GGUFWriter(str(out), arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, written_alpha)
        for module, pair in sorted(pairs.items()):
            if set(pair) != {"a", "b"}:
                raise GGUFUnsupported(f"the adapter's {module} lacks its A or B matrix")
            weight = f"{module}.weight"
            target = _gguf_name(names, weight)
            if target == "token_embd.weight" or target == "output.weight":
                raise GGUFUnsupported("the adapter changes the embedding or the output head")
            lora_a = np.asarray(pair["a"], dtype=np.float32)
            lora_b = np.asarray(pair["b"], dtype=np.float32)
            if arch == "llama":
                lora_b = _oriented(arch, base_config, weight, lora_b)
            writer.add_tensor(f"{target}.lora_a", np.ascontiguousarray(lora_a, dtype=np.float16))
            writer.add_tensor(f"{target}.lora_b", np.ascontiguousarray(lora_b, dtype=np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
