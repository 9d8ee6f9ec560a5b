"""XApiSource against X's real recorded responses (tweepy's cassettes) and synthetic failures."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
import tweepy
import vcr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vcr.serializers import yamlserializer

from training.errors import DoppeltweetError, InputError, SourceError
from training.handles import Handle
from training.sources import xapi
from training.sources.base import API_TWEET_CAP
from training.sources.xapi import XApiSource, tweet_from_v2

CASSETTES = Path(__file__).parents[2] / "fixtures" / "tweepy_cassettes"
TOKEN = "AAAAsecret-bearer-token-0123456789"
API = "https://api.twitter.com/2"
USER_URL = re.compile(re.escape(API) + r"/users/by/username/\w+")
TWEETS_URL = re.compile(re.escape(API) + r"/users/\d+/tweets")


# --------------------------------------------------------------------------- recorded responses


def _path_case_insensitive(r1: Any, r2: Any) -> None:
    """X usernames are case-insensitive; Handle lower-cases them, the cassette says ``Twitter``."""
    assert r1.path.lower() == r2.path.lower(), f"{r1.path} != {r2.path}"


@pytest.fixture
def recorded_cassette(tmp_path: Path) -> Path:
    """tweepy's two recorded Client responses (user lookup, timeline) joined into one cassette."""
    interactions = []
    for name in ("test_client_get_user.yaml", "test_client_get_users_tweets.yaml"):
        interactions += yamlserializer.deserialize((CASSETTES / name).read_text())["interactions"]
    merged = tmp_path / "twitter.yaml"
    merged.write_text(yamlserializer.serialize({"interactions": interactions, "version": 1}))
    return merged


def _replayer() -> vcr.VCR:
    replayer = vcr.VCR(record_mode="none", decode_compressed_response=True)
    replayer.register_matcher("path_ci", _path_case_insensitive)
    # Our requests add query parameters (fields, page size) that tweepy's recording did not use.
    replayer.match_on = ("method", "scheme", "host", "path_ci")
    return replayer


def test_recorded_responses_give_the_real_posts_of_the_looked_up_user(
    recorded_cassette: Path,
) -> None:
    source = XApiSource(TOKEN, limit=2)
    sent: list[requests.PreparedRequest] = []
    source._client.session.hooks["response"].append(lambda r, *a, **k: sent.append(r.request))

    with _replayer().use_cassette(str(recorded_cassette)) as cassette:
        tweets = source.fetch(Handle("twitter"))

    assert cassette.all_played and cassette.play_count == 2
    lookup, timeline = (urlsplit(str(request.url)) for request in sent)
    assert lookup.path == "/2/users/by/username/twitter"
    # The id came from the recorded lookup ({"id": "783214", "username": "Twitter"}).
    assert timeline.path == "/2/users/783214/tweets"
    query = parse_qs(timeline.query)
    assert query["max_results"] == ["5"]
    fields = set(query["tweet.fields"][0].split(","))
    assert fields >= {"note_tweet", "referenced_tweets", "created_at"}
    assert "pagination_token" not in query
    assert [t.id for t in tweets] == ["1577730467436138524", "1565318587736285184"]
    assert tweets[0].text == (
        "whoa, it works\n\nnow everyone can mix GIFs, videos, and images in one Tweet, available "
        "on iOS and Android https://t.co/3OQ4eGsUku https://t.co/LVVolAQPZi"
    )
    assert tweets[1].text.startswith("if you see an edited Tweet it's because we're testing")
    assert all(t.source == "x-api" and t.created_at is None for t in tweets)
    assert not any(t.is_retweet or t.is_reply for t in tweets)


# --------------------------------------------------------------------------- synthetic responses


def _post(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(1_600_000_000_000_000_000 + n),
        "text": f"post number {n} about things",
        "edit_history_tweet_ids": [str(1_600_000_000_000_000_000 + n)],
        "created_at": "2022-10-07T22:43:18.000Z",
        **extra,
    }


