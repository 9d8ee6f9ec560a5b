"""Auto-posts and ``!post`` on X, Bluesky and Mastodon, against recorded and fake networks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
import simcord
import vcr
from autopost_world import HOUR, autopost, posts, texts
from discord_world import World
from fake_networks import FakeNetwork, bluesky, mastodon, serve
from model_fakes import RecordingGenerator
from pydantic import SecretStr

from bot.config import BotSettings
from bot.store import Store

CASSETTES = Path(__file__).resolve().parents[3] / "fixtures" / "tweepy_cassettes"
X_TWEETS_URL = "https://api.twitter.com/2/tweets"


# -- X --------------------------------------------------------------------------------------------


async def test_a_post_also_goes_to_x_with_the_ai_label(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store, scripted_tweets: list[str]
) -> None:
    scripted_tweets[:] = ["Test Tweet"]
    await autopost(world, "@jack #general every 6h --to-x")
    sent: list[Any] = []

    def seen(request: Any) -> Any:
        if request.method == "POST":
            sent.append(json.loads(request.body))
        return request

    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        decode_compressed_response=True,
        match_on=["method", "uri"],
        before_record_request=seen,
    )
    with recorder.use_cassette("test_client_create_and_delete_tweet.yaml") as cassette:
        await simcord_env.advance_time(6 * HOUR)
    assert cassette.play_count == 1
    assert sent[-1] == {"text": "Test Tweet 🤖 AI-generated"}
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert logged.x_post_id == "1456012973835788293"
    assert len(posts(world)) == 1


@pytest.mark.parametrize("mode", ["neutralise", "skip"])
async def test_generated_mentions_never_reach_x_as_live_mentions(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    scripted_tweets: list[str],
    bot_settings: BotSettings,
    mode: str,
) -> None:
    bot_settings.public_mentions = mode  # type: ignore[assignment]
    scripted_tweets[:] = ["@jack Test Tweet"]
    await autopost(world, "@jack #general every 6h --to-x")
    sent: list[Any] = []

    def seen(request: Any) -> Any:
        if request.method == "POST":
            sent.append(json.loads(request.body))
        return request

    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        decode_compressed_response=True,
        match_on=["method", "uri"],
        before_record_request=seen,
    )
    with recorder.use_cassette("test_client_create_and_delete_tweet.yaml") as cassette:
        await simcord_env.advance_time(6 * HOUR)
    assert len(posts(world)) == 1  # the channel gets it either way, pinging nobody
    if mode == "neutralise":
        assert cassette.play_count == 1
        assert sent[-1] == {"text": "@\u200bjack Test Tweet 🤖 AI-generated"}
    else:
        assert cassette.play_count == 0  # nothing was posted to X
        [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
        assert logged.x_post_id is None


async def test_no_ai_label_posts_the_text_as_generated(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store, scripted_tweets: list[str]
) -> None:
    scripted_tweets[:] = ["Test Tweet"]
    await autopost(world, "@jack #general every 6h --to-x --no-ai-label")
    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        decode_compressed_response=True,
        match_on=["method", "uri", "body"],
    )
    with recorder.use_cassette("test_client_create_and_delete_tweet.yaml") as cassette:
        await simcord_env.advance_time(6 * HOUR)
    assert cassette.play_count == 1
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert logged.x_post_id == "1456012973835788293"


@pytest.fixture
def x_api() -> Iterator[responses.RequestsMock]:
    """Synthetic X answers; any request to another address fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.mark.parametrize(
    ("status", "body", "sentence"),
    [
        (
            401,
            {
                "title": "Unauthorized",
                "type": "about:blank",
                "status": 401,
                "detail": "Unauthorized",
            },
            "X rejected the posting credentials (401 Unauthorized)",
        ),
        (
            402,
            {
                "title": "CreditsDepleted",
                "detail": "Your enrolled account does not have any credits",
            },
            "X says the account's API credits are used up (402 Payment Required)",
        ),
        (
            403,
            {"detail": "You are not permitted to perform this action.", "status": 403},
            "X refused the post (403 Forbidden)",
        ),
        (
            429,
            {"title": "Too Many Requests", "detail": "Too Many Requests", "status": 429},
            "X's rate limit for posting was reached (429 Too Many Requests)",
        ),
    ],
    ids=["401", "402", "403", "429"],
)
async def test_an_x_error_pauses_the_schedule_and_tells_the_channel_once(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    x_api: responses.RequestsMock,
    status: int,
    body: dict[str, Any],
    sentence: str,
) -> None:
    x_api.add(responses.POST, X_TWEETS_URL, json=body, status=status)
    await autopost(world, "@jack #general every 1h --to-x")
    await simcord_env.advance_time(5 * HOUR)
    assert len(x_api.calls) == 1
    assert len(posts(world)) == 1  # the Discord post went out before X refused
    [notice] = [t for t in texts(world) if "is paused:" in t]
    assert notice.startswith(f"Auto-post #1 of **jack** is paused: {sentence}")
    assert notice.endswith("An admin can resume it with `!autopost resume 1`.")
    [schedule] = await store.list_schedules(world.guild.id)
    assert (
        schedule.paused and schedule.paused_reason and schedule.paused_reason.startswith(sentence)
    )
    assert "consumer-secret" not in notice and "access-token-secret" not in notice
    assert simcord_env.bot.autoposter.job_ids() == set()  # type: ignore[attr-defined]


