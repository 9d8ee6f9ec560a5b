"""Posting generated tweets to X through tweepy's ``create_tweet`` (opt-in, per schedule).

Posting needs user-context credentials (OAuth 1.0a: the app's consumer key and secret plus the
posting account's access token and secret) from the bot's configuration. Every post says it is
AI-generated unless an admin turned the label off, and still fits X's 280-character limit.

X's errors become :class:`XPostError` with one sentence for the server's admins. Errors that will
repeat on every try (bad credentials, no credits left, a refused post, the rate limit) say so with
``pauses=True``; the scheduler pauses the schedule instead of failing on every tick. tweepy's
``requests`` session has no timeout of its own, so the client here gets one: a hung connection
must not hold a worker thread forever.
"""

from __future__ import annotations

import logging
import unicodedata

import requests
import tweepy

from bot.config import BotSettings
from training.errors import DoppeltweetError, InputError
from training.sources.xapi import TimeoutSession

log = logging.getLogger(__name__)

#: What an AI-labelled post ends with, so nobody mistakes it for the real person.
AI_LABEL = " 🤖 AI-generated"
#: X's limit, in X's weighted characters (most scripts count 1, CJK and emoji 2).
X_MAX_WEIGHT = 280
#: Seconds one request to X may take before it counts as failed.
X_TIMEOUT_S = 30.0

# twitter-text v3: code points in these ranges weigh 1, everything else 2.
_LIGHT_RANGES = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))

MISSING_CREDENTIALS = (
    "Posting to X needs X_CONSUMER_KEY, X_CONSUMER_SECRET, X_ACCESS_TOKEN and "
    "X_ACCESS_TOKEN_SECRET in the bot's configuration."
)


class XPostError(DoppeltweetError):
    """X did not take the post; ``pauses`` says trying again on the next tick would not help."""

    def __init__(self, message: str, *, status: int | None = None, pauses: bool) -> None:
        super().__init__(message)
        self.status = status
        self.pauses = pauses


def x_weight(text: str) -> int:
    """The length X counts for ``text`` (never less than X's own count).

    Each code point outside twitter-text's light ranges weighs 2. X counts a whole emoji
    sequence as 2, so sequences joined with ZWJ are over-counted here, which only ever makes a
    post shorter than needed, never too long.
    """
    total = 0
    for char in text:
        point = ord(char)
        light = any(low <= point <= high for low, high in _LIGHT_RANGES)
        total += 1 if light else 2
    return total


def _cut(text: str, budget: int) -> str:
    """The longest start of ``text`` within ``budget`` weighted characters, ending with “…”."""
    if x_weight(text) <= budget:
        return text
    kept: list[str] = []
    used = x_weight("…")  # 2: X weighs the ellipsis like CJK
    for char in text:
        weight = x_weight(char)
        if used + weight > budget:
            break
        kept.append(char)
        used += weight
    cut = "".join(kept)
    # Do not end inside a word or on a dangling combining mark when a space is near.
    space = cut.rfind(" ")
    if space >= len(cut) * 2 // 3:
        cut = cut[:space]
    while cut and unicodedata.combining(cut[-1]):
        cut = cut[:-1]
    return cut.rstrip() + "…"


def x_post_text(text: str, *, ai_label: bool = True) -> str:
    """What goes to X: the tweet, labelled as AI-generated unless turned off, within 280."""
    text = " ".join(text.split())
    if not ai_label:
        return _cut(text, X_MAX_WEIGHT)
    return _cut(text, X_MAX_WEIGHT - x_weight(AI_LABEL)) + AI_LABEL


def _x_detail(error: tweepy.HTTPException) -> str:
    """X's own explanation, short and on one line, for the admin's message."""
    messages = [" ".join(str(m).split()) for m in error.api_messages if str(m).strip()]
    detail = "; ".join(messages)
    return detail[:150].rstrip(" .") if detail else ""


def _sentence(status: int, error: tweepy.HTTPException) -> str:
    detail = _x_detail(error)
    said = f" (X said: {detail})" if detail else ""
    if status == 401:
        return (
            f"X rejected the posting credentials (401 Unauthorized){said}; check X_CONSUMER_KEY, "
            "X_CONSUMER_SECRET, X_ACCESS_TOKEN and X_ACCESS_TOKEN_SECRET."
        )
    if status == 402:
        return f"X says the account's API credits are used up (402 Payment Required){said}."
    if status == 403:
        return (
            f"X refused the post (403 Forbidden){said}; the app may lack write access or the "
            "account may be restricted."
        )
    if status == 429:
        return f"X's rate limit for posting was reached (429 Too Many Requests){said}."
    return f"X answered {status} to the post{said}."


class XPoster:
    """Posts to X as the account whose user-context credentials are configured."""

    def __init__(
        self,
        consumer_key: str,
        consumer_secret: str,
        access_token: str,
        access_token_secret: str,
        *,
        timeout: float = X_TIMEOUT_S,
    ) -> None:
        self._client = tweepy.Client(
            consumer_key=consumer_key,
            consumer_secret=consumer_secret,
            access_token=access_token,
            access_token_secret=access_token_secret,
            wait_on_rate_limit=False,
        )
        self._client.session = TimeoutSession(timeout)

    def __repr__(self) -> str:
        return "XPoster(credentials hidden)"

    @classmethod
    def from_settings(cls, settings: BotSettings) -> XPoster:
        """The poster for the configured account; InputError when a credential is missing."""
        if not settings.x_posting_configured:
            raise InputError(MISSING_CREDENTIALS)
        secrets = (
            settings.x_consumer_key,
            settings.x_consumer_secret,
            settings.x_access_token,
            settings.x_access_token_secret,
        )
        values = [s.get_secret_value().strip() for s in secrets if s is not None]
        return cls(*values)

    def post(self, text: str) -> str:
        """Post ``text`` as it is and return the new post's id (blocking: run it in a thread)."""
        try:
            response = self._client.create_tweet(text=text, user_auth=True)
        except tweepy.HTTPException as error:
            status = error.response.status_code
            permanent = 400 <= status < 500
            log.warning("X refused a post with %s %s", status, _x_detail(error))
            raise XPostError(_sentence(status, error), status=status, pauses=permanent) from error
        except (requests.RequestException, tweepy.TweepyException) as error:
            log.warning("could not reach X: %s", type(error).__name__)
            raise XPostError(
                "X could not be reached to post; the next post will try again.", pauses=False
            ) from error
        data = getattr(response, "data", None)
        post_id = data.get("id") if isinstance(data, dict) else None
        if not post_id:
            raise XPostError("X accepted the post but sent back no post id.", pauses=False)
        return str(post_id)
