"""Memory per cached model: a full model's weights against a LoRA adapter on a shared base.

Each model is loaded with ``training.generate.TweetGenerator.load`` — the cache's loader — and kept
referenced, as ``bot.model_cache.ModelCache`` keeps it; the process's resident set size (RSS,
after ``gc`` and ``malloc_trim``) is read before and after each load. Models, in this order:

1. a full fine-tune of the gpt2-shaped model (its own weights);
2. a LoRA adapter on the gpt2-shaped base (loads the shared base and the adapter);
3. three more LoRA handles on the same base (copies of that adapter folder under other names):
   what each *extra* handle costs is ``per_extra_lora_handle_mb``.

Beside the RSS deltas are the bytes the cache itself accounts for each model (``memory_bytes``:
parameters and buffers that model alone holds).
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from benchmarks import common

EXTRA_HANDLES = 3


def _load(path: Path, kept: list[Any]) -> dict[str, Any]:
    from training.generate import TweetGenerator

    before = common.rss_mb()
    generator = TweetGenerator.load(path)
    kept.append(generator)
    after = common.rss_mb()
    return {
        "rss_delta_mb": round(after - before, 2),
        "cache_accounted_mb": round(generator.memory_bytes / 2**20, 2),
        "lora": generator.is_lora,
    }


def run(*, quick: bool, root: Path, models: Path) -> dict[str, Any]:
    """RSS deltas for a full model, the first LoRA handle and each extra LoRA handle."""
    table = common.load_table(limit=400 if quick else None)
    store_root = root / "serve-store"
    common.link_bases(store_root, models)
    base = str(common.gpt2_base(root, models, list(table.handles[0].kept), quick=quick))
    full = common.ready_folder(
        store_root, table, "g_gpt2", base, lora=False, max_steps=1, block_size=128
    )
    lora = common.ready_folder(
        store_root, table, "m_lora_0", base, lora=True, max_steps=1, block_size=128
    )
    extras = []
    for index in range(1, EXTRA_HANDLES + 1):
        copy = store_root / f"m_lora_{index}"
        if not copy.exists():
            shutil.copytree(lora, copy)
        extras.append(copy)

    import peft  # noqa: F401
    import torch  # noqa: F401  (imports are part of the baseline, not of any model)
    import transformers  # noqa: F401

    import bot.model_cache  # noqa: F401
    import training.generate  # noqa: F401

    kept: list[Any] = []
    baseline = common.rss_mb()
    full_stats = _load(full, kept)
    first_lora = _load(lora, kept)
    extra_stats = [_load(path, kept) for path in extras]
    per_extra = statistics.mean(s["rss_delta_mb"] for s in extra_stats)
    adapter_files = sum(f.stat().st_size for f in lora.glob("adapter_model.*")) / 2**20
    return {
        "model": "gpt2-shaped" if not quick else "gpt2-shaped (quick: 2 x 64)",
        "baseline_rss_mb": round(baseline, 1),
        "full_model": full_stats,
        "first_lora_handle_incl_base": first_lora,
        "extra_lora_handles": extra_stats,
        "per_extra_lora_handle_mb": round(per_extra, 2),
        "adapter_file_mb": round(adapter_files, 2),
        "final_rss_mb": round(common.rss_mb(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the memory benchmark's JSON."""
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    common.quiet_libraries()
    with common.workdir(args.workdir) as root, common.stdout_to_stderr():
        result = run(quick=args.quick, root=root, models=common.models_dir(args.models_dir))
    common.emit({"memory": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
