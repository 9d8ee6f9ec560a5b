"""The Mastodon source: a user's public posts from their server's public API (free, no login).

The account is looked up, then its statuses are paged newest first (``max_id``) with a hard cap on
pages. The rules are the Mastodon archive's (:mod:`training.sources.fediverse`): public and
unlisted posts only, content-warned posts skipped and counted, boosts flagged ``is_retweet``
(docs/sources.md, "Mastodon").
"""

from __future__ import annotations

import math
import re
from datetime import UTC
from typing import Any

import requests

from training.errors import InputError, SourceError
from training.handles import Handle
from training.sources.base import API_TWEET_CAP, RawTweet, check_post_limit
from training.sources.fediverse import (
    READABLE_VISIBILITIES,
    SkipCounts,
    html_to_text,
    is_content_warned,
    parse_time,
)
from training.sources.http import Answer, BoundedHttp, Resolver, check_base_url, load_json

KIND = "mastodon"
LOOKUP_ENDPOINT = "/api/v1/accounts/lookup"
STATUSES_ENDPOINT = "/api/v1/accounts/{id}/statuses"
#: The most statuses Mastodon returns in one page.
PAGE_SIZE = 40
#: The most posts one fetch may ask for; bounds the pages walked whatever ``limit`` says.
MAX_LIMIT = 100_000
#: A page the server failed (5xx) is retried once after this pause; a second failure is reported.
SERVER_ERROR_RETRY_DELAY_S = 2.0
#: Defaults of the bounds on one response's size and on a whole fetch's time (settings
#: DOPPELTWEET_MASTODON_MAX_RESPONSE_MB and DOPPELTWEET_MASTODON_DEADLINE_S).
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
DEFAULT_DEADLINE_S = 600.0
#: Mastodon ids are decimal snowflakes; anything else is never put into a URL.
_ID = re.compile(r"[0-9A-Za-z]{1,40}")


