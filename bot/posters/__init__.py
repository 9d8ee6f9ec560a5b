"""The public networks the bot posts generated tweets to: X, Bluesky and Mastodon.

Each network is one module with one poster class behind the small :class:`Poster` protocol
(its name, its length count and limit, ``post``), so the auto-poster treats them alike and a new
network is one new file. :func:`poster_for` builds the configured poster of a network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.posters.base import (
    AI_LABEL,
    BadCredentials,
    ContentRejected,
    Posted,
    Poster,
    PostError,
    PostRefused,
    RateLimited,
    Unreachable,
    fit_text,
    with_label,
)

if TYPE_CHECKING:
    from bot.config import BotSettings

#: The networks in the order a schedule posts to them, by their option key (``--to-x``).
NETWORKS: dict[str, str] = {"x": "X", "bluesky": "Bluesky", "mastodon": "Mastodon"}


def missing_credentials(key: str) -> str:
    """The sentence for a network whose settings are not all there."""
    from bot.posters import bluesky, mastodon, x

    return {
        "x": x.MISSING_CREDENTIALS,
        "bluesky": bluesky.MISSING_CREDENTIALS,
        "mastodon": mastodon.MISSING_CREDENTIALS,
    }[key]


def configured(settings: BotSettings, key: str) -> bool:
    """Whether the settings hold everything posting to that network needs."""
    return {
        "x": settings.x_posting_configured,
        "bluesky": settings.bluesky_posting_configured,
        "mastodon": settings.mastodon_posting_configured,
    }[key]


def poster_for(settings: BotSettings, key: str) -> Poster:
    """The poster of one network for the configured account; InputError if unconfigured."""
    if key == "x":
        from bot.posters.x import XPoster

        return XPoster.from_settings(settings)
    if key == "bluesky":
        from bot.posters.bluesky import BlueskyPoster

        return BlueskyPoster.from_settings(settings)
    if key == "mastodon":
        from bot.posters.mastodon import MastodonPoster

        return MastodonPoster.from_settings(settings)
    raise ValueError(f"{key!r} is not a network the bot posts to")


__all__ = [
    "AI_LABEL",
    "NETWORKS",
    "BadCredentials",
    "ContentRejected",
    "PostError",
    "PostRefused",
    "Posted",
    "Poster",
    "RateLimited",
    "Unreachable",
    "configured",
    "fit_text",
    "missing_credentials",
    "poster_for",
    "with_label",
]
