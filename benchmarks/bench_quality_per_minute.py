"""Tweet perplexity per minute of CPU training: each LoRA technique against the default recipe,
at equal wall time.

Wall time on a shared machine is noisy, so it is not compared directly. Instead:

1. ``time``: the step time of every variant relative to the baseline, from short runs
   interleaved with baseline runs under the same load (baseline, variant 1, baseline,
   variant 2, …, baseline; a second round, if asked, in reverse order). A step's time is the
   CPU seconds the process spent in it, on one thread, which a busy machine changes far less
   than the wall seconds: on 2 cores shared with other work the wall time of one step varied
   3x within 8 steps, and two threads spun at every barrier while the other waited for a core
   (14-40 CPU seconds a step instead of about 2.6 on one thread). Each run loads nothing: the
   base model is loaded once and copied. The first steps are left out of the mean; the extra
   CPU seconds a variant costs before its steps (PiSSA's decomposition, compiling) are measured
   too.
2. ``train``: each variant trains ``round((80 * t_base + extra_base - extra) / t_variant)``
   steps, the steps that fit the baseline's 80 (its cosine fitted to them, as a time budget
   would), with ``training.train``'s own model wrapping, blocks and Trainer, and is measured
   once after training on the tweet-aligned validation blocks (what ``train_model`` records as
   ``tweet_perplexity_after``); the result does not depend on the load.

Results go to ``benchmarks/results/quality_per_minute_*.json`` (see ``--help``); the variants are
:data:`benchmarks.bench_quality.PER_MINUTE_RECIPES`.
"""

from __future__ import annotations

import argparse
import copy
import io
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.bench_quality import (
    ARCHIVES,
    PER_MINUTE_BASELINE,
    PER_MINUTE_RECIPES,
    Recipe,
    load_archive,
)

RESULTS_DIR = common.ROOT / "benchmarks" / "results"
TIMING = RESULTS_DIR / "quality_per_minute_steptime.json"
BASE_STEPS = 80
PROBE_STEPS = 6
#: Steps of each probe left out of its mean step time (allocation, compiling).
PROBE_SKIP = 2


def _cpu_trainer(
    model: Any, config: Any, blocks: Any, eval_blocks: Any, output_dir: Path
) -> tuple[Any, Any]:
    """``train_model``'s Trainer and loss recorder on the CPU, without progress output."""
    import torch

    from training.progress import JsonProgress
    from training.train import _make_trainer, _StopFlag

    return _make_trainer(
        model,
        config,
        blocks,
        eval_blocks,
        output_dir=output_dir,
        device=torch.device("cpu"),
        bf16=False,
        reporter=JsonProgress(io.StringIO()),
        stop=_StopFlag(),
        tokens_per_step=config.block_size * config.batch_size,
    )


def _recipes(names: str | None) -> list[Recipe]:
    recipes = [r for r in PER_MINUTE_RECIPES if r.name != PER_MINUTE_BASELINE.name]
    if names:
        wanted = names.split(",")
        unknown = set(wanted) - {r.name for r in recipes}
        if unknown:
            raise SystemExit(f"unknown variant(s): {', '.join(sorted(unknown))}")
        recipes = [r for r in recipes if r.name in wanted]
    return recipes