class MastodonApiSource:
    """A Mastodon user's public and unlisted posts and boosts, newest first.

    ``base_url`` replaces ``https://<the handle's server>`` (tests serve the API on 127.0.0.1).
    """

    kind = KIND

    def __init__(
        self,
        *,
        base_url: str | None = None,
        limit: int = API_TWEET_CAP,
        session: requests.Session | None = None,
        timeout: float = 20.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline_s: float = DEFAULT_DEADLINE_S,
        allow_private_servers: bool = False,
        resolver: Resolver | None = None,
        include_sensitive: bool = False,
    ) -> None:
        self.base_url = (
            check_base_url(base_url, "Mastodon", "https://mastodon.social")
            if base_url is not None and base_url.strip()
            else None
        )
        self.limit = check_post_limit(limit, "Mastodon", MAX_LIMIT)
        self.include_sensitive = include_sensitive
        self._http = BoundedHttp(
            "Mastodon",
            session=session,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
            deadline_s=deadline_s,
            reading="the Mastodon posts",
            settings_prefix="DOPPELTWEET_MASTODON",
            allow_private_servers=allow_private_servers,
            resolver=resolver,
        )
        self._skipped = SkipCounts()

    def __repr__(self) -> str:
        return f"MastodonApiSource(base_url={self.base_url!r}, limit={self.limit})"

    def skip_counts(self) -> SkipCounts:
        """What the last :meth:`fetch` left out, for the data table."""
        return SkipCounts(self._skipped.content_warned, self._skipped.not_public)

    def fetch(self, handle: Handle) -> list[RawTweet]:
        """Look the account up, then page its statuses until ``limit`` posts or the last page."""
        if handle.platform != "mastodon" or handle.instance is None:
            raise InputError(
                f"The Mastodon API reads Mastodon handles such as mastodon:@alice@mastodon.social, "
                f"not {handle}."
            )
        base = self.base_url or f"https://{handle.instance}"
        self._skipped = SkipCounts()
        # However slowly a server answers (even one byte at a time), the whole walk ends here.
        self._http.start()
        account_id = self._lookup(handle, base)
        # Skipped posts take room in a page too, so allow slack, not forever.
        max_pages = 3 * math.ceil(self.limit / PAGE_SIZE) + 1
        posts: list[RawTweet] = []
        seen: set[str] = set()
        max_id: str | None = None
        for _ in range(max_pages):
            page = self._page(handle, base, account_id, max_id, self.limit - len(posts))
            if not page:
                break
            last_id: str | None = None
            for status in page:
                ident = status.get("id") if isinstance(status, dict) else None
                if not isinstance(ident, str) or not _ID.fullmatch(ident) or ident in seen:
                    continue
                seen.add(ident)
                last_id = ident
                post = self._post(status, account_id)
                if post is None:
                    continue
                posts.append(post)
                if len(posts) == self.limit:
                    return posts
            if last_id is None:  # nothing new on this page: the server repeats itself
                break
            max_id = last_id
        return posts

    def _post(self, status: dict[str, Any], account_id: str) -> RawTweet | None:
        account = status.get("account")
        if isinstance(account, dict) and str(account.get("id")) != account_id:
            return None  # not this account's status: never imported under its name
        if status.get("visibility") not in READABLE_VISIBILITIES:
            self._skipped.not_public += 1
            return None
        created_at = parse_time(status.get("created_at"))
        if isinstance(status.get("reblog"), dict):
            return RawTweet(str(status["id"]), created_at, "", True, False, KIND)
        if not self.include_sensitive and is_content_warned(
            status.get("spoiler_text"), status.get("sensitive")
        ):
            self._skipped.content_warned += 1
            return None
        content = status.get("content")
        return RawTweet(
            str(status["id"]),
            created_at,
            html_to_text(content) if isinstance(content, str) else "",
            False,
            status.get("in_reply_to_id") is not None,
            KIND,
        )

    def _lookup(self, handle: Handle, base: str) -> str:
        payload = self._get(handle, base, LOOKUP_ENDPOINT, {"acct": handle.user}, lookup=True)
        if not isinstance(payload, dict):
            raise SourceError("Mastodon sent an account lookup that is not an account.")
        ident, username = payload.get("id"), payload.get("username")
        if not isinstance(ident, str) or not _ID.fullmatch(ident):
            raise SourceError("Mastodon sent an account lookup without a valid account id.")
        if isinstance(username, str) and username.lower() != handle.user:
            raise SourceError(
                f"{handle.instance} answered the lookup of {handle} with another account "
                f"(@{username[:40]}), so nothing was read."
            )
        return ident

    def _page(
        self, handle: Handle, base: str, account_id: str, max_id: str | None, wanted: int
    ) -> list[Any]:
        params = {"limit": str(max(1, min(PAGE_SIZE, wanted)))}
        if max_id is not None:
            params["max_id"] = max_id
        path = STATUSES_ENDPOINT.format(id=account_id)
        payload = self._get(handle, base, path, params, lookup=False)
        if not isinstance(payload, list):
            raise SourceError("Mastodon sent a page of posts that is not a list of posts.")
        return payload

    def _get(
        self, handle: Handle, base: str, path: str, params: dict[str, str], *, lookup: bool
    ) -> Any:
        answer = self._http.get(base + path, params, retry_5xx_after=SERVER_ERROR_RETRY_DELAY_S)
        if answer.status_code != 200:
            raise _status_sentence(handle, answer, lookup=lookup)
        return load_json(answer, "Mastodon")


def _status_sentence(handle: Handle, answer: Answer, *, lookup: bool) -> SourceError:
    """One sentence for each way a Mastodon server refuses to show an account's posts."""
    status, server = answer.status_code, handle.instance
    if status in (401, 403):
        return SourceError(
            f"{server} shows posts only to signed-in servers (authorized fetch), so {handle} "
            "cannot be read without logging in; attach the account's Mastodon archive instead."
        )
    if status == 404:
        return SourceError(
            f"{server} has no account {handle}; check the name and the server."
            if lookup
            else f"{server} no longer shows the posts of {handle} (HTTP 404)."
        )
    if status == 410:
        return SourceError(f"{handle} is gone from {server} (suspended or deleted).")
    if status == 429:
        when = parse_time(answer.headers.get("X-RateLimit-Reset"))
        if when is not None:
            moment = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            return SourceError(f"{server} is rate limiting requests; try again after {moment}.")
        return SourceError(f"{server} is rate limiting requests; try again in a few minutes.")
    if status >= 500:
        return SourceError(
            f"{server}'s server failed (HTTP {status}) while reading {handle}; try again later."
        )
    return SourceError(f"{server} answered HTTP {status} while reading {handle}.")
