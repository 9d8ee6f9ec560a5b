"""Shared fixtures for the bot's tests: settings in a temporary folder (``make_settings``, in
tests/conftest.py), an opened store, a stand-in for the training process that speaks the
``--progress-json`` protocol, job runners over it, and the real bot against simcord."""

from __future__ import annotations

import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from service_fakes import MakeRunner, Recorder

from bot.config import BotSettings
from bot.jobs import JobRunner
from bot.store import Store

#: A stand-in for ``python -m training train … --progress-json``: the job runner runs it as its
#: "python". FAKE_TRAINING_MODE picks the behaviour: succeed, error, refuse (an error with the
#: data table, as after too little data), crash (exit 3 without an error
#: line), hang (until signalled), stubborn (ignores SIGTERM), nodone (exit 0 without "done"),
#: late (hangs, and on SIGTERM finishes saving the model anyway, as if the signal came too late).
FAKE_TRAINING = r"""#!{python}
import json, os, signal, sys, time
from datetime import datetime, timezone

args = sys.argv[1:]
assert args[:3] == ["-m", "training", "train"], args
rest = args[3:]
handles = []
while rest and not rest[0].startswith("--"):
    handles.append(rest.pop(0).split(":")[-1])
models_dir = rest[rest.index("--models-dir") + 1]
base = rest[rest.index("--base-model") + 1]
name = rest[rest.index("--name") + 1] if "--name" in rest else "-".join(sorted(handles))
mode = os.environ.get("FAKE_TRAINING_MODE", "succeed")
steps = int(os.environ.get("FAKE_TRAINING_STEPS", "3"))
delay = float(os.environ.get("FAKE_TRAINING_DELAY", "0.01"))
record = os.environ.get("FAKE_TRAINING_ARGV")
if record:
    with open(record, "a") as f:
        f.write(json.dumps(args) + "\n")

def emit(phase, **fields):
    event = {{"phase": phase, "step": None, "total": None, "loss": None,
              "tokens_per_s": None, "eta_s": None, "message": None}}
    event.update(fields)
    print(json.dumps(event), flush=True)

stopping = []

def on_term(signum, frame):
    if mode == "late":
        stopping.append(signum)
        return
    emit("error", message="Training was stopped; the previous model is unchanged.")
    sys.exit(130)

if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_term)

print("this line is not JSON", flush=True)
print("[1, 2]", flush=True)
print("loading the base model", file=sys.stderr, flush=True)
emit("loading", message="Loading the base model.")
for step in range(1, steps + 1):
    emit("training", step=step, total=steps, loss=4.0 - step * 0.1, tokens_per_s=100.0,
         eta_s=(steps - step) * delay)
    time.sleep(delay)
if mode in ("hang", "stubborn", "late"):
    while not stopping:
        time.sleep(0.05)
if mode == "error":
    emit("error", message="Too few tweets are left after cleaning to train a model.")
    sys.exit(1)
if mode == "refuse":  # the real CLI's refusal after reading: the sentence and the table
    emit("error", message="Only 2,055 characters of tweets by @jack are left after cleaning.",
         table={{h: {{"tweets_downloaded": 22, "retweets": 2, "short_tweets": 3,
                     "tweets_kept": 17, "chars_kept": 2055}} for h in handles}})
    sys.exit(1)
if mode == "crash":
    print("Traceback: something broke", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "nodone":
    sys.exit(0)
emit("saving")
folder = os.path.join(models_dir, name)
os.makedirs(folder, exist_ok=True)
table = {{h: {{"tweets_downloaded": 100, "tweets_kept": 90}} for h in handles}}
with open(os.path.join(folder, "training.json"), "w") as f:
    json.dump({{"name": name, "handles": handles, "base_model": base, "lora": "--lora" in rest,
               "created_at": datetime.now(timezone.utc).isoformat(),
               "metrics": {{"perplexity_before": 80.5, "perplexity_after": 20.25}},
               "data_table": table}}, f)
with open(os.path.join(folder, "loss.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n")
emit("done", model=name, path=folder)
"""


