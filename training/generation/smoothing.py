"""SmoothQuant-style scaling before an int8 conversion (Xiao et al. 2023, arXiv:2211.10438).

Input channel ``j`` of a linear layer is divided by ``s_j = max|X_j|^α / max|W_j|^(1-α)`` and the
weights' column ``j`` multiplied by it, moving activation outliers into the weights; the division
is folded into what produces the input (a norm, or the linear layer before), so in float32 the
model computes the same function. Llama-family decoders and GPT-2 are supported; another
architecture is left as it is (:func:`smooth` returns 0). docs/generation.md says where it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

#: The migration strength: 0.5 splits the range evenly between activations and weights.
DEFAULT_ALPHA = 0.5
_FLOOR = 1e-5


def smooth(model: Any, blocks: Iterable[Any], *, alpha: float = DEFAULT_ALPHA) -> int:
    """Fold per-channel scales into ``model`` (float32, in place), calibrated on ``blocks`` (1-D
    token id tensors); returns how many layers' inputs were smoothed (0: unknown architecture)."""
    import torch

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    folds = _llama_folds(model) or _gpt2_folds(model)
    if not folds:
        return 0
    amax = _input_maxima(model, {fold.probe for fold in folds}, blocks)
    if not amax:
        return 0
    with torch.no_grad():
        for fold in folds:
            fold.apply(amax[fold.probe], alpha)
    return len(folds)


def _input_maxima(model: Any, probes: set[Any], blocks: Iterable[Any]) -> dict[Any, Any]:
    """Each probe module's largest absolute input per channel over ``blocks``."""
    import torch

    amax: dict[Any, Any] = {}

    def record(module: Any, args: tuple[Any, ...]) -> None:
        x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
        amax[module] = torch.maximum(amax[module], x) if module in amax else x

    hooks = [probe.register_forward_pre_hook(record) for probe in probes]
    try:
        with torch.inference_mode():
            for block in blocks:
                model(input_ids=block[None])
    finally:
        for hook in hooks:
            hook.remove()
    return amax


def _scale(activation_max: Any, weight_max: Any, alpha: float) -> Any:
    return (
        activation_max.clamp(min=_FLOOR) ** alpha / weight_max.clamp(min=_FLOOR) ** (1 - alpha)
    ).clamp(min=_FLOOR)


class _Fold:
    """One smoothing: the input of ``consumers`` (whose weights take ``s``) is produced by
    ``divide`` (which takes ``1/s``); ``probe`` is the module whose input is measured."""

    def __init__(
        self,
        probe: Any,
        weight_max: Callable[[], Any],
        divide: Callable[[Any], None],
        multiply: Callable[[Any], None],
        group: Callable[[Any], Any] | None = None,
        expand: Callable[[Any], Any] | None = None,
    ) -> None:
        self.probe = probe
        self._weight_max = weight_max
        self._divide = divide
        self._multiply = multiply
        self._group = group
        self._expand = expand

    def apply(self, activation_max: Any, alpha: float) -> None:
        weight_max = self._weight_max()
        if self._group is not None:  # channels that must share one scale (grouped-query heads)
            activation_max, weight_max = self._group(activation_max), self._group(weight_max)
        s = _scale(activation_max.to(weight_max.dtype), weight_max, alpha)
        self._divide(s)
        self._multiply(self._expand(s) if self._expand is not None else s)


def _linear_columns_max(linears: Sequence[Any]) -> Callable[[], Any]:
    import torch

    return lambda: torch.stack([lin.weight.abs().amax(0) for lin in linears]).amax(0)


def _scale_columns(linears: Sequence[Any]) -> Callable[[Any], None]:
    def multiply(s: Any) -> None:
        for lin in linears:
            lin.weight.mul_(s)

    return multiply


def _divide_norm(norm: Any) -> Callable[[Any], None]:
    def divide(s: Any) -> None:
        norm.weight.div_(s)
        if getattr(norm, "bias", None) is not None:
            norm.bias.div_(s)

    return divide


