"""Stand-ins for a loaded model, what ``ModelCache``'s loader returns: each has ``memory_bytes``
and ``generate(prompt, n=, seed=, exclude=)``, and differs in what it writes and records.

``training.generation`` is imported only when a stand-in generates, as the simcord tests never load
the generation stack otherwise.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.generation import GenerationResult


class ScriptedGenerator:
    """A loaded model that answers with scripted tweets, so a test controls the generated text."""

    memory_bytes = 1

    def __init__(self, tweets: list[str]) -> None:
        self.tweets = tweets
        self.prompts: list[str] = []
        #: When set, generating raises it (a bug in the model code, as far as the bot knows).
        self.error: Exception | None = None

    def generate(
        self, prompt: str, *, n: int = 1, seed: int | None = None, exclude: object = ()
    ) -> GenerationResult:
        from training.generation import GenerationResult

        self.prompts.append(prompt)
        if self.error is not None:
            raise self.error
        return GenerationResult(
            prompt=prompt, tweets=self.tweets[:n], candidates=len(self.tweets), rejected=0
        )


class RecordingGenerator:
    """A model that writes the first scripted tweet not excluded, recording every ``exclude``.

    With ``delegate`` set (a real TweetGenerator) it generates with that model instead.
    """

    memory_bytes = 1

    def __init__(self, tweets: list[str]) -> None:
        self.tweets = tweets
        self.excludes: list[frozenset[str]] = []
        self.prompts: list[str] = []
        self.delegate: Any = None

    def generate(
        self, prompt: str, *, n: int = 1, seed: int | None = None, exclude: Collection[str] = ()
    ) -> Any:
        from training.generation import GenerationResult

        self.excludes.append(frozenset(exclude))
        self.prompts.append(prompt)
        if self.delegate is not None:
            return self.delegate.generate(prompt, n=n, seed=seed, exclude=exclude)
        fresh = [t for t in self.tweets if t not in set(exclude)]
        return GenerationResult(
            prompt=prompt,
            tweets=fresh[:n],
            candidates=len(self.tweets),
            rejected=len(self.tweets) - len(fresh),
        )


class CountingGenerator:
    """Numbered tweets tagged with the folder's version; records every call's arguments."""

    counter = itertools.count()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.memory_bytes = 100
        self.version = (path / "version").read_text() if (path / "version").exists() else "1"
        self.calls: list[tuple[str, int, tuple[str, ...]]] = []
        self.lock = threading.Lock()

    def generate(
        self, prompt: str, *, n: int = 1, seed: int | None = None, exclude: Collection[str] = ()
    ) -> GenerationResult:
        from training.generation import GenerationResult

        with self.lock:
            self.calls.append((prompt, n, tuple(exclude)))
            numbers = [next(self.counter) for _ in range(n)]
        tweets = [f"{prompt} v{self.version} tweet {i}".strip() for i in numbers]
        return GenerationResult(prompt=prompt, tweets=tweets, candidates=n, rejected=0)


class FakeGenerator:
    """A loaded model that says which folder and which thread produced each tweet."""

    def __init__(self, path: Path, memory_bytes: int) -> None:
        self.path = path
        self.memory_bytes = memory_bytes
        self.version = (path / "version").read_text() if (path / "version").exists() else "1"

    def generate(
        self, prompt: str, *, n: int = 1, seed: int | None = None, exclude: Collection[str] = ()
    ) -> GenerationResult:
        from training.generation import GenerationResult

        thread = threading.current_thread().name
        tweets = [f"{prompt} {self.path.name} v{self.version} {thread}"] * n
        return GenerationResult(prompt=prompt, tweets=tweets, candidates=n, rejected=len(exclude))
