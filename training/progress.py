"""Progress of a long run (fetch → clean → load → evaluate → train → save), for people or programs.

:class:`TerminalProgress` draws a bar on stderr for a person; :class:`JsonProgress` writes the
``--progress-json`` lines the bot's background job reads, a contract described in
docs/ARCHITECTURE.md ("The CLI's progress stream").
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import IO, Any, Literal, Protocol, get_args

Phase = Literal[
    "fetching", "cleaning", "loading", "evaluating", "training", "saving", "done", "error"
]

#: Every phase a run can report, in the order a successful run goes through them.
PHASES: tuple[str, ...] = get_args(Phase)


class ProgressReporter(Protocol):
    """What training code calls; it never needs to know who is listening."""

    def phase(self, name: Phase, message: str | None = None) -> None: ...

    def step(
        self,
        step: int,
        total: int,
        loss: float | None,
        tokens_per_s: float | None,
        eta_s: float | None,
    ) -> None: ...

    def note(self, message: str) -> None: ...

    def done(self, **fields: Any) -> None: ...

    def error(self, message: str, **fields: Any) -> None: ...


def _finite(value: float | None) -> float | None:
    """JSON has no NaN/inf: an undefined number is sent as null."""
    if value is None:
        return None
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


class JsonProgress:
    """JSON lines on ``stream`` (stdout by default), one flush per line.

    A note is written at once and then rides along in every later event as ``"notes"``, so a
    reader showing only the last event still shows it. Step lines are rate-limited so a fast run
    cannot flood the reader, but the first and the last step are always written.
    """

    def __init__(self, stream: IO[str] | None = None, *, min_interval_s: float = 0.25) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._min_interval_s = min_interval_s
        self._last_step_at = -math.inf
        self._phase: str | None = None
        self._notes: list[str] = []

    def _write(self, event: dict[str, Any]) -> None:
        self._stream.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._stream.flush()

    def _event(self, phase: str, **fields: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "phase": phase,
            "step": None,
            "total": None,
            "loss": None,
            "tokens_per_s": None,
            "eta_s": None,
            "message": None,
        }
        if self._notes:
            event["notes"] = list(self._notes)
        event.update(fields)
        return event

    def phase(self, name: Phase, message: str | None = None) -> None:
        self._phase = name
        self._write(self._event(name, message=message))

    def step(
        self,
        step: int,
        total: int,
        loss: float | None,
        tokens_per_s: float | None,
        eta_s: float | None,
    ) -> None:
        now = time.monotonic()
        edge = step <= 1 or step >= total
        if not edge and now - self._last_step_at < self._min_interval_s:
            return
        self._last_step_at = now
        self._write(
            self._event(
                "training",
                step=int(step),
                total=int(total),
                loss=_finite(loss),
                tokens_per_s=_finite(tokens_per_s),
                eta_s=_finite(eta_s),
            )
        )

    def note(self, message: str) -> None:
        self._notes.append(message)
        self._write(self._event(self._phase or "cleaning", message=message))

    def done(self, **fields: Any) -> None:
        self._write(self._event("done", **fields))

    def error(self, message: str, **fields: Any) -> None:
        self._write(self._event("error", message=message, **fields))


class TerminalProgress:
    """A rich progress bar and phase lines on stderr, for a person watching."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        from rich.console import Console

        self._console = Console(file=stream if stream is not None else sys.stderr)
        self._progress: Any = None
        self._task: Any = None

    def _stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None

    def phase(self, name: Phase, message: str | None = None) -> None:
        self._stop_bar()
        self._console.print(f"[bold]{name}[/bold]" + (f": {message}" if message else ""))

    def step(
        self,
        step: int,
        total: int,
        loss: float | None,
        tokens_per_s: float | None,
        eta_s: float | None,
    ) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        if self._progress is None:
            self._progress = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                console=self._console,
                transient=False,
            )
            self._task = self._progress.add_task("training", total=total, info="")
            self._progress.start()
        parts = []
        if loss is not None and math.isfinite(loss):
            parts.append(f"loss {loss:.3f}")
        if tokens_per_s:
            parts.append(f"{tokens_per_s:,.0f} tok/s")
        if eta_s is not None and math.isfinite(eta_s):
            parts.append(f"ETA {_clock(eta_s)}")
        self._progress.update(self._task, completed=step, total=total, info="  ".join(parts))

    def note(self, message: str) -> None:
        self._stop_bar()
        from rich.markup import escape

        self._console.print(f"[bold yellow]note[/bold yellow]: {escape(message)}", highlight=False)

    def done(self, **fields: Any) -> None:
        self._stop_bar()
        where = fields.get("path")
        self._console.print("[bold green]done[/bold green]" + (f": {where}" if where else ""))

    def error(self, message: str, **fields: Any) -> None:
        # The CLI prints the error sentence itself; only the bar has to go.
        self._stop_bar()


def make_reporter(json_lines: bool, stream: IO[str] | None = None) -> ProgressReporter:
    """The reporter for ``--progress-json`` (JSON lines) or a terminal (a bar on stderr)."""
    return JsonProgress(stream) if json_lines else TerminalProgress()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