def _page(posts: list[dict[str, Any]], next_token: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"result_count": len(posts)}
    if next_token:
        meta["next_token"] = next_token
    return {"data": posts, "meta": meta}


def _add_user(rsps: responses.RequestsMock, **user: Any) -> None:
    body = {"data": {"id": "783214", "name": "Jack", "username": "jack", **user}}
    rsps.add(responses.GET, USER_URL, json=body)


def _query(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


@pytest.fixture
def api() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture(autouse=True)
def _no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xapi, "SERVER_ERROR_RETRY_DELAY_S", 0.0)


def test_pages_are_followed_through_next_token_until_it_runs_out(api: Any) -> None:
    _add_user(api)
    api.add(responses.GET, TWEETS_URL, json=_page([_post(5), _post(4), _post(3)], "tok-2"))
    api.add(responses.GET, TWEETS_URL, json=_page([_post(2), _post(1)]))

    tweets = XApiSource(TOKEN).fetch(Handle("jack"))

    assert [t.text for t in tweets] == [f"post number {n} about things" for n in (5, 4, 3, 2, 1)]
    assert len(api.calls) == 3
    first, second = _query(api.calls[1]), _query(api.calls[2])
    assert "pagination_token" not in first and first["max_results"] == ["100"]
    assert second["pagination_token"] == ["tok-2"]
    assert tweets[0].created_at == datetime(2022, 10, 7, 22, 43, 18, tzinfo=UTC)


def test_the_bearer_token_is_sent_as_authorization(api: Any) -> None:
    _add_user(api)
    api.add(responses.GET, TWEETS_URL, json=_page([_post(1)]))

    XApiSource(TOKEN).fetch(Handle("jack"))

    assert api.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_long_posts_take_their_full_text_from_note_tweet(api: Any) -> None:
    full = "a long post " * 40
    _add_user(api)
    api.add(
        responses.GET,
        TWEETS_URL,
        json=_page([_post(1, text=full[:270] + "…", note_tweet={"text": full.strip()})]),
    )

    (tweet,) = XApiSource(TOKEN).fetch(Handle("jack"))

    assert tweet.text == full.strip()


def test_retweets_and_replies_are_flagged_not_dropped(api: Any) -> None:
    _add_user(api)
    posts = [
        _post(6, text="RT @bob: hello", referenced_tweets=[{"type": "retweeted", "id": "1"}]),
        _post(
            5, text="@bob yes indeed friend", referenced_tweets=[{"type": "replied_to", "id": "2"}]
        ),
        _post(4, text="@bob also this one", in_reply_to_user_id="99"),
        _post(3, text="look at this quote", referenced_tweets=[{"type": "quoted", "id": "3"}]),
        _post(2, text="a plain post of mine"),
    ]
    api.add(responses.GET, TWEETS_URL, json=_page(posts))

    tweets = XApiSource(TOKEN).fetch(Handle("jack"))

    assert [(t.is_retweet, t.is_reply) for t in tweets] == [
        (True, False),
        (False, True),
        (False, True),
        (False, False),
        (False, False),
    ]


