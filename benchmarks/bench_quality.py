"""Tweet quality per training recipe: does a fan recognise the person, per minute of CPU?

For every recipe (:data:`RECIPES`) and every sample archive (:data:`ARCHIVES`) this trains a model
with the real library (``training.pipeline.collect`` → ``training.train.train_model``, exactly what
``doppeltweet train`` runs, with its 90/10 train/validation split by tweet) and reports:

* wall minutes and process CPU minutes (all threads of this process) of the whole run;
* held-out validation perplexity before → after, on huggingtweets' fixed cuts of the validation
  tweets (blocks start mid-tweet) and on tweet-aligned blocks of them (each opens a tweet after
  the separator, as aligned training practises; padding left out);
* the style table of the held-out real tweets against 20 prompt-less generated ones
  (``training.style``: length, replies, @mentions, hashtags, emoji, lower-case, languages) and its
  one-number summary ``style_gap`` (percentage points; 0 = the same style);
* the copy rate (candidates rejected as copies of a training tweet);
* % glued prompts: one-word prompts (the person's most common opening words) whose word came out
  glued to the next one ("TheNerd's", "Today@jake") — the first word of the tweet is then not a
  word the person ever wrote;
* % broken emoji: tweets holding a skin-tone modifier, joiner or half flag without its emoji.

Results go to ``benchmarks/results/quality.json`` after every run (a stopped run keeps what
finished) and a Markdown table is printed on stderr. ``--quick`` trains the ``tiny`` model for a
few steps on part of one archive (seconds; the smoke test). Timings on a shared machine are noisy:
the load average is recorded beside each run.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import common

RESULTS = common.ROOT / "benchmarks" / "results" / "quality.json"


@dataclass(frozen=True)
class Archive:
    """A sample archive bundled in examples/ (see examples/README.md for licences)."""

    handle: str
    path: Path
    language: str


ARCHIVES: tuple[Archive, ...] = (
    Archive("BarackObama", common.ROOT / "examples" / "BarackObama.csv", "en"),
    Archive("realDonaldTrump", common.ROOT / "examples" / "realDonaldTrump.csv", "en"),
    # The second language: German maxims (aphorisms, not tweets; see examples/README.md).
    Archive("Goethe", common.ROOT / "examples" / "Goethe.csv", "de"),
)


@dataclass(frozen=True)
class Recipe:
    """One way to train: the :class:`training.train.TrainConfig` fields it sets."""

    name: str
    summary: str
    settings: dict[str, Any] = field(default_factory=dict)


#: The demo's shape: 4 blocks of 64 tokens per step (about a second a step on 2 idle cores).
_SHAPE = {
    "base_model": "smollm2-135m",
    "block_size": common.DEMO_BLOCK_SIZE,
    "batch_size": common.DEMO_BATCH_SIZE,
    "epochs": 1,
}

RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "lora-attn-80",
        "LoRA r16 on attention, lr 1e-3, 80 steps (the demo before)",
        {
            **_SHAPE,
            "lora": True,
            "lora_targets": "attention",
            "learning_rate": 1e-3,
            "max_steps": 80,
        },
    ),
    Recipe(
        "lora-all-80",
        "LoRA r16 on every linear layer, lr 1e-3, 80 steps",
        {
            **_SHAPE,
            "lora": True,
            "lora_targets": "all-linear",
            "learning_rate": 1e-3,
            "max_steps": 80,
        },
    ),
    Recipe(
        "lora-all-80-fixed-blocks",
        "LoRA r16 on every linear layer, lr 1e-3, 80 steps, huggingtweets' fixed cuts of the "
        "stream (blocks start mid-tweet) instead of tweet-aligned blocks",
        {
            **_SHAPE,
            "lora": True,
            "lora_targets": "all-linear",
            "learning_rate": 1e-3,
            "max_steps": 80,
            "align_blocks": False,
        },
    ),
    Recipe(
        "full-80",
        "full fine-tune, lr 1e-4, 80 steps",
        {**_SHAPE, "lora": False, "learning_rate": 1e-4, "max_steps": 80},
    ),
    Recipe(
        "lora-all-80-lr2e-3",
        "LoRA r16 on every linear layer, lr 2e-3, 80 steps",
        {
            **_SHAPE,
            "lora": True,
            "lora_targets": "all-linear",
            "learning_rate": 2e-3,
            "max_steps": 80,
        },
    ),
    Recipe(
        "lora-all-160-es",
        "LoRA r16 on every linear layer, lr 1e-3, up to 160 steps, early stopping "
        "(validation loss every 40 steps, patience 1)",
        {
            **_SHAPE,
            "lora": True,
            "lora_targets": "all-linear",
            "learning_rate": 1e-3,
            "max_steps": 160,
            "early_stopping_patience": 1,
            "eval_steps": 40,
        },
    ),
    Recipe(
        "lora-all-r32-80",
        "LoRA r32 (alpha 64) on every linear layer, lr 1e-3, 80 steps",
        {
            **_SHAPE,
            "lora": True,
            "lora_targets": "all-linear",
            "learning_rate": 1e-3,
            "lora_r": 32,
            "lora_alpha": 64,
            "max_steps": 80,
        },
    ),
    Recipe(
        "lora-all-80-seed7",
        "LoRA r16 on every linear layer, lr 1e-3, 80 steps, seed 7 (another split, shuffle and "
        "adapter initialisation: the default's run-to-run spread)",
        {
            **_SHAPE,
            "lora": True,
            "lora_targets": "all-linear",
            "learning_rate": 1e-3,
            "max_steps": 80,
            "seed": 7,
        },
    ),
    Recipe(
        "lora-all-80-lr2e-3-seed7",
        "LoRA r16 on every linear layer, lr 2e-3, 80 steps, seed 7",
        {
            **_SHAPE,
            "lora": True,
            "lora_targets": "all-linear",
            "learning_rate": 2e-3,
            "max_steps": 80,
            "seed": 7,
        },
    ),
)

#: The default recipe the quality-per-minute grid (``benchmarks/bench_quality_per_minute.py``)
#: measures every technique against: ``lora-all-80-lr2e-3``.
PER_MINUTE_BASELINE = next(r for r in RECIPES if r.name == "lora-all-80-lr2e-3")


def _on_baseline(name: str, summary: str, **changes: Any) -> Recipe:
    return Recipe(name, summary, {**PER_MINUTE_BASELINE.settings, **changes})


#: One technique each on top of the baseline; the grid trains each for the steps that fit the
#: baseline's 80 (``max_steps`` here is the baseline's, replaced by the measured count).
PER_MINUTE_RECIPES: tuple[Recipe, ...] = (
    PER_MINUTE_BASELINE,
    _on_baseline("loraplus4", "LoRA+: B's learning rate 4x A's (8e-3)", loraplus_lr_ratio=4.0),
    _on_baseline(
        "warmup10-lr4e-3",
        "a linear warm-up over 10 % of the steps to a peak rate of 4e-3",
        warmup_ratio=0.1,
        learning_rate=4e-3,
    ),
    _on_baseline(
        "rslora", "rsLoRA scaling alpha/sqrt(r) = 8 instead of alpha/r = 2", use_rslora=True
    ),
    _on_baseline("upper15", "LoRA on the upper 15 of 30 layers only", lora_layers=15),
    _on_baseline("pissa", "PiSSA initialisation (4 subspace iterations)", lora_init="pissa"),
    _on_baseline("olora", "OLoRA initialisation (QR)", lora_init="olora"),
    _on_baseline("compile", "torch.compile of the model", torch_compile=True),
)

#: ``--quick``: the tiny model, a few steps, on part of one archive.
QUICK_RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "tiny-full",
        "tiny, full fine-tune, 3 steps",
        {
            "base_model": "tiny",
            "block_size": 32,
            "batch_size": 2,
            "epochs": 1,
            "learning_rate": 2e-3,
            "max_steps": 3,
        },
    ),
    Recipe(
        "tiny-lora-es",
        "tiny, LoRA on every linear layer, up to 4 steps, early stopping",
        {
            "base_model": "tiny",
            "block_size": 32,
            "batch_size": 2,
            "epochs": 1,
            "lora": True,
            "lora_targets": "all-linear",
            "learning_rate": 5e-3,
            "max_steps": 4,
            "early_stopping_patience": 1,
            "eval_steps": 2,
        },
    ),
)
QUICK_TWEETS = 300
FULL_SAMPLES, QUICK_SAMPLES = 20, 3
FULL_PROMPTS, QUICK_PROMPTS = 8, 2

# Metrics on text ------------------------------------------------------------------------------

_EDGE_PUNCTUATION = "\"'“”‘’.,!?;:()[]…-–—*"
_OPENING_WORD = re.compile(r"[A-Z][a-z]+")


def _word_key(word: str) -> str:
    return word.strip(_EDGE_PUNCTUATION).casefold()


def vocabulary(texts: Sequence[str]) -> frozenset[str]:
    """Every whitespace-separated word of ``texts``, without edge punctuation, case-folded."""
    return frozenset(_word_key(w) for t in texts for w in t.split() if _word_key(w))


def opening_words(texts: Sequence[str], k: int) -> list[str]:
    """The ``k`` most common first words of ``texts`` that are plain capitalised words
    (``The``, ``Today``): the one-word prompts a fan would type."""
    counts = Counter(
        first for t in texts if (first := (t.split() or [""])[0]) and _OPENING_WORD.fullmatch(first)
    )
    return [word for word, _ in counts.most_common(k)]


def is_glued(prompt: str, tweet: str, words: frozenset[str]) -> bool:
    """Whether ``tweet`` glued its one-word ``prompt`` to the next word.

    The tweet's first word must be the prompt itself (edge punctuation aside, ``Today,``) or a
    word the person really wrote (``Today's``); anything else (``TheNerd's``, ``Today@jake``)
    is glued.
    """
    first = (tweet.split() or [""])[0]
    key = _word_key(first)
    return key != _word_key(prompt) and key not in words


def pct(count: int, total: int) -> float:
    """``count`` of ``total`` in percent, one decimal (0 for nothing)."""
    return round(100.0 * count / total, 1) if total else 0.0


# One run --------------------------------------------------------------------------------------


def load_archive(archive: Archive, limit: int | None = None) -> Any:
    """The archive through the real pipeline (source, cleaning, the data gates)."""
    from training.config import TrainingSettings
    from training.pipeline import collect, handles_and_specs

    handles, specs = handles_and_specs([archive.handle], paths=[str(archive.path)])
    table = collect(handles, specs, TrainingSettings(_env_file=None))
    if limit is not None:
        from training.cleaning import DataTable, HandleData

        data = table.handles[0]
        kept = data.kept[:limit]
        downloaded = data.retweets + data.short_tweets + len(kept)
        table = DataTable(
            [HandleData(data.handle, downloaded, data.retweets, data.short_tweets, kept)]
        )
    table.check()
    return table


def run_one(
    recipe: Recipe,
    archive: Archive,
    table: Any,
    *,
    store_root: Path,
    samples: int,
    prompts: int,
) -> dict[str, Any]:
    """Train ``recipe`` on ``table`` in a scratch store and measure the model."""
    from training.generation import TweetGenerator
    from training.progress import JsonProgress
    from training.store import ModelStore
    from training.style import broken_emoji_pct
    from training.train import TrainConfig, train_model

    config = TrainConfig(**recipe.settings, likeness_samples=samples)
    load_start = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    info = train_model(table, config, ModelStore(store_root), JsonProgress(io.StringIO()))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    record = json.loads((info.path / "training.json").read_text("utf-8"))
    metrics, likeness = record["metrics"], record.get("likeness") or {}

    texts = list(table.handles[0].kept)
    words = vocabulary(texts)
    prompted: list[dict[str, Any]] = []
    generator = TweetGenerator.load(info.path, backend="torch")
    try:
        for i, word in enumerate(opening_words(texts, prompts)):
            result = generator.generate(word, n=1, seed=i)
            for tweet in result.tweets:
                prompted.append({"prompt": word, "tweet": tweet})
    finally:
        generator.close()
    glued = [p for p in prompted if is_glued(p["prompt"], p["tweet"], words)]
    prompted_texts = [p["tweet"] for p in prompted]
    n_free = int(likeness.get("samples", 0))
    broken_free = round(float(likeness.get("broken_emoji_pct", 0.0)) * n_free / 100)
    broken_prompted = round(broken_emoji_pct(prompted_texts) * len(prompted_texts) / 100)
    return {
        "recipe": recipe.name,
        "archive": archive.handle,
        "language": archive.language,
        "config": record["config"],
        "wall_minutes": round(wall / 60, 2),
        "cpu_minutes": round(cpu / 60, 2),
        "train_minutes": round(record["timings"].get("train_s", 0.0) / 60, 2),
        "load_average_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "steps": metrics.get("steps"),
        "stopped_early": metrics.get("stopped_early"),
        "best_step": metrics.get("best_step"),
        "perplexity_before": _round(metrics.get("perplexity_before")),
        "perplexity_after": _round(metrics.get("perplexity_after")),
        "tweet_perplexity_before": _round(metrics.get("tweet_perplexity_before")),
        "tweet_perplexity_after": _round(metrics.get("tweet_perplexity_after")),
        "style_real": likeness.get("real"),
        "style_generated": likeness.get("generated"),
        "style_gap": likeness.get("style_gap"),
        "copy_rate_pct": likeness.get("copy_rate_pct"),
        "glued_prompts_pct": pct(len(glued), len(prompted)),
        "prompted_tweets": len(prompted),
        "broken_emoji_pct": pct(broken_free + broken_prompted, n_free + len(prompted)),
        "examples": likeness.get("examples", []),
        "prompted_examples": prompted[:3],
    }


def _round(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


# Report ---------------------------------------------------------------------------------------


def markdown_table(runs: Sequence[dict[str, Any]]) -> str:
    """One row per run: the figures the README's quality section shows."""
    lines = [
        "| Recipe | Archive | Wall min | CPU min | Steps | Perplexity before → after | "
        "Tweet perplexity before → after | Style gap | Lower-case real / gen | "
        "Replies real / gen | Languages gen | Copies | Glued | Broken emoji |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        real, gen = run.get("style_real") or {}, run.get("style_generated") or {}
        tweet = (
            f"{run['tweet_perplexity_before']} → {run['tweet_perplexity_after']}"
            if run.get("tweet_perplexity_after") is not None
            else "—"  # runs from before it was measured
        )
        languages = ", ".join(f"{c} {v:g} %" for c, v in list(gen.get("languages", {}).items())[:2])
        lines.append(
            f"| {run['recipe']} | @{run['archive']} | {run['wall_minutes']:g} | "
            f"{run['cpu_minutes']:g} | {run['steps']} | "
            f"{run['perplexity_before']} → {run['perplexity_after']} | {tweet} | "
            f"{run['style_gap']} | "
            f"{real.get('lowercase_pct', '?')} / {gen.get('lowercase_pct', '?')} % | "
            f"{real.get('replies_pct', '?')} / {gen.get('replies_pct', '?')} % | "
            f"{languages or '—'} | {run['copy_rate_pct']} % | {run['glued_prompts_pct']} % | "
            f"{run['broken_emoji_pct']} % |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})"
    )
    parser.add_argument(
        "--recipes", default=None, help="comma-separated recipe names (default: all)"
    )
    parser.add_argument("--archives", default=None, help="comma-separated handles (default: all)")
    args = parser.parse_args(argv)
    common.quiet_libraries()
    recipes = QUICK_RECIPES if args.quick else RECIPES
    archives = ARCHIVES[:1] if args.quick else ARCHIVES
    if args.recipes:
        wanted = set(args.recipes.split(","))
        unknown = wanted - {r.name for r in recipes}
        if unknown:
            parser.error(f"unknown recipe(s): {', '.join(sorted(unknown))}")
        recipes = tuple(r for r in recipes if r.name in wanted)
    if args.archives:
        wanted = {h.lower() for h in args.archives.split(",")}
        archives = tuple(a for a in archives if a.handle.lower() in wanted)
        if not archives:
            parser.error("no archive matches --archives")
    samples = QUICK_SAMPLES if args.quick else FULL_SAMPLES
    prompts = QUICK_PROMPTS if args.quick else FULL_PROMPTS
    models = common.models_dir(args.models_dir)
    payload: dict[str, Any] = {
        "benchmark": "quality",
        "quick": args.quick,
        "machine": common.machine(),
        "note": "busy shared machine: compare recipes with each other, not with other machines",
        "runs": [],
    }
    with common.stdout_to_stderr(), common.workdir(args.workdir) as work:
        if not args.quick:
            common.ensure_smollm2_base(models)
        tables = {a.handle: load_archive(a, QUICK_TWEETS if args.quick else None) for a in archives}
        # Recipe-major order across archives: a partial run still covers both archives.
        for recipe in recipes:
            for archive in archives:
                store_root = work / f"{recipe.name}-{archive.handle.lower()}"
                shutil.rmtree(store_root, ignore_errors=True)
                common.link_bases(store_root, models)
                run = run_one(
                    recipe,
                    archive,
                    tables[archive.handle],
                    store_root=store_root,
                    samples=samples,
                    prompts=prompts,
                )
                payload["runs"].append(run)
                common.write_json(args.output, payload)
                print(markdown_table([run]).splitlines()[-1], file=sys.stderr, flush=True)
                shutil.rmtree(store_root, ignore_errors=True)
    payload["table"] = markdown_table(payload["runs"])
    common.write_json(args.output, payload)
    common.emit(payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
