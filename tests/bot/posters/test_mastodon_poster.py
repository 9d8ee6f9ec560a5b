"""MastodonPoster against a Mastodon server on 127.0.0.1: the status request, the server's own
length limit, and each error class."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fake_networks import FakeNetwork, mastodon, serve
from pydantic import SecretStr

from bot.config import BotSettings
from bot.posters import BadCredentials, ContentRejected, PostError, RateLimited, Unreachable
from bot.posters.mastodon import DEFAULT_MAX_CHARACTERS, MastodonPoster, instance_url
from training.errors import InputError

STATUSES = "/api/v1/statuses"
INSTANCE = "/api/v2/instance"


@pytest.fixture
def server() -> Iterator[FakeNetwork]:
    with serve(mastodon(max_characters=1000)) as network:
        yield network


def poster(server: FakeNetwork) -> MastodonPoster:
    return MastodonPoster(server.url, "token-with-write-statuses")


async def test_a_post_is_a_public_status_with_the_bearer_token(server: FakeNetwork) -> None:
    posted = await poster(server).post("my dream is to fly 🤖 AI-generated")
    assert (posted.network, posted.id) == ("Mastodon", "113371093580426345")
    assert posted.url == "https://mastodon.example/@doppel/113371093580426345"
    [call] = server.calls("POST", STATUSES)
    assert call.body == {"status": "my dream is to fly 🤖 AI-generated", "visibility": "public"}
    assert call.headers["Authorization"] == "Bearer token-with-write-statuses"
    assert len(call.headers["Idempotency-Key"]) == 32


async def test_two_posts_have_different_idempotency_keys(server: FakeNetwork) -> None:
    account = poster(server)
    await account.post("one")
    await account.post("two")
    keys = {c.headers["Idempotency-Key"] for c in server.calls("POST", STATUSES)}
    assert len(keys) == 2


async def test_the_limit_is_the_servers_own_and_asked_once(server: FakeNetwork) -> None:
    account = poster(server)
    assert await account.max_length() == 1000
    assert await account.max_length() == 1000
    assert len(server.calls("GET", INSTANCE)) == 1


async def test_a_server_that_does_not_say_has_mastodons_default_limit() -> None:
    with serve(mastodon(max_characters=None)) as quiet:
        assert await MastodonPoster(quiet.url, "t").max_length() == DEFAULT_MAX_CHARACTERS
    with serve(FakeNetwork()) as old:  # no /api/v2/instance at all (404)
        assert await MastodonPoster(old.url, "t").max_length() == DEFAULT_MAX_CHARACTERS


@pytest.mark.parametrize(
    ("status", "error", "kind", "start"),
    [
        (
            401,
            "The access token is invalid",
            BadCredentials,
            "Mastodon rejected the posting credentials (401 Unauthorized) (Mastodon said: The "
            "access token is invalid); check MASTODON_INSTANCE and MASTODON_ACCESS_TOKEN.",
        ),
        (
            403,
            "This action is outside the authorized scopes",
            BadCredentials,
            "Mastodon refused the post (403 Forbidden) (Mastodon said: This action is outside "
            "the authorized scopes); give the access token",
        ),
        (
            429,
            "Too many requests",
            RateLimited,
            "Mastodon's rate limit for posting was reached (429 Too Many Requests)",
        ),
        (
            422,
            "Validation failed: Text character limit of 500 exceeded",
            ContentRejected,
            "Mastodon refused the text of the post (422) (Mastodon said: Validation failed: "
            "Text character limit of 500 exceeded).",
        ),
    ],
    ids=["401", "403", "429", "422"],
)
async def test_each_refusal_is_one_sentence_of_its_class_that_pauses(
    server: FakeNetwork, status: int, error: str, kind: type[PostError], start: str
) -> None:
    server.reply("POST", STATUSES, status, {"error": error})
    with pytest.raises(kind) as caught:
        await poster(server).post("hello")
    refused = caught.value
    assert refused.pauses and refused.status == status and refused.network == "Mastodon"
    message = str(refused)
    assert message.startswith(start)
    assert message.endswith(".") and "\n" not in message
    assert "token-with-write" not in message


async def test_a_server_error_is_transient(server: FakeNetwork) -> None:
    server.reply("POST", STATUSES, 503, {"error": "Service Unavailable"})
    with pytest.raises(Unreachable) as caught:
        await poster(server).post("hello")
    assert not caught.value.pauses


async def test_an_unreachable_server_is_transient_in_one_sentence() -> None:
    with serve(mastodon(max_characters=1000)) as gone:
        url = gone.url
    with pytest.raises(Unreachable) as caught:
        await MastodonPoster(url, "token", timeout=5).post("hello")
    assert str(caught.value) == (
        "Mastodon could not be reached to post; the next post will try again."
    )
    assert not caught.value.pauses


def test_instance_addresses_and_settings(make_settings: Callable[..., BotSettings]) -> None:
    assert instance_url("mastodon.social") == "https://mastodon.social"
    assert instance_url(" https://fosstodon.org/ ") == "https://fosstodon.org"
    settings = make_settings(mastodon_instance="mastodon.social")
    with pytest.raises(InputError, match=r"^Posting to Mastodon needs MASTODON_INSTANCE and "):
        MastodonPoster.from_settings(settings)
    complete = settings.model_copy(
        update={
            "mastodon_access_token": SecretStr("secret-token"),
            "mastodon_visibility": "unlisted",
        }
    )
    made = MastodonPoster.from_settings(complete)
    assert "secret-token" not in repr(made) and made.visibility == "unlisted"


def test_the_length_counts_graphemes() -> None:
    account = MastodonPoster("mastodon.social", "t")
    assert account.length("e\u0301" * 10) == 10
    assert account.length("🇩🇪👨‍👩‍👧") == 2
