"""The bot's services over a bare job runner, for tests that drive the runner without a bot."""

from __future__ import annotations

from pathlib import Path

from bot.jobs import JobRunner
from bot.services.models import Models
from bot.services.training_requests import TrainingRequests


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
