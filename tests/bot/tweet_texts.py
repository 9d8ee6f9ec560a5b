"""Synthetic tweets for the tests that run the real training: seeded sentences over a small
vocabulary, and a CSV of them, enough to pass training's data gates."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Sequence

_VOCABULARY = (
    "my dream is to build a rocket and fly to the moon with friends coffee code python "
    "today great people vote change future hope music city night morning team win learn"
)
_TEN_MORE = "new book read write garden rain sun happy thanks everyone"
WORDS = _VOCABULARY.split()
#: ``WORDS`` and ten more.
MORE_WORDS = [*WORDS, *_TEN_MORE.split()]


def random_texts(
    count: int, *, words: Sequence[str] = WORDS, shortest: int = 6, longest: int = 14, seed: int = 0
) -> list[str]:
    """``count`` sentences of ``shortest`` to ``longest`` words drawn from ``words``."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(shortest, longest)))
        for _ in range(count)
    ]


def tweets_csv(texts: Sequence[str], *, dated: bool = False) -> bytes:
    """A CSV of ``texts`` (a ``text`` column; with ``dated``, a ``created_at`` column first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["created_at", "text"] if dated else ["text"])
    for i, text in enumerate(texts):
        writer.writerow([f"2024-01-{1 + i % 28:02d}", text] if dated else [text])
    return buffer.getvalue().encode("utf-8")