async def test_an_x_outage_does_not_pause_the_schedule(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store, x_api: responses.RequestsMock
) -> None:
    x_api.add(responses.POST, X_TWEETS_URL, json={"title": "Service Unavailable"}, status=503)
    x_api.add(responses.POST, X_TWEETS_URL, json={"data": {"id": "77", "text": "x"}}, status=201)
    await autopost(world, "@jack #general every 1h --to-x")
    await simcord_env.advance_time(2 * HOUR)
    [schedule] = await store.list_schedules(world.guild.id)
    assert not schedule.paused
    logged = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert [t.x_post_id for t in reversed(logged)] == [None, "77"]
    assert not [t for t in texts(world) if "paused" in t]


# -- Bluesky and Mastodon -----------------------------------------------------------------------

BSKY_CREATE = "/xrpc/com.atproto.repo.createRecord"
BSKY_SESSION = "/xrpc/com.atproto.server.createSession"
STATUSES = "/api/v1/statuses"


@pytest.fixture
def pds(bot_settings: BotSettings) -> Iterator[FakeNetwork]:
    """A Bluesky PDS on 127.0.0.1, configured as the bot's Bluesky account."""
    with serve(bluesky()) as network:
        bot_settings.bluesky_handle = "doppel.bsky.social"
        bot_settings.bluesky_app_password = SecretStr("app-password-secret")
        bot_settings.bluesky_service = network.url
        yield network


@pytest.fixture
def instance(bot_settings: BotSettings) -> Iterator[FakeNetwork]:
    """A Mastodon server on 127.0.0.1 (limit 500), configured as the bot's Mastodon account."""
    with serve(mastodon(max_characters=500)) as network:
        bot_settings.mastodon_instance = network.url
        bot_settings.mastodon_access_token = SecretStr("mastodon-token-secret")
        yield network


async def test_a_post_also_goes_to_bluesky_and_mastodon_with_the_ai_label(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    scripted_tweets: list[str],
    pds: FakeNetwork,
    instance: FakeNetwork,
) -> None:
    scripted_tweets[:] = ["the moon is a cheese"]
    reply = await autopost(world, "@jack #general every 6h --to-bluesky --to-mastodon")
    assert "every 6h, also to Bluesky and Mastodon" in reply
    await simcord_env.advance_time(6 * HOUR)
    assert len(posts(world)) == 1
    [record] = pds.calls("POST", BSKY_CREATE)
    assert record.body["record"]["text"] == "the moon is a cheese 🤖 AI-generated"
    [status] = instance.calls("POST", STATUSES)
    assert status.body == {"status": "the moon is a cheese 🤖 AI-generated", "visibility": "public"}
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert logged.posted_to == {
        "bluesky": "https://bsky.app/profile/doppel.bsky.social/post/3kq2gxk4aqk2c",
        "mastodon": "https://mastodon.example/@doppel/113371093580426345",
    }
    assert logged.x_post_id is None
    assert not [t for t in texts(world) if "paused" in t]


