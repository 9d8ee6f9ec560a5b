"""The X API v2 source: a user's newest posts (up to 3,200) through ``tweepy.Client``.

The X API is billed per use (prices: docs/sources.md), so this source is an opt-in for people who
pay; the X archive is the free path. That shapes the code:

* every request is deliberate — one user lookup, then timeline pages of 100 until ``limit`` posts,
  never a page more, and at most one retry of a page the server failed (5xx);
* ``wait_on_rate_limit`` stays off: tweepy's sleep-and-retry recurses forever when the reset
  header is missing, and a command blocked for 15 minutes is worse than a sentence saying when;
* each failure becomes one :class:`SourceError` sentence, and the bearer token appears in none of
  them (nor in tweepy's debug log, which would otherwise print the ``Authorization`` header).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Iterator
from datetime import UTC, datetime
from typing import Any

import requests
import tweepy

from training.errors import InputError, SourceError
from training.handles import Handle
from training.sources.base import API_TWEET_CAP, RawTweet, add_unseen, check_post_limit

#: X returns at most 100 posts per timeline page, and refuses fewer than 5.
PAGE_SIZE = 100
MIN_PAGE_SIZE = 5
#: Seconds before a request to X is abandoned (tweepy itself sets no timeout).
REQUEST_TIMEOUT_S = 30.0
#: A page that failed with a 5xx is retried once after this pause; a second failure is reported.
SERVER_ERROR_RETRY_DELAY_S = 2.0

TWEET_FIELDS = ["created_at", "note_tweet", "referenced_tweets", "in_reply_to_user_id"]
USER_FIELDS = ["protected"]

_RETWEETED = "retweeted"
_REPLIED_TO = "replied_to"


class _HideRequestHeaders(logging.Filter):
    """Drop tweepy's debug record of each request: it prints the ``Authorization`` header."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Making API request")


_tweepy_client_log = logging.getLogger("tweepy.client")
if not any(isinstance(f, _HideRequestHeaders) for f in _tweepy_client_log.filters):
    _tweepy_client_log.addFilter(_HideRequestHeaders())