def probe(recipe: Recipe, base: Any, tokenizer: Any, table: Any, steps: int) -> dict[str, Any]:
    """Train ``steps`` steps of ``recipe`` on a copy of ``base``; the seconds of each step and
    of the adapter's set-up."""
    import torch
    from transformers import TrainerCallback

    from training.dataset import build_eval_blocks, build_train_blocks, split_tweets
    from training.train import TrainConfig, _wrap_lora

    wall0 = time.perf_counter()
    settings = {**recipe.settings, "max_steps": steps}
    config = TrainConfig(**settings, likeness_samples=0)
    config.validate()
    torch.manual_seed(config.seed)
    model = copy.deepcopy(base)
    t0 = time.process_time()
    if config.lora:
        model = _wrap_lora(model, config)
    setup_s = time.process_time() - t0
    split = split_tweets(table, config.val_fraction, seed=config.seed)
    blocks = build_train_blocks(
        split, tokenizer, block_size=config.block_size, epochs=1, seed=config.seed, align=True
    )
    eval_blocks = build_eval_blocks(split, tokenizer, block_size=config.block_size, align=True)
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if not ends:
                ends.append(time.process_time())

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            ends.append(time.process_time())

    import tempfile

    with tempfile.TemporaryDirectory(prefix="doppeltweet-probe-") as scratch:
        trainer, _ = _cpu_trainer(model, config, blocks, eval_blocks, Path(scratch))
        trainer.add_callback(Clock())
        trainer.train()
    step_s = [b - a for a, b in itertools.pairwise(ends)]
    mean = statistics.fmean(step_s[PROBE_SKIP:])
    return {
        "recipe": recipe.name,
        "setup_s": round(setup_s, 3),
        "step_s": [round(s, 4) for s in step_s],
        "mean_step_s": round(mean, 4),
        # What the first steps cost beyond ordinary ones (compiling, lazy allocation).
        "first_steps_extra_s": round(sum(step_s[:PROBE_SKIP]) - PROBE_SKIP * mean, 3),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def time_variants(recipes: list[Recipe], rounds: int, archive_handle: str) -> dict[str, Any]:
    """Interleaved probes; each variant's step time relative to its neighbouring baselines."""
    from training.basemodels import load_base_model

    archive = next(a for a in ARCHIVES if a.handle == archive_handle)
    table = load_archive(archive)
    models = common.models_dir(None)
    common.ensure_smollm2_base(models)
    texts = list(table.handles[0].kept)
    base, tokenizer = load_base_model(
        PER_MINUTE_BASELINE.settings["base_model"], texts=texts, models_dir=models, device=None
    )
    if getattr(base, "loss_type", None) is None:
        base.loss_type = "ForCausalLM"
    probes: list[dict[str, Any]] = []
    ratios: dict[str, list[float]] = {r.name: [] for r in recipes}
    for round_no in range(rounds):
        order = recipes if round_no % 2 == 0 else list(reversed(recipes))
        last_base = probe(PER_MINUTE_BASELINE, base, tokenizer, table, PROBE_STEPS)
        probes.append({**last_base, "round": round_no})
        print(json.dumps(probes[-1]), file=sys.stderr, flush=True)
        for recipe in order:
            run = probe(recipe, base, tokenizer, table, PROBE_STEPS)
            after = probe(PER_MINUTE_BASELINE, base, tokenizer, table, PROBE_STEPS)
            probes += [{**run, "round": round_no}, {**after, "round": round_no}]
            for p in probes[-2:]:
                print(json.dumps(p), file=sys.stderr, flush=True)
            t_base = (last_base["mean_step_s"] + after["mean_step_s"]) / 2
            ratios[recipe.name].append(run["mean_step_s"] / t_base)
            last_base = after
    base_runs = [p for p in probes if p["recipe"] == PER_MINUTE_BASELINE.name]
    base_extra = statistics.fmean(p["setup_s"] + p["first_steps_extra_s"] for p in base_runs)
    base_step = statistics.fmean(p["mean_step_s"] for p in base_runs)
    variants = {}
    for recipe in recipes:
        runs = [p for p in probes if p["recipe"] == recipe.name]
        ratio = statistics.fmean(ratios[recipe.name])
        extra = statistics.fmean(p["setup_s"] + p["first_steps_extra_s"] for p in runs)
        # The baseline's 80 steps in baseline step units, less what the variant spends first.
        budget = BASE_STEPS * base_step + base_extra - extra
        variants[recipe.name] = {
            "step_time_ratio": round(ratio, 4),
            "ratios": [round(r, 4) for r in ratios[recipe.name]],
            "extra_s": round(extra, 2),
            "steps": max(1, round(budget / (ratio * base_step))),
        }
    return {
        "benchmark": "quality_per_minute_steptime",
        "machine": common.machine(),
        "archive": archive_handle,
        "probe_steps": PROBE_STEPS,
        "rounds": rounds,
        "baseline": {
            "recipe": PER_MINUTE_BASELINE.name,
            "mean_step_s": round(base_step, 4),
            "extra_s": round(base_extra, 2),
            "steps": BASE_STEPS,
        },
        "variants": variants,
        "probes": probes,
    }


def train_variant(
    recipe: Recipe, steps: int, archive_handle: str, seed: int | None
) -> dict[str, Any]:
    """Train ``recipe`` for ``steps`` steps as ``train_model`` does (seeding, base, adapter,
    blocks, Trainer); the held-out tweet perplexity after training."""
    import dataclasses
    import math
    import tempfile

    from training.basemodels import load_base_model
    from training.dataset import build_eval_blocks, build_train_blocks, split_tweets
    from training.train import (
        TrainConfig,
        _evaluate,
        _seed_everything,
        _wrap_lora,
    )

    archive = next(a for a in ARCHIVES if a.handle == archive_handle)
    table = load_archive(archive)
    settings = {**recipe.settings, "max_steps": steps}
    if seed is not None:
        settings["seed"] = seed
    config = TrainConfig(**settings, likeness_samples=0)
    config.validate()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    _seed_everything(config.seed)
    texts = [text for data in table.handles for text in data.kept]
    model, tokenizer = load_base_model(
        config.base_model, texts=texts, models_dir=common.models_dir(None), device=None
    )
    if getattr(model, "loss_type", None) is None:
        model.loss_type = "ForCausalLM"
    if config.lora:
        model = _wrap_lora(model, config)
    split = split_tweets(table, config.val_fraction, seed=config.seed)
    blocks = build_train_blocks(
        split,
        tokenizer,
        block_size=config.block_size,
        epochs=config.epochs,
        seed=config.seed,
        align=config.align_blocks,
    )
    tweet_blocks = build_eval_blocks(split, tokenizer, block_size=config.block_size, align=True)
    with tempfile.TemporaryDirectory(prefix="doppeltweet-grid-") as scratch:
        trainer, recorder = _cpu_trainer(model, config, blocks, tweet_blocks, Path(scratch))
        trainer.train()
        loss = _evaluate(trainer, tweet_blocks, recorder)
    assert loss is not None
    return {
        "recipe": recipe.name,
        "archive": archive.handle,
        "seed": config.seed,
        "steps": len(recorder.losses),
        "config": dataclasses.asdict(config),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "cpu_s": round(time.process_time() - cpu0, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "tweet_val_loss_after": round(loss, 5),
        "tweet_perplexity_after": round(math.exp(loss), 3),
        "train_loss_last": round(recorder.losses[-1], 4),
        "learning_rate_first_step": recorder.lr_first,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    timing = sub.add_parser("time", help="interleaved step-time probes")
    timing.add_argument("--variants", default=None, help="comma-separated (default: all)")
    timing.add_argument("--rounds", type=int, default=1)
    timing.add_argument("--archive", default="BarackObama")
    timing.add_argument("--output", type=Path, default=TIMING)
    training = sub.add_parser("train", help="train at equal wall time, from the probes")
    training.add_argument("--variants", default=None, help="comma-separated; 'baseline' too")
    training.add_argument("--archives", default="BarackObama,realDonaldTrump")
    training.add_argument("--seed", type=int, default=None)
    training.add_argument("--timing", type=Path, default=TIMING)
    training.add_argument("--output", type=Path, required=True)
    training.add_argument(
        "--steps",
        type=int,
        default=None,
        help="train every variant this many steps instead of the probes' count (for variants "
        "whose steps cost what the baseline's do by construction)",
    )
    args = parser.parse_args(argv)
    common.quiet_libraries()
    import torch

    # One thread: two OpenMP threads on 2 cores shared with other work spin at every barrier
    # while the other waits for a core, which multiplies the CPU seconds of a step.
    torch.set_num_threads(1)
    os.environ["DOPPELTWEET_GENERATION_BACKEND"] = "torch"  # no serving artifacts: not measured
    with common.stdout_to_stderr():
        if args.command == "time":
            payload = time_variants(_recipes(args.variants), args.rounds, args.archive)
            common.write_json(args.output, payload)
            print(json.dumps(payload["variants"], indent=1))
            return 0
        plan = (
            {"variants": {}}
            if args.steps is not None
            else json.loads(args.timing.read_text("utf-8"))
        )
        names = args.variants.split(",") if args.variants else ["baseline", *plan["variants"]]
        out: dict[str, Any] = (
            json.loads(args.output.read_text("utf-8"))
            if args.output.is_file()
            else {"benchmark": "quality_per_minute", "machine": common.machine(), "runs": []}
        )
        recipes = {r.name: r for r in PER_MINUTE_RECIPES}
        for name in names:
            recipe = PER_MINUTE_BASELINE if name == "baseline" else recipes[name]
            if name == "baseline":
                steps = BASE_STEPS
            else:
                steps = args.steps if args.steps is not None else plan["variants"][name]["steps"]
            for handle in args.archives.split(","):
                run = train_variant(recipe, steps, handle, args.seed)
                out["runs"].append(run)
                common.write_json(args.output, out)
                print(json.dumps({k: v for k, v in run.items() if k != "config"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