async def test_posting_to_bluesky_or_mastodon_without_settings_is_refused(
    world: World, jack: Path, store: Store
) -> None:
    assert await autopost(world, "@jack #general every 6h --to-bluesky") == (
        "Posting to Bluesky needs BLUESKY_HANDLE and BLUESKY_APP_PASSWORD in the bot's "
        "configuration."
    )
    assert await autopost(world, "@jack #general every 6h --to-mastodon") == (
        "Posting to Mastodon needs MASTODON_INSTANCE and MASTODON_ACCESS_TOKEN in the bot's "
        "configuration."
    )
    assert await store.list_schedules(world.guild.id) == []
    world.handled_errors()


@pytest.mark.parametrize(
    ("network", "status", "body", "sentence"),
    [
        (
            "bluesky",
            401,
            {"error": "AuthenticationRequired", "message": "Invalid identifier or password"},
            "Bluesky rejected the handle or app password",
        ),
        (
            "bluesky",
            429,
            {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
            "Bluesky's rate limit for posting was reached (429 Too Many Requests)",
        ),
        (
            "mastodon",
            401,
            {"error": "The access token is invalid"},
            "Mastodon rejected the posting credentials (401 Unauthorized)",
        ),
        (
            "mastodon",
            422,
            {"error": "Validation failed: Text character limit of 500 exceeded"},
            "Mastodon refused the text of the post (422)",
        ),
    ],
    ids=["bluesky-401", "bluesky-429", "mastodon-401", "mastodon-422"],
)
async def test_a_network_error_pauses_the_schedule_and_tells_the_channel_once(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    pds: FakeNetwork,
    instance: FakeNetwork,
    network: str,
    status: int,
    body: dict[str, Any],
    sentence: str,
) -> None:
    if network == "bluesky":
        route = BSKY_SESSION if status == 401 else BSKY_CREATE
        pds.reply("POST", route, status, body)
    else:
        instance.reply("POST", STATUSES, status, body)
    await autopost(world, f"@jack #general every 1h --to-{network}")
    await simcord_env.advance_time(HOUR)
    requests_made = len(pds.requests) + len(instance.requests)
    assert requests_made in (1, 2)  # Bluesky's login, then its post
    # Run it twice more by hand: a paused schedule neither posts nor tells the channel again.
    autoposter = simcord_env.bot.autoposter  # type: ignore[attr-defined]
    assert await autoposter.run_schedule(1) is None
    assert await autoposter.run_schedule(1) is None
    await simcord_env.advance_time(3 * HOUR)
    assert len(posts(world)) == 1  # the Discord post went out before the network refused
    [notice] = [t for t in texts(world) if "is paused:" in t]
    assert notice.startswith(f"Auto-post #1 of **jack** is paused: {sentence}")
    assert notice.endswith("An admin can resume it with `!autopost resume 1`.")
    assert "secret" not in notice
    [schedule] = await store.list_schedules(world.guild.id)
    assert schedule.paused and (schedule.paused_reason or "").startswith(sentence)
    assert autoposter.job_ids() == set()
    assert len(pds.requests) + len(instance.requests) == requests_made


async def test_one_network_refusing_does_not_stop_the_other(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    pds: FakeNetwork,
    instance: FakeNetwork,
) -> None:
    instance.reply("POST", STATUSES, 429, {"error": "Too many requests"})
    await autopost(world, "@jack #general every 1h --to-mastodon --to-bluesky")
    await simcord_env.advance_time(HOUR)
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert set(logged.posted_to) == {"bluesky"}
    [schedule] = await store.list_schedules(world.guild.id)
    assert schedule.paused and (schedule.paused_reason or "").startswith("Mastodon's rate limit")


async def test_a_network_outage_does_not_pause_the_schedule(
    world: World, jack: Path, simcord_env: simcord.Env, store: Store, pds: FakeNetwork
) -> None:
    pds.reply("POST", BSKY_CREATE, 502, {"error": "UpstreamFailure"})
    await autopost(world, "@jack #general every 1h --to-bluesky")
    await simcord_env.advance_time(2 * HOUR)
    [schedule] = await store.list_schedules(world.guild.id)
    assert not schedule.paused
    assert len(posts(world)) == 2
    assert len(pds.calls("POST", BSKY_CREATE)) == 2


@pytest.mark.parametrize("mode", ["neutralise", "skip"])
async def test_generated_mentions_never_reach_bluesky_or_mastodon_as_live_mentions(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    scripted_tweets: list[str],
    bot_settings: BotSettings,
    pds: FakeNetwork,
    instance: FakeNetwork,
    mode: str,
) -> None:
    bot_settings.public_mentions = mode  # type: ignore[assignment]
    scripted_tweets[:] = ["@jack.bsky.social and @jack@mastodon.social look"]
    await autopost(world, "@jack #general every 6h --to-bluesky --to-mastodon")
    await simcord_env.advance_time(6 * HOUR)
    assert len(posts(world)) == 1
    sent = [c.body["record"]["text"] for c in pds.calls("POST", BSKY_CREATE)]
    sent += [c.body["status"] for c in instance.calls("POST", STATUSES)]
    if mode == "neutralise":
        expected = "@\u200bjack.bsky.social and @\u200bjack@mastodon.social look 🤖 AI-generated"
        assert sent == [expected, expected]
    else:
        assert sent == []


async def test_a_schedule_posts_from_its_own_prompt_and_lists_it(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    store: Store,
    scripted_generator: RecordingGenerator,
) -> None:
    reply = await autopost(world, "@jack #general every 1h --prompt My *dream* is")
    assert "every 1h, starting “My \\*dream\\* is”" in reply
    await autopost(world, "@jack #general every 2h")
    listing = (await autopost(world, "list")).splitlines()
    assert "every 1h, starting “My \\*dream\\* is” — active" in listing[1]
    assert "starting" not in listing[2]
    await simcord_env.advance_time(HOUR)
    assert scripted_generator.prompts[-1] == "My *dream* is"
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="autopost")
    assert logged.prompt == "My *dream* is"
    [first, second] = await store.list_schedules(world.guild.id)
    assert (first.prompt, second.prompt) == ("My *dream* is", "")


