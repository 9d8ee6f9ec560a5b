"""Training jobs: a queue in SQLite, each job a background ``python -m training train`` run.

Training never runs inside the bot: :class:`JobRunner` starts the training CLI with
``--progress-json`` through a launcher (:mod:`bot.launchers`), keeps the last progress line on the
job and tells its listeners. The queue is global and fair (:mod:`bot.fair_queue`; docs/commands.md,
"The training queue"); recovery after a restart is described in docs/ARCHITECTURE.md
("Launchers").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bot.child_env import TRAINING_SECRETS, child_environment
from bot.config import BotSettings
from bot.launchers.base import Attempt, Launcher, LauncherUnavailable, Outcome
from bot.launchers.local import LocalLauncher
from bot.services import uploads
from bot.services.training_requests import training_command
from bot.store import Job, JobState, ModelRecord, Store
from training.errors import DoppeltweetError, InputError
from training.handles import Handle

log = logging.getLogger(__name__)

#: Least seconds between two writes of a running job's progress to the database.
PROGRESS_SAVE_INTERVAL_S = 2.0
#: How long one listener call may take before the runner stops waiting for it.
LISTENER_TIMEOUT_S = 30.0
#: Lines (and characters per line) of the training process's stderr kept for the log.
STDERR_TAIL_LINES = 40
STDERR_LINE_CHARS = 500


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a successful training produced, for the message that announces it."""

    job: Job
    model: ModelRecord
    path: Path
    #: The data table, one column per handle (``data_table.json`` / ``training.json``).
    table: dict[str, dict[str, int]]
    perplexity_before: float | None
    perplexity_after: float | None
    #: The loss-curve PNG, when training drew one.
    loss_plot: Path | None
    #: The whole ``training.json`` record (config, seeds, metrics, timings).
    record: dict[str, Any] = field(compare=False)


class JobListener(Protocol):
    """What the Discord layer implements to follow jobs; a failing listener never stops the runner.

    ``on_progress`` gets every event of the training process's JSON stream, plus two of the
    runner's own: ``{"phase": "starting"}`` when the process is spawned and ``{"phase": "queued",
    "message": …}`` when a job goes back to the queue (the bot stopped or restarted mid-training).
    ``on_failed`` is also called with a job whose ``state`` is ``"cancelled"``.

    ``on_progress`` is awaited in order (keep it quick: at most ``LISTENER_TIMEOUT_S``);
    ``on_finished`` and ``on_failed`` run as tasks of their own, so a slow announcement never
    delays the next job; :meth:`JobRunner.cancel` returns only once they are done.
    """

    async def on_progress(self, job: Job, event: dict[str, Any]) -> None: ...

    async def on_finished(self, job: Job, result: JobResult) -> None: ...

    async def on_failed(self, job: Job, message: str) -> None: ...


@dataclass(eq=False)
class _Run:
    """A job whose training run this runner started (or re-attached to) and still supervises."""

    job: Job
    attempt: Attempt
    task: asyncio.Task[None] | None = None
    done_event: dict[str, Any] | None = None
    error_message: str | None = None
    cancel_requested: bool = False
    stop_requested: bool = False
    last_saved_at: float = 0.0
    last_saved_phase: str | None = None
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))


def _parse_event(line: bytes) -> dict[str, Any] | None:
    """A progress event from one stdout line, or None for anything that is not one."""
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("phase"), str):
        return None
    return event


