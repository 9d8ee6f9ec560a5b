"""MastodonApiSource against a real HTTP server on 127.0.0.1 serving the documented structure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.training.sources.mastodon_server import (
    ACCOUNT_ID,
    MastodonServer,
    Reply,
    Timeline,
    as_json,
    mixed_timeline,
    status,
)
from training.config import TrainingSettings
from training.errors import InputError, SourceError
from training.handles import parse_handle
from training.pipeline import collect, open_source
from training.sources import mastodon_api
from training.sources.mastodon_api import MastodonApiSource

ALICE = parse_handle("mastodon:@alice@social.example")


@pytest.fixture(autouse=True)
def _no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mastodon_api, "SERVER_ERROR_RETRY_DELAY_S", 0.0)


@pytest.fixture
def timeline() -> Timeline:
    return mixed_timeline()


@pytest.fixture
def server(timeline: Timeline) -> Iterator[MastodonServer]:
    with MastodonServer(timeline.route) as running:
        yield running


def test_lookup_then_statuses_with_only_public_and_unlisted_posts(server: MastodonServer) -> None:
    src = MastodonApiSource(allow_private_servers=True, base_url=server.base_url)
    posts = src.fetch(ALICE)

    assert server.requests[0] == ("/api/v1/accounts/lookup", {"acct": "alice"})
    assert not any("SECRET" in p.text for p in posts)
    assert [(p.is_retweet, p.is_reply) for p in posts] == [
        (False, True),
        (True, False),
        (False, False),
        (False, False),
    ]
    assert [p.text for p in posts if not p.is_retweet] == [
        "@bob thanks for the tip\n\nsecond\nline",
        "unlisted with a link https://example.com/a/very/long/path",
        "public post about &amp; tea time today",
    ]
    assert all(p.source == "mastodon" for p in posts)
    assert posts[0].created_at is not None and posts[0].created_at.tzinfo is not None
    counts = src.skip_counts()
    assert (counts.content_warned, counts.not_public) == (2, 2)


def test_content_warned_posts_can_be_included(server: MastodonServer) -> None:
    posts = MastodonApiSource(
        allow_private_servers=True, base_url=server.base_url, include_sensitive=True
    ).fetch(ALICE)
    assert {"behind a warning", "a sensitive picture"} <= {p.text for p in posts}
    assert (
        MastodonApiSource(allow_private_servers=True, base_url=server.base_url)
        .skip_counts()
        .content_warned
        == 0
    )


def test_pages_follow_max_id_until_an_empty_page(server: MastodonServer, timeline) -> None:
    timeline.statuses = [status(n, f"<p>post number {n} here</p>") for n in range(90, 0, -1)]
    posts = MastodonApiSource(allow_private_servers=True, base_url=server.base_url).fetch(ALICE)

    assert len(posts) == 90 and len({p.id for p in posts}) == 90
    assert [p.text for p in posts[:2]] == ["post number 90 here", "post number 89 here"]
    queries = server.status_queries()
    assert [q.get("max_id") for q in queries] == [
        None,
        str(110000000000000000 + 51),
        str(110000000000000000 + 11),
        str(110000000000000000 + 1),
    ]
    assert all(q["limit"] == "40" for q in queries)


def test_the_limit_stops_reading_and_asks_only_for_what_is_missing(
    server: MastodonServer, timeline
) -> None:
    timeline.statuses = [status(n, f"<p>post number {n} here</p>") for n in range(200, 0, -1)]
    posts = MastodonApiSource(allow_private_servers=True, base_url=server.base_url, limit=50).fetch(
        ALICE
    )
    assert len(posts) == 50
    assert [q["limit"] for q in server.status_queries()] == ["40", "10"]


def test_a_server_that_repeats_its_page_cannot_loop_us() -> None:
    page = [status(n, f"<p>post number {n} here</p>") for n in range(40, 0, -1)]

    def route(path: str, query: dict[str, str]) -> Reply:
        if path.endswith("/lookup"):
            return as_json({"id": ACCOUNT_ID, "username": "alice"})
        return as_json(page)  # max_id ignored: the same page forever

    with MastodonServer(route) as server:
        posts = MastodonApiSource(allow_private_servers=True, base_url=server.base_url).fetch(ALICE)
        assert len(posts) == 40 and len(server.status_queries()) == 2


def test_pages_are_capped_whatever_the_server_sends() -> None:
    counter = iter(range(10**6, 0, -1))

    def route(path: str, query: dict[str, str]) -> Reply:
        if path.endswith("/lookup"):
            return as_json({"id": ACCOUNT_ID, "username": "alice"})
        # Always a full page of fresh posts, all of them followers-only (never imported).
        return as_json([status(next(counter), "x", visibility="private") for _ in range(40)])

    with MastodonServer(route) as server:
        src = MastodonApiSource(allow_private_servers=True, base_url=server.base_url, limit=40)
        assert src.fetch(ALICE) == []
        assert len(server.status_queries()) == 3 * 1 + 1
        assert src.skip_counts().not_public == 160


@pytest.mark.parametrize("code", [401, 403])
def test_authorized_fetch_is_one_sentence(code: int) -> None:
    refusal = as_json({"error": "This API requires an authenticated user"}, code)
    with MastodonServer(lambda p, q: refusal) as server, pytest.raises(SourceError) as caught:
        MastodonApiSource(allow_private_servers=True, base_url=server.base_url).fetch(ALICE)
    assert str(caught.value) == (
        "social.example shows posts only to signed-in servers (authorized fetch), so "
        "@alice@social.example cannot be read without logging in; attach the account's "
        "Mastodon archive instead."
    )


def test_an_unknown_account_is_one_sentence(server: MastodonServer) -> None:
    with pytest.raises(SourceError) as caught:
        MastodonApiSource(allow_private_servers=True, base_url=server.base_url).fetch(
            parse_handle("@nobody@social.example")
        )
    assert str(caught.value) == (
        "social.example has no account @nobody@social.example; check the name and the server."
    )


def test_a_lookup_answering_with_another_account_reads_nothing() -> None:
    with MastodonServer(lambda p, q: as_json({"id": "7", "username": "mallory"})) as server:
        with pytest.raises(SourceError, match="with another account"):
            MastodonApiSource(allow_private_servers=True, base_url=server.base_url).fetch(ALICE)
        assert server.status_queries() == []


def test_an_account_id_that_is_not_an_id_never_reaches_a_url() -> None:
    lookup = {"id": "../../admin", "username": "alice"}
    with MastodonServer(lambda p, q: as_json(lookup)) as server:
        with pytest.raises(SourceError, match="without a valid account id"):
            MastodonApiSource(allow_private_servers=True, base_url=server.base_url).fetch(ALICE)
        assert len(server.requests) == 1


def test_an_oversized_response_is_refused(server: MastodonServer, timeline) -> None:
    timeline.statuses = [status(n, "<p>" + "words " * 400 + "</p>") for n in range(40, 0, -1)]
    src = MastodonApiSource(
        allow_private_servers=True, base_url=server.base_url, max_response_bytes=20_000
    )
    with pytest.raises(SourceError) as caught:
        src.fetch(ALICE)
    assert str(caught.value) == (
        "Mastodon sent a response over 0.0190735 MB, the limit set by "
        "DOPPELTWEET_MASTODON_MAX_RESPONSE_MB."
    )


def test_a_server_dripping_bytes_is_stopped_at_the_deadline(server: MastodonServer) -> None:
    server.drip = 0.05
    src = MastodonApiSource(allow_private_servers=True, base_url=server.base_url, deadline_s=0.5)
    with pytest.raises(SourceError) as caught:
        src.fetch(ALICE)
    assert str(caught.value) == (
        "Reading the Mastodon posts took longer than 0.5 seconds, the limit set by "
        "DOPPELTWEET_MASTODON_DEADLINE_S; try again later."
    )


def test_a_server_error_is_retried_once_then_one_sentence() -> None:
    answers = iter([as_json({}, 502), as_json({"id": ACCOUNT_ID, "username": "alice"})])

    def route(path: str, query: dict[str, str]) -> Reply:
        if path.endswith("/lookup"):
            return next(answers)
        return as_json({"error": "boom"}, 503)

    with MastodonServer(route) as server:
        with pytest.raises(SourceError) as caught:
            MastodonApiSource(allow_private_servers=True, base_url=server.base_url).fetch(ALICE)
        assert len(server.requests) == 4  # lookup twice, the first page twice
    assert str(caught.value) == (
        "social.example's server failed (HTTP 503) while reading @alice@social.example; try "
        "again later."
    )


def test_rate_limiting_says_when_to_try_again() -> None:
    headers = {"X-RateLimit-Reset": "2026-12-02T18:05:00.000Z"}
    limited = as_json({"error": "Too many requests"}, 429, headers)
    with MastodonServer(lambda p, q: limited) as srv, pytest.raises(SourceError) as caught:
        MastodonApiSource(allow_private_servers=True, base_url=srv.base_url).fetch(ALICE)
    assert str(caught.value) == (
        "social.example is rate limiting requests; try again after 2026-12-02 18:05 UTC."
    )


def test_an_unreachable_server_is_one_sentence() -> None:
    with MastodonServer(lambda p, q: as_json({})) as server:
        base = server.base_url
    with pytest.raises(SourceError, match=r"^That server cannot be reached from this bot\.$"):
        MastodonApiSource(allow_private_servers=True, base_url=base, timeout=2).fetch(ALICE)


@pytest.mark.parametrize("handle", ["@alice", "bluesky:alice.bsky.social"], ids=["x", "bluesky"])
def test_only_mastodon_handles_are_read(handle: str) -> None:
    with pytest.raises(InputError, match="reads Mastodon handles such as"):
        MastodonApiSource(allow_private_servers=True, base_url="http://127.0.0.1:9").fetch(
            parse_handle(handle)
        )


@pytest.mark.parametrize("base", ["ftp://social.example", "social.example", "https://x.y/?a=1"])
def test_a_bad_base_url_is_one_sentence(base: str) -> None:
    with pytest.raises(InputError, match="The Mastodon API base URL must look like"):
        MastodonApiSource(allow_private_servers=True, base_url=base)


def test_the_real_base_url_is_the_handles_server() -> None:
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        raise OSError("no network in tests")

    src = MastodonApiSource(resolver=resolver)
    with pytest.raises(SourceError, match=r"^That server cannot be reached from this bot\.$"):
        src.fetch(ALICE)
    assert asked == [("social.example", 443)]


# -- through the pipeline: the data table's skipped rows ----------------------------------------


def settings_for(server: MastodonServer, **overrides: object) -> TrainingSettings:
    return TrainingSettings(
        _env_file=None, mastodon_api_base=server.base_url, allow_private_servers=True, **overrides
    )


def test_the_data_table_counts_the_skipped_posts(server: MastodonServer) -> None:
    table = collect([ALICE], [], settings_for(server))  # a Mastodon handle needs no spec
    [data] = table.handles
    assert data.counts() == {
        "tweets_downloaded": 4,
        "retweets": 1,
        "short_tweets": 0,
        "tweets_kept": 3,
        "content_warned": 2,
        "not_public": 2,
    }
    assert table.model_name == "alice_at_social.example"
    markdown = table.to_markdown().splitlines()
    assert markdown[0] == "| Data | alice@social.example |"
    assert markdown[-2:] == [
        "| Content-warned (skipped) | 2 |",
        "| Not public (skipped) | 2 |",
    ]


def test_open_source_reads_the_mastodon_spec_for_mastodon_handles_only(
    server: MastodonServer,
) -> None:
    settings = settings_for(server, max_tweets=100)
    src = open_source("mastodon", ALICE, settings)
    assert isinstance(src, MastodonApiSource) and src.limit == 100
    assert src.base_url == server.base_url
    with pytest.raises(InputError) as caught:
        open_source("mastodon", parse_handle("@alice"), settings)
    assert str(caught.value) == (
        "@alice is an X handle; name a Mastodon handle such as mastodon:@alice@mastodon.social."
    )
    with pytest.raises(InputError, match="is a Mastodon handle, so use --mastodon rather than"):
        open_source("api", ALICE, settings)
