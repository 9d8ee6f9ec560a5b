"""The public networks the bot posts generated tweets to: X, Bluesky and Mastodon.

Each network is one module with one poster class behind the small :class:`Poster` protocol
(its name, its length count and limit, ``post``), so the auto-poster treats them alike and a new
network is one new file. :func:`poster_for` builds the configured poster of a network.
"""

from __future__ import annotations

import importlib
from types import ModuleType
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
from training.handles import PLATFORM_NAMES

if TYPE_CHECKING:
    from bot.config import BotSettings

#: The networks in the order a schedule posts to them, by their option key (``--to-x``): the
#: platforms of :mod:`training.handles`, each with a module here of the same name.
NETWORKS: dict[str, str] = dict(PLATFORM_NAMES)


def _module(key: str) -> ModuleType:
    if key not in NETWORKS:
        raise ValueError(f"{key!r} is not a network the bot posts to")
    return importlib.import_module(f"bot.posters.{key}")


def missing_credentials(key: str) -> str:
    """The sentence for a network whose settings are not all there."""
    return str(_module(key).MISSING_CREDENTIALS)


def configured(settings: BotSettings, key: str) -> bool:
    """Whether the settings hold everything posting to that network needs."""
    if key not in NETWORKS:
        raise ValueError(f"{key!r} is not a network the bot posts to")
    return bool(getattr(settings, f"{key}_posting_configured"))


def poster_for(settings: BotSettings, key: str) -> Poster:
    """The poster of one network for the configured account; InputError if unconfigured."""
    poster: Poster = _module(key).POSTER.from_settings(settings)
    return poster


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