def test_the_3200_cap_is_honoured_without_an_extra_request(api: Any) -> None:
    counter = iter(range(10_000_000))

    def endless_page(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        posts = [_post(10_000 - next(counter)) for _ in range(100)]
        return 200, {}, json.dumps(_page(posts, "more"))

    _add_user(api)
    api.add_callback(responses.GET, TWEETS_URL, callback=endless_page)

    tweets = XApiSource(TOKEN).fetch(Handle("jack"))

    assert len(tweets) == API_TWEET_CAP
    assert len(api.calls) == 1 + API_TWEET_CAP // 100
    assert [int(t.id) for t in tweets] == sorted((int(t.id) for t in tweets), reverse=True)


def test_a_small_limit_asks_for_a_small_page_and_stops(api: Any) -> None:
    _add_user(api)
    api.add(responses.GET, TWEETS_URL, json=_page([_post(n) for n in range(5, 0, -1)], "more"))

    tweets = XApiSource(TOKEN, limit=3).fetch(Handle("jack"))

    assert len(tweets) == 3 and len(api.calls) == 2
    assert _query(api.calls[1])["max_results"] == ["5"]  # X's minimum page size


def test_a_cursor_that_never_ends_is_followed_a_bounded_number_of_times(api: Any) -> None:
    _add_user(api)
    api.add(responses.GET, TWEETS_URL, json=_page([_post(1)], "same-again"))

    tweets = XApiSource(TOKEN, limit=10).fetch(Handle("jack"))

    assert [t.id for t in tweets] == [_post(1)["id"]]
    assert len(api.calls) == 1 + 2 * 1 + 1  # 2 × the pages needed, plus one


def test_an_empty_timeline_gives_no_posts(api: Any) -> None:
    _add_user(api)
    api.add(responses.GET, TWEETS_URL, json={"meta": {"result_count": 0}})

    assert XApiSource(TOKEN).fetch(Handle("jack")) == []


@pytest.mark.parametrize(
    ("user_body", "message"),
    [
        (
            {
                "errors": [
                    {
                        "value": "nobody",
                        "detail": "Could not find user with username: [nobody].",
                        "title": "Not Found Error",
                        "resource_type": "user",
                        "parameter": "username",
                        "resource_id": "nobody",
                        "type": "https://api.twitter.com/2/problems/resource-not-found",
                    }
                ]
            },
            "X has no user @nobody.",
        ),
        (
            {
                "errors": [
                    {
                        "value": "nobody",
                        "detail": "User has been suspended: [nobody].",
                        "title": "Forbidden",
                        "resource_type": "user",
                        "parameter": "username",
                        "resource_id": "nobody",
                        "type": "https://api.twitter.com/2/problems/resource-not-found",
                    }
                ]
            },
            "X has suspended @nobody, so its posts cannot be read.",
        ),
        (
            {"data": {"id": "5", "name": "N", "username": "nobody", "protected": True}},
            "X's account @nobody is protected: only approved followers can read its posts.",
        ),
    ],
)
def test_a_user_that_cannot_be_read_is_reported_before_any_post_is_paid_for(
    api: Any, user_body: dict[str, Any], message: str
) -> None:
    api.add(responses.GET, USER_URL, json=user_body)

    with pytest.raises(SourceError) as caught:
        XApiSource(TOKEN).fetch(Handle("nobody"))

    assert str(caught.value) == message
    assert len(api.calls) == 1


def test_a_protected_timeline_reported_in_the_payload_is_one_sentence(api: Any) -> None:
    _add_user(api)
    denied = {
        "errors": [
            {
                "title": "Authorization Error",
                "detail": "Sorry, you are not authorized to see the user with id: [783214].",
                "type": "https://api.twitter.com/2/problems/not-authorized-for-resource",
            }
        ]
    }
    api.add(responses.GET, TWEETS_URL, json=denied)

    with pytest.raises(SourceError, match=r"^X does not let this app read @jack's posts"):
        XApiSource(TOKEN).fetch(Handle("jack"))


def _problem(title: str, detail: str, status: int) -> dict[str, Any]:
    return {"title": title, "detail": detail, "type": "about:blank", "status": status}


@pytest.mark.parametrize(
    ("status", "body", "headers", "message"),
    [
        (
            401,
            _problem("Unauthorized", "Unauthorized", 401),
            {},
            "X rejected the bearer token (401 Unauthorized): check X_BEARER_TOKEN.",
        ),
        (
            402,
            {"title": "CreditsDepleted", "detail": "Your account has no credits.", "status": 402},
            {},
            "Your X API account has no credits left (402 Payment Required): buy credits in the "
            "X developer console, or use an X archive instead.",
        ),
        (
            403,
            {
                "client_id": "1",
                "detail": "When authenticating requests to the Twitter API v2 endpoints, you must "
                "use keys and tokens from a Twitter developer App that is attached to a Project.",
                "reason": "client-not-enrolled",
                "title": "Client Forbidden",
                "type": "https://api.twitter.com/2/problems/client-forbidden",
            },
            {},
            "X refused to read @jack (403 Forbidden): the account may be protected or suspended, "
            "or your app's plan may not include this endpoint.",
        ),
        (
            403,
            {"errors": [{"message": "User has been suspended."}]},
            {},
            "X has suspended @jack, so its posts cannot be read.",
        ),
        (404, _problem("Not Found", "Not Found", 404), {}, "X has no user @jack."),
        (
            429,
            _problem("Too Many Requests", "Too Many Requests", 429),
            {"x-rate-limit-reset": "1782322140", "x-rate-limit-remaining": "0"},
            "X's rate limit is used up; it resets at 2026-06-24 17:29 UTC.",
        ),
        (
            429,
            _problem("Too Many Requests", "Too Many Requests", 429),
            {},
            "X's rate limit is used up; try again in 15 minutes.",
        ),
        (
            500,
            {"errors": [{"message": "Internal error", "code": 131}]},
            {},
            "X's servers failed (HTTP 500) while reading @jack; try again later.",
        ),
        (
            400,
            {"errors": [{"message": "The `id` query parameter value [x] is not valid"}]},
            {},
            "X refused the request for @jack (HTTP 400): The `id` query parameter value [x] is "
            "not valid.",
        ),
    ],
)
def test_each_http_failure_is_one_clear_sentence_without_the_token(
    api: Any, status: int, body: dict[str, Any], headers: dict[str, str], message: str
) -> None:
    api.add(responses.GET, USER_URL, json=body, status=status, headers=headers)

    with pytest.raises(SourceError) as caught:
        XApiSource(TOKEN).fetch(Handle("jack"))

    assert str(caught.value) == message
    assert TOKEN not in str(caught.value)
    assert caught.value.__cause__ is None  # tweepy's exception (with the response) is not chained
    assert len(api.calls) == (2 if status >= 500 else 1)  # one retry on a 5xx, none otherwise


def test_failures_on_a_later_page_are_reported_the_same_way(api: Any) -> None:
    _add_user(api)
    api.add(responses.GET, TWEETS_URL, json=_page([_post(2)], "next"))
    api.add(responses.GET, TWEETS_URL, json={}, status=429, headers={"x-rate-limit-reset": "0"})

    with pytest.raises(SourceError, match=r"resets at 1970-01-01 00:00 UTC\.$"):
        XApiSource(TOKEN).fetch(Handle("jack"))


def test_a_server_error_is_retried_once_and_then_the_page_is_read(api: Any) -> None:
    _add_user(api)
    api.add(responses.GET, TWEETS_URL, json={"title": "Service Unavailable"}, status=503)
    api.add(responses.GET, TWEETS_URL, json=_page([_post(1)]))

    tweets = XApiSource(TOKEN).fetch(Handle("jack"))

    assert len(tweets) == 1 and len(api.calls) == 3


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (requests.ConnectionError("connection refused"), "Could not reach the X API"),
        (requests.Timeout("read timed out"), "Could not reach the X API"),
    ],
)
def test_network_failures_are_one_sentence(api: Any, failure: Exception, message: str) -> None:
    api.add(responses.GET, USER_URL, body=failure)

    with pytest.raises(SourceError, match=f"^{re.escape(message)}"):
        XApiSource(TOKEN).fetch(Handle("jack"))


