"""The default launcher: the training command as a child process of the bot, on this machine.

The process runs in its own session (its own process group, so a stop reaches every process it
started); stdout carries the JSON progress lines, stderr the logs. A process cannot outlive the
bot usefully (its pipes die with it), so after a restart an orphan is stopped, never re-attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from bot.launchers.base import Attempt, Outcome
from bot.store import Job
from training.store import process_alive

log = logging.getLogger(__name__)

#: Longest output line read; longer lines are skipped (they are not progress events).
LINE_LIMIT = 1024 * 1024


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group a training process leads (it runs in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def is_training_process(pid: int) -> bool:
    """Whether ``pid`` is a live ``training train --progress-json`` process leading its group.

    Only such a process is ever stopped during recovery, so a recycled pid is never killed.
    """
    if not process_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if os.getpgid(pid) != pid:
            return False
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in argv]
    return "training" in args and "train" in args and "--progress-json" in args


async def _lines(stream: asyncio.StreamReader | None) -> AsyncIterator[bytes]:
    if stream is None:
        return
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # an over-long line: not a progress event
            continue
        if not line:
            return
        yield line


class LocalAttempt:
    """A training child process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid: int | None = proc.pid
        self._stop_requested = False

    def stdout(self) -> AsyncIterator[bytes]:
        return _lines(self.proc.stdout)

    def stderr(self) -> AsyncIterator[bytes]:
        return _lines(self.proc.stderr)

    async def wait(self) -> Outcome:
        returncode = await self.proc.wait()
        return Outcome("stopped" if self._stop_requested else "exited", returncode)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM the process group; SIGKILL it if it has not exited after ``grace_s``."""
        if self.proc.returncode is not None:
            return
        self._stop_requested = True
        signal_group(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace_s)
        except TimeoutError:
            log.warning("training process %s ignored SIGTERM; killing it", self.proc.pid)
            signal_group(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


class LocalLauncher:
    """Runs each attempt as a local process (``python -m training train … --progress-json``)."""

    name = "local process"
    survives_restart = False

    def __init__(self, *, grace_s: float = 10.0) -> None:
        self.default_python = sys.executable
        self.grace_s = grace_s

    async def start(self, job: Job, argv: Sequence[str], env: Mapping[str, str]) -> Attempt:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=dict(env),
            limit=LINE_LIMIT,
        )
        return LocalAttempt(proc)

    async def reattach(self, job: Job) -> Attempt | None:
        """Never: an orphaned training process of the job is stopped instead."""
        if job.pid is not None and is_training_process(job.pid):
            log.warning("stopping orphaned training process %s of job %s", job.pid, job.id)
            await self._stop_orphan(job.pid)
        return None

    async def _stop_orphan(self, pid: int) -> None:
        """Stop a training process an earlier bot process started (not our child: poll it)."""
        signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while process_alive(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if process_alive(pid):
            signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while process_alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Nothing to release."""
