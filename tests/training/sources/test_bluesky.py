"""BlueskySource against a real HTTP server on 127.0.0.1 serving getAuthorFeed-shaped answers."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from training.errors import InputError, SourceError
from training.handles import Handle
from training.sources import bluesky
from training.sources.bluesky import (
    FEED_ENDPOINT,
    BlueskySource,
    expand_links,
    parse_feed_page,
    post_from_feed_item,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "bluesky"
ALICE = Handle("alice.bsky.social", "bluesky")

#: (status, headers, body) answered for one request's query parameters.
Reply = tuple[int, dict[str, str], bytes]
Route = Callable[[dict[str, str]], Reply]


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, headers or {}, json.dumps(body).encode()


class FeedServer:
    """A loopback AppView: ``route`` answers each getAuthorFeed request; queries are recorded."""

    def __init__(self) -> None:
        self.route: Route = lambda query: _json({"feed": []})
        self.queries: list[dict[str, str]] = []
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                server.paths.append(url.path)
                if url.path != FEED_ENDPOINT:
                    status, headers, body = _json({"error": "MethodNotImplemented"}, 404)
                else:
                    server.queries.append(query)
                    status, headers, body = server.route(query)
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def source(self, **kwargs: Any) -> BlueskySource:
        return BlueskySource(allow_private_servers=True, base_url=self.base_url, **kwargs)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bluesky, "SERVER_ERROR_RETRY_DELAY_S", 0.0)


def _alice_pages(query: dict[str, str]) -> Reply:
    if query.get("actor") != "alice.bsky.social":
        return 400, {}, _fixture("profile_not_found.json")
    if "cursor" not in query:
        return 200, {}, _fixture("alice_feed_page1.json")
    if query["cursor"] == "2024-11-24T20:57:40.870Z":
        return 200, {}, _fixture("alice_feed_page2.json")
    return _json({"error": "InvalidRequest", "message": "bad cursor"}, 400)


def _item(n: int) -> dict[str, Any]:
    return {
        "post": {
            "uri": f"at://did:plc:4f3z2ypgx6cvkz5qkd7r6e3a/app.bsky.feed.post/{n:013d}",
            "cid": f"bafyrei{n:052d}",
            "author": {"did": "did:plc:4f3z2ypgx6cvkz5qkd7r6e3a", "handle": "alice.bsky.social"},
            "record": {
                "$type": "app.bsky.feed.post",
                "text": f"numbered post {n}",
                "createdAt": "2024-11-25T08:12:40.311Z",
            },
            "indexedAt": "2024-11-25T08:12:40.311Z",
        }
    }


# --------------------------------------------------------------------------- the feed


def test_two_pages_are_read_through_the_cursor_with_reposts_and_threads(
    server: FeedServer,
) -> None:
    server.route = _alice_pages

    posts = server.source().fetch(ALICE)

    assert [p.text for p in posts] == [
        "good morning bluesky ☀️ the coffee is strong and the build is green, "
        "thanks @bob.example.com",
        # The app showed "alice.example.com/blog/packi..."; the link facet holds the real URL.
        "New blog post 📝 on packing token streams into fixed blocks: "
        "https://alice.example.com/blog/packing",
        "hot take: every side project deserves a README written before the code",
        "2/ and the second half of the thread: measure before you optimise, then measure again",
        "1/ a thread about profiling python on two cores",
        "Quoting this because it is exactly right &amp; worth repeating",  # escaped as X does
        "",
        "first post here. hello everyone 👋\nlooking forward to the quieter timeline",
    ]
    assert [p.is_retweet for p in posts] == [False, False, True, False, False, False, False, False]
    assert [p.is_reply for p in posts] == [False, False, False, True, False, False, False, False]
    assert all(p.source == "bluesky" for p in posts)
    assert posts[0].id == "at://did:plc:4f3z2ypgx6cvkz5qkd7r6e3a/app.bsky.feed.post/3lbvkx2tq7s2a"
    assert posts[0].created_at == datetime(2024, 11, 25, 8, 12, 40, 311000, tzinfo=UTC)
    # A repost is dated when it was reposted, not when Bob wrote it.
    assert posts[2].created_at == datetime(2024, 11, 25, 7, 2, 17, 640000, tzinfo=UTC)
    first, second = server.queries
    assert first == {"actor": "alice.bsky.social", "limit": "100", "filter": "posts_no_replies"}
    assert second["cursor"] == "2024-11-24T20:57:40.870Z"


def test_the_limit_is_honoured_and_later_pages_ask_only_for_what_is_missing(
    server: FeedServer,
) -> None:
    server.route = _alice_pages

    posts = server.source(limit=6).fetch(ALICE)

    assert len(posts) == 6
    assert [q["limit"] for q in server.queries] == ["6", "1"]


def test_a_long_feed_stops_at_the_limit_without_an_extra_request(server: FeedServer) -> None:
    def endless(query: dict[str, str]) -> Reply:
        start = int(query.get("cursor", "0"))
        size = int(query["limit"])
        feed = [_item(n) for n in range(start, start + size)]
        return _json({"feed": feed, "cursor": str(start + size)})

    server.route = endless

    posts = server.source(limit=250).fetch(ALICE)

    assert len(posts) == 250 and len({p.id for p in posts}) == 250
    assert [q["limit"] for q in server.queries] == ["100", "100", "50"]


def test_a_feed_that_never_ends_is_walked_a_bounded_number_of_pages(server: FeedServer) -> None:
    counter = iter(range(1_000_000))

    def one_post_per_page(query: dict[str, str]) -> Reply:
        n = next(counter)
        return _json({"feed": [_item(n)], "cursor": f"c{n}"})

    server.route = one_post_per_page

    posts = server.source(limit=100).fetch(ALICE)

    assert len(server.queries) == 3 * 1 + 1
    assert len(posts) == 4


def test_a_repeated_cursor_ends_the_walk(server: FeedServer) -> None:
    counter = iter(range(1_000_000))
    server.route = lambda query: _json({"feed": [_item(next(counter))], "cursor": "stuck"})

    posts = server.source().fetch(ALICE)

    assert len(posts) == 2 and len(server.queries) == 2


def test_an_empty_page_ends_the_walk_even_with_a_cursor(server: FeedServer) -> None:
    server.route = lambda query: _json({"feed": [], "cursor": "more"})

    assert server.source().fetch(ALICE) == []
    assert len(server.queries) == 1


def test_items_that_are_not_posts_are_skipped(server: FeedServer) -> None:
    odd = [
        {"post": {"uri": "at://x/app.bsky.feed.post/1", "record": {"$type": "app.bsky.feed.like"}}},
        {"post": {"$type": "app.bsky.feed.defs#blockedPost", "uri": "at://x/post/2"}},
        {"notapost": True},
        _item(3),
    ]
    server.route = lambda query: _json({"feed": odd})

    (post,) = server.source().fetch(ALICE)

    assert post.text == "numbered post 3"


def test_text_is_html_escaped_as_x_escapes_it_so_cleaning_restores_it_exactly(
    server: FeedServer,
) -> None:
    item = _item(1)
    item["post"]["record"]["text"] = "a <b> & c, literally &amp; here"
    server.route = lambda query: _json({"feed": [item]})

    (post,) = server.source().fetch(ALICE)

    assert post.text == "a &lt;b&gt; &amp; c, literally &amp;amp; here"


def test_the_same_post_twice_is_kept_once(server: FeedServer) -> None:
    server.route = lambda query: _json({"feed": [_item(1), _item(1), _item(2)]})

    assert [p.text for p in server.source().fetch(ALICE)] == ["numbered post 1", "numbered post 2"]


def _link(start: int, end: int, uri: str) -> dict[str, Any]:
    return {
        "$type": "app.bsky.richtext.facet",
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": uri}],
        "index": {"byteStart": start, "byteEnd": end},
    }


def test_links_are_expanded_by_utf8_byte_offsets() -> None:
    text = "café ☕ see a.io/x... and b.io/y..."
    a = text.encode().index(b"a.io")
    b = text.encode().index(b"b.io")
    facets = [_link(b, b + 9, "https://b.io/yes"), _link(a, a + 9, "http://a.io/xyz")]

    assert expand_links(text, facets) == "café ☕ see http://a.io/xyz and https://b.io/yes"


@pytest.mark.parametrize(
    "facets",
    [
        [_link(0, 99, "https://x.io")],  # past the end
        [_link(4, 2, "https://x.io")],  # backwards
        [_link(1, 4, "https://x.io")],  # ends inside "é" (bytes 3 and 4)
        [_link(0, 4, "javascript:alert(1)")],  # not a web link
        [_link(0, 4, "https://x.io/a b")],  # whitespace would split the URL
        [{"$type": "app.bsky.richtext.facet", "features": [{"$type": "x#mention"}]}],
        "not a list",
        [None, {"index": "x", "features": 3}],
    ],
)
def test_untrustworthy_facets_leave_the_text_alone(facets: Any) -> None:
    assert expand_links("cafés are nice", facets) == "cafés are nice"


def test_overlapping_facets_expand_only_the_first() -> None:
    text = "see x.io/abc now"
    start = text.index("x.io")
    facets = [
        _link(start, start + 8, "https://x.io/abc"),
        _link(start + 2, start + 6, "https://y.io"),
    ]

    assert expand_links(text, facets) == "see https://x.io/abc now"


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            (400, {}, _fixture("profile_not_found.json")),
            "Bluesky has no user @alice.bsky.social.",
        ),
        (
            (400, {}, _fixture("account_takedown.json")),
            "Bluesky has taken down @alice.bsky.social, so its posts cannot be read.",
        ),
        (
            _json({"error": "BlockedActor", "message": "Requester has blocked actor"}, 400),
            "Bluesky does not show @alice.bsky.social's posts to this reader (blocked).",
        ),
        (
            _json({"error": "InvalidRequest", "message": "Error: limit must be <= 100"}, 400),
            "Bluesky refused the request for @alice.bsky.social: Error: limit must be <= 100.",
        ),
        (
            _json({"error": "RateLimitExceeded"}, 429, {"ratelimit-reset": "1764080700"}),
            "Bluesky is rate limiting requests; try again after 2025-11-25 14:25 UTC.",
        ),
        (
            _json({"error": "RateLimitExceeded"}, 429),
            "Bluesky is rate limiting requests; try again in a few minutes.",
        ),
        (
            (502, {}, b"<html>Bad Gateway</html>"),
            "Bluesky's server failed (HTTP 502) while reading @alice.bsky.social; try again later.",
        ),
        (
            _json({"error": "AuthMissing"}, 401),
            "Bluesky answered HTTP 401 while reading @alice.bsky.social.",
        ),
        (
            (200, {}, b'{"feed": [{"post": {"uri": "at://'),
            "Bluesky sent a response that is not valid JSON.",
        ),
        ((200, {}, b"<html>maintenance</html>"), "Bluesky sent a response that is not valid JSON."),
        (_json({"posts": []}), "Bluesky sent a response without a feed in it."),
        (_json(["feed"]), "Bluesky sent a response without a feed in it."),
    ],
)
def test_each_failure_is_one_clear_sentence(server: FeedServer, reply: Reply, message: str) -> None:
    server.route = lambda query: reply

    with pytest.raises(SourceError) as caught:
        server.source().fetch(ALICE)

    assert str(caught.value) == message
    assert caught.value.__cause__ is None
    assert len(server.queries) == (2 if reply[0] >= 500 else 1)  # one retry on a 5xx only


def test_a_server_error_is_retried_once_and_then_the_page_is_read(server: FeedServer) -> None:
    replies = iter([(503, {}, b"busy"), _json({"feed": [_item(1)]})])
    server.route = lambda query: next(replies)

    assert len(server.source().fetch(ALICE)) == 1
    assert len(server.queries) == 2


def test_an_unknown_handle_on_a_later_page_is_still_one_sentence(server: FeedServer) -> None:
    server.route = lambda query: (
        _json({"feed": [_item(1)], "cursor": "next"})
        if "cursor" not in query
        else (400, {}, _fixture("profile_not_found.json"))
    )

    with pytest.raises(SourceError, match=r"^Bluesky has no user @alice\.bsky\.social\.$"):
        server.source().fetch(ALICE)


def test_a_wrong_base_url_is_reported_as_such(server: FeedServer) -> None:
    source = BlueskySource(allow_private_servers=True, base_url=server.base_url + "/not-an-appview")

    with pytest.raises(SourceError) as caught:
        source.fetch(ALICE)

    assert str(caught.value) == (
        f"{server.base_url}/not-an-appview has no getAuthorFeed endpoint (HTTP 404); "
        "check the Bluesky API base URL."
    )


def test_an_unreachable_server_is_one_sentence() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = BlueskySource(allow_private_servers=True, base_url=f"http://127.0.0.1:{port}")

    with pytest.raises(SourceError) as caught:
        source.fetch(ALICE)

    assert str(caught.value) == "That server cannot be reached from this bot."


def test_a_server_that_does_not_answer_in_time_is_one_sentence(server: FeedServer) -> None:
    def slow(query: dict[str, str]) -> Reply:
        time.sleep(1.0)
        return _json({"feed": []})

    server.route = slow

    with pytest.raises(SourceError, match=r"^Bluesky did not answer within 0\.2 seconds"):
        server.source(timeout=0.2).fetch(ALICE)


def test_an_x_handle_is_refused_without_a_request(server: FeedServer) -> None:
    with pytest.raises(InputError, match=r"^Bluesky reads domain handles"):
        server.source().fetch(Handle("jack"))
    assert server.paths == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "public.api.bsky.app"}, "The Bluesky API base URL must look like"),
        ({"base_url": "ftp://public.api.bsky.app"}, "The Bluesky API base URL must look like"),
        ({"base_url": "https://x.test/?a=1"}, "The Bluesky API base URL must look like"),
        ({"limit": 0}, "The Bluesky post limit must be between 1 and 100000"),
        ({"timeout": 0}, "The Bluesky request timeout must be positive"),
    ],
)
def test_bad_construction_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=f"^{re.escape(message)}"):
        BlueskySource(**kwargs)


def test_defaults_point_at_the_public_appview() -> None:
    source = BlueskySource()

    assert source.base_url == "https://public.api.bsky.app"
    assert source.limit == 3200 and source.kind == "bluesky"


# --------------------------------------------------------------------------- robustness

_any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)
_record = st.fixed_dictionaries(
    {},
    optional={
        "$type": st.sampled_from(["app.bsky.feed.post", "app.bsky.feed.like"]) | _any_json,
        "text": st.text(max_size=20) | _any_json,
        "createdAt": st.sampled_from(["2024-11-25T08:12:40.311Z", "yesterday", ""]) | _any_json,
        "reply": _any_json,
    },
)
_feed_item = st.fixed_dictionaries(
    {},
    optional={
        "post": st.fixed_dictionaries(
            {},
            optional={
                "uri": st.text(max_size=20) | _any_json,
                "record": _record | _any_json,
                "indexedAt": _any_json,
            },
        )
        | _any_json,
        "reason": st.fixed_dictionaries(
            {},
            optional={
                "$type": st.just("app.bsky.feed.defs#reasonRepost") | _any_json,
                "indexedAt": st.text(max_size=30) | _any_json,
            },
        )
        | _any_json,
    },
)
_page = st.fixed_dictionaries(
    {},
    optional={
        "feed": st.lists(_feed_item | _any_json, max_size=5) | _any_json,
        "cursor": _any_json,
    },
)


@given(payload=_page | _any_json)
def test_the_page_parser_never_crashes_on_arbitrary_json(payload: Any) -> None:
    try:
        posts, cursor = parse_feed_page(payload)
    except SourceError as error:
        assert str(error) == "Bluesky sent a response without a feed in it."
    else:
        assert cursor is None or (isinstance(cursor, str) and cursor)
        assert all(isinstance(p.text, str) and p.id for p in posts)


@given(
    text=st.text(max_size=30),
    facets=st.lists(
        st.builds(
            _link,
            st.integers(-3, 40),
            st.integers(-3, 40),
            st.sampled_from(["https://x.io/a", "http://ü.de", "nope"]),
        )
        | _any_json,
        max_size=4,
    )
    | _any_json,
)
def test_link_expansion_never_crashes_and_keeps_text_outside_the_links(
    text: str, facets: Any
) -> None:
    expanded = expand_links(text, facets)
    assert isinstance(expanded, str)
    if not isinstance(facets, list) or not facets:
        assert expanded == text


@given(item=_feed_item | _any_json)
def test_a_feed_item_is_a_post_or_none_never_an_exception(item: Any) -> None:
    post = post_from_feed_item(item)
    assert post is None or (post.source == "bluesky" and isinstance(post.id, str) and post.id)
