"""``!tweet`` latency: cold load and warm calls through ``bot.model_cache.ModelCache``.

Each model is trained by the real trainer (so its folder is exactly what the bot
serves), then asked for one tweet the way ``!tweet`` asks: ``ModelCache.generate(path, "My dream
is", n=1)``, unseeded (the bot never seeds; a seeded CTranslate2 call, the CLI's ``--seed``, opens
its own generator: about 0.4 s more for a float32 SmolLM2), with the default
``GenerationSettings()`` (huggingtweets' top-p 0.95, top-k 50, up to
160 tokens, rounds of 10 candidates, of which a CPU's first round samples only the one asked
for). *Cold* is the first call on a fresh cache (load from disk + the first generation; imports
already paid, page cache warm); *warm* is every later call. A forward hook counts the decoding
steps and the tokens they sample, for tokens/s and the time per step.

The ``gpt2``-shaped model has random weights, so it almost never samples its EOS token: every
call runs until its tweet is settled past 280 characters, the worst case for a GPT-2-sized model.
The SmolLM2 LoRA model (135 M parameters, GPT-2's size) is pretrained and trained with ``make
demo``'s recipe (80 steps of 4 × 64 tokens on the sample archive), so it stops where the person's
tweets end: the realistic case, the model the offline path's users get. (Until December 2026 it
was an adapter trained for one step, in effect the base model, whose answers ran about twice as
long; benchmarks/README.md keeps that figure.)

Each model's top-level numbers are the served path's: what ``!tweet`` gets by default on this
machine (``backend`` says which engine: llama.cpp where it is installed and the model passed its
check, else CTranslate2, else torch; its cold call includes making its files once). Every other
engine installed sits beside it under its own name (``torch``, with forward passes counted;
``ctranslate2``; ``llamacpp``). For SmolLM2 the served engine's validation perplexity is compared
with torch's (``fast_ppl_delta_pct``, see ``bench_generation_fast``).

``concurrent8``: eight simultaneous unseeded ``!tweet``s on eight different handles (copies of the
SmolLM2 LoRA model: one base, eight adapters), three rounds: each request's latency.

``many_handles``: one trained LoRA model copied into ``MANY_HANDLES`` model folders (each its own
handle, adapter and cache entry; one base), asked in turn, round-robin, through one cache: p50
and p95 of each request and the resident memory each loaded handle adds.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from benchmarks import common

PROMPT = "My dream is"
#: Handles of ``many_handles`` (a quick run: a few).
MANY_HANDLES = 200


class _Counter:
    """Counts forward passes and the tokens they sample (one per row per decoding step)."""

    def __init__(self) -> None:
        self.forwards = 0
        self.sampled = 0

    def hook(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        if ids is not None:
            self.forwards += 1
            self.sampled += int(ids.shape[0])


def _counting_loader(counter: _Counter, loaded: list[Any], backend: str | None = "torch") -> Any:
    from training.generation import TweetGenerator

    def load(path: Path) -> Any:
        generator = TweetGenerator.load(path, backend=backend)
        loaded.append(generator)
        if generator.backend != "torch":
            return generator  # CTranslate2 runs no torch module to count
        model = generator.model
        # A peft model's generate() calls its base model directly: hook the base.
        target = model.get_base_model() if hasattr(model, "get_base_model") else model
        target.register_forward_pre_hook(counter.hook, with_kwargs=True)
        return generator

    return load


async def _measure(path: Path, calls: int, backend: str | None = "torch") -> dict[str, Any]:
    """Cold and warm ``!tweet`` on ``backend`` (None: the served default)."""
    from bot.model_cache import ModelCache

    counter = _Counter()
    loaded: list[Any] = []
    loader = _counting_loader(counter, loaded, backend)
    cache = ModelCache(max_models=4, max_bytes=2**40, loader=loader)
    try:
        t0 = time.perf_counter()
        first = await cache.generate(path, PROMPT, n=1)
        cold = time.perf_counter() - t0
        load_s = cache.loaded()[0].load_seconds
        latencies: list[float] = []
        candidates = 0
        forwards0, sampled0 = counter.forwards, counter.sampled
        for _ in range(calls):
            t0 = time.perf_counter()
            result = await cache.generate(path, PROMPT, n=1)
            latencies.append(time.perf_counter() - t0)
            candidates += result.candidates
        sampled = counter.sampled - sampled0
        forwards = counter.forwards - forwards0
        total = sum(latencies)
        stats = common.percentiles(latencies, 50, 95)
        if loaded[0].backend != "torch":
            return {
                "backend": loaded[0].backend,
                "cold_s": round(cold, 3),
                "load_s": round(load_s, 3),
                "warm_p50_s": round(stats["p50"], 3),
                "warm_p95_s": round(stats["p95"], 3),
                "warm_calls": calls,
                "candidates_per_call": round(candidates / calls, 2),
                "example": (first.tweets or [""])[0][:140],
            }
        return {
            "backend": "torch",
            "cold_s": round(cold, 3),
            "load_s": round(load_s, 3),
            "warm_p50_s": round(stats["p50"], 3),
            "warm_p95_s": round(stats["p95"], 3),
            "warm_max_s": round(max(latencies), 3),
            "warm_calls": calls,
            "candidates_per_call": round(candidates / calls, 2),
            "forward_passes_per_call": round(forwards / calls, 1),
            "ms_per_forward_pass": round(1000 * total / max(forwards, 1), 1),
            "sampled_tokens_per_s": round(sampled / total, 1),
            "example": (first.tweets or [""])[0][:140],
        }
    finally:
        await cache.close()


def _handle_copies(source: Path, count: int) -> list[Path]:
    """``count`` copies of the model folder ``source``, each its own handle (made once)."""
    import shutil

    folders = []
    for i in range(count):
        folder = source.parent / f"{source.name}-h{i:03d}"
        if not folder.exists():
            shutil.copytree(source, folder, ignore=shutil.ignore_patterns("fast", "fast.failed"))
        folders.append(folder)
    return folders


async def _many_handles(source: Path, count: int, rounds: int) -> dict[str, Any]:
    """``count`` copies of the LoRA model ``source`` (each its own handle) asked in turn through
    one cache, ``rounds`` times round-robin: latency p50/p95 and the memory each handle adds."""
    from bot.model_cache import ModelCache

    folders = _handle_copies(source, count)
    cache = ModelCache(max_models=4, max_bytes=2**40)
    latencies: list[float] = []
    try:
        await cache.generate(folders[0], PROMPT, n=1, seed=0)  # the base, loaded once
        before = common.rss_mb()
        for _ in range(rounds):
            for folder in folders:
                t0 = time.perf_counter()
                await cache.generate(folder, PROMPT, n=1)
                latencies.append(time.perf_counter() - t0)
        after = common.rss_mb()
        loaded = cache.loaded()
    finally:
        await cache.close()
    stats = common.percentiles(latencies, 50, 95)
    return {
        "handles": count,
        "requests": len(latencies),
        "p50_s": round(stats["p50"], 3),
        "p95_s": round(stats["p95"], 3),
        "handles_loaded": len(loaded),
        "backends": sorted({m.backend for m in loaded}),
        "rss_per_handle_mb": round((after - before) / max(len(loaded) - 1, 1), 2),
    }


async def _pool(path: Path, calls: int, pool_size: int = 5) -> dict[str, Any]:
    """Prompt-less ``!tweet`` served from the cache's pool of ready tweets (default backend).

    Each timed call waits (bounded) until the background refill has put a tweet in the pool, so
    every timed call is one the pool serves; the refill itself is not timed.
    """
    from bot.model_cache import ModelCache

    key = path.resolve()
    cache = ModelCache(max_models=4, max_bytes=2**40, pool_size=pool_size)
    latencies: list[float] = []
    try:
        await cache.generate(path, PROMPT, n=1, seed=0)  # load; the refill starts after it
        for _ in range(calls):
            deadline = time.monotonic() + 120
            while not cache.pool_sizes().get(key) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if not cache.pool_sizes().get(key):
                break
            t0 = time.perf_counter()
            await cache.generate(path, "", n=1)
            latencies.append(time.perf_counter() - t0)
    finally:
        await cache.close()
    if not latencies:
        return {"error": "the pool never filled within 120 s"}
    stats = common.percentiles([1000 * x for x in latencies], 50, 95)
    return {
        "p50_ms": round(stats["p50"], 3),
        "p95_ms": round(stats["p95"], 3),
        "calls": len(latencies),
        "pool_size": pool_size,
    }


async def _concurrent(paths: list[Path], total: int = 8, rounds: int = 2) -> dict[str, Any]:
    """``total`` simultaneous unseeded ``!tweet``s spread over ``paths`` through one
    ``ModelCache`` (models loaded first, no pool): each request's latency, p50/p95."""
    from bot.model_cache import ModelCache

    cache = ModelCache(max_models=4, max_bytes=2**40)
    latencies: list[float] = []
    try:
        for path in paths:
            await cache.generate(path, PROMPT, n=1, seed=0)

        async def one(path: Path) -> None:
            t0 = time.perf_counter()
            await cache.generate(path, PROMPT, n=1)
            latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(one(paths[i % len(paths)]) for i in range(total)))
        wall = time.perf_counter() - t0
    finally:
        await cache.close()
    stats = common.percentiles(latencies, 50, 95)
    return {
        "p50_s": round(stats["p50"], 3),
        "p95_s": round(stats["p95"], 3),
        "requests": len(latencies),
        "models": [p.name for p in paths],
        "wall_s": round(wall, 2),
    }


