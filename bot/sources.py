"""The registry of what a training job may read: the remote sources and each network's word.

A job's sources are upload paths or these words, each also the ``--from`` word (and flag) the
training command reads (:mod:`training.pipeline`).
"""

from __future__ import annotations

from collections.abc import Sequence

from training.handles import Handle
from training.pipeline import API_SPEC, NETWORK_SPECS, default_spec

API_SOURCE = API_SPEC
#: Sources that are networks, not uploads.
REMOTE_SOURCES = NETWORK_SPECS


def network_sources(handles: Sequence[Handle]) -> list[str] | None:
    """The free networks that Bluesky and Mastodon handles are read from: one source for all
    when they share one, else one per handle in order; None when any handle is an X handle."""
    sources = [default_spec(h) for h in handles]
    if not sources or any(s is None for s in sources):
        return None
    return [s for s in sources if s is not None][: 1 if len(set(sources)) == 1 else None]
