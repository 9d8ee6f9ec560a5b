"""The bot's services over a bare job runner, for tests that drive the runner without a bot:
a listener that records a job's events, uploads and submissions, and the services over a runner.

The ``make_runner`` and ``argv_log`` fixtures that use them live in ``tests/bot/conftest.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.jobs import JobResult, JobRunner
from bot.services.models import Models
from bot.services.training_requests import TrainingRequests
from bot.services.uploads import upload_path
from bot.store import Job
from training.handles import parse_handles

GUILD, OTHER_GUILD, CHANNEL, USER, OTHER_USER = 1001, 2002, 3003, 4004, 5005


class Recorder:
    """A job listener that remembers every call and lets a test wait for one."""

    def __init__(self) -> None:
        self.progress: list[tuple[Job, dict[str, Any]]] = []
        self.finished: list[tuple[Job, JobResult]] = []
        self.failed: list[tuple[Job, str]] = []
        self._changed = asyncio.Event()

    async def on_progress(self, job: Job, event: dict[str, Any]) -> None:
        self.progress.append((job, event))
        self._changed.set()

    async def on_finished(self, job: Job, result: JobResult) -> None:
        self.finished.append((job, result))
        self._changed.set()

    async def on_failed(self, job: Job, message: str) -> None:
        self.failed.append((job, message))
        self._changed.set()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def phases(self, job_id: int) -> list[str]:
        return [e["phase"] for j, e in self.progress if j.id == job_id]

    def ended(self, job_id: int) -> bool:
        return any(j.id == job_id for j, _ in self.finished) or any(
            j.id == job_id for j, _ in self.failed
        )


def dead_pid() -> int:
    """The id of a process that has just ended (as a bot that died leaves in its store)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


#: The ``make_runner`` fixture: ``await make_runner(settings=None, start=True)``.
MakeRunner = Callable[..., Awaitable[tuple[JobRunner, Recorder]]]


def upload(runner: JobRunner, name: str = "tweets.csv", guild: int = GUILD) -> str:
    """A small CSV saved where the server's uploads go; its path, as a job's source."""
    path = upload_path(runner.settings, guild, name)
    path.write_text("text\nhello world\n", encoding="utf-8")
    return str(path)


async def submit(
    runner: JobRunner,
    handle: str = "@alice",
    *,
    user: int = USER,
    guild: int = GUILD,
    **options: Any,
) -> Job:
    """A training request for ``handle`` from one fresh upload, submitted with ``options``."""
    return await requests_for(runner).submit(
        guild, CHANNEL, user, parse_handles([handle]), [upload(runner, guild=guild)], options
    )


class RecordingCache:
    """A model cache that holds nothing and remembers which models it was told to forget."""

    def __init__(self) -> None:
        self.invalidated: list[Path] = []

    def invalidate(self, path: Path) -> None:
        self.invalidated.append(path)


def requests_for(runner: JobRunner) -> TrainingRequests:
    """The training requests service over ``runner`` (its store and settings)."""
    return TrainingRequests(runner.store, runner.settings, runner)


def models_for(runner: JobRunner, cache: RecordingCache | None = None) -> Models:
    """The models service over ``runner``, forgetting models in ``cache`` (a fresh one)."""
    return Models(
        runner.store, runner.settings, runner, requests_for(runner), cache or RecordingCache()
    )
