"""The fast backend against torch on the real model: warm ``!tweet`` latency and perplexity.

The SmolLM2-135M LoRA model (trained for a few steps by the real trainer, as ``make demo`` does)
is loaded twice: with the torch backend (fp32, adapter on the shared base) and with the
CTranslate2 int8 backend (adapter merged, converted once into the model's ``fast/``; the first
load's conversion is reported as ``convert_s``). Each backend writes one tweet per call with the
default settings, prompt-less and with "My dream is", in interleaved rounds so both see the same
machine load. Perplexity is measured on the model's own validation split (the trainer's split of
the same tweets, in training's EOS-joined blocks) by both backends; ``fast_ppl_delta_pct`` is
the int8 model's perplexity over fp32 torch's, minus one. The load average is recorded: on a
shared machine the absolute numbers move, the ratio much less.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import common

PROMPT = "My dream is"


def perplexities(torch_gen: Any, fast_gen: Any, table: Any, blocks: int) -> dict[str, Any]:
    """Validation perplexity of both backends on the model's own split (see the docstring)."""
    import torch

    from training.dataset import build_eval_blocks, split_tweets

    split = split_tweets(table)
    tokenizer = torch_gen._tokenizer
    rows = build_eval_blocks(split, tokenizer, block_size=128).blocks[:blocks]
    backend = torch_gen._backend
    backend.loaded.activate()
    nll_torch = 0.0
    with torch.inference_mode():
        for row in rows:
            logits = backend.model(input_ids=row[None]).logits[0, :-1]
            nll_torch += float(torch.nn.functional.cross_entropy(logits, row[1:], reduction="sum"))
    tokens = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in rows]
    scored = fast_gen._backend.generator.score_batch(tokens)
    nll_fast = -sum(sum(result.log_probs) for result in scored)
    count = sum(len(row) - 1 for row in rows)
    ppl_torch, ppl_fast = math.exp(nll_torch / count), math.exp(nll_fast / count)
    return {
        "validation_tweets": len(split.validation),
        "scored_tokens": count,
        "torch_fp32_ppl": round(ppl_torch, 3),
        "fast_int8_ppl": round(ppl_fast, 3),
        "fast_ppl_delta_pct": round(100 * (ppl_fast / ppl_torch - 1), 2),
    }


def _timed(generator: Any, prompt: str, n: int = 1) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = generator.generate(prompt, n=n)
    return time.perf_counter() - t0, result


def run(*, quick: bool, root: Path, models: Path) -> dict[str, Any]:
    """Both backends on the SmolLM2 LoRA model (quick: the tiny model, for a smoke run)."""
    from training.generate import TweetGenerator

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
    t0 = time.perf_counter()
    torch_gen = TweetGenerator.load(path, backend="torch")
    torch_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast_gen = TweetGenerator.load(path, backend="ctranslate2")
    first_fast_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast_gen = TweetGenerator.load(path, backend="ctranslate2")
    fast_load = time.perf_counter() - t0
    calls = 3 if quick else 6  # bounded: ~2 minutes of SmolLM2 calls on 2 busy cores
    times: dict[str, list[float]] = {}
    chars: dict[str, list[int]] = {}
    for gen in (torch_gen, fast_gen):  # one warm-up each
        gen.generate(PROMPT, n=1)
    for _ in range(calls):
        for gen in (torch_gen, fast_gen):
            for label, prompt in (("no_prompt", ""), ("prompt", PROMPT)):
                key = f"{gen.backend}.{label}"
                seconds, result = _timed(gen, prompt)
                times.setdefault(key, []).append(seconds)
                chars.setdefault(key, []).append(len((result.tweets or [""])[0]))
    batch5 = {gen.backend: round(_timed(gen, "", n=5)[0], 3) for gen in (torch_gen, fast_gen)}
    out: dict[str, Any] = {
        "model": f"{base} LoRA, {steps} steps",
        "load_average_1m_start": round(os.getloadavg()[0], 2),
        "torch_load_s": round(torch_load, 3),
        "convert_s": round(first_fast_load - fast_load, 3),
        "fast_load_s": round(fast_load, 3),
        "calls_per_case": calls,
        "batch5_s": batch5,
    }
    for key, values in sorted(times.items()):
        stats = common.percentiles(values, 50, 95)
        out[key] = {
            "p50_s": round(stats["p50"], 3),
            "p95_s": round(stats["p95"], 3),
            "mean_tweet_chars": round(statistics.mean(chars[key]), 1),
        }
    out["warm_p50_s"] = out["ctranslate2.prompt"]["p50_s"]
    out["torch_warm_p50_s"] = out["torch.prompt"]["p50_s"]
    out["speedup_prompt"] = round(out["torch_warm_p50_s"] / out["warm_p50_s"], 2)
    out.update(perplexities(torch_gen, fast_gen, table, blocks=8 if quick else 64))
    out["example"] = (fast_gen.generate(PROMPT, n=1, seed=0).tweets or [""])[0][:140]
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
