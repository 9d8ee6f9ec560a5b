"""Posting to X through tweepy's ``create_tweet`` (opt-in, per schedule).

Posting needs user-context credentials (OAuth 1.0a: the app's consumer key and secret plus the
posting account's access token and secret) from the bot's configuration. X counts length in
weighted characters (:func:`x_weight`: most scripts 1, CJK and emoji 2) up to 280.

X's errors become the :mod:`bot.posters.base` error classes with one sentence for the server's
admins: 401 bad credentials, 429 the rate limit, 403 (a duplicate, no write access) a refused
post, 402 (no credits left) and other 4xx a refusal; all of them pause a schedule. tweepy's
``requests`` session has no timeout of its own, so the client here gets one: a hung connection
must not hold a worker thread forever.
"""

from __future__ import annotations

import asyncio
import logging

import requests
import tweepy

from bot.config import BotSettings
from bot.posters.base import (
    ContentRejected,
    Posted,
    PostError,
    PostRefused,
    Unreachable,
    fit_text,
    short_detail,
    status_error,
    with_label,
)
from training.errors import InputError
from training.sources.xapi import TimeoutSession

log = logging.getLogger(__name__)

#: X's limit, in X's weighted characters (most scripts count 1, CJK and emoji 2).
X_MAX_WEIGHT = 280
#: Seconds one request to X may take before it counts as failed.
X_TIMEOUT_S = 30.0

# twitter-text v3: code points in these ranges weigh 1, everything else 2.
_LIGHT_RANGES = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))

CREDENTIALS = "X_CONSUMER_KEY, X_CONSUMER_SECRET, X_ACCESS_TOKEN and X_ACCESS_TOKEN_SECRET"
MISSING_CREDENTIALS = f"Posting to X needs {CREDENTIALS} in the bot's configuration."


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


def x_post_text(text: str, *, ai_label: bool = True) -> str:
    """What goes to X on its own: the tweet, labelled unless turned off, cut to fit 280."""
    fitted = fit_text(text, [(x_weight, X_MAX_WEIGHT)], ai_label=ai_label)
    return with_label(fitted, ai_label=ai_label)


def _x_detail(error: tweepy.HTTPException) -> str:
    """X's own explanation, short and on one line, for the admin's message."""
    return short_detail("; ".join(" ".join(str(m).split()) for m in error.api_messages))


def _error(status: int, error: tweepy.HTTPException) -> PostError:
    detail = _x_detail(error)
    if status in (401, 429):
        return status_error("X", status, detail, credentials=CREDENTIALS)
    said = f" (X said: {detail})" if detail else ""
    if status == 402:
        return PostRefused(
            f"X says the account's API credits are used up (402 Payment Required){said}.",
            network="X",
            status=status,
        )
    if status == 403:
        return ContentRejected(
            f"X refused the post (403 Forbidden){said}; the app may lack write access or the "
            "account may be restricted.",
            network="X",
            status=status,
        )
    if 400 <= status < 500:
        return PostRefused(f"X answered {status} to the post{said}.", network="X", status=status)
    return Unreachable(
        f"X answered {status} to the post{said}; the next post will try again.",
        network="X",
        status=status,
    )


class XPoster:
    """Posts to X as the account whose user-context credentials are configured."""

    network = "X"
    key = "x"

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

    def length(self, text: str) -> int:
        """X's weighted length (:func:`x_weight`)."""
        return x_weight(text)

    async def max_length(self) -> int:
        """X's 280 weighted characters."""
        return X_MAX_WEIGHT

    async def post(self, text: str) -> Posted:
        """Post ``text`` as it is (in a worker thread: tweepy blocks)."""
        post_id = await asyncio.to_thread(self.post_blocking, text)
        return Posted("X", post_id, f"https://x.com/i/web/status/{post_id}")

    def post_blocking(self, text: str) -> str:
        """Post ``text`` as it is and return the new post's id (blocking: run it in a thread)."""
        try:
            response = self._client.create_tweet(text=text, user_auth=True)
        except tweepy.HTTPException as error:
            status = error.response.status_code
            log.warning("X refused a post with %s %s", status, _x_detail(error))
            raise _error(status, error) from error
        except (requests.RequestException, tweepy.TweepyException) as error:
            log.warning("could not reach X: %s", type(error).__name__)
            raise Unreachable(
                "X could not be reached to post; the next post will try again.", network="X"
            ) from error
        data = getattr(response, "data", None)
        post_id = data.get("id") if isinstance(data, dict) else None
        if not post_id:
            raise Unreachable("X accepted the post but sent back no post id.", network="X")
        return str(post_id)


#: The poster class of this network (:func:`bot.posters.poster_for`).
POSTER = XPoster