@pytest.fixture
def bot_settings(make_settings: Callable[..., BotSettings]) -> BotSettings:
    """The test settings as ``make_settings`` builds them, unchanged."""
    return make_settings()


@pytest.fixture
async def store(bot_settings: BotSettings) -> AsyncIterator[Store]:
    """The bot's store, freshly migrated, closed after the test."""
    opened = await Store.open(bot_settings.db_file)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def fake_training(tmp_path: Path) -> Iterator[Path]:
    """An executable that stands in for the Python interpreter running the training CLI.

    Any copy still running when the test ends is killed: a job whose supervisor died with it (a
    Ray head stopped mid-job) leaves its training process behind, as a real one would.
    """
    import psutil

    script = tmp_path / "fake-python"
    script.write_text(FAKE_TRAINING.format(python=sys.executable), encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    yield script
    for process in psutil.process_iter(["cmdline"]):
        try:
            if str(script) in " ".join(process.info["cmdline"] or ()):
                process.kill()
        except psutil.Error:
            pass


# -- job runners over the stand-in training process (tests/bot/service_fakes.py) ---------------


@pytest.fixture
async def make_runner(
    store: Store, bot_settings: BotSettings, fake_training: Path
) -> AsyncIterator[MakeRunner]:
    """Start runners over the fake training process; every one is stopped after the test."""
    started: list[JobRunner] = []

    async def make(
        settings: BotSettings | None = None, start: bool = True
    ) -> tuple[JobRunner, Recorder]:
        runner = JobRunner(store, settings or bot_settings, python=str(fake_training))
        recorder = Recorder()
        runner.add_listener(recorder)
        if start:
            await runner.start()
        started.append(runner)
        return runner, recorder

    yield make
    for runner in started:
        await runner.stop()


@pytest.fixture
def argv_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake training process appends its argv here, one JSON list per run."""
    path = tmp_path / "argv.jsonl"
    monkeypatch.setenv("FAKE_TRAINING_ARGV", str(path))
    return path


# -- simcord: the real bot, store and job runner against a simulated Discord ---------------------
# The training process is the stand-in above; the model cache is the real one with a loader that
# returns a scripted model (tests/bot/model_fakes.py), so a test decides what "the model" writes.


@pytest.fixture
def scripted_tweets() -> list[str]:
    """What the scripted model generates; tests may replace the contents."""
    return ["just setting up my twttr"]


@pytest.fixture
def scripted_generator(scripted_tweets: list[str]) -> Any:
    """The one scripted model every model folder loads as."""
    from model_fakes import ScriptedGenerator

    return ScriptedGenerator(scripted_tweets)


@pytest.fixture
def reset_cooldowns() -> Iterator[None]:
    """Cooldown state lives on command objects, which outlive a bot in the process: reset it."""

    def reset() -> None:
        from discord.ext import commands

        module = sys.modules.get("bot.exts.tweeting")
        for command in getattr(getattr(module, "Tweeting", None), "__cog_commands__", []):
            if isinstance(command, commands.Command) and command._buckets.valid:
                command._buckets._cache.clear()

    reset()
    yield
    reset()


@pytest.fixture
async def simcord_bot(
    bot_settings: BotSettings,
    store: Store,
    fake_training: Path,
    scripted_generator: Any,
    reset_cooldowns: None,
) -> AsyncIterator[Any]:
    """The real bot with the stand-in training process and the scripted model (for simcord_env)."""
    from discord_world import assemble_bot, close_parts

    bot = assemble_bot(bot_settings, store, generator=scripted_generator, python=fake_training)
    yield bot
    await close_parts(bot)


@pytest.fixture
def world(simcord_env: Any) -> Any:
    """A fresh server (channel, admin, two members) for the running bot."""
    from discord_world import World

    return World(simcord_env)


# -- a real local Ray head, once per session (tests/bot/ray_cluster.py) ------------------------
from ray_cluster import ray_head, ray_session  # noqa: E402, F401