async def test_a_long_tweet_is_cut_to_the_strictest_networks_limit(
    world: World,
    jack: Path,
    simcord_env: simcord.Env,
    scripted_tweets: list[str],
    pds: FakeNetwork,
    bot_settings: BotSettings,
) -> None:
    with serve(mastodon(max_characters=120)) as small:
        bot_settings.mastodon_instance = small.url
        bot_settings.mastodon_access_token = SecretStr("mastodon-token-secret")
        scripted_tweets[:] = ["The moon rose. " + "word " * 50]
        await autopost(world, "@jack #general every 1h --to-bluesky --to-mastodon")
        await simcord_env.advance_time(HOUR)
        [status] = small.calls("POST", STATUSES)
    [record] = pds.calls("POST", BSKY_CREATE)
    text = status.body["status"]
    assert record.body["record"]["text"] == text  # every network shows the same text
    assert len(text) <= 120 and text.endswith("… 🤖 AI-generated")
    [post] = posts(world)
    assert post.embeds[0].description == text.removesuffix(" 🤖 AI-generated")


# -- !post: the channel's latest !tweet on the public networks ---------------------------------


async def tweet_then_post(world: World, post_args: str) -> str:
    await world.admin.send(world.channel, "!tweet @jack")
    await world.admin.send(world.channel, f"!post {post_args}".rstrip())
    return world.last_text()


