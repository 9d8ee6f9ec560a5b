"""Progress reporting: the JSON-lines contract the bot reads, and the terminal bar."""

from __future__ import annotations

import io
import json

from training.progress import JsonProgress, TerminalProgress

KEYS = {"phase", "step", "total", "loss", "tokens_per_s", "eta_s", "message"}


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_json_line_has_the_contracts_keys() -> None:
    stream = io.StringIO()
    progress = JsonProgress(stream)
    progress.phase("loading", "loading tiny")
    progress.step(1, 10, 3.5, 1200.0, 9.0)
    progress.done(model="alice", path="/models/alice")
    events = _lines(stream)
    assert all(set(event) >= KEYS for event in events)
    assert events[0] == {**dict.fromkeys(KEYS), "phase": "loading", "message": "loading tiny"}
    assert events[1]["phase"] == "training"
    assert (events[1]["step"], events[1]["total"], events[1]["loss"]) == (1, 10, 3.5)
    assert events[2]["phase"] == "done" and events[2]["model"] == "alice"


def test_step_lines_are_rate_limited_but_first_and_last_always_written() -> None:
    stream = io.StringIO()
    progress = JsonProgress(stream, min_interval_s=3600)
    for step in range(1, 101):
        progress.step(step, 100, 2.0, 10.0, 1.0)
    steps = [event["step"] for event in _lines(stream)]
    assert steps == [1, 100]


def test_undefined_numbers_are_sent_as_null() -> None:
    stream = io.StringIO()
    JsonProgress(stream).step(1, 2, float("nan"), float("inf"), None)
    event = _lines(stream)[0]
    assert event["loss"] is None and event["tokens_per_s"] is None and event["eta_s"] is None


def test_error_is_a_single_line_with_the_sentence() -> None:
    stream = io.StringIO()
    JsonProgress(stream).error("Training was stopped by SIGTERM before it finished.")
    assert stream.getvalue().count("\n") == 1
    assert _lines(stream)[0]["message"].startswith("Training was stopped")


def test_each_json_line_is_flushed_as_it_is_written() -> None:
    class Recording(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    stream = Recording()
    progress = JsonProgress(stream)
    progress.phase("fetching")
    progress.phase("cleaning")
    assert stream.flushes == 2


def test_terminal_progress_writes_phases_and_the_bar_to_its_stream() -> None:
    stream = io.StringIO()
    progress = TerminalProgress(stream)
    progress.phase("training", "12 steps")
    progress.step(6, 12, 3.25, 1500.0, 65.0)
    progress.done(path="/models/alice")
    text = stream.getvalue()
    assert "training: 12 steps" in text
    assert "done: /models/alice" in text


def test_a_note_is_written_at_once_and_rides_along_in_every_later_event() -> None:
    stream = io.StringIO()
    progress = JsonProgress(stream, min_interval_s=0)
    progress.phase("cleaning", "300 tweets kept")
    progress.note("The base writes mostly English.")
    progress.phase("loading", "loading base model gpt2")
    progress.step(1, 2, 3.0, 10.0, 1.0)
    progress.done(model="li")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert "notes" not in events[0]
    assert events[1]["phase"] == "cleaning"
    assert events[1]["message"] == "The base writes mostly English."
    assert all(e["notes"] == ["The base writes mostly English."] for e in events[1:])


def test_terminal_progress_prints_a_note_as_plain_text() -> None:
    stream = io.StringIO()
    TerminalProgress(stream).note("tweets in [bold]Chinese[/bold] will be poor")
    assert "note: tweets in [bold]Chinese[/bold] will be poor" in stream.getvalue()
