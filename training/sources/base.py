"""What every tweet source returns, and the interface it implements."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from training.errors import InputError
from training.handles import Handle

#: huggingtweets downloaded the newest 3,200 tweets: the X API's timeline cap.
API_TWEET_CAP = 3200
#: X's long posts stop at 25,000 characters; a longer post is cut to this at the boundary.
MAX_POST_CHARS = 25_000


def check_post_limit(limit: int, source: str, most: int) -> int:
    """``limit`` when it is from 1 to ``most``; one sentence naming ``source`` if not."""
    if not 1 <= limit <= most:
        raise InputError(f"The {source} post limit must be between 1 and {most}, not {limit}.")
    return limit


@dataclass(frozen=True, slots=True)
class RawTweet:
    """One post as a source delivered it, before cleaning.

    ``text`` is the full text (long posts expanded) with HTML entities still escaped where the
    source escapes them; cleaning decodes them. ``source`` names the source kind, e.g.
    ``"x-archive"``, ``"csv"``, ``"jsonl"``, ``"x-api"``, ``"bluesky"``, ``"mastodon"``,
    ``"mastodon-archive"``.
    """

    id: str
    created_at: datetime | None
    text: str
    is_retweet: bool
    is_reply: bool
    source: str


class TweetSource(Protocol):
    """A place tweets come from. ``fetch`` returns newest first and raises DoppeltweetError.

    A source that leaves posts out by rule (both Mastodon sources) also has ``skip_counts()``,
    what its last fetch left out by reason (:class:`training.sources.fediverse.SkipCounts`);
    :func:`training.pipeline.collect` puts those counts in the data table.
    """

    kind: str

    def fetch(self, handle: Handle) -> list[RawTweet]: ...


# --- the source boundary: what every source's text goes through ------------------------------

#: C0 controls (but tab, newline, carriage return), DEL and the C1 controls: NUL, ESC and
#: friends are never part of a post; cleaning would keep them and a terminal would obey them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: A UTF-16 surrogate on its own (a tweet cut inside an emoji by an old export): not text.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def repair_text(text: str) -> str:
    """A post's text made safe to clean, print and save: surrogate pairs joined, lone
    surrogates and control characters dropped.

    Old exports and JSON ``\\ud83d`` escapes can leave UTF-16 surrogates in a ``str``; a paired
    one becomes the character it encodes (``\\ud83d\\ude00`` → 😀), a lone one is dropped, so
    writing the text as UTF-8 never fails.
    """
    if text.isascii() and text.isprintable():
        return text
    if _LONE_SURROGATE.search(text):
        # surrogatepass + utf-16 joins valid pairs; what is left alone is dropped.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "ignore")
        text = _LONE_SURROGATE.sub("", text)
    return _CONTROL.sub("", text)


def at_boundary(tweets: Iterable[RawTweet]) -> tuple[list[RawTweet], int]:
    """Every source's posts as the pipeline takes them in, and how many were cut.

    Each text is repaired (:func:`repair_text`) and cut to :data:`MAX_POST_CHARS`.
    :func:`training.pipeline.collect` calls this on whatever a source's ``fetch`` returned, so a
    new source gets both without doing anything. A source that reads huge fields may cut them
    early to ``MAX_POST_CHARS + 1`` characters (so the cut is still counted here).
    """
    repaired = []
    cut = 0
    for tweet in tweets:
        text = tweet.text
        if len(text) > MAX_POST_CHARS:
            text = text[:MAX_POST_CHARS]
            cut += 1
        text = repair_text(text)
        repaired.append(tweet if text is tweet.text else replace(tweet, text=text))
    return repaired, cut


def newest_first(tweets: list[RawTweet]) -> list[RawTweet]:
    """``tweets`` sorted newest first in place (undated ones last), and returned."""
    tweets.sort(key=lambda t: t.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return tweets


def add_unseen(
    posts: list[RawTweet],
    page: Iterable[RawTweet | None],
    seen: set[Hashable],
    limit: int,
    key: Callable[[RawTweet], Hashable] = lambda post: post.id,
) -> bool:
    """Append the page's posts not seen before (by ``key``; None skipped) until ``posts`` holds
    ``limit``; True once it does."""
    for post in page:
        if post is None or key(post) in seen:
            continue
        seen.add(key(post))
        posts.append(post)
        if len(posts) >= limit:
            return True
    return False