@pytest.mark.parametrize(
    "body",
    ['{"data": [{"id": "1", "te', "<html>Bad gateway</html>", '["not", "an", "object"]'],
)
def test_a_garbled_response_is_one_sentence(api: Any, body: str) -> None:
    _add_user(api)
    api.add(responses.GET, TWEETS_URL, body=body, content_type="application/json")

    with pytest.raises(SourceError, match=r"^The X API sent a response that could not be read"):
        XApiSource(TOKEN).fetch(Handle("jack"))


def test_the_token_never_reaches_the_logs(api: Any, caplog: pytest.LogCaptureFixture) -> None:
    _add_user(api)
    api.add(responses.GET, TWEETS_URL, json=_page([_post(1)]))

    with caplog.at_level(logging.DEBUG):
        XApiSource(TOKEN).fetch(Handle("jack"))

    assert "Received API response" in caplog.text  # tweepy did log at DEBUG...
    assert TOKEN not in caplog.text  # ...but not the request headers
    assert TOKEN not in repr(XApiSource(TOKEN))


def test_the_client_it_builds_has_a_timeout_and_never_sleeps_on_rate_limits() -> None:
    source = XApiSource(TOKEN)

    assert source._client.wait_on_rate_limit is False
    assert isinstance(source._client.session, xapi.TimeoutSession)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: XApiSource("  "), "The X API needs a bearer token"),
        (lambda: XApiSource(TOKEN, limit=0), "The X API post limit must be between 1 and 3200"),
        (lambda: XApiSource(TOKEN, limit=3201), "The X API post limit must be between 1 and 3200"),
        (
            lambda: XApiSource(TOKEN, client=tweepy.Client(TOKEN, wait_on_rate_limit=True)),
            "The X API client must not wait on rate limits",
        ),
    ],
)
def test_bad_construction_is_refused(make: Any, message: str) -> None:
    with pytest.raises(InputError, match=f"^{re.escape(message)}"):
        make()


