"""Run every benchmark, each in its own process, and write ``benchmarks/results/latest.json``.

Each script prints one JSON object; this runner merges them under their top-level keys (machine,
matmul, training, generation, memory, loop_lag), adds when and where they ran, and replaces the
results file atomically. The scripts share one scratch folder, so the benchmark models are built
once. A failing script is recorded with the end of its stderr and makes the exit code non-zero;
the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import common

SCRIPTS = (
    "bench_matmul",
    "bench_training",
    "bench_generation",
    "bench_generation_fast",
    "bench_memory",
    "bench_loop_lag",
)
#: Where each script's results go, as a dotted key (an error replaces that key's stale results);
#: scripts that share a top-level key (generation) are merged into it, not over it.
RESULT_KEYS = {
    "bench_matmul": "matmul",
    "bench_training": "training",
    "bench_generation": "generation",
    "bench_generation_fast": "generation.fast_vs_torch",
    "bench_memory": "memory",
    "bench_loop_lag": "loop_lag",
}
RESULTS = common.ROOT / "benchmarks" / "results" / "latest.json"
REQUIRED_KEYS = (
    "training.gpt2_full.mfu",
    "training.gpt2_full.speedup_vs_naive",
    "training.gpt2_lora.mfu",
    "training.default_train.wall_s",
    "training.default_train.tweet_ppl_after",
    "generation.gpt2.warm_p50_s",
    "generation.gpt2.cold_s",
    "generation.fast_vs_torch.warm_p50_s",
    "generation.pool.p50_ms",
    "generation.concurrent8.p95_s",
    "generation.many_handles.p95_s",
    "generation.many_handles.rss_per_handle_mb",
    "loop_lag.during_training.p99_ms",
    "loop_lag.during_generation.p99_ms",
    "loop_lag.first_load.p99_ms",
    "memory.per_extra_lora_handle_mb",
    "memory.fast_per_handle_mb",
)


#: Required too, except in --quick runs (which train no SmolLM2 model).
FULL_RUN_KEYS = (
    "generation.smollm2_lora.warm_p50_s",
    "generation.smollm2_lora.fast_ppl_delta_pct",
)

_RUN_SUMMARY_KEYS = ("runs", "quick", "wall_s", "total_wall_s", "missing_keys")


def lookup(result: dict[str, Any], dotted: str) -> Any:
    """``result["a"]["b"]`` for ``"a.b"``; KeyError when a part is missing."""
    value: Any = result
    for part in dotted.split("."):
        value = value[part]
    return value


def nest(dotted: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for ``"a.b"``."""
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def deep_merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Merge ``update`` into ``into``: nested objects key by key, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value


def run_script(name: str, extra: list[str], timeout_s: float) -> tuple[dict[str, Any], float]:
    """One benchmark's JSON (or an ``error`` entry) and its wall time."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}", *extra],
            cwd=common.ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        message = f"timed out after {timeout_s:.0f} s"
        return nest(RESULT_KEYS[name], {"error": message}), time.perf_counter() - t0
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        failure = {"error": f"exit code {proc.returncode}", "stderr": tail}
        return nest(RESULT_KEYS[name], failure), wall
    return json.loads(proc.stdout), wall


def _replace(merged: dict[str, Any], dotted: str, result: dict[str, Any]) -> None:
    """Put one script's ``result`` into ``merged``: its earlier results under ``dotted`` go,
    except those of other scripts nested below it (``generation.fast_vs_torch``)."""
    kept = {}
    for other in RESULT_KEYS.values():
        if other != dotted and other.startswith(dotted + "."):
            try:
                kept[other] = lookup(merged, other)
            except (KeyError, TypeError):
                continue
    *parents, last = dotted.split(".")
    node: Any = merged
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)
    deep_merge(merged, result)
    for other, value in kept.items():
        deep_merge(merged, nest(other, value))


def source_state() -> dict[str, Any]:
    """The commit measured, and whether training/ or bot/ had uncommitted changes then."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=common.ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    dirty = git("status", "--porcelain", "--", "training", "bot").splitlines()
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted": [d.split(None, 1)[-1] for d in dirty],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the merged results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="minimal mode (seconds per script)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--models-dir", type=Path, default=None, help="store with .bases/")
    parser.add_argument("--only", nargs="*", choices=SCRIPTS, default=None)
    parser.add_argument("--timeout", type=float, default=2400.0, help="seconds per script")
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the other scripts' results already in --output (re-run only some with --only)",
    )
    args = parser.parse_args(argv)

    started = datetime.now(UTC)
    source = source_state()  # what is measured: the tree as it is when the run starts
    merged: dict[str, Any] = {}
    walls: dict[str, float] = {}
    if args.update and args.output.is_file():
        merged = json.loads(args.output.read_text(encoding="utf-8"))
        previous = merged.get("run", {})
        walls = dict(previous.get("wall_s", {}))
        started_runs = previous.get("runs") or [
            {k: v for k, v in previous.items() if k not in _RUN_SUMMARY_KEYS}
        ]
    else:
        started_runs = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="doppeltweet-bench-") as scratch:
        extra = ["--workdir", scratch]
        if args.models_dir is not None:
            extra += ["--models-dir", str(args.models_dir)]
        if args.quick:
            extra.append("--quick")
        for name in args.only or SCRIPTS:
            print(f"running {name} …", file=sys.stderr, flush=True)
            result, wall = run_script(name, extra, args.timeout)
            walls[name] = round(wall, 1)
            try:
                failed |= "error" in lookup(result, RESULT_KEYS[name])
            except (KeyError, TypeError):
                failed = True
            _replace(merged, RESULT_KEYS[name], result)
            print(f"  {name}: {wall:.1f} s", file=sys.stderr, flush=True)
    this_run = {
        "scripts": list(args.only or SCRIPTS),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "source_at_start": source,
    }
    merged["run"] = {
        "runs": [*started_runs, this_run],
        "quick": args.quick,
        "wall_s": walls,
        "total_wall_s": round(sum(walls.values()), 1),
    }
    missing = []
    if not args.only or args.update:
        for key in REQUIRED_KEYS + (() if args.quick else FULL_RUN_KEYS):
            try:
                lookup(merged, key)
            except (KeyError, TypeError):
                missing.append(key)
    merged["run"]["missing_keys"] = missing
    common.write_json(args.output, merged)
    print(f"wrote {args.output}", file=sys.stderr)
    return 1 if failed or missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
