"""The poster protocol: what the auto-poster needs of a public network it posts to.

A poster knows its network's name, how that network counts the length of a post and its limit,
and posts a finished text (already labelled and fitted), returning where the post can be seen.
Every failure is one of a few :class:`PostError` classes with one sentence for a server's
admins; ``pauses`` says whether trying again on the next run would help (a wrong password or a
refused text repeats forever; an outage passes).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from training.errors import DoppeltweetError
from training.textrules import fit_tweet, graphemes

log = logging.getLogger(__name__)

#: What an AI-labelled post ends with, so nobody mistakes it for the real person.
AI_LABEL = " 🤖 AI-generated"
#: Seconds one request to a network may take before it counts as failed.
REQUEST_TIMEOUT_S = 30.0
#: What a cut text ends with.
ELLIPSIS = "…"
_SENTENCE_END = (".", "!", "?", "…")


class PostError(DoppeltweetError):
    """A network did not take a post; ``str(error)`` is one sentence for the server's admins."""

    #: Whether the next run would fail the same way (the scheduler then pauses the schedule).
    pauses = False

    def __init__(self, message: str, *, network: str, status: int | None = None) -> None:
        super().__init__(message)
        self.network = network
        self.status = status


class PostRefused(PostError):
    """The network refused the post for a reason that repeats on every try."""

    pauses = True


class BadCredentials(PostRefused):
    """The configured account, password or token was refused (401, or a token without write
    access)."""


class RateLimited(PostRefused):
    """The network's rate limit for posting was reached (429)."""


class ContentRejected(PostRefused):
    """The network refused the text itself (too long, a duplicate, invalid: 400/422)."""


class Unreachable(PostError):
    """The network could not be reached or failed on its side (5xx); the next run tries again."""

    pauses = False


@dataclass(frozen=True, slots=True)
class Posted:
    """A post a network took: its id there and, where the network has one, its public address."""

    network: str
    id: str
    url: str | None = None


class Poster(Protocol):
    """One public network the auto-poster (and ``!tweet``'s "post this") can post to."""

    #: The network's name as users read it: ``X``, ``Bluesky``, ``Mastodon``.
    network: str
    #: The schedule option naming it: ``x`` for ``--to-x``.
    key: str

    def length(self, text: str) -> int:
        """The length of ``text`` as this network counts it against :meth:`max_length`."""
        ...

    async def max_length(self) -> int:
        """The longest post the network takes, in the units of :meth:`length`."""
        ...

    async def post(self, text: str) -> Posted:
        """Post ``text`` as it is (labelled and fitted by the caller); :class:`PostError` if not."""
        ...


def grapheme_length(text: str) -> int:
    """User-perceived characters (extended grapheme clusters), as Bluesky and Mastodon count."""
    return len(graphemes(text))


def with_label(text: str, *, ai_label: bool) -> str:
    """The text of a public post: the tweet and, unless turned off, the AI label."""
    text = " ".join(text.split())
    return text + AI_LABEL if ai_label else text


def fit_text(
    text: str, limits: Sequence[tuple[Callable[[str], int], int]], *, ai_label: bool
) -> str:
    """``text`` shortened just enough that, labelled, it fits every ``(length, limit)`` pair.

    A cut ends where a reader would stop (a sentence end, else a word boundary, else a whole
    grapheme) and gets an ellipsis unless it ends a sentence. One text for every network keeps
    what the Discord channel shows and what each network shows the same.
    """
    text = " ".join(text.split())

    def fits(candidate: str) -> bool:
        labelled = with_label(candidate, ai_label=ai_label)
        return all(length(labelled) <= limit for length, limit in limits)

    def cut(budget: int) -> str:
        head = fit_tweet(text, budget).rstrip()
        if head == text:
            return text
        return head if head.endswith(_SENTENCE_END) else head.rstrip(",;:-–— ") + ELLIPSIS

    if fits(text):
        return text
    # Binary search for the largest code-point budget whose cut fits; fit_tweet only ever
    # shortens as the budget shrinks, so the search is bounded by log2(len(text)) steps.
    low, high, best = 0, len(text), ""
    while low <= high:
        middle = (low + high) // 2
        candidate = cut(middle) if middle else ""
        if fits(candidate):
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    if not best.strip(ELLIPSIS + " "):
        raise ContentRejected(
            "The post does not fit the strictest network's length limit even when cut.",
            network="all",
        )
    return best


def utf8_tenths(text: str) -> int:
    """A tenth of the UTF-8 size, rounded up: Bluesky's 3,000-byte cap in 300 "characters"."""
    return math.ceil(len(text.encode("utf-8")) / 10)


def short_detail(detail: object) -> str:
    """A network's own explanation, short and on one line, for an admin's message."""
    text = " ".join(str(detail or "").split())
    return text[:150].rstrip(" .")


def status_error(network: str, status: int, detail: str, *, credentials: str) -> PostError:
    """The error class and sentence for an HTTP ``status`` a network answered a post with.

    ``credentials`` names the settings to check after a 401, e.g. ``BLUESKY_APP_PASSWORD``.
    """
    said = f" ({network} said: {detail})" if detail else ""
    if status == 401:
        return BadCredentials(
            f"{network} rejected the posting credentials (401 Unauthorized){said}; check "
            f"{credentials}.",
            network=network,
            status=status,
        )
    if status == 429:
        return RateLimited(
            f"{network}'s rate limit for posting was reached (429 Too Many Requests){said}.",
            network=network,
            status=status,
        )
    if status in (400, 413, 422):
        return ContentRejected(
            f"{network} refused the text of the post ({status}){said}.",
            network=network,
            status=status,
        )
    if 400 <= status < 500:
        return PostRefused(
            f"{network} refused the post ({status}){said}.", network=network, status=status
        )
    return Unreachable(
        f"{network} failed to take the post ({status}); the next post will try again.",
        network=network,
        status=status,
    )


def post_json(
    http: requests.Session,
    network: str,
    url: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str],
    timeout: float,
) -> tuple[int, Any]:
    """POST ``body`` as JSON: the answer's status and its JSON (None when it is not JSON);
    :class:`Unreachable` when the network cannot be reached."""
    try:
        response = http.post(url, json=body, headers=headers, timeout=timeout)
    except requests.RequestException as error:
        log.warning("could not reach %s: %s", network, type(error).__name__)
        raise Unreachable(
            f"{network} could not be reached to post; the next post will try again.",
            network=network,
        ) from error
    try:
        payload = response.json()
    except ValueError:
        payload = None
    return response.status_code, payload
