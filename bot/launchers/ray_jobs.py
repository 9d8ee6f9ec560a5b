"""Trainings as Ray Jobs: the same ``python -m training train … --progress-json`` on a cluster.

Each attempt has a deterministic submission id (:func:`submission_id`), so a job is never
submitted twice and a restarted bot re-attaches; progress is read from the job's log stream and
``!cancel`` is ``stop_job``. What the cluster must share and how the queue meets Ray's:
docs/deployment.md ("Trainings as Ray Jobs").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from bot.child_env import training_env_names
from bot.config import BotSettings
from bot.launchers.base import Attempt, LauncherUnavailable, Outcome
from bot.loopback import is_loopback
from bot.store import Job

log = logging.getLogger(__name__)

#: Seconds one call to the Jobs API may take before the head counts as unreachable.
CALL_TIMEOUT_S = 15.0
#: Seconds between two status polls while waiting for a job to end.
POLL_S = 0.5
#: Times the log stream is opened again when it closes while the job still runs.
TAIL_RETRIES = 5
#: Consecutive failed status polls after which a job counts as lost with its head.
LOST_AFTER_POLLS = 6
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
#: Why a job failed when the workers' Python lacks a module (Ray's message holds the log tail).
MISSING_MODULE = (
    "the Ray workers' Python lacks a module doppeltweet needs: set DOPPELTWEET_RAY_PYTHON to an "
    "interpreter that has doppeltweet installed"
)

T = TypeVar("T")


def submission_id(job: Job) -> str:
    """The Ray submission id of a job's current attempt: the same every time it is asked.

    It names the job, its creation time (so a new database never collides with old ids on a
    long-lived cluster) and the attempt (``restarts``: a retried job is a new Ray job).
    """
    created = int(job.created_at.timestamp())
    return f"doppeltweet-{job.id}-{created}-{job.restarts}"


def job_env(env: Mapping[str, str], extra: Collection[str] = ()) -> dict[str, str]:
    """What of the bot's environment travels with a Ray Job: unbuffered output, the training
    settings that are not secrets and the ``extra`` names (the workers keep their own PATH,
    HOME and credentials)."""
    wanted = training_env_names() | {name.upper() for name in extra}
    out = {k: v for k, v in env.items() if k.upper() in wanted}
    out["PYTHONUNBUFFERED"] = "1"
    return out


def _not_found(error: Exception) -> bool:
    text = str(error)
    return "404" in text or "does not exist" in text


class RayAttempt:
    """A Ray Job followed through the Jobs API."""

    pid: int | None = None

    def __init__(self, launcher: RayJobLauncher, sid: str) -> None:
        self.launcher = launcher
        self.submission_id = sid
        self._stop_requested = False
        self._lost: str | None = None

    async def _status(self) -> str | None:
        """The job's status, or None when the head does not answer."""
        try:
            info = await self.launcher.call(lambda c: c.get_job_info(self.submission_id))
        except LauncherUnavailable:
            return None
        return str(info.status)

    def stdout(self) -> AsyncIterator[bytes]:
        return self._log_lines()

    async def _log_lines(self) -> AsyncIterator[bytes]:
        """Every line of the job's log, from its start, until the job ends.

        When the stream closes while the job still runs it is opened again and the lines already
        read are skipped; when the head stops answering the attempt is marked lost.
        """
        seen = 0
        for _ in range(TAIL_RETRIES + 1):
            count, pending = 0, ""
            try:
                client = await self.launcher.client()
                async for chunk in client.tail_job_logs(self.submission_id):
                    pending += chunk
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        count += 1
                        if count > seen:
                            seen = count
                            yield line.encode("utf-8", errors="replace")
                if pending:
                    count += 1
                    if count > seen:
                        seen = count
                        yield pending.encode("utf-8", errors="replace")
            except (LauncherUnavailable, RuntimeError, OSError, ValueError) as error:
                log.info("log stream of %s closed: %s", self.submission_id, error)
            except Exception as error:  # aiohttp's errors, without importing it here
                log.info("log stream of %s failed: %r", self.submission_id, error)
            status = await self._status()
            if status in TERMINAL:
                return
            if status is None:
                self._lost = self.launcher.lost_message()
                return
            await asyncio.sleep(1)
        log.warning("giving up on the log stream of %s; waiting for its end", self.submission_id)

    async def _no_lines(self) -> AsyncIterator[bytes]:
        return
        yield b""  # pragma: no cover - makes this an async generator

    def stderr(self) -> AsyncIterator[bytes]:
        return self._no_lines()  # merged into the log stream

    async def wait(self) -> Outcome:
        failures = 0
        while self._lost is None:
            try:
                info = await self.launcher.call(lambda c: c.get_job_info(self.submission_id))
            except LauncherUnavailable:
                failures += 1
                if failures >= LOST_AFTER_POLLS:
                    self._lost = self.launcher.lost_message()
                    break
                await asyncio.sleep(POLL_S)
                continue
            failures = 0
            status = str(info.status)
            if status == "SUCCEEDED":
                return Outcome("exited", 0)
            if status == "STOPPED":
                return Outcome("stopped", None)
            if status == "FAILED":
                message = str(info.message or "")
                if "ModuleNotFoundError" in message or "No module named" in message:
                    return Outcome("exited", None, MISSING_MODULE)
                code = getattr(info, "driver_exit_code", None)
                return Outcome(
                    "exited", code if isinstance(code, int) and code != 0 else None, info.message
                )
            await asyncio.sleep(POLL_S)
        return Outcome("lost", None, self._lost)

    async def stop(self, grace_s: float) -> None:
        """``stop_job`` (SIGTERM, then SIGKILL from Ray), then wait until it has ended."""
        self._stop_requested = True
        with contextlib.suppress(LauncherUnavailable, RuntimeError):
            await self.launcher.call(lambda c: c.stop_job(self.submission_id))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s + 10
        while loop.time() < deadline:
            status = await self._status()
            if status is None or status in TERMINAL:
                return
            await asyncio.sleep(POLL_S)


