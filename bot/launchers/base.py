"""The launcher protocol: what the job runner needs of the place a training runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.store import Job

OutcomeStatus = Literal["exited", "stopped", "lost"]


class LauncherUnavailable(Exception):
    """The launcher cannot take a job right now (e.g. the Ray head is unreachable).

    The job stays queued and is tried again later; ``str(error)`` is one sentence for the user.
    """


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended.

    ``exited``: the training process ended by itself (``returncode`` says how; negative for a
    signal). ``stopped``: it was stopped on request. ``lost``: the launcher lost track of it (the
    cluster went away); ``message`` then says so in one sentence.
    """

    status: OutcomeStatus
    returncode: int | None = None
    message: str | None = None


class Attempt(Protocol):
    """One run of a job's training command."""

    #: The process id to record on the job (a local process), or None (a remote job).
    pid: int | None

    def stdout(self) -> AsyncIterator[bytes]:
        """The training's output lines (progress JSON among them), until it ends."""
        ...

    def stderr(self) -> AsyncIterator[bytes]:
        """Its diagnostic lines, kept for the log (empty where they are merged into stdout)."""
        ...

    async def wait(self) -> Outcome:
        """Wait until the attempt has ended."""
        ...

    async def stop(self, grace_s: float) -> None:
        """Ask it to stop cleanly, and force it after ``grace_s`` seconds."""
        ...


class Launcher(Protocol):
    """Starts attempts and finds them again after a bot restart."""

    #: Human name for logs ("local process", "Ray Job").
    name: str
    #: The interpreter the training command starts with when the runner is given none.
    default_python: str
    #: Whether an attempt outlives the bot: then a clean bot shutdown leaves it running and the
    #: next bot re-attaches, instead of stopping and re-queuing it.
    survives_restart: bool

    async def start(self, job: Job, argv: Sequence[str], env: Mapping[str, str]) -> Attempt:
        """Start the attempt of ``job`` (raises :class:`LauncherUnavailable` to keep it queued)."""
        ...

    async def reattach(self, job: Job) -> Attempt | None:
        """The attempt a previous bot started for a job it left running, or None if none exists.

        Raises :class:`LauncherUnavailable` when it cannot tell right now.
        """
        ...

    async def close(self) -> None:
        """Release what the launcher holds (connections); attempts that survive keep running."""
        ...
