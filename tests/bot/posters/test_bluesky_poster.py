"""BlueskyPoster against a Bluesky PDS on 127.0.0.1: login, the post record, the session kept and
renewed, each error class, and the 300-grapheme limit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fake_networks import BLUESKY_DID, BLUESKY_HANDLE, BLUESKY_RKEY, FakeNetwork, bluesky, serve
from pydantic import SecretStr

from bot.config import BotSettings
from bot.posters import (
    AI_LABEL,
    BadCredentials,
    ContentRejected,
    PostError,
    RateLimited,
    Unreachable,
    fit_text,
    with_label,
)
from bot.posters.bluesky import BLUESKY_MAX_GRAPHEMES, BlueskyPoster
from training.errors import InputError

SESSION = "/xrpc/com.atproto.server.createSession"
CREATE = "/xrpc/com.atproto.repo.createRecord"


@pytest.fixture
def pds() -> Iterator[FakeNetwork]:
    with serve(bluesky()) as network:
        yield network


def poster(pds: FakeNetwork) -> BlueskyPoster:
    return BlueskyPoster("@doppel.bsky.social", "abcd-efgh-ijkl-mnop", service=pds.url)


async def test_a_post_logs_in_then_creates_the_post_record(pds: FakeNetwork) -> None:
    posted = await poster(pds).post("my dream is to fly 🤖 AI-generated")
    assert posted.network == "Bluesky"
    assert posted.id == f"at://{BLUESKY_DID}/app.bsky.feed.post/{BLUESKY_RKEY}"
    assert posted.url == f"https://bsky.app/profile/{BLUESKY_HANDLE}/post/{BLUESKY_RKEY}"
    [login] = pds.calls("POST", SESSION)
    assert login.body == {"identifier": "doppel.bsky.social", "password": "abcd-efgh-ijkl-mnop"}
    [create] = pds.calls("POST", CREATE)
    assert create.headers["Authorization"] == "Bearer access-jwt-1"
    assert create.body["repo"] == BLUESKY_DID
    assert create.body["collection"] == "app.bsky.feed.post"
    record = create.body["record"]
    assert record["$type"] == "app.bsky.feed.post"
    assert record["text"] == "my dream is to fly 🤖 AI-generated"
    assert record["createdAt"].endswith("Z")
    datetime.fromisoformat(record["createdAt"].replace("Z", "+00:00"))
    assert "facets" not in record


async def test_the_session_is_kept_between_posts_and_made_again_when_it_expires(
    pds: FakeNetwork,
) -> None:
    account = poster(pds)
    await account.post("one")
    await account.post("two")
    assert len(pds.calls("POST", SESSION)) == 1
    pds.reply("POST", CREATE, 400, {"error": "ExpiredToken", "message": "Token has expired"})
    pds.reply("POST", CREATE, 200, {"uri": f"at://{BLUESKY_DID}/app.bsky.feed.post/x2", "cid": "c"},
              replace=False)  # fmt: skip
    posted = await account.post("three")
    assert posted.id.endswith("/x2")
    assert len(pds.calls("POST", SESSION)) == 2
    assert [c.body["record"]["text"] for c in pds.calls("POST", CREATE)] == [
        "one",
        "two",
        "three",
        "three",
    ]


@pytest.mark.parametrize(
    ("route", "status", "body", "kind", "start"),
    [
        (
            SESSION,
            401,
            {"error": "AuthenticationRequired", "message": "Invalid identifier or password"},
            BadCredentials,
            "Bluesky rejected the handle or app password (Invalid identifier or password); "
            "check BLUESKY_HANDLE and BLUESKY_APP_PASSWORD.",
        ),
        (
            CREATE,
            401,
            {"error": "AuthenticationRequired", "message": "Authentication Required"},
            BadCredentials,
            "Bluesky rejected the posting credentials (401 Unauthorized)",
        ),
        (
            CREATE,
            429,
            {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
            RateLimited,
            "Bluesky's rate limit for posting was reached (429 Too Many Requests)",
        ),
        (
            SESSION,
            429,
            {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
            RateLimited,
            "Bluesky's rate limit for posting was reached (429 Too Many Requests)",
        ),
        (
            CREATE,
            400,
            {
                "error": "InvalidRequest",
                "message": "Invalid app.bsky.feed.post record: Record/text must not be longer "
                "than 300 graphemes",
            },
            ContentRejected,
            "Bluesky refused the text of the post (400) (Bluesky said: Invalid app.bsky.feed.post",
        ),
    ],
    ids=["login-401", "post-401", "post-429", "login-429", "post-400"],
)
async def test_each_refusal_is_one_sentence_of_its_class_that_pauses(
    pds: FakeNetwork,
    route: str,
    status: int,
    body: dict[str, str],
    kind: type[PostError],
    start: str,
) -> None:
    pds.reply("POST", route, status, body)
    with pytest.raises(kind) as caught:
        await poster(pds).post("hello")
    error = caught.value
    assert error.pauses and error.status == status and error.network == "Bluesky"
    message = str(error)
    assert message.startswith(start)
    assert message.endswith(".") and "\n" not in message
    assert "abcd-efgh" not in message and "access-jwt" not in message


async def test_a_server_error_is_transient(pds: FakeNetwork) -> None:
    pds.reply("POST", CREATE, 502, {"error": "UpstreamFailure", "message": "Upstream Failure"})
    with pytest.raises(Unreachable) as caught:
        await poster(pds).post("hello")
    assert not caught.value.pauses
    assert (
        str(caught.value) == "Bluesky failed to take the post (502); the next post will try again."
    )


async def test_an_unreachable_server_is_transient(tmp_path: Path) -> None:
    with serve(bluesky()) as gone:
        url = gone.url
    account = BlueskyPoster("doppel.bsky.social", "pw", service=url, timeout=5)
    with pytest.raises(Unreachable, match=r"^Bluesky could not be reached to post; the next"):
        await account.post("hello")


def test_from_settings_needs_a_handle_and_an_app_password(
    make_settings: Callable[..., BotSettings],
) -> None:
    settings = make_settings(bluesky_handle="doppel.bsky.social")
    with pytest.raises(InputError, match=r"^Posting to Bluesky needs BLUESKY_HANDLE and "):
        BlueskyPoster.from_settings(settings)
    complete = settings.model_copy(update={"bluesky_app_password": SecretStr("secret-password")})
    made = BlueskyPoster.from_settings(complete)
    assert "secret-password" not in repr(made) and made.service == "https://bsky.social"


def test_the_limit_counts_graphemes_not_code_points() -> None:
    account = BlueskyPoster("a.bsky.social", "pw")
    family = "👨‍👩‍👧"  # 5 code points, 1 grapheme, 18 bytes
    assert account.length(family) == 2  # 18 bytes: the 3,000-byte cap counts as 2 of 300
    assert account.length("é" * 300) == 300
    assert account.length("e\u0301" * 300) == 300  # 600 code points, 300 graphemes
    assert account.length(family * 300) == 540  # within 300 graphemes, over 3,000 bytes


async def test_a_long_text_is_cut_to_300_graphemes_with_the_label() -> None:
    account = BlueskyPoster("a.bsky.social", "pw")
    limit = await account.max_length()
    assert limit == BLUESKY_MAX_GRAPHEMES
    text = "ще " * 90 + "e\u0301" * 100  # 370 graphemes, 470 code points
    fitted = fit_text(text, [(account.length, limit)], ai_label=True)
    labelled = with_label(fitted, ai_label=True)
    assert account.length(labelled) <= BLUESKY_MAX_GRAPHEMES
    assert labelled.endswith("…" + AI_LABEL)
    short = "hello world"
    assert fit_text(short, [(account.length, limit)], ai_label=True) == short
