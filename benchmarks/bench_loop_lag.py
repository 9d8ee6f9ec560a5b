"""Bot responsiveness: event-loop lag while a real training job runs and while tweets generate.

A sampler task on the bot's event loop sleeps 10 ms at a time and records how late it wakes up;
that lateness is what a gateway heartbeat or a command would wait. Two scenarios, each in this one
process, the way ``doppeltweet bot`` runs them:

* ``during_training`` — ``bot.jobs.JobRunner`` (with its SQLite store) runs a real
  ``python -m training train --progress-json`` background process on the bundled CSV (the ``tiny``
  base) from submission to the finished model, reading its progress stream as the bot does;
* ``during_generation`` — back-to-back ``!tweet`` generations through ``bot.model_cache.ModelCache``
  (the gpt2-shaped model, already loaded), which run in the bot's generation worker process
  (``bot.model_process``, the bot's default);
* ``first_load`` — that model's first load and first tweet through the same cache, beside
  ``first_load_in_threads``: the same load in the cache's own threads (``DOPPELTWEET_GENERATION_
  PROCESS=false``), measured right after it, so the two compare under the same machine load.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks import common

INTERVAL_S = 0.010


class LagSampler:
    """Wakes every 10 ms on the running loop and records how late each wake-up is (ms)."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.lags_ms.append(max(0.0, (time.perf_counter() - t0 - self.interval_s) * 1000))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict[str, Any]:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return summarize(self.lags_ms)


def summarize(lags_ms: list[float]) -> dict[str, Any]:
    """p50 / p99 / max of the lags, and how many samples they come from."""
    if not lags_ms:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    stats = common.percentiles(lags_ms, 50, 99)
    return {
        "samples": len(lags_ms),
        "p50_ms": round(stats["p50"], 2),
        "p99_ms": round(stats["p99"], 2),
        "max_ms": round(max(lags_ms), 2),
    }


class _Done:
    """A job listener that wakes the benchmark when its job ends."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.outcome = "unknown"
        self.training_steps = 0

    async def on_progress(self, job: Any, event: dict[str, Any]) -> None:
        if event.get("phase") == "training" and event.get("step"):
            self.training_steps = int(event["step"])

    async def on_finished(self, job: Any, result: Any) -> None:
        self.outcome = "succeeded"
        self.ended.set()

    async def on_failed(self, job: Any, message: str) -> None:
        self.outcome = f"failed: {message}"
        self.ended.set()


async def during_training(root: Path, max_steps: int, timeout_s: float) -> dict[str, Any]:
    """Lag from ``!train`` submission until the background process's model is stored."""
    from bot.config import BotSettings
    from bot.jobs import JobRunner
    from bot.services.training_requests import TrainingRequests
    from bot.services.uploads import upload_path
    from bot.store import Store
    from training.handles import parse_handles

    data = root / "bot-data"
    shutil.rmtree(data, ignore_errors=True)
    settings = BotSettings(_env_file=None, data_dir=data, owner_ids="42", cancel_grace_s=5)
    store = await Store.open(settings.db_file)
    runner = JobRunner(store, settings)
    done = _Done()
    runner.add_listener(done)
    await runner.start()
    sampler = LagSampler()
    try:
        upload = upload_path(runner.settings, 1, "obama.csv")
        shutil.copyfile(common.DATA_CSV, upload)
        sampler.start()
        t0 = time.perf_counter()
        await TrainingRequests(store, settings, runner).submit(
            1,
            2,
            3,
            parse_handles([common.HANDLE]),
            [str(upload)],
            {"base_model": common.TINY_NAME, "max_steps": max_steps, "epochs": 1},
        )
        await asyncio.wait_for(done.ended.wait(), timeout_s)
        seconds = time.perf_counter() - t0
        stats = await sampler.stop()
    finally:
        await runner.stop()
        await store.close()
    return {
        **stats,
        "seconds": round(seconds, 2),
        "job": done.outcome,
        "training_steps": done.training_steps,
        "model": common.TINY_NAME,
    }


async def during_generation(model_dir: Path, calls: int, *, process: bool) -> dict[str, Any]:
    """Lag while ``calls`` ``!tweet`` generations run one after another (model pre-loaded); the
    models live in a worker process (``process``, as the bot runs) or in the cache's threads."""
    from bot.model_cache import DEFAULT_WORKERS, ModelCache
    from bot.model_process import ProcessLoader

    loader = ProcessLoader(threads=DEFAULT_WORKERS) if process else None
    cache = ModelCache(max_models=2, max_bytes=2**40, loader=loader)
    try:
        load = LagSampler()
        load.start()
        await cache.generate(model_dir, "My dream is", n=1, seed=0)
        load_stats = await load.stop()
        sampler = LagSampler()
        sampler.start()
        t0 = time.perf_counter()
        for seed in range(1, calls + 1):
            await cache.generate(model_dir, "My dream is", n=1, seed=seed)
        seconds = time.perf_counter() - t0
        stats = await sampler.stop()
    finally:
        await cache.close()
    return {**stats, "seconds": round(seconds, 2), "generations": calls, "first_call": load_stats}


def run(*, quick: bool, root: Path, models: Path) -> dict[str, Any]:
    """Both scenarios; the generation one uses the gpt2-shaped model (tiny-shaped when quick)."""
    table = common.load_table(limit=400 if quick else None)
    store_root = root / "serve-store"
    common.link_bases(store_root, models)
    base = common.gpt2_base(root, models, list(table.handles[0].kept), quick=quick)
    model_dir = common.ready_folder(
        store_root, table, "g_gpt2", str(base), lora=False, max_steps=1, block_size=128
    )
    training = asyncio.run(during_training(root, max_steps=3 if quick else 40, timeout_s=600))
    calls = 2 if quick else 5
    generation = asyncio.run(during_generation(model_dir, calls, process=True))
    in_threads = asyncio.run(during_generation(model_dir, calls, process=False))
    name = "gpt2-shaped" if not quick else "gpt2-shaped (quick: 2 x 64)"
    generation["model"] = name
    # The model's first load (tokenizer, weights, fast artifact) with its first tweet.
    first_load = {**generation["first_call"], "model": name, "where": "worker process"}
    return {
        "interval_ms": INTERVAL_S * 1000,
        "during_training": training,
        "during_generation": generation,
        "first_load": first_load,
        "first_load_in_threads": {**in_threads["first_call"], "model": name, "where": "threads"},
    }


def main(argv: list[str] | None = None) -> int:
    """Print the loop-lag benchmark's JSON."""
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    common.quiet_libraries()
    with common.workdir(args.workdir) as root, common.stdout_to_stderr():
        result = run(quick=args.quick, root=root, models=common.models_dir(args.models_dir))
    common.emit({"loop_lag": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