class RayJobLauncher:
    """Submits each attempt to the Ray Jobs API at ``settings.ray_address``."""

    name = "Ray Job"
    survives_restart = True

    def __init__(self, settings: BotSettings, *, pass_env: Collection[str] = ()) -> None:
        """``pass_env``: more environment variables of the bot to hand to each job."""
        if not settings.ray_address:
            raise ValueError("the Ray launcher needs DOPPELTWEET_RAY_ADDRESS")
        self.settings = settings
        self.address = settings.ray_address
        # A head on this machine runs the jobs beside the bot: the bot's own interpreter has
        # doppeltweet installed, a bare `python` on the PATH may not.
        chosen = "ray_python" in settings.model_fields_set
        self.default_python = (
            settings.ray_python if chosen or not is_loopback(self.address) else sys.executable
        )
        self.pass_env = frozenset(pass_env)
        self._client: Any = None

    def unavailable_message(self) -> str:
        return (
            f"The Ray cluster at {self.address} cannot be reached, so the job waits in the "
            "queue and starts when it is back."
        )

    def lost_message(self) -> str:
        return f"The Ray cluster at {self.address} stopped answering during the training"

    async def client(self) -> Any:
        """The Jobs API client (made on first use: making it already asks the head)."""
        if self._client is None:
            try:
                from ray.job_submission import JobSubmissionClient
            except ImportError as error:  # pragma: no cover - depends on the install
                raise LauncherUnavailable(
                    "Ray is not installed in the bot (pip install 'doppeltweet[ray]'), so the "
                    "job waits in the queue."
                ) from error
            try:
                self._client = await asyncio.wait_for(
                    asyncio.to_thread(JobSubmissionClient, self.address), CALL_TIMEOUT_S
                )
            except (ConnectionError, OSError, RuntimeError, TimeoutError) as error:
                log.warning("Ray head %s unreachable: %s", self.address, error)
                raise LauncherUnavailable(self.unavailable_message()) from error
        return self._client

    async def call(self, fn: Callable[[Any], T]) -> T:
        """One Jobs API call in a thread; :class:`LauncherUnavailable` when the head is away.

        A RuntimeError from the API (e.g. an unknown id) is raised as it is.
        """
        import requests

        client = await self.client()
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, client), CALL_TIMEOUT_S)
        except (requests.RequestException, ConnectionError, TimeoutError) as error:
            self._client = None
            raise LauncherUnavailable(self.unavailable_message()) from error

    async def _exists(self, sid: str) -> bool:
        try:
            await self.call(lambda c: c.get_job_info(sid))
        except RuntimeError as error:
            if _not_found(error):
                return False
            raise LauncherUnavailable(self.unavailable_message()) from error
        return True

    async def start(self, job: Job, argv: Sequence[str], env: Mapping[str, str]) -> Attempt:
        sid = submission_id(job)
        if await self._exists(sid):  # submitted before the bot last stopped: never twice
            log.info("job %s: Ray job %s exists already; attaching to it", job.id, sid)
            return RayAttempt(self, sid)
        memory = self.settings.ray_memory_mb
        try:
            await self.call(
                lambda c: c.submit_job(
                    entrypoint=shlex.join(argv),
                    submission_id=sid,
                    runtime_env={"env_vars": job_env(env, self.pass_env)},
                    metadata={"doppeltweet_job": str(job.id), "model": job.model_name},
                    entrypoint_num_cpus=self.settings.ray_num_cpus,
                    entrypoint_num_gpus=self.settings.ray_num_gpus,
                    entrypoint_memory=int(memory * 1024 * 1024) if memory else None,
                )
            )
        except RuntimeError as error:
            if "already exists" in str(error):
                return RayAttempt(self, sid)
            log.error("Ray refused job %s: %s", job.id, error)
            raise OSError(f"Ray refused the job: {error}") from error
        log.info("job %s: submitted as Ray job %s", job.id, sid)
        return RayAttempt(self, sid)

    async def reattach(self, job: Job) -> Attempt | None:
        sid = submission_id(job)
        if await self._exists(sid):
            return RayAttempt(self, sid)
        return None

    async def close(self) -> None:
        self._client = None