def test_a_bluesky_handle_is_refused_without_a_request(api: Any) -> None:
    with pytest.raises(InputError, match=r"^The X API reads X handles"):
        XApiSource(TOKEN).fetch(Handle("alice.bsky.social", "bluesky"))
    assert not api.calls


def test_a_client_returning_tweepy_objects_works_too(api: Any) -> None:
    """An injected client keeps tweepy's default ``Response`` return type."""
    _add_user(api)
    api.add(
        responses.GET, TWEETS_URL, json=_page([_post(2), _post(1, note_tweet={"text": "full"})])
    )

    tweets = XApiSource(TOKEN, client=tweepy.Client(TOKEN)).fetch(Handle("jack"))

    assert [t.text for t in tweets] == ["post number 2 about things", "full"]


# --------------------------------------------------------------------------- robustness

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_post_like = st.fixed_dictionaries(
    {},
    optional={
        "id": _json | st.text(max_size=20),
        "text": _json,
        "created_at": _json | st.text(max_size=30),
        "note_tweet": _json | st.fixed_dictionaries({"text": _json}),
        "referenced_tweets": _json | st.lists(st.fixed_dictionaries({"type": _json}), max_size=3),
        "in_reply_to_user_id": _json,
    },
)


@pytest.mark.parametrize(
    "item",
    [
        {"id": "1", "text": "t", "referenced_tweets": [{"type": ["retweeted"]}, {"type": {}}]},
        {"id": "", "text": "t"},
        {"id": True, "text": "t"},
        {"id": "1", "text": None},
        {"id": "1", "text": "short", "note_tweet": {"text": ""}},
    ],
)
def test_odd_post_objects_are_read_or_skipped_never_a_crash(item: dict[str, Any]) -> None:
    tweet = tweet_from_v2(item)
    assert tweet is None or (tweet.text == item["text"] and not tweet.is_retweet)


@given(item=_json | _post_like)
def test_tweet_from_v2_never_crashes_on_arbitrary_json(item: Any) -> None:
    tweet = tweet_from_v2(item)
    assert tweet is None or isinstance(tweet.text, str)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=_json
    | st.fixed_dictionaries(
        {},
        optional={"data": _json | st.lists(_post_like, max_size=3), "meta": _json, "errors": _json},
    )
)
def test_fetch_raises_only_doppeltweet_errors_on_arbitrary_pages(payload: Any) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        _add_user(rsps)
        rsps.add(responses.GET, TWEETS_URL, json=payload)
        try:
            tweets = XApiSource(TOKEN, limit=5).fetch(Handle("jack"))
        except DoppeltweetError as error:
            assert str(error).endswith((".", "…"))
        else:
            assert len(tweets) <= 5
