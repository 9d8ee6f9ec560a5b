"""The Bluesky source: a user's public feed from ``app.bsky.feed.getAuthorFeed`` (free, no login).

The feed is paged through ``cursor`` with a hard cap on pages; reposts come back flagged
``is_retweet``, shortened links are restored from their facets and the text is escaped as X
escapes it, so cleaning treats both networks alike (docs/sources.md, "Bluesky").
"""

from __future__ import annotations

import html
import math
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any

import requests

from training.errors import InputError, SourceError
from training.handles import PLATFORM_NAMES, Handle
from training.sources.base import API_TWEET_CAP, RawTweet, add_unseen, check_post_limit
from training.sources.http import Answer, BoundedHttp, Resolver, check_base_url, load_json

DEFAULT_BASE_URL = "https://public.api.bsky.app"
FEED_ENDPOINT = "/xrpc/app.bsky.feed.getAuthorFeed"
#: getAuthorFeed returns at most 100 items a page.
PAGE_SIZE = 100
#: The most posts one fetch may ask for; bounds the pages walked whatever ``limit`` says.
MAX_LIMIT = 100_000
POST_RECORD = "app.bsky.feed.post"
LINK_FEATURE = "app.bsky.richtext.facet#link"
REPOST_REASON = "app.bsky.feed.defs#reasonRepost"
#: A page the server failed (5xx) is retried once after this pause; a second failure is reported.
SERVER_ERROR_RETRY_DELAY_S = 2.0
#: Defaults of the bounds on one response's size and on a whole fetch's time (settings
#: DOPPELTWEET_BLUESKY_MAX_RESPONSE_MB and DOPPELTWEET_BLUESKY_DEADLINE_S).
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
DEFAULT_DEADLINE_S = 600.0


class BlueskySource:
    """A Bluesky user's public posts and reposts, newest first, as the AppView orders them."""

    kind = "bluesky"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        limit: int = API_TWEET_CAP,
        session: requests.Session | None = None,
        timeout: float = 20.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline_s: float = DEFAULT_DEADLINE_S,
        allow_private_servers: bool = False,
        resolver: Resolver | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url, "Bluesky", DEFAULT_BASE_URL)
        self.limit = check_post_limit(limit, "Bluesky", MAX_LIMIT)
        self._http = BoundedHttp(
            "Bluesky",
            session=session,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
            deadline_s=deadline_s,
            reading="the Bluesky feed",
            settings_prefix="DOPPELTWEET_BLUESKY",
            allow_private_servers=allow_private_servers,
            resolver=resolver,
        )
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.deadline_s = deadline_s

    def __repr__(self) -> str:
        return f"BlueskySource(base_url={self.base_url!r}, limit={self.limit})"

    def fetch(self, handle: Handle) -> list[RawTweet]:
        """Page through the author feed until ``limit`` posts, the last page or the page cap."""
        if handle.platform != "bluesky":
            raise InputError(
                f"Bluesky reads domain handles such as bluesky:alice.bsky.social, not the "
                f"{PLATFORM_NAMES[handle.platform]} handle {handle}."
            )
        # Pages can come back short (the server filters replies out), so allow slack, not forever.
        max_pages = 3 * math.ceil(self.limit / PAGE_SIZE) + 1
        # However slowly a server answers (even one byte at a time), the whole walk ends here.
        self._http.start()
        posts: list[RawTweet] = []
        seen: set[Hashable] = set()
        cursors: set[str] = set()
        cursor: str | None = None
        for _ in range(max_pages):
            payload = self._get_page(handle, cursor, self.limit - len(posts))
            page, cursor = parse_feed_page(payload)
            if add_unseen(posts, page, seen, self.limit, key=lambda p: (p.id, p.is_retweet)):
                return posts
            if not payload["feed"] or cursor is None or cursor in cursors:
                break
            cursors.add(cursor)
        return posts

    def _get_page(self, handle: Handle, cursor: str | None, wanted: int) -> Any:
        params = {
            "actor": handle.name,
            "limit": str(max(1, min(PAGE_SIZE, wanted))),
            "filter": "posts_no_replies",
        }
        if cursor is not None:
            params["cursor"] = cursor
        url = self.base_url + FEED_ENDPOINT
        response = self._http.get(url, params, retry_5xx_after=SERVER_ERROR_RETRY_DELAY_S)
        if response.status_code != 200:
            raise _status_sentence(handle, response, self.base_url)
        return load_json(response, "Bluesky")


def parse_feed_page(payload: object) -> tuple[list[RawTweet], str | None]:
    """A getAuthorFeed response as (posts, next cursor); items that are not posts are skipped."""
    if not isinstance(payload, dict) or not isinstance(payload.get("feed"), list):
        raise SourceError("Bluesky sent a response without a feed in it.")
    posts = [post for item in payload["feed"] if (post := post_from_feed_item(item)) is not None]
    cursor = payload.get("cursor")
    return posts, cursor if isinstance(cursor, str) and cursor else None


