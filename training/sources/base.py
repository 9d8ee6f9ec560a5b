"""What every tweet source returns, and the interface it implements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from training.handles import Handle

#: huggingtweets downloaded the newest 3,200 tweets: the X API's timeline cap.
API_TWEET_CAP = 3200


@dataclass(frozen=True, slots=True)
class RawTweet:
    """One post as a source delivered it, before cleaning.

    ``text`` is the full text (long posts expanded) with HTML entities still escaped where the
    source escapes them; cleaning decodes them. ``source`` names the source kind, e.g.
    ``"x-archive"``, ``"csv"``, ``"jsonl"``, ``"x-api"``, ``"bluesky"``.
    """

    id: str
    created_at: datetime | None
    text: str
    is_retweet: bool
    is_reply: bool
    source: str


class TweetSource(Protocol):
    """A place tweets come from. ``fetch`` returns newest first and raises DoppeltweetError."""

    kind: str

    def fetch(self, handle: Handle) -> list[RawTweet]: ...