class TimeoutSession(requests.Session):
    """A session whose requests time out (tweepy sets none), so a dead connection hangs nothing.

    The bot's X poster uses it too; importing this module also hides credentials from tweepy's
    debug log.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, **kwargs)


class XApiSource:
    """A user's timeline from the X API v2 (``GET /2/users/:id/tweets``), newest first.

    Retweets are returned (flagged ``is_retweet``) because huggingtweets counted them in its data
    table before dropping them; replies are flagged ``is_reply``. Long posts carry their full text.
    """

    kind = "x-api"

    def __init__(
        self,
        bearer_token: str,
        *,
        limit: int = API_TWEET_CAP,
        client: tweepy.Client | None = None,
    ) -> None:
        if client is None:
            if not bearer_token or not bearer_token.strip():
                raise InputError(
                    "The X API needs a bearer token: set X_BEARER_TOKEN, or use an X archive."
                )
            client = tweepy.Client(bearer_token=bearer_token.strip(), wait_on_rate_limit=False)
            client.session = TimeoutSession(REQUEST_TIMEOUT_S)
        if client.wait_on_rate_limit:
            raise InputError(
                "The X API client must not wait on rate limits (it can retry forever)."
            )
        self.limit = check_post_limit(limit, "X API", API_TWEET_CAP)
        self._client = client

    def __repr__(self) -> str:
        return f"XApiSource(limit={self.limit})"

    def fetch(self, handle: Handle) -> list[RawTweet]:
        """Look the user up, then read their newest ``limit`` posts (each read is billed by X)."""
        if handle.platform != "x":
            raise InputError(
                f"The X API reads X handles such as @jack, not the Bluesky handle {handle}."
            )
        user_id = self._lookup_user(handle)
        tweets: list[RawTweet] = []
        seen: set[Hashable] = set()
        for page in self._pages(handle, user_id):
            if add_unseen(tweets, map(tweet_from_v2, page), seen, self.limit):
                break
        return _newest_first(tweets)

    def _lookup_user(self, handle: Handle) -> str:
        payload = self._call(
            handle,
            self._client.get_user,
            retry=True,
            username=handle.name,
            user_fields=USER_FIELDS,
        )
        user = payload.get("data")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str | int):
            raise _user_errors_sentence(handle, payload.get("errors"))
        if user.get("protected") is True:
            raise SourceError(
                f"X's account {handle} is protected: only approved followers can read its posts."
            )
        return str(user["id"])

    def _pages(self, handle: Handle, user_id: str) -> Iterator[list[Any]]:
        """Timeline pages until the user's posts, the cursor or the request budget run out."""
        page_size = max(MIN_PAGE_SIZE, min(PAGE_SIZE, self.limit))
        # Pages can come back short (deleted posts), so allow some slack but never an endless walk.
        max_requests = 2 * math.ceil(self.limit / page_size) + 1

        def get_page(*args: Any, **kwargs: Any) -> dict[str, Any]:
            payload = self._call(handle, self._client.get_users_tweets, *args, retry=True, **kwargs)
            meta = payload.get("meta")
            if meta is None:
                meta = {}
            if not isinstance(meta, dict):
                raise _unreadable()
            token = meta.get("next_token")
            # The Paginator follows meta.next_token; anything but a non-empty string ends the walk.
            payload["meta"] = {"next_token": token} if isinstance(token, str) and token else {}
            return payload

        get_page.__name__ = "get_users_tweets"  # the Paginator picks the token parameter by name
        paginator = tweepy.Paginator(
            get_page,
            user_id,
            max_results=page_size,
            tweet_fields=TWEET_FIELDS,
            limit=max_requests,
        )
        for payload in paginator:
            data = payload.get("data")
            if data is None:
                errors = payload.get("errors")
                if errors:
                    raise _timeline_errors_sentence(handle, errors)
                return
            if not isinstance(data, list):
                raise _unreadable()
            yield data

    def _call(
        self,
        handle: Handle,
        method: Callable[..., Any],
        *args: Any,
        retry: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One API request, its failures as one sentence (with ``retry``: a second try on a 5xx)."""
        attempts = 2 if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                return _as_payload(method(*args, **kwargs))
            except tweepy.TwitterServerError as error:
                if attempt < attempts:
                    time.sleep(SERVER_ERROR_RETRY_DELAY_S)
                    continue
                raise SourceError(
                    f"X's servers failed (HTTP {_status(error)}) while reading {handle}; "
                    "try again later."
                ) from None
            except tweepy.HTTPException as error:
                raise _http_error_sentence(handle, error) from None
            except requests.JSONDecodeError:
                raise _unreadable() from None
            except (requests.ConnectionError, requests.Timeout):
                raise SourceError(
                    "Could not reach the X API (network error or timeout); check the connection "
                    "and try again."
                ) from None
            except requests.RequestException:
                raise SourceError("The request to the X API failed before X answered.") from None
            except (KeyError, TypeError, ValueError, AttributeError):
                # tweepy's own parsing of a malformed response (e.g. a non-numeric reset header).
                raise _unreadable() from None
        raise AssertionError("unreachable")  # pragma: no cover


def tweet_from_v2(item: object) -> RawTweet | None:
    """A v2 post object as a :class:`RawTweet`, or ``None`` when it carries no usable id or text."""
    if isinstance(item, tweepy.Tweet):
        item = item.data
    if not isinstance(item, dict):
        return None
    tweet_id = item.get("id")
    text = item.get("text")
    if (
        not isinstance(tweet_id, str | int)
        or isinstance(tweet_id, bool)
        or str(tweet_id) == ""
        or not isinstance(text, str)
    ):
        return None
    note = item.get("note_tweet")
    if isinstance(note, dict) and isinstance(note.get("text"), str) and note["text"]:
        text = note["text"]
    references = item.get("referenced_tweets")
    kinds = (
        {
            ref["type"]
            for ref in references
            if isinstance(ref, dict) and isinstance(ref.get("type"), str)
        }
        if isinstance(references, list)
        else set()
    )
    return RawTweet(
        id=str(tweet_id),
        created_at=_parse_time(item.get("created_at")),
        text=text,
        is_retweet=_RETWEETED in kinds,
        is_reply=_REPLIED_TO in kinds or item.get("in_reply_to_user_id") not in (None, ""),
        source=XApiSource.kind,
    )


def _as_payload(response: object) -> dict[str, Any]:
    """Whatever ``return_type`` the client has, the response as the API's JSON object."""
    if isinstance(response, tweepy.Response):
        data = response.data
        if isinstance(data, list):
            data = [getattr(item, "data", item) for item in data]
        elif data is not None:
            data = getattr(data, "data", data)
        return {"data": data, "errors": response.errors, "meta": response.meta or {}}
    if isinstance(response, requests.Response):
        response = response.json()
    if not isinstance(response, dict):
        raise _unreadable()
    return response


def _newest_first(tweets: list[RawTweet]) -> list[RawTweet]:
    """X ids are time-ordered snowflakes, so they sort posts even when ``created_at`` is absent."""
    return sorted(tweets, key=lambda t: int(t.id) if t.id.isdigit() else -1, reverse=True)


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _status(error: tweepy.HTTPException) -> int | str:
    return getattr(error.response, "status_code", None) or "?"


def _details(errors: object) -> str:
    """The API's own error details, joined: X explains itself in ``detail``/``title``."""
    if not isinstance(errors, list):
        return ""
    parts = []
    for error in errors:
        if isinstance(error, dict):
            parts.append(
                str(error.get("detail") or error.get("title") or error.get("message") or "")
            )
        elif isinstance(error, str):
            parts.append(error)
    return " ".join(p for p in parts if p)


def _user_errors_sentence(handle: Handle, errors: object) -> SourceError:
    details = _details(errors).lower()
    if "suspended" in details:
        return SourceError(f"X has suspended {handle}, so its posts cannot be read.")
    if errors:
        return SourceError(f"X has no user {handle}.")
    return _unreadable()


def _timeline_errors_sentence(handle: Handle, errors: object) -> SourceError:
    details = _details(errors).lower()
    if "not authorized" in details or "protected" in details:
        return SourceError(
            f"X does not let this app read {handle}'s posts (the account is protected)."
        )
    if "suspended" in details:
        return SourceError(f"X has suspended {handle}, so its posts cannot be read.")
    return SourceError(f"X could not list {handle}'s posts: {_shorten(_details(errors))}")


def _http_error_sentence(handle: Handle, error: tweepy.HTTPException) -> SourceError:
    status = _status(error)
    if isinstance(error, tweepy.Unauthorized):
        return SourceError("X rejected the bearer token (401 Unauthorized): check X_BEARER_TOKEN.")
    if status == 402:
        return SourceError(
            "Your X API account has no credits left (402 Payment Required): buy credits in the "
            "X developer console, or use an X archive instead."
        )
    if isinstance(error, tweepy.Forbidden):
        details = " ".join(error.api_messages).lower() + " " + _details(error.api_errors).lower()
        if "suspended" in details:
            return SourceError(f"X has suspended {handle}, so its posts cannot be read.")
        return SourceError(
            f"X refused to read {handle} (403 Forbidden): the account may be protected or "
            "suspended, or your app's plan may not include this endpoint."
        )
    if isinstance(error, tweepy.NotFound):
        return SourceError(f"X has no user {handle}.")
    if isinstance(error, tweepy.TooManyRequests):
        when = _utc_time(error.reset_time)
        if when is not None:
            return SourceError(f"X's rate limit is used up; it resets at {when}.")
        return SourceError("X's rate limit is used up; try again in 15 minutes.")
    detail = _shorten(" ".join(error.api_messages)) if error.api_messages else ""
    suffix = f": {detail}" if detail else "."
    return SourceError(f"X refused the request for {handle} (HTTP {status}){suffix}")


def _utc_time(epoch_seconds: object) -> str | None:
    """An ``x-rate-limit-reset`` value (epoch seconds) as a UTC time a person can read."""
    if not isinstance(epoch_seconds, int | float) or isinstance(epoch_seconds, bool):
        return None
    try:
        moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text if text.endswith((".", "…")) else text + "."


def _unreadable() -> SourceError:
    return SourceError("The X API sent a response that could not be read; try again later.")