async def test_post_puts_the_channels_latest_tweet_on_the_chosen_networks(
    world: World,
    jack: Path,
    store: Store,
    scripted_tweets: list[str],
    pds: FakeNetwork,
    instance: FakeNetwork,
) -> None:
    scripted_tweets[:] = ["the moon is a cheese, ask @nasa"]
    reply = await tweet_then_post(world, "bluesky mastodon")
    assert reply == (
        "Posted to Bluesky: <https://bsky.app/profile/doppel.bsky.social/post/3kq2gxk4aqk2c>\n"
        "Posted to Mastodon: <https://mastodon.example/@doppel/113371093580426345>"
    )
    [record] = pds.calls("POST", BSKY_CREATE)
    [status] = instance.calls("POST", STATUSES)
    for text in (record.body["record"]["text"], status.body["status"]):
        assert text.endswith(" 🤖 AI-generated")
        assert "@nasa" not in text  # generated mentions never go out live
        assert "nasa" in text
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="command")
    assert set(logged.posted_to) == {"bluesky", "mastodon"}
    # The same tweet is not posted twice, and nothing is sent when asked again.
    await world.admin.send(world.channel, "!post bluesky")
    assert world.last_text() == "That tweet is already on Bluesky."
    assert len(pds.calls("POST", BSKY_CREATE)) == 1
    world.handled_errors()


async def test_post_without_ai_label_and_with_one_network_refusing(
    world: World,
    jack: Path,
    store: Store,
    scripted_tweets: list[str],
    pds: FakeNetwork,
    instance: FakeNetwork,
) -> None:
    scripted_tweets[:] = ["the moon is a cheese"]
    instance.reply("POST", STATUSES, 401, {"error": "The access token is invalid"})
    reply = await tweet_then_post(world, "mastodon bluesky --no-ai-label")
    first, second = reply.split("\n")
    assert first.startswith("Posted to Bluesky: <https://bsky.app/")
    assert second.startswith("Mastodon rejected the posting credentials (401 Unauthorized)")
    assert "token-secret" not in reply
    [record] = pds.calls("POST", BSKY_CREATE)
    assert record.body["record"]["text"] == "the moon is a cheese"
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="command")
    assert set(logged.posted_to) == {"bluesky"}


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        ("myspace", "myspace is not a network I post to; name x, bluesky, mastodon"),
        ("bluesky", "Posting to Bluesky needs BLUESKY_HANDLE and BLUESKY_APP_PASSWORD"),
    ],
)
async def test_post_refuses_unknown_or_unconfigured_networks(
    world: World, jack: Path, store: Store, args: str, sentence: str
) -> None:
    reply = await tweet_then_post(world, args)
    assert reply.startswith(sentence)
    [logged] = await store.recent_tweets(world.guild.id, "jack", kind="command")
    assert logged.posted_to == {}
    world.handled_errors()


async def test_post_needs_a_tweet_in_this_channel_and_an_admin(
    world: World, jack: Path, pds: FakeNetwork
) -> None:
    await world.admin.send(world.channel, "!post bluesky")
    assert world.last_text() == (
        "There is no tweet to post in this channel yet; make one with `!tweet`."
    )
    await world.alice.send(world.channel, "!tweet @jack")
    await world.alice.send(world.channel, "!post bluesky")
    assert "Manage Server" in world.last_text()
    assert pds.calls("POST", BSKY_CREATE) == []
    world.handled_errors()


async def test_post_skips_a_tweet_naming_accounts_when_the_setting_says_skip(
    world: World,
    jack: Path,
    bot_settings: BotSettings,
    scripted_tweets: list[str],
    pds: FakeNetwork,
) -> None:
    bot_settings.public_mentions = "skip"
    scripted_tweets[:] = ["thanks @nasa for the moon"]
    reply = await tweet_then_post(world, "bluesky")
    assert reply.startswith("That tweet names accounts, and this bot does not post such tweets")
    assert pds.calls("POST", BSKY_CREATE) == []
    world.handled_errors()
