"""Memory per cached model: a full model's weights against a LoRA adapter on a shared base.

Each model is loaded with ``training.generation.TweetGenerator.load`` — the cache's loader — and
kept referenced, as ``bot.model_cache.ModelCache`` keeps it; the process's resident set size (RSS,
after ``gc`` and ``malloc_trim``) is read before and after each load. Models, in this order:

1. a full fine-tune of the gpt2-shaped model (its own weights);
2. a LoRA adapter on the gpt2-shaped base (loads the shared base and the adapter);
3. three more LoRA handles on the same base (copies of that adapter folder under other names):
   what each *extra* handle costs is ``per_extra_lora_handle_mb``;
4. the same three handles on the fast CPU engine that serves them by default (llama.cpp: an
   adapter each on one Q8_0 base, which the first of them loads; CTranslate2: each its own
   merged model): ``fast_per_handle_mb``, what each further fast handle costs.

Beside the RSS deltas are the bytes the cache itself accounts for each model (``memory_bytes``:
parameters and buffers that model alone holds), and what the two other per-handle parts cost on
their own: the copy filter built from its tweets (every handle has its own), and the tokenizer
each model folder carries — shared between models whose tokenizer files are identical, so it is
measured as a separate, unshared load (what each handle would cost without the sharing), and
``tokenizers_shared`` says whether the handles did share one.

The models are trained in this process, but measured in a fresh child process (so the training's
freed memory does not blur the baseline); after each load one forward pass of one token touches
every weight, so memory-mapped weights count as resident as they do once the model has served.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import common

EXTRA_HANDLES = 3


def _load(path: Path, kept: list[Any]) -> dict[str, Any]:
    import torch

    from training.generation import TweetGenerator

    before = common.rss_mb()
    # The shared-base torch path: what a cold LoRA handle costs (the fast path holds ~121 MB).
    generator = TweetGenerator.load(path, backend="torch")
    kept.append(generator)
    with torch.inference_mode():
        generator.model(input_ids=torch.tensor([[generator.model.config.eos_token_id or 0]]))
    after = common.rss_mb()
    return {
        "rss_delta_mb": round(after - before, 2),
        "cache_accounted_mb": round(generator.memory_bytes / 2**20, 2),
        "lora": generator.is_lora,
    }


def _load_fast(path: Path, kept: list[Any]) -> dict[str, Any]:
    """RSS delta of one handle served by the default fast CPU engine."""
    from training.generation import GenerationSettings, TweetGenerator

    before = common.rss_mb()
    generator = TweetGenerator.load(path)
    if generator.backend == "torch":  # torch's numbers under the fast path's name mislead
        raise RuntimeError(f"no fast CPU engine served {path.name}")
    kept.append(generator)
    generator.generate("", n=1, seed=0, settings=GenerationSettings(max_length=24))
    return {
        "backend": generator.backend,
        "rss_delta_mb": round(common.rss_mb() - before, 2),
        "cache_accounted_mb": round(generator.memory_bytes / 2**20, 2),
    }


def run(*, quick: bool, root: Path, models: Path) -> dict[str, Any]:
    """RSS deltas for a full model, the first LoRA handle and each extra LoRA handle."""
    table = common.load_table(limit=400 if quick else None)
    store_root = root / "serve-store"
    common.link_bases(store_root, models)
    base = str(common.gpt2_base(root, models, list(table.handles[0].kept), quick=quick))
    common.ready_folder(store_root, table, "g_gpt2", base, lora=False, max_steps=1, block_size=128)
    lora = common.ready_folder(
        store_root, table, "m_lora_0", base, lora=True, max_steps=1, block_size=128
    )
    for index in range(1, EXTRA_HANDLES + 1):
        copy = store_root / f"m_lora_{index}"
        if not copy.exists():
            shutil.copytree(lora, copy)

    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_memory", "--measure", str(store_root)],
        capture_output=True,
        text=True,
        check=False,
        cwd=common.ROOT,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the measuring process failed: {child.stderr.strip()[-500:]}")
    result = json.loads(child.stdout)
    result["model"] = "gpt2-shaped" if not quick else "gpt2-shaped (quick: 2 x 64)"
    return result


def measure(store_root: Path) -> dict[str, Any]:
    """Load the prepared models one by one in this (fresh) process and record RSS deltas."""
    import peft  # noqa: F401  (imports are part of the baseline, not of any model)
    import torch  # noqa: F401
    from transformers import AutoTokenizer

    import bot.model_cache  # noqa: F401
    from training.generation import CopyFilter
    from training.generation.folder import read_dataset

    full, lora = store_root / "g_gpt2", store_root / "m_lora_0"
    extras = [store_root / f"m_lora_{index}" for index in range(1, EXTRA_HANDLES + 1)]
    kept: list[Any] = []
    baseline = common.rss_mb()
    full_stats = _load(full, kept)
    first_lora = _load(lora, kept)
    extra_stats = [_load(path, kept) for path in extras]
    per_extra = statistics.mean(s["rss_delta_mb"] for s in extra_stats)
    # The fast path: llama.cpp adapters on one base, or each handle's merged CTranslate2 model;
    # the files were made right after training (copies carry theirs).
    fast_stats = [_load_fast(path, kept) for path in extras]
    adapter_files = sum(f.stat().st_size for f in lora.glob("adapter_model.*")) / 2**20

    handles = kept[1:]
    shared = all(g._tokenizer is handles[0]._tokenizer for g in handles)
    before = common.rss_mb()
    kept.append(AutoTokenizer.from_pretrained(lora))
    tokenizer_mb = common.rss_mb() - before
    texts = [text for _, text in read_dataset(lora)]
    before = common.rss_mb()
    kept.append(CopyFilter(texts))
    copy_filter_mb = common.rss_mb() - before
    return {
        "baseline_rss_mb": round(baseline, 1),
        "full_model": full_stats,
        "first_lora_handle_incl_base": first_lora,
        "extra_lora_handles": extra_stats,
        "per_extra_lora_handle_mb": round(per_extra, 2),
        "adapter_file_mb": round(adapter_files, 2),
        "fast_handles": fast_stats,
        # llama.cpp's first handle loads the shared base: each further one costs its adapter.
        "fast_per_handle_mb": round(
            statistics.mean(
                s["rss_delta_mb"]
                for s in (fast_stats[1:] if fast_stats[0]["backend"] == "llamacpp" else fast_stats)
            ),
            2,
        ),
        "tokenizers_shared": shared,
        "parts_of_a_handle_mb": {
            "tokenizer_unshared": round(tokenizer_mb, 2),
            "copy_filter": round(copy_filter_mb, 2),
            "copy_filter_tweets": len(texts),
        },
        "final_rss_mb": round(common.rss_mb(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the memory benchmark's JSON."""
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    common.quiet_libraries()
    if args.measure is not None:
        with common.stdout_to_stderr():
            result = measure(args.measure)
        common.emit(result)
        return 0
    with common.workdir(args.workdir) as root, common.stdout_to_stderr():
        result = run(quick=args.quick, root=root, models=common.models_dir(args.models_dir))
    common.emit({"memory": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
