"""XPoster: tweepy create_tweet with user-context credentials, X's errors as one sentence of the
poster error classes, the AI label within 280 characters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
import vcr

from bot.config import BotSettings
from bot.posters import (
    AI_LABEL,
    BadCredentials,
    ContentRejected,
    PostError,
    PostRefused,
    RateLimited,
    Unreachable,
)
from bot.posters.x import X_MAX_WEIGHT, XPoster, x_post_text, x_weight
from training.errors import InputError

CASSETTES = Path(__file__).resolve().parents[2] / "fixtures" / "tweepy_cassettes"
X_TWEETS_URL = "https://api.twitter.com/2/tweets"


def poster() -> XPoster:
    return XPoster("consumer-key", "consumer-secret", "access-token", "access-token-secret")


def test_posting_replays_the_recorded_create_tweet_exchange() -> None:
    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        decode_compressed_response=True,
        match_on=["method", "uri", "body"],
    )
    with recorder.use_cassette("test_client_create_and_delete_tweet.yaml") as cassette:
        post_id = poster().post_blocking("Test Tweet")
    assert post_id == "1456012973835788293"
    assert cassette.play_count == 1


@responses.activate
def test_posting_signs_the_request_with_oauth1_user_context() -> None:
    responses.add(
        responses.POST, X_TWEETS_URL, json={"data": {"id": "9", "text": "hi"}}, status=201
    )
    assert poster().post_blocking("hi") == "9"
    [call] = responses.calls
    assert json.loads(call.request.body) == {"text": "hi"}
    authorization = call.request.headers["Authorization"]
    assert authorization.startswith("OAuth ")
    assert 'oauth_consumer_key="consumer-key"' in authorization
    assert 'oauth_token="access-token"' in authorization
    assert "consumer-secret" not in authorization and "access-token-secret" not in authorization


@pytest.mark.parametrize(
    ("status", "body", "start", "kind"),
    [
        (
            401,
            {"title": "Unauthorized", "detail": "Unauthorized"},
            "X rejected the posting ",
            BadCredentials,
        ),
        (
            402,
            {"title": "CreditsDepleted", "detail": "No credits"},
            "X says the account's API ",
            PostRefused,
        ),
        (
            403,
            {"detail": "You are not allowed to create a Tweet with duplicate content."},
            "X re",
            ContentRejected,
        ),
        (
            429,
            {"title": "Too Many Requests", "detail": "Too Many Requests"},
            "X's rate limit ",
            RateLimited,
        ),
    ],
)
@responses.activate
def test_lasting_x_errors_are_one_sentence_that_pauses(
    status: int, body: dict[str, Any], start: str, kind: type[PostError]
) -> None:
    responses.add(responses.POST, X_TWEETS_URL, json=body, status=status)
    with pytest.raises(kind) as caught:
        poster().post_blocking("hello")
    error = caught.value
    assert (error.status, error.pauses, error.network) == (status, True, "X")
    message = str(error)
    assert message.startswith(start) and f"({status} " in message
    assert message.endswith(".") and "\n" not in message
    assert body["detail"].rstrip(".") in message  # X's own explanation is kept


@responses.activate
def test_a_server_error_is_transient() -> None:
    responses.add(responses.POST, X_TWEETS_URL, json={"title": "Service Unavailable"}, status=503)
    with pytest.raises(Unreachable) as caught:
        poster().post_blocking("hello")
    assert (caught.value.status, caught.value.pauses) == (503, False)


@responses.activate
def test_an_unreachable_x_is_transient_and_says_so() -> None:
    responses.add(responses.POST, X_TWEETS_URL, body=requests.ConnectionError("refused"))
    with pytest.raises(Unreachable) as caught:
        poster().post_blocking("hello")
    assert str(caught.value) == "X could not be reached to post; the next post will try again."
    assert not caught.value.pauses


@responses.activate
def test_every_request_has_a_timeout() -> None:
    seen: list[Any] = []

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        seen.append(request.req_kwargs.get("timeout"))
        return 201, {}, json.dumps({"data": {"id": "1", "text": "x"}})

    responses.add_callback(responses.POST, X_TWEETS_URL, callback=callback)
    XPoster("a", "b", "c", "d", timeout=7).post_blocking("x")
    assert seen == [7]


def test_from_settings_needs_all_four_credentials(
    make_settings: Callable[..., BotSettings],
) -> None:
    settings = make_settings(
        x_consumer_key="k",
        x_consumer_secret="s",
        x_access_token="t",
    )
    with pytest.raises(InputError, match=r"^Posting to X needs X_CONSUMER_KEY, .*configuration\.$"):
        XPoster.from_settings(settings)
    complete = settings.model_copy(update={"x_access_token_secret": settings.x_access_token})
    assert repr(XPoster.from_settings(complete)) == "XPoster(credentials hidden)"


def test_the_ai_label_is_appended() -> None:
    assert x_post_text("my dream is to fly") == "my dream is to fly" + AI_LABEL
    assert x_post_text("my dream   is\nto fly", ai_label=False) == "my dream is to fly"


@pytest.mark.parametrize("text", ["word " * 60, "ü" * 280, "日本語のツイート" * 40, "🎉" * 150])
def test_a_labelled_post_never_exceeds_x_limit(text: str) -> None:
    labelled = x_post_text(text)
    assert labelled.endswith("…" + AI_LABEL)
    assert x_weight(labelled) <= X_MAX_WEIGHT
    unlabelled = x_post_text(text, ai_label=False)
    assert x_weight(unlabelled) <= X_MAX_WEIGHT


def test_a_short_enough_text_is_not_cut() -> None:
    text = "a" * (X_MAX_WEIGHT - x_weight(AI_LABEL))
    assert x_post_text(text) == text + AI_LABEL
    assert x_weight(x_post_text(text)) == X_MAX_WEIGHT


def test_weights_follow_x_counting() -> None:
    assert x_weight("hello") == 5
    assert x_weight("é") == 1
    assert x_weight("日本") == 4
    assert x_weight("🤖") == 2


@responses.activate
async def test_the_async_post_gives_the_posts_id_and_address() -> None:
    responses.add(
        responses.POST, X_TWEETS_URL, json={"data": {"id": "9", "text": "hi"}}, status=201
    )
    posted = await poster().post("hi")
    assert (posted.network, posted.id, posted.url) == ("X", "9", "https://x.com/i/web/status/9")
    assert poster().length("日本") == 4 and await poster().max_length() == X_MAX_WEIGHT