def post_from_feed_item(item: object) -> RawTweet | None:
    """One ``app.bsky.feed.defs#feedViewPost`` as a :class:`RawTweet`, or ``None`` if no post."""
    if not isinstance(item, dict):
        return None
    post = item.get("post")
    if not isinstance(post, dict):
        return None
    uri, record = post.get("uri"), post.get("record")
    if not isinstance(uri, str) or not uri or not isinstance(record, dict):
        return None
    if record.get("$type", POST_RECORD) != POST_RECORD or not isinstance(record.get("text"), str):
        return None
    reason = item.get("reason")
    is_repost = isinstance(reason, dict) and reason.get("$type") == REPOST_REASON
    # A repost appears in the feed when it was reposted, not when the original was written.
    created_at = _parse_time(reason.get("indexedAt")) if is_repost else None
    created_at = (
        created_at or _parse_time(record.get("createdAt")) or _parse_time(post.get("indexedAt"))
    )
    return RawTweet(
        id=uri,
        created_at=created_at,
        text=html.escape(expand_links(record["text"], record.get("facets")), quote=False),
        is_retweet=is_repost,
        is_reply=isinstance(record.get("reply"), dict),
        source=BlueskySource.kind,
    )


def expand_links(text: str, facets: object) -> str:
    """The post text with each link facet's (often shortened) display text replaced by its URL.

    Facet indexes count UTF-8 bytes; a facet whose range is out of bounds, overlaps another or
    cuts a character in half is left alone rather than trusted.
    """
    if not isinstance(facets, list) or not facets:
        return text
    links: list[tuple[int, int, str]] = []
    for facet in facets:
        if not isinstance(facet, dict):
            continue
        index, features = facet.get("index"), facet.get("features")
        if not isinstance(index, dict) or not isinstance(features, list):
            continue
        start, end = index.get("byteStart"), index.get("byteEnd")
        uri = next(
            (
                f.get("uri")
                for f in features
                if isinstance(f, dict) and f.get("$type") == LINK_FEATURE
            ),
            None,
        )
        if (
            isinstance(start, int)
            and isinstance(end, int)
            and not isinstance(start, bool)
            and not isinstance(end, bool)
            and isinstance(uri, str)
            and uri.startswith(("http://", "https://"))
            and not any(ch.isspace() for ch in uri)
        ):
            links.append((start, end, uri))
    data = text.encode("utf-8", errors="surrogatepass")
    pieces: list[bytes] = []
    position = 0
    for start, end, uri in sorted(links):
        if not position <= start < end <= len(data):
            continue
        try:
            data[position:start].decode("utf-8")
            data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            continue
        pieces += [data[position:start], uri.encode("utf-8")]
        position = end
    if not pieces:
        return text
    pieces.append(data[position:])
    try:
        return b"".join(pieces).decode("utf-8")
    except UnicodeDecodeError:
        return text


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _status_sentence(handle: Handle, response: Answer, base_url: str) -> SourceError:
    status = response.status_code
    error, message = _xrpc_error(response)
    if status == 400:
        if error == "NotFound" or "profile not found" in message.lower():
            return SourceError(f"Bluesky has no user {handle}.")
        if error == "AccountTakedown":
            return SourceError(f"Bluesky has taken down {handle}, so its posts cannot be read.")
        if error == "AccountDeactivated":
            return SourceError(f"{handle} has deactivated their Bluesky account.")
        if error in ("BlockedActor", "BlockedByActor"):
            return SourceError(f"Bluesky does not show {handle}'s posts to this reader (blocked).")
        if message:
            return SourceError(f"Bluesky refused the request for {handle}: {_shorten(message)}")
        return SourceError(f"Bluesky refused the request for {handle} (HTTP 400).")
    if status == 429:
        when = _utc_time(response.headers.get("ratelimit-reset"))
        if when is not None:
            return SourceError(f"Bluesky is rate limiting requests; try again after {when}.")
        return SourceError("Bluesky is rate limiting requests; try again in a few minutes.")
    if status >= 500:
        return SourceError(
            f"Bluesky's server failed (HTTP {status}) while reading {handle}; try again later."
        )
    if status == 404:
        return SourceError(
            f"{base_url} has no getAuthorFeed endpoint (HTTP 404); check the Bluesky API base URL."
        )
    return SourceError(f"Bluesky answered HTTP {status} while reading {handle}.")


def _xrpc_error(response: Answer) -> tuple[str, str]:
    """XRPC errors are ``{"error": "Name", "message": "..."}``; anything else reads as empty."""
    try:
        body: Any = response.json()
    except (ValueError, RecursionError):
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    error, message = body.get("error"), body.get("message")
    return (error if isinstance(error, str) else ""), (message if isinstance(message, str) else "")


def _utc_time(epoch_seconds: str | None) -> str | None:
    """A ``ratelimit-reset`` header (epoch seconds) as a UTC time a person can read."""
    try:
        moment = datetime.fromtimestamp(int(epoch_seconds or ""), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text if text.endswith((".", "…", "!", "?")) else text + "."