class JobRunner:
    """Queues, runs, cancels and recovers training jobs; the Discord layer listens to it."""

    def __init__(
        self,
        store: Store,
        settings: BotSettings,
        *,
        python: str | None = None,
        training_args: Sequence[str] = (),
        launcher: Launcher | None = None,
    ) -> None:
        """``launcher`` defaults to a Ray Job launcher when ``settings.ray_address`` is set and
        to a local process otherwise; ``python`` to the launcher's interpreter."""
        self.store = store
        self.settings = settings
        self.launcher = launcher or default_launcher(settings)
        self.python = python or self.launcher.default_python
        self.training_args = tuple(training_args)
        #: Jobs whose users were told that the launcher is unavailable (told once per job).
        self._told_unavailable: set[int] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._listeners: list[JobListener] = []
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._runs: dict[int, _Run] = {}
        self._submit_lock = asyncio.Lock()
        self._pump_lock = asyncio.Lock()
        self._started = False
        self._stopping = False

    # -- listeners ------------------------------------------------------------------------------

    def add_listener(self, listener: JobListener) -> None:
        """Follow every job's progress, success and failure."""
        self._listeners.append(listener)

    def remove_listener(self, listener: JobListener) -> None:
        """Stop following jobs (e.g. when the cog that listened is unloaded)."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def _notify(self, method: str, job: Job, payload: Any) -> None:
        """Tell every listener; a failing or slow listener never holds the runner up.

        Progress is delivered in order and waited for (briefly); the final ``on_finished`` /
        ``on_failed`` run as tasks of their own, because announcing a result may take a while
        (e.g. generating sample tweets) and the next job should not wait for it.
        """
        for listener in list(self._listeners):
            call = getattr(listener, method)(job, payload)
            if method == "on_progress":
                await self._call_listener(listener, method, job, call, LISTENER_TIMEOUT_S)
            else:
                task = asyncio.create_task(
                    self._call_listener(listener, method, job, call, None),
                    name=f"job-{job.id}-{method}",
                )
                self._listener_tasks.add(task)
                task.add_done_callback(self._listener_tasks.discard)

    @staticmethod
    async def _call_listener(
        listener: JobListener,
        method: str,
        job: Job,
        call: Awaitable[None],
        timeout: float | None,
    ) -> None:
        try:
            await asyncio.wait_for(call, timeout)
        except Exception:
            log.exception("job listener %r failed in %s for job %s", listener, method, job.id)

    async def wait_for_listeners(
        self, job_id: int | None = None, *, timeout: float | None = None
    ) -> None:
        """Wait until the result announcements handed to listeners (of one job) have finished."""
        prefix = f"job-{job_id}-" if job_id is not None else "job-"
        tasks = {t for t in self._listener_tasks if t.get_name().startswith(prefix)}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve jobs an earlier bot process left running, then start the queue."""
        for job in await self.store.running_jobs(None):
            if job.id in self._runs:
                continue
            try:
                attempt = await self.launcher.reattach(job)
            except LauncherUnavailable as error:
                # The run may still be going on: keep the same attempt (no restart counted), so
                # the next try finds it by its id instead of starting a second one.
                queued = await self.store.requeue_job(job.id, count_restart=False)
                if queued is not None:
                    await self._tell_unavailable(queued, str(error))
                continue
            if attempt is not None:
                log.info("job %s: re-attached to its %s", job.id, self.launcher.name)
                self._supervise_attempt(job, attempt, fresh=False)
                continue
            if job.restarts >= 1:
                message = (
                    "The bot restarted while training; the job had already been restarted once, "
                    f"so start it again with {self.settings.prefix}train."
                )
                await self._end(job, "failed", message)
            else:
                queued = await self.store.requeue_job(job.id, count_restart=True)
                if queued is not None:
                    await self._notify(
                        "on_progress",
                        queued,
                        {
                            "phase": "queued",
                            "message": "The bot restarted while training; the job is queued again.",
                        },
                    )
        self._started = True
        self._stopping = False
        await self._pump()

    async def stop(self) -> None:
        """Stop every training process (SIGTERM, SIGKILL after the grace period) and re-queue it.

        A job interrupted by a clean shutdown goes back to the queue without counting as a
        restart, so it runs again when the bot is back.
        """
        self._stopping = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        runs = list(self._runs.values())
        tasks = [run.task for run in runs if run.task is not None]
        if self.launcher.survives_restart:
            # The runs go on without the bot; the next bot re-attaches to them (start()).
            for task in tasks:
                task.cancel()
        else:
            for run in runs:
                run.stop_requested = True
            await asyncio.gather(*(self._terminate(run) for run in runs))
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.cancel_grace_s + 10)
        await self.wait_for_listeners(timeout=LISTENER_TIMEOUT_S)
        await self.launcher.close()
        self._started = False

    async def _tell_unavailable(self, job: Job, reason: str) -> None:
        """Tell a job's listeners, once per job, that it waits for the launcher to be back."""
        if job.id in self._told_unavailable:
            return
        self._told_unavailable.add(job.id)
        await self._notify("on_progress", job, {"phase": "queued", "message": reason})

    def _retry_later(self) -> None:
        """Try the queue again after ``ray_retry_s`` (the launcher was unavailable)."""
        if self._retry is not None or self._stopping:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._retry = None
            task = loop.create_task(self._pump(), name="job-queue-retry")
            self._listener_tasks.add(task)
            task.add_done_callback(self._listener_tasks.discard)

        self._retry = loop.call_later(self.settings.ray_retry_s, fire)

    # -- paths ----------------------------------------------------------------------------------

    def models_dir(self, guild_id: int) -> Path:
        """The server's model store (absolute: it is handed to the training process)."""
        return self.settings.guild_models_dir(guild_id).resolve()

    # -- queueing -------------------------------------------------------------------------------

    async def enqueue(
        self,
        guild_id: int,
        channel_id: int,
        user_id: int,
        name: str,
        *,
        handles: Sequence[Handle],
        sources: Sequence[str],
        options: dict[str, Any],
        owner_id: int | None = None,
    ) -> Job:
        """Queue a checked request (:mod:`bot.services.training_requests`); it starts at once
        when a slot is free. The same model already queued or training in this server, or a
        user over their cap, gets an InputError that says what to do."""
        prefix = self.settings.prefix
        async with self._submit_lock:
            existing = await self.store.active_job_for_model(guild_id, name)
            if existing is not None:
                where = (
                    f"queued (position {existing.position})"
                    if existing.state == "queued"
                    else "training right now"
                )
                raise InputError(
                    f"The model {name} is already {where} as job #{existing.id}; wait for it "
                    f"or cancel it with {prefix}cancel {existing.id}."
                )
            cap = self.settings.max_queued_jobs_per_user
            active = await self.store.count_active_jobs_for_user(user_id)
            if active >= cap:
                raise InputError(
                    f"You already have {active} training job{'s' if active != 1 else ''} queued "
                    f"or running (the limit is {cap}); wait for one to finish or cancel one "
                    f"with {prefix}cancel."
                )
            job = await self.store.create_job(
                guild_id,
                channel_id,
                user_id,
                name,
                handles=list(handles),
                sources=list(sources),
                options=options,
                owner_id=owner_id,
            )
        await self._pump()
        return await self.store.get_job(guild_id, job.id) or job

    # -- cancelling -----------------------------------------------------------------------------

    async def cancel(self, job_id: int, *, guild_id: int, user_id: int, is_admin: bool) -> Job:
        """Cancel a queued or running job: your own, or any in the server if you are an admin.

        A running process gets SIGTERM (it stops cleanly, the previous model stays) and SIGKILL
        after ``cancel_grace_s``. Returns the job as it ended.
        """
        job = await self.store.get_job(guild_id, job_id)
        if job is None:
            raise InputError(f"There is no training job #{job_id} in this server.")
        if job.user_id != user_id and not is_admin:
            raise InputError(
                f"Job #{job_id} is someone else's; you can cancel only your own jobs "
                "(server admins can cancel any)."
            )
        if not job.active:
            raise InputError(f"Job #{job_id} has already {_ended(job.state)}; nothing to cancel.")
        async with self._pump_lock:
            run = self._runs.get(job_id)
            if run is None:
                message = f"Training of {job.model_name} was cancelled before it started."
                ended = await self._end(job, "cancelled", message)
                await self.wait_for_listeners(job_id, timeout=LISTENER_TIMEOUT_S)
                return ended
            run.cancel_requested = True
        await self._terminate(run)
        if run.task is not None:
            await asyncio.wait({run.task}, timeout=10)
        # The listeners have shown the outcome before the caller answers the command.
        await self.wait_for_listeners(job_id, timeout=LISTENER_TIMEOUT_S)
        return await self.store.get_job(guild_id, job_id) or job

    async def _terminate(self, run: _Run) -> None:
        """Stop the run cleanly (SIGTERM); force it if it has not ended after the grace period."""
        await run.attempt.stop(self.settings.cancel_grace_s)

    # -- views ----------------------------------------------------------------------------------

    async def queue(self, guild_id: int) -> list[Job]:
        """The server's queued jobs in order, each with its position in the whole queue."""
        return await self.store.queued_jobs(guild_id)

    def budget_s(self, job: Job) -> float | None:
        """The job's time budget in seconds, or None when it trains for epochs or a step cap
        (a job option, else the bot's setting) or budgets are switched off."""
        options = job.options
        if options.get("max_steps", self.settings.train_max_steps) is not None:
            return None
        if options.get("epochs", self.settings.train_epochs) is not None:
            return None
        from training.config import get_settings

        return get_settings().train_budget_s or None

    def expected_duration_s(self, job: Job) -> float | None:
        """How long the job is expected to run: its budget; a job without one is counted as
        the default budget (None when budgets are off: nothing to estimate with)."""
        from training.config import get_settings

        return self.budget_s(job) or get_settings().train_budget_s or None

    async def start_estimates(self, now: datetime | None = None) -> dict[int, float]:
        """Seconds from ``now`` until each queued job (of every server) is expected to start;
        empty when budgets are off."""
        from bot.fair_queue import start_estimates
        from training.config import get_settings

        if not get_settings().train_budget_s:
            return {}
        queue = await self.store.queued_jobs(None)
        running = await self.store.running_jobs(None)
        return start_estimates(
            queue,
            running,
            now=now or datetime.now(UTC),
            slots=self.settings.max_concurrent_jobs,
            duration_s=lambda job: self.expected_duration_s(job) or 0.0,
        )

    async def running(self, guild_id: int) -> list[Job]:
        """The server's running jobs, with their latest progress."""
        jobs = await self.store.running_jobs(guild_id)
        return [self._runs[j.id].job if j.id in self._runs else j for j in jobs]

    async def user_jobs(self, guild_id: int, user_id: int) -> list[Job]:
        """The user's queued or running jobs in this server (what a bare ``!cancel`` picks from)."""
        jobs = await self.store.user_active_jobs(guild_id, user_id)
        return [self._runs[j.id].job if j.id in self._runs else j for j in jobs]

    # -- running --------------------------------------------------------------------------------

    async def _pump(self) -> None:
        """Start queued jobs in the fair order (:mod:`bot.fair_queue`) while a slot is free."""
        if not self._started or self._stopping:
            return
        async with self._pump_lock:
            free = self.settings.max_concurrent_jobs - len(self._runs)
            if free <= 0:
                return
            for job in (await self.store.queued_jobs(None))[:free]:
                if not await self._launch(job):
                    self._retry_later()
                    return

    def command(self, job: Job) -> list[str]:
        """The training command line of a job."""
        return training_command(
            job,
            self.settings,
            python=self.python,
            models_dir=self.models_dir(job.guild_id),
            budget_s=self.budget_s(job),
            extra=self.training_args,
        )

    @staticmethod
    def _environment() -> dict[str, str]:
        env = child_environment(os.environ, secrets_kept=TRAINING_SECRETS)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def _launch(self, job: Job) -> bool:
        """Start a queued job; False if the launcher is unavailable (the job stays queued)."""
        argv = self.command(job)
        self.models_dir(job.guild_id).mkdir(parents=True, exist_ok=True)
        try:
            attempt = await self.launcher.start(job, argv, self._environment())
        except LauncherUnavailable as error:
            log.warning("job %s waits: %s", job.id, error)
            await self._tell_unavailable(job, str(error))
            return False
        except OSError as error:
            log.error("could not start training for job %s: %s", job.id, error)
            message = "The training process could not be started; the bot's log says why."
            await self._end(job, "failed", message)
            return True
        running = await self.store.mark_job_running(job.id, attempt.pid)  # type: ignore[arg-type]
        if running is None:  # cancelled between the queue read and the start
            await attempt.stop(0)
            return True
        self._told_unavailable.discard(job.id)
        where = f"process {attempt.pid}" if attempt.pid is not None else self.launcher.name
        log.info("job %s: training %s in %s", job.id, job.model_name, where)
        self._supervise_attempt(running, attempt, fresh=True)
        return True

    def _supervise_attempt(self, job: Job, attempt: Attempt, *, fresh: bool) -> None:
        run = _Run(job=job, attempt=attempt)
        self._runs[job.id] = run
        run.task = asyncio.create_task(
            self._supervise(run, fresh=fresh), name=f"training-job-{job.id}"
        )

    async def _supervise(self, run: _Run, *, fresh: bool = True) -> None:
        try:
            if fresh:
                await self._notify("on_progress", run.job, {"phase": "starting"})
            stderr = asyncio.create_task(self._drain_stderr(run))
            try:
                await self._read_progress(run)
                await stderr
            finally:
                stderr.cancel()
            outcome = await run.attempt.wait()
            await self._conclude(run, outcome)
        except asyncio.CancelledError:  # the bot stops; the run goes on and is re-attached
            self._runs.pop(run.job.id, None)
            raise
        except Exception:
            log.exception("supervising job %s failed", run.job.id)
            with contextlib.suppress(Exception):
                await run.attempt.stop(0)
            message = "Training failed because of an error in the bot; the bot's log says why."
            await self._end(run.job, "failed", message)
        finally:
            self._runs.pop(run.job.id, None)
        await self._pump()

    async def _read_progress(self, run: _Run) -> None:
        async for line in run.attempt.stdout():
            event = _parse_event(line)
            if event is None:
                continue
            phase = event["phase"]
            if phase == "done":
                run.done_event = event
                continue
            if phase == "error":
                message = event.get("message")
                run.error_message = message if isinstance(message, str) and message else None
                if isinstance(event.get("table"), dict):
                    # A refusal after reading: the table of what was read is shown with it.
                    run.job = replace(run.job, progress=event)
                    await self.store.save_job_progress(run.job.id, event)
                continue
            run.job = replace(run.job, progress=event)
            now = time.monotonic()
            if phase != run.last_saved_phase or now - run.last_saved_at >= PROGRESS_SAVE_INTERVAL_S:
                run.last_saved_at, run.last_saved_phase = now, phase
                await self.store.save_job_progress(run.job.id, event)
            await self._notify("on_progress", run.job, event)

    async def _drain_stderr(self, run: _Run) -> None:
        async for line in run.attempt.stderr():
            text = line.decode("utf-8", errors="replace").rstrip()[:STDERR_LINE_CHARS]
            run.stderr_tail.append(text)
            log.debug("job %s: %s", run.job.id, text)

    async def _conclude(self, run: _Run, outcome: Outcome) -> None:
        job = run.job
        returncode = outcome.returncode
        # A model that was completely saved counts, even if a cancel or a stop came too late.
        succeeded = (
            outcome.status != "lost" and returncode in (0, None) and run.done_event is not None
        )
        if run.stop_requested and not run.cancel_requested and not succeeded:
            queued = await self.store.requeue_job(job.id, count_restart=False)
            if queued is not None:
                await self._notify(
                    "on_progress",
                    queued,
                    {
                        "phase": "queued",
                        "message": "The bot is shutting down; training starts again when it "
                        "is back.",
                    },
                )
            return
        kept = await self._previous_model_note(job)
        if run.cancel_requested and not succeeded:
            await self._end(job, "cancelled", f"Training of {job.model_name} was cancelled; {kept}")
            return
        if succeeded:
            try:
                result = await self._result(job)
            except (DoppeltweetError, OSError, ValueError):
                log.exception("job %s: the saved model could not be read", job.id)
                message = (
                    "Training finished but its model could not be read, so it was not "
                    f"installed; {kept}"
                )
            else:
                await self._notify("on_finished", result.job, result)
                return
        elif outcome.status == "lost":
            lost = (outcome.message or "The training run was lost").rstrip(".")
            message = f"{lost}; {kept}"
        elif run.error_message is not None:
            message = run.error_message
        elif outcome.status == "stopped":
            message = f"The training was stopped outside the bot; {kept}"
        elif returncode is None:
            message = f"The training run failed ({outcome.message or 'no reason given'}); {kept}"
        elif returncode < 0:
            message = f"The training process was killed (signal {-returncode}); {kept}"
        elif returncode == 0:
            message = f"The training process ended without saving a model; {kept}"
        else:
            message = f"The training process stopped with exit code {returncode}; {kept}"
        if run.stderr_tail:
            log.warning(
                "job %s failed (exit code %s); stderr ends with:\n%s",
                job.id,
                returncode,
                "\n".join(run.stderr_tail),
            )
        await self._end(job, "failed", message)

    async def _end(self, job: Job, state: JobState, message: str) -> Job:
        """Finish a job that produced no model: record why, drop its unused uploads, tell."""
        ended = await self.store.finish_job(job.id, state, message)
        if ended.state == state and ended.error == message:
            await self._discard_uploads(job.guild_id, job.model_name, job.sources)
            await self._notify("on_failed", ended, message)
        return ended

    async def _discard_uploads(self, guild_id: int, name: str, sources: Sequence[str]) -> None:
        """Delete upload folders no model of this name trains from (``!retrain`` needs the rest)."""
        record = await self.store.get_model(guild_id, name)
        keep = set(record.sources) if record is not None else set()
        await uploads.discard(self.settings, guild_id, sources, keep=keep)

    async def _previous_model_note(self, job: Job) -> str:
        previous = await self.store.get_model(job.guild_id, job.model_name)
        if previous is not None:
            return "the previous model is still served."
        return "no model was saved."

    async def _result(self, job: Job) -> JobResult:
        """Record the model the training process just saved and gather what announces it."""
        from training.store import LOSS_PLOT_FILE, TRAINING_FILE, ModelStore

        info = await asyncio.to_thread(
            ModelStore(self.models_dir(job.guild_id)).get, job.model_name
        )
        record_text = await asyncio.to_thread((info.path / TRAINING_FILE).read_text, "utf-8")
        record = json.loads(record_text)
        previous = await self.store.get_model(job.guild_id, job.model_name)
        model = await self.store.upsert_model(
            job.guild_id,
            job.model_name,
            handles=job.handles,
            sources=job.sources,
            base_model=info.base_model,
            lora=info.lora,
            path=info.path,
            trained_by=job.user_id,
            owner_id=job.owner_id,
        )
        finished = await self.store.finish_job(job.id, "succeeded")
        if previous is not None:  # the files the replaced model was trained from
            await self._discard_uploads(job.guild_id, job.model_name, previous.sources)
        loss_plot = info.path / LOSS_PLOT_FILE
        return JobResult(
            job=finished,
            model=model,
            path=info.path,
            table=info.table,
            perplexity_before=info.perplexity_before,
            perplexity_after=info.perplexity_after,
            loss_plot=loss_plot if loss_plot.is_file() else None,
            record=record if isinstance(record, dict) else {},
        )


def default_launcher(settings: BotSettings) -> Launcher:
    """A Ray Job launcher when ``DOPPELTWEET_RAY_ADDRESS`` is set, else the local process."""
    if settings.ray_address:
        from bot.launchers.ray_jobs import RayJobLauncher

        return RayJobLauncher(settings)
    return LocalLauncher(grace_s=settings.cancel_grace_s)


def _ended(state: str) -> str:
    return {"succeeded": "succeeded", "failed": "failed", "cancelled": "been cancelled"}.get(
        state, state
    )
