"""Handles: the only user input that becomes part of a path, so it is validated here, once.

Three kinds, each told apart by its shape and checked strictly:

* X: ``@jack`` or ``jack`` (1 to 15 letters, digits or underscores);
* Bluesky: ``bluesky:alice.bsky.social`` (a domain name);
* Mastodon: ``mastodon:@alice@mastodon.social``, or just ``@alice@mastodon.social`` (a local
  username of letters, digits and underscores, then the server's domain name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from training.errors import InputError

MAX_HANDLES = 3
BLUESKY_PREFIX = "bluesky:"
MASTODON_PREFIX = "mastodon:"
#: The longest model name (it is a folder name; the model store allows no more).
MAX_MODEL_NAME = 200

_X_HANDLE = re.compile(r"[A-Za-z0-9_]{1,15}")
# AT Protocol handle syntax: dot-separated labels of letters/digits/hyphens, at least two labels,
# the last (TLD) not starting with a digit. Mastodon servers' domain names follow the same rule.
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Mastodon's rule for local usernames (letters, digits, underscores; at most 30).
_MASTODON_USER = re.compile(r"[A-Za-z0-9_]{1,30}")
_MASTODON_DOMAIN_MAX = 160
#: How a Mastodon handle's ``@`` between user and server is written in a model (folder) name.
MASTODON_NAME_JOINER = "_at_"

Platform = Literal["x", "bluesky", "mastodon"]
PLATFORM_NAMES: dict[str, str] = {"x": "X", "bluesky": "Bluesky", "mastodon": "Mastodon"}


@dataclass(frozen=True, slots=True, order=True)
class Handle:
    """A validated, lower-cased handle.

    ``name`` is ``jack``, ``alice.bsky.social`` or ``alice@mastodon.social``; :attr:`slug` is
    its form in model (folder) names, safe as a path component.
    """

    name: str
    platform: Platform = "x"

    @property
    def display(self) -> str:
        """How the handle is shown: ``@jack``, ``@alice.bsky.social``, ``@alice@example.social``."""
        return f"@{self.name}"

    @property
    def spec(self) -> str:
        """The handle as the command line reads it: ``jack``, ``bluesky:…``, ``mastodon:@…``."""
        if self.platform == "bluesky":
            return BLUESKY_PREFIX + self.name
        if self.platform == "mastodon":
            return MASTODON_PREFIX + self.display
        return self.name

    @property
    def slug(self) -> str:
        """The handle in a model name: its name, with a Mastodon handle's ``@`` as ``_at_``.

        No two handles share a slug: X slugs have no ``.``; Bluesky slugs have one but no
        ``_`` (domain names have none); Mastodon slugs have both, and their domain part (after
        the last ``_``) has no ``_``, so the split back into user and server is unique.
        """
        return self.name.replace("@", MASTODON_NAME_JOINER)

    @property
    def user(self) -> str:
        """The account name without a Mastodon server (``alice`` of ``alice@mastodon.social``)."""
        return self.name.partition("@")[0]

    @property
    def instance(self) -> str | None:
        """A Mastodon handle's server (``mastodon.social``); None for other platforms."""
        return self.name.partition("@")[2] if self.platform == "mastodon" else None

    def __str__(self) -> str:
        return self.display


def is_handle_word(word: str) -> bool:
    """Whether a command word is meant as a handle: ``@…``, ``bluesky:…`` or ``mastodon:…``."""
    word = word.strip().lower()
    return word.startswith(("@", BLUESKY_PREFIX, MASTODON_PREFIX))


def parse_handle(text: str) -> Handle:
    """Parse ``@jack``, ``jack``, ``bluesky:alice.bsky.social``, ``mastodon:@alice@example.social``
    or ``@alice@example.social`` into a :class:`Handle`."""
    raw = text.strip()
    lowered = raw.lower()
    if lowered.startswith(BLUESKY_PREFIX):
        return _parse_bluesky(raw[len(BLUESKY_PREFIX) :].lstrip("@"), text)
    if lowered.startswith(MASTODON_PREFIX):
        return _parse_mastodon(raw[len(MASTODON_PREFIX) :], text)
    name = raw.removeprefix("@")
    if "@" in name:
        return _parse_mastodon(raw, text)
    if not _X_HANDLE.fullmatch(name):
        raise InputError(
            f"{_quote(text)} is not an X handle: use 1 to 15 letters, digits or underscores "
            "(or bluesky:name.bsky.social for Bluesky, mastodon:@name@server for Mastodon)."
        )
    return Handle(name.lower(), "x")


def _is_domain(name: str, max_length: int) -> bool:
    labels = name.split(".")
    return (
        len(name) <= max_length
        and len(labels) >= 2
        and all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
        and not labels[-1][0].isdigit()
    )


def _parse_bluesky(name: str, original: str) -> Handle:
    if not _is_domain(name, 253):
        raise InputError(
            f"{_quote(original)} is not a Bluesky handle: use a domain such as "
            "bluesky:alice.bsky.social."
        )
    return Handle(name.lower(), "bluesky")


def _parse_mastodon(text: str, original: str) -> Handle:
    user, at, domain = text.removeprefix("@").partition("@")
    if not (at and _MASTODON_USER.fullmatch(user) and _is_domain(domain, _MASTODON_DOMAIN_MAX)):
        raise InputError(
            f"{_quote(original)} is not a Mastodon handle: use mastodon:@name@server, e.g. "
            "mastodon:@alice@mastodon.social (a name of 1 to 30 letters, digits or underscores, "
            "then the server's domain)."
        )
    return Handle(f"{user.lower()}@{domain.lower()}", "mastodon")


def handle_from_name(name: str) -> Handle:
    """The handle a saved name stands for (``jack``, ``alice.bsky.social``, ``alice@server``)."""
    if "@" in name:
        return parse_handle(MASTODON_PREFIX + name)
    if "." in name:
        return parse_handle(BLUESKY_PREFIX + name)
    return parse_handle(name)


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
    if len(model_name(handles)) > MAX_MODEL_NAME:
        raise InputError(
            f"Together these handles are too long to name one model (at most {MAX_MODEL_NAME} "
            "characters); train fewer of them together."
        )
    return sorted(handles)


#: Joins the handles of a model that has a Bluesky or Mastodon handle among several.
NAME_SEPARATOR = "+"


def model_name(handles: Iterable[Handle]) -> str:
    """The model's name (its folder's): huggingtweets' (handles lower-cased, sorted, joined with
    ``-``) when that cannot be mistaken for another set of handles.

    The name is never the same for two sets of handles. Each handle appears as its
    :attr:`Handle.slug` (safe in a path; unique per handle). X handles have neither ``-`` nor
    ``.``, so a single handle, or several X handles joined with ``-`` (``alice-bob``), name one
    set only. A Bluesky or Mastodon slug has a ``.`` and may have a ``-``, so ``alice.com`` +
    ``bob.com`` joined with ``-`` would be the single handle ``alice.com-bob.com``; several
    handles of which one is not an X handle are therefore joined with ``+``
    (``alice.com+bob_at_example.social``), which no slug contains. Single-handle names and names
    of X handles stay huggingtweets' own.
    """
    ordered = sorted(handles)
    names = [h.slug for h in ordered]
    if len(names) > 1 and any(h.platform != "x" for h in ordered):
        return NAME_SEPARATOR.join(names)
    return "-".join(names)


def _quote(text: str) -> str:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return f"“{shown}”"
