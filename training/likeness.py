"""How like the person a freshly trained model writes: real vs generated, for the model card.

At the end of training the new model writes a batch of prompt-less tweets (it opens them itself,
as the person would) and :mod:`training.style` measures them beside the held-out validation
tweets: mean length, replies, @mentions, hashtags, emoji, lower-case and languages; the share of
sampled candidates rejected as copies of training tweets is the copy rate; the same tweets give
the recognisability figure (:mod:`training.recognisability`). huggingtweets showed none of this;
it says at a glance whether a fan would recognise the voice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.style import StyleStats, broken_emoji_pct, style_gap, style_rows, style_stats

#: The most tweets one generation call writes (``training.generation.MAX_TWEETS``).
MAX_SAMPLES = 20


def measure_likeness(
    model_dir: Path,
    real: Sequence[str],
    *,
    samples: int,
    seed: int,
    device: str | None = None,
    train: Sequence[str] = (),
    handles: Sequence[str] = (),
) -> dict[str, Any]:
    """Generate ``samples`` prompt-less tweets with the model in ``model_dir`` and compare them
    with ``real`` (the validation tweets); the JSON-ready record ``training.json`` keeps.

    With the ``train`` tweets of ``handles`` the same samples also give the recognisability
    figure (:mod:`training.recognisability`), under ``recognisability`` (None without a panel).
    """
    from training.generation import TweetGenerator
    from training.recognisability import recognisability

    # torch: exact fp32, and no fast artifact left in a folder whose training.json changes next.
    generator = TweetGenerator.load(model_dir, device=device, backend="torch")
    try:
        result = generator.generate("", n=samples, seed=seed)
    finally:
        generator.close()
    copies = result.rejected_reasons.get("copy", 0)
    real_stats, generated_stats = style_stats(list(real)), style_stats(result.tweets)
    return {
        "samples": len(result.tweets),
        "candidates": result.candidates,
        "copy_rate_pct": round(100.0 * copies / result.candidates, 1) if result.candidates else 0.0,
        "broken_emoji_pct": broken_emoji_pct(result.tweets),
        "style_gap": style_gap(real_stats, generated_stats),
        "real": real_stats.as_dict(),
        "generated": generated_stats.as_dict(),
        "examples": result.tweets[:3],
        "recognisability": (
            recognisability(handles, train, real, result.tweets) if train and handles else None
        ),
    }


def likeness_rows(record: dict[str, Any]) -> list[str]:
    """The card's real-vs-generated table from a ``likeness`` record (empty when it is damaged)."""
    try:
        real = StyleStats(**record["real"])
        generated = StyleStats(**record["generated"])
        copy_rate = float(record["copy_rate_pct"])
    except (KeyError, TypeError, ValueError):
        return []
    return style_rows(real, generated, copy_rate_pct=copy_rate)