def _divide_rows(linear: Any) -> Callable[[Any], None]:
    def divide(s: Any) -> None:
        linear.weight.div_(s[:, None])
        if linear.bias is not None:
            linear.bias.div_(s)

    return divide


def _llama_folds(model: Any) -> list[_Fold]:
    layers = getattr(getattr(model, "model", None), "layers", None)
    heads = getattr(getattr(model, "config", None), "num_attention_heads", None)
    if layers is None or not isinstance(heads, int) or heads <= 0:
        return []
    folds: list[_Fold] = []
    for layer in layers:
        try:
            attn, mlp = layer.self_attn, layer.mlp
            norms = (layer.input_layernorm, layer.post_attention_layernorm)
            qkv = (attn.q_proj, attn.k_proj, attn.v_proj)
            o_proj, gate, up, down = attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj
        except AttributeError:
            return []
        folds.append(
            _Fold(qkv[0], _linear_columns_max(qkv), _divide_norm(norms[0]), _scale_columns(qkv))
        )
        folds.append(
            _Fold(
                gate,
                _linear_columns_max((gate, up)),
                _divide_norm(norms[1]),
                _scale_columns((gate, up)),
            )
        )
        folds.append(
            _Fold(down, _linear_columns_max((down,)), _divide_rows(up), _scale_columns((down,)))
        )
        head_dim = o_proj.weight.shape[1] // heads
        kv_heads = attn.v_proj.weight.shape[0] // head_dim
        per_kv = o_proj.weight.shape[1] // (kv_heads * head_dim)
        # o_proj's input channel (kv head j, repeat r, d) comes from v_proj's output (j, d):
        # the r repeats of a channel share its scale.
        folds.append(
            _Fold(
                o_proj,
                _linear_columns_max((o_proj,)),
                _divide_rows(attn.v_proj),
                _scale_columns((o_proj,)),
                group=lambda x, k=kv_heads, g=per_kv, d=head_dim: (
                    x.view(k, g, d).amax(1).reshape(-1)
                ),
                expand=lambda s, k=kv_heads, g=per_kv, d=head_dim: (
                    s.view(k, 1, d).expand(k, g, d).reshape(-1)
                ),
            )
        )
    return folds


def _gpt2_folds(model: Any) -> list[_Fold]:
    blocks = getattr(getattr(model, "transformer", None), "h", None)
    if blocks is None:
        return []
    folds: list[_Fold] = []
    for block in blocks:
        try:
            ln_1, c_attn, c_proj = block.ln_1, block.attn.c_attn, block.attn.c_proj
            ln_2, c_fc = block.ln_2, block.mlp.c_fc
        except AttributeError:
            return []
        # Conv1D keeps its weight as (in, out): an input channel is a row.
        folds.append(
            _Fold(c_attn, _conv_rows_max(c_attn), _divide_norm(ln_1), _scale_conv_rows(c_attn))
        )
        folds.append(_Fold(c_fc, _conv_rows_max(c_fc), _divide_norm(ln_2), _scale_conv_rows(c_fc)))
        folds.append(
            _Fold(c_proj, _conv_rows_max(c_proj), _divide_values(c_attn), _scale_conv_rows(c_proj))
        )
    return folds


def _conv_rows_max(conv: Any) -> Callable[[], Any]:
    return lambda: conv.weight.abs().amax(1)


def _scale_conv_rows(conv: Any) -> Callable[[Any], None]:
    return lambda s: conv.weight.mul_(s[:, None])


def _divide_values(c_attn: Any) -> Callable[[Any], None]:
    """Divide the value third of GPT-2's fused ``c_attn`` output (query, key, value)."""

    def divide(s: Any) -> None:
        width = s.shape[0]
        c_attn.weight[:, 2 * width :].div_(s)
        if c_attn.bias is not None:
            c_attn.bias[2 * width :].div_(s)

    return divide
