"""The fast backend against torch on the real model: warm ``!tweet`` latency and perplexity, per
CTranslate2 weight type (``DOPPELTWEET_FAST_QUANTIZATION``).

The SmolLM2-135M LoRA model (trained for a few steps by the real trainer, as ``make demo`` does)
is loaded with the torch backend (fp32, adapter on the shared base) and, for every CTranslate2
weight type this CPU computes in (of int8, int8_float32, int16, float32), with the CTranslate2
backend (adapter merged, converted once into a copy of the model folder's ``fast/``; the first
load's conversion is reported as ``convert_s``). Each backend writes one tweet per call with the
default settings, prompt-less and with "My dream is", and a batch of 5 prompt-less tweets, in
interleaved rounds so all see the same machine load. Perplexity is measured on the model's own
validation split (the trainer's split of the same tweets, in training's EOS-joined blocks): torch
scores every token after the first of each block, CTranslate2's ``score_batch`` the same tokens
(it conditions on the first); a float32 artifact matches torch to the third decimal, which
checks the measurement. ``ppl_delta_pct`` is a type's perplexity over fp32 torch's, minus one.

``chosen_default`` is the fastest type (warm p50, one tweet with the prompt) within
``PPL_BOUND_PCT`` of torch's perplexity that is still faster than torch, None when no type
qualifies: the rule the setting's default, ``auto``, applies per model at conversion time (its
``chosen`` type and its own ``check`` are reported beside its timings). The top-level
``warm_p50_s`` and ``fast_ppl_delta_pct`` are the setting's default type's. The load average
is recorded: on a shared machine the absolute numbers move, the ratios much less.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import common

PROMPT = "My dream is"
#: The CTranslate2 weight types compared; those this CPU cannot compute in are skipped. ``auto``
#: (the setting's default) is whichever type its own check chose for the model (int8 or float32).
COMPUTE_TYPES = ("auto", "int8", "int8_float32", "int16", "float32")
#: The quality bound of the fast path (issue 12): validation perplexity over fp32 torch's.
PPL_BOUND_PCT = 3.0


def _eval_rows(torch_gen: Any, table: Any, blocks: int) -> tuple[Any, list[Any]]:
    """The validation split and its first ``blocks`` training-format blocks."""
    from training.dataset import build_eval_blocks, split_tweets

    split = split_tweets(table)
    rows = build_eval_blocks(split, torch_gen._tokenizer, block_size=128).blocks[:blocks]
    return split, list(rows)


def _torch_nll(torch_gen: Any, rows: list[Any]) -> float:
    from training.generation.artifact import torch_nll

    backend = torch_gen._backend
    backend.loaded.activate()
    return torch_nll(backend.model, rows)


def _fast_nll(fast_gen: Any, rows: list[Any]) -> float:
    """The fast backend's (CTranslate2's or llama.cpp's) negative log-likelihood of each block's
    tokens after its first."""
    if fast_gen.backend == "llamacpp":
        backend = fast_gen._backend
        with backend.model.context() as context:
            context.use(backend.adapter)
            return sum(context.nll([int(t) for t in row.tolist()]) for row in rows)
    tokenizer = fast_gen._tokenizer
    tokens = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in rows]
    scored = fast_gen._backend.generator.score_batch(tokens)
    if [len(result.log_probs) for result in scored] != [len(row) - 1 for row in rows]:
        raise RuntimeError("CTranslate2 scored other tokens than torch did")
    return -sum(sum(result.log_probs) for result in scored)


def perplexities(torch_gen: Any, fast_gen: Any, table: Any, blocks: int) -> dict[str, Any]:
    """Validation perplexity of both backends on the model's own split (see the docstring)."""
    split, rows = _eval_rows(torch_gen, table, blocks)
    count = sum(len(row) - 1 for row in rows)
    ppl_torch = math.exp(_torch_nll(torch_gen, rows) / count)
    ppl_fast = math.exp(_fast_nll(fast_gen, rows) / count)
    return {
        "validation_tweets": len(split.validation),
        "scored_tokens": count,
        "torch_fp32_ppl": round(ppl_torch, 3),
        "fast_backend": fast_gen.backend,
        "fast_quantization": getattr(fast_gen._backend, "quantization", None)
        or ("Q8_0" if fast_gen.backend == "llamacpp" else None),
        "fast_ppl": round(ppl_fast, 3),
        "fast_ppl_delta_pct": round(100 * (ppl_fast / ppl_torch - 1), 2),
    }