def run(*, quick: bool, root: Path, models: Path) -> dict[str, Any]:
    """Cold and warm ``!tweet`` latency for tiny, the gpt2-shaped model and SmolLM2 (LoRA)."""
    table = common.load_table(limit=400 if quick else None)
    texts = list(table.handles[0].kept)
    store_root = root / "serve-store"
    common.link_bases(store_root, models)
    calls = 3 if quick else 20
    # (base, LoRA, steps, block size, batch size)
    specs: dict[str, tuple[str, bool, int, int, int]] = {
        "tiny": (common.TINY_NAME, False, 2 if quick else 30, 128, 1),
        "gpt2": (str(common.gpt2_base(root, models, texts, quick=quick)), False, 1, 128, 1),
    }
    if not quick:
        common.ensure_smollm2_base(models)
        # The model `make demo` makes, so the key measures what the offline path's users get.
        specs["smollm2_lora"] = (
            common.SMOLLM2_NAME,
            True,
            common.DEMO_STEPS,
            common.DEMO_BLOCK_SIZE,
            common.DEMO_BATCH_SIZE,
        )
    out: dict[str, Any] = {"prompt": PROMPT, "settings": "GenerationSettings() (huggingtweets')"}
    for key, (base, lora, steps, block_size, batch_size) in specs.items():
        path = common.ready_folder(
            store_root,
            table,
            f"g_{key}"[:15],
            base,
            lora=lora,
            max_steps=steps,
            block_size=block_size,
            batch_size=batch_size,
        )
        out[key] = {"base": base if key != "gpt2" or quick else "GPT2Config() random init"}
        # The served path first (cold includes making its engine's files once).
        out[key].update(asyncio.run(_measure(path, calls, None)))
        for engine in _other_engines(out[key]["backend"]):
            out[key][engine] = asyncio.run(_measure(path, calls, engine))
        out[key]["torch_speedup"] = round(
            out[key]["torch"]["warm_p50_s"] / max(out[key]["warm_p50_s"], 1e-6), 2
        )
    # The bot's default path: prompt-less tweets from the pool.
    realistic = store_root / ("g_smollm2_lora" if not quick else "g_tiny")
    out["pool"] = asyncio.run(_pool(realistic, calls=5 if quick else 10))
    out["pool"]["model"] = realistic.name
    # The demo's LoRA model (a quick run: a tiny LoRA model) as many handles: eight members
    # asking eight different handles at the same moment, then 200 handles in turn.
    lora = (
        common.ready_folder(
            store_root, table, "g_lora", common.TINY_NAME, lora=True, max_steps=2, block_size=64
        )
        if quick
        else store_root / "g_smollm2_lora"
    )
    out["concurrent8"] = asyncio.run(_concurrent(_handle_copies(lora, 8), rounds=1 if quick else 3))
    out["many_handles"] = asyncio.run(
        _many_handles(lora, 5 if quick else MANY_HANDLES, rounds=1 if quick else 2)
    )
    if not quick:
        from benchmarks.bench_generation_fast import perplexities
        from training.generation import TweetGenerator

        path = store_root / "g_smollm2_lora"
        out["smollm2_lora"].update(
            perplexities(
                TweetGenerator.load(path, backend="torch"),
                TweetGenerator.load(path),
                table,
                blocks=64,
            )
        )
    out["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def _other_engines(served: str) -> list[str]:
    """The installed engines other than ``served``, measured beside it (torch always)."""
    from training.generation.fast import fast_installed
    from training.generation.llamacpp import llamacpp_installed

    engines = ["torch"]
    if fast_installed():
        engines.append("ctranslate2")
    if llamacpp_installed():
        engines.append("llamacpp")
    return [engine for engine in engines if engine != served]


def main(argv: list[str] | None = None) -> int:
    """Print the generation benchmark's JSON."""
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    common.quiet_libraries()
    with common.workdir(args.workdir) as root, common.stdout_to_stderr():
        result = run(quick=args.quick, root=root, models=common.models_dir(args.models_dir))
    common.emit({"generation": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
