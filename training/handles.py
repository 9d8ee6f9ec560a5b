"""Handles: the only user input that becomes part of a path, so it is validated here, once."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from training.errors import InputError

MAX_HANDLES = 3
BLUESKY_PREFIX = "bluesky:"

_X_HANDLE = re.compile(r"[A-Za-z0-9_]{1,15}")
# AT Protocol handle syntax: dot-separated labels of letters/digits/hyphens, at least two labels,
# the last (TLD) not starting with a digit.
_BSKY_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

Platform = Literal["x", "bluesky"]


@dataclass(frozen=True, slots=True, order=True)
class Handle:
    """A validated, lower-cased handle; ``name`` is safe to use as a path component."""

    name: str
    platform: Platform = "x"

    @property
    def display(self) -> str:
        """How the handle is shown to people: ``@jack`` or ``@alice.bsky.social``."""
        return f"@{self.name}"

    def __str__(self) -> str:
        return self.display


def parse_handle(text: str) -> Handle:
    """Parse ``@jack``, ``jack`` or ``bluesky:alice.bsky.social`` into a :class:`Handle`."""
    raw = text.strip()
    if raw.lower().startswith(BLUESKY_PREFIX):
        return _parse_bluesky(raw[len(BLUESKY_PREFIX) :].lstrip("@"), text)
    name = raw.removeprefix("@")
    if not _X_HANDLE.fullmatch(name):
        raise InputError(
            f"{_quote(text)} is not an X handle: use 1 to 15 letters, digits or underscores "
            "(or bluesky:name.bsky.social for Bluesky)."
        )
    return Handle(name.lower(), "x")


def _parse_bluesky(name: str, original: str) -> Handle:
    labels = name.split(".")
    ok = (
        len(name) <= 253
        and len(labels) >= 2
        and all(_BSKY_LABEL.fullmatch(label) for label in labels)
        and not labels[-1][0].isdigit()
    )
    if not ok:
        raise InputError(
            f"{_quote(original)} is not a Bluesky handle: use a domain such as "
            "bluesky:alice.bsky.social."
        )
    return Handle(name.lower(), "bluesky")


def parse_handles(texts: Iterable[str]) -> list[Handle]:
    """Parse 1–3 distinct handles, sorted as huggingtweets sorted them."""
    handles = [parse_handle(t) for t in texts]
    if not handles:
        raise InputError("Name at least one handle, e.g. @jack.")
    if len(handles) > MAX_HANDLES:
        raise InputError(
            f"A model can learn from at most {MAX_HANDLES} handles, not {len(handles)}."
        )
    if len(set(handles)) != len(handles):
        raise InputError("Each handle may be named only once.")
    return sorted(handles)


#: Joins the handles of a model that has a Bluesky handle among several.
NAME_SEPARATOR = "+"


def model_name(handles: Iterable[Handle]) -> str:
    """The model's name: huggingtweets' (handles lower-cased, sorted, joined with ``-``) when
    that cannot be mistaken for another set of handles.

    The name is never the same for two sets of handles. X handles have neither ``-`` nor ``.``,
    so a single handle, or several X handles joined with ``-`` (``alice-bob``), name one set
    only. A Bluesky handle has a ``.`` and may have a ``-``, so ``alice.com`` + ``bob.com``
    joined with ``-`` would be the single handle ``alice.com-bob.com``; several handles of which
    one is a Bluesky handle are therefore joined with ``+`` (``alice.com+bob.com``), which no
    handle contains. Single-handle names and names of X handles stay huggingtweets' own.
    """
    ordered = sorted(handles)
    names = [h.name for h in ordered]
    if len(names) > 1 and any(h.platform == "bluesky" for h in ordered):
        return NAME_SEPARATOR.join(names)
    return "-".join(names)


def _quote(text: str) -> str:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return f"“{shown}”"