def choose_quantization(types: dict[str, dict[str, Any]], torch_p50_s: float) -> str | None:
    """The fastest type within the perplexity bound that is faster than torch (None: none is)."""
    fit = [
        (stats["warm_p50_s"], name)
        for name, stats in types.items()
        if stats["ppl_delta_pct"] <= PPL_BOUND_PCT and stats["warm_p50_s"] < torch_p50_s
    ]
    return min(fit)[1] if fit else None


@contextmanager
def _quantization(name: str) -> Iterator[None]:
    """``DOPPELTWEET_FAST_QUANTIZATION=name`` for the loads inside (the settings are re-read)."""
    from training.config import get_settings

    key = "DOPPELTWEET_FAST_QUANTIZATION"
    before = os.environ.get(key)
    os.environ[key] = name
    get_settings.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
        get_settings.cache_clear()


def _copy_for(path: Path, name: str) -> Path:
    """A copy of the model folder (without its artifact) that holds ``name``'s artifact."""
    copy = path.with_name(f"{path.name}_{name}")
    if not copy.exists():
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("fast", "fast.failed", ".fast-*"))
    return copy


def _timed(generator: Any, prompt: str, n: int = 1) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = generator.generate(prompt, n=n)
    return time.perf_counter() - t0, result


def run(*, quick: bool, root: Path, models: Path) -> dict[str, Any]:
    """Torch and every CTranslate2 type on the SmolLM2 LoRA model (quick: the tiny model)."""
    import ctranslate2

    from training.config import TrainingSettings
    from training.generation import TweetGenerator

    load_start = round(os.getloadavg()[0], 2)
    table = common.load_table(limit=400 if quick else None)
    store_root = root / "serve-store"
    common.link_bases(store_root, models)
    if quick:
        base, steps = common.TINY_NAME, 2
    else:
        common.ensure_smollm2_base(models)
        base, steps = common.SMOLLM2_NAME, 20
    path = common.ready_folder(
        store_root, table, "g_fast_lora", base, lora=True, max_steps=steps, block_size=128
    )
    default = str(TrainingSettings.model_fields["fast_quantization"].default)
    supported = ctranslate2.get_supported_compute_types("cpu")
    names = [name for name in COMPUTE_TYPES if name in supported or name == "auto"]
    t0 = time.perf_counter()
    gens: dict[str, Any] = {"torch": TweetGenerator.load(path, backend="torch")}
    torch_load = time.perf_counter() - t0
    loads: dict[str, dict[str, Any]] = {}
    for name in names:
        copy = _copy_for(path, name)
        with _quantization(name):
            t0 = time.perf_counter()
            TweetGenerator.load(copy, backend="ctranslate2")
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            gen = TweetGenerator.load(copy, backend="ctranslate2")
            load = time.perf_counter() - t0
        served_type = gen._backend.quantization if gen.backend == "ctranslate2" else None
        if served_type != name and not (name == "auto" and served_type in {"int8", "float32"}):
            raise RuntimeError(f"the {name} artifact was not served by CTranslate2")
        gens[name] = gen
        loads[name] = {
            "convert_s": round(first - load, 3),
            "load_s": round(load, 3),
            "artifact_mb": round(gen.memory_bytes / 2**20, 1),
        }
        if name == "auto":  # what the check chose, and what it measured on its own blocks
            source = json.loads((copy / "fast" / "doppeltweet-source.json").read_text("utf-8"))
            loads[name].update(chosen=served_type, check=source.get("auto"))
    calls = 3 if quick else 6  # bounded: a few minutes of SmolLM2 calls on 2 busy cores
    times: dict[str, list[float]] = {}
    chars: dict[str, list[int]] = {}
    for gen in gens.values():  # one warm-up each
        gen.generate(PROMPT, n=1)
    for _ in range(calls):
        for label, gen in gens.items():
            for case, prompt in (("no_prompt", ""), ("prompt", PROMPT)):
                seconds, result = _timed(gen, prompt)
                times.setdefault(f"{label}.{case}", []).append(seconds)
                chars.setdefault(f"{label}.{case}", []).append(len((result.tweets or [""])[0]))
    batch5: dict[str, list[float]] = {}
    for label, gen in gens.items():  # one round: torch's batch took 13 s idle, 346 s at load 6
        batch5.setdefault(label, []).append(_timed(gen, "", n=5)[0])
    stats = {}
    for key, values in sorted(times.items()):
        pct = common.percentiles(values, 50, 95)
        stats[key] = {
            "p50_s": round(pct["p50"], 3),
            "p95_s": round(pct["p95"], 3),
            "mean_tweet_chars": round(statistics.mean(chars[key]), 1),
        }
    split, rows = _eval_rows(gens["torch"], table, 8 if quick else 64)
    count = sum(len(row) - 1 for row in rows)
    ppl_torch = math.exp(_torch_nll(gens["torch"], rows) / count)
    torch_p50 = stats["torch.prompt"]["p50_s"]
    types: dict[str, dict[str, Any]] = {}
    for name in names:
        ppl = math.exp(_fast_nll(gens[name], rows) / count)
        types[name] = {
            "ppl": round(ppl, 3),
            "ppl_delta_pct": round(100 * (ppl / ppl_torch - 1), 2),
            "warm_p50_s": stats[f"{name}.prompt"]["p50_s"],
            "no_prompt_p50_s": stats[f"{name}.no_prompt"]["p50_s"],
            "batch5_s": round(statistics.median(batch5[name]), 3),
            "speedup_vs_torch": round(torch_p50 / max(stats[f"{name}.prompt"]["p50_s"], 1e-6), 2),
            **loads[name],
        }
    out: dict[str, Any] = {
        "model": f"{base} LoRA, {steps} steps",
        "load_average_1m_start": load_start,
        "cpu_compute_types": sorted(supported),
        "torch_load_s": round(torch_load, 3),
        "calls_per_case": calls,
        "torch": {
            "ppl": round(ppl_torch, 3),
            "warm_p50_s": torch_p50,
            "no_prompt_p50_s": stats["torch.no_prompt"]["p50_s"],
            "batch5_s": round(statistics.median(batch5["torch"]), 3),
        },
        "compute_types": types,
        "ppl_bound_pct": PPL_BOUND_PCT,
        "chosen_default": choose_quantization(types, torch_p50),
        "setting_default": default,
        "validation_tweets": len(split.validation),
        "scored_tokens": count,
        "torch_fp32_ppl": round(ppl_torch, 3),
    }
    for label in ("torch", *names):
        for case in ("prompt", "no_prompt"):
            out[f"{label}.{case}"] = stats[f"{label}.{case}"]
    served = default if default in types else names[0]
    # The backend as the bot runs it (the setting's default type), under the keys of old reports.
    out["fast_quantization"] = served
    out["ctranslate2.prompt"] = stats[f"{served}.prompt"]
    out["ctranslate2.no_prompt"] = stats[f"{served}.no_prompt"]
    out["batch5_s"] = {"torch": out["torch"]["batch5_s"], "ctranslate2": types[served]["batch5_s"]}
    out["convert_s"] = types[served]["convert_s"]
    out["fast_load_s"] = types[served]["load_s"]
    out["warm_p50_s"] = types[served]["warm_p50_s"]
    out["torch_warm_p50_s"] = torch_p50
    out["speedup_prompt"] = types[served]["speedup_vs_torch"]
    out["fast_ppl"] = types[served]["ppl"]
    out["fast_ppl_delta_pct"] = types[served]["ppl_delta_pct"]
    out["example"] = (gens[served].generate(PROMPT, n=1, seed=0).tweets or [""])[0][:140]
    out["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the fast-backend benchmark's JSON."""
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    common.quiet_libraries()
    with common.workdir(args.workdir) as root, common.stdout_to_stderr():
        result = run(quick=args.quick, root=root, models=common.models_dir(args.models_dir))
    common.emit({"generation": {"fast_vs_torch": result}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
