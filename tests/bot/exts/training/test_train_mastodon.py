"""``!train`` from Mastodon through the real cog, the real job runner and the real training process.

Both Mastodon sources: an archive attached to the command (a .zip built from the documented
structure, with a direct message and a followers-only post that must never be read), and a
``mastodon:@user@server`` handle read from the server's public API, served on 127.0.0.1 (the
training process is pointed there by ``DOPPELTWEET_MASTODON_API_BASE``). Too few posts make the
training refuse after reading, which shows the data table (with its skipped rows) at once; one
test has enough posts to train the built-in ``tiny`` model for two steps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from discord_world import World, assemble_bot, close_parts
from tweet_texts import random_texts

from bot.config import BotSettings
from bot.store import Store
from tests.training.sources.mastodon_archive_files import write_zip
from tests.training.sources.mastodon_server import MastodonServer, Timeline, mixed_timeline, status
from training.errors import InputError

# The real training process runs inside each command: simcord waits for it (a busy machine is slow).
pytestmark = [pytest.mark.timeout(300), pytest.mark.simcord(settle_timeout=240)]


@pytest.fixture
async def simcord_bot(
    bot_settings: BotSettings, store: Store, scripted_generator: Any, reset_cooldowns: None
) -> AsyncIterator[Any]:
    """The real bot with the real training process (``python -m training train``)."""
    bot_settings.base_model = "tiny"
    bot_settings.train_max_steps = 2
    bot = assemble_bot(
        bot_settings, store, generator=scripted_generator, training_args=("--seed", "7")
    )
    yield bot
    await close_parts(bot)


@pytest.fixture
def timeline() -> Timeline:
    return mixed_timeline()


@pytest.fixture
def mastodon(timeline: Timeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[MastodonServer]:
    """The loopback Mastodon server every Mastodon handle is read from in these tests."""
    with MastodonServer(timeline.route) as server:
        monkeypatch.setenv("DOPPELTWEET_MASTODON_API_BASE", server.base_url)
        monkeypatch.setenv("DOPPELTWEET_ALLOW_PRIVATE_SERVERS", "true")
        yield server


#: A Mastodon model's name in a message title: its ``_`` escaped for Discord's markdown.
TITLE = r"alice\_at\_social.example"
TITLE_AT = r"\_at\_"


def row(content: str, label: str, value: str) -> bool:
    return re.search(rf"^{re.escape(label)} +{value}$", content, re.MULTILINE) is not None


@pytest.mark.parametrize(
    ("handle", "column"),
    [("mastodon:@alice@social.example", "@alice@social.example"), ("@alice", "@alice")],
    ids=["mastodon-handle", "x-style-handle"],
)
async def test_a_mastodon_archive_attachment_trains_and_shows_the_skipped_rows(
    world: World, store: Store, tmp_path: Path, handle: str, column: str
) -> None:
    archive = write_zip(tmp_path / "archive.zip").read_bytes()
    await world.alice.send(
        world.channel, f"!train {handle}", attachments=[("archive-2026.zip", archive)]
    )
    [status_message] = world.bot_messages()
    content = status_message.content
    assert content.splitlines()[0].startswith(
        f"**Job #1 · {column.lstrip('@').replace('@', TITLE_AT)}** — Failed: Only "
    )
    assert f"characters of tweets by {column} are left after cleaning" in content
    assert "SECRET" not in content
    assert re.search(rf"^Data +{re.escape(column)}$", content, re.MULTILINE)
    assert row(content, "Tweets downloaded", "4")
    assert row(content, "Retweets", "1")
    assert row(content, "Tweets kept", "3")
    assert row(content, "Content-warned (skipped)", "1")
    assert row(content, "Not public (skipped)", "2")
    [job] = await store.recent_jobs(world.guild.id)
    assert Path(job.sources[0]).name == "archive-2026.zip"


async def test_a_mastodon_handle_is_read_from_its_servers_public_api(
    world: World, store: Store, mastodon: MastodonServer
) -> None:
    await world.alice.send(world.channel, "!train mastodon:@alice@social.example")
    [status_message] = world.bot_messages()
    content = status_message.content
    assert content.startswith(f"**Job #1 · {TITLE}** — Failed: Only ")
    assert "SECRET" not in content
    assert row(content, "Tweets downloaded", "4")
    assert row(content, "Retweets", "1")
    assert row(content, "Content-warned (skipped)", "2")
    assert row(content, "Not public (skipped)", "2")
    assert mastodon.requests[0] == ("/api/v1/accounts/lookup", {"acct": "alice"})
    [job] = await store.recent_jobs(world.guild.id)
    assert job.sources == ("mastodon",)
    assert [(h.name, h.platform) for h in job.handles] == [("alice@social.example", "mastodon")]


async def test_a_server_in_authorized_fetch_mode_is_one_sentence(
    world: World, mastodon: MastodonServer
) -> None:
    mastodon.route = lambda path, query: (401, {}, b'{"error": "This API requires a user"}')
    await world.alice.send(world.channel, "!train @alice@social.example")
    [status_message] = world.bot_messages()
    assert status_message.content == (
        f"**Job #1 · {TITLE}** — Failed: social.example shows posts only to "
        "signed-in servers (authorized fetch), so @alice@social.example cannot be read without "
        "logging in; attach the account's Mastodon archive instead."
    )


async def test_an_invalid_mastodon_handle_is_refused_before_any_job(
    world: World, store: Store
) -> None:
    await world.alice.send(world.channel, "!train mastodon:@alice@localhost")
    assert world.last_text().startswith(
        "“mastodon:@alice@localhost” is not a Mastodon handle: use mastodon:@name@server"
    )
    assert await store.recent_jobs(world.guild.id) == []
    assert world.handled_errors() == [InputError]


async def test_a_mastodon_handle_with_enough_posts_trains_a_model(
    world: World, store: Store, mastodon: MastodonServer, timeline: Timeline
) -> None:
    texts = random_texts(300, shortest=8)
    posts = [status(n, f"<p>{text}</p>") for n, text in zip(range(300, 0, -1), texts, strict=True)]
    timeline.statuses = [*mixed_timeline().statuses[:6], *posts]
    await world.alice.send(world.channel, "!train mastodon:@alice@social.example")
    status_message, report = world.bot_messages()[0], world.bot_messages()[-1]
    assert status_message.content == f"**Job #1 · {TITLE}** — Done"
    assert report.content.startswith(f"**{TITLE}** is trained.\n```\nData")
    assert row(report.content, "Content-warned (skipped)", "2")
    assert row(report.content, "Not public (skipped)", "2")
    assert row(report.content, "Retweets", "1")
    [model] = await store.list_models(world.guild.id)
    assert model.name == "alice_at_social.example" and model.sources == ("mastodon",)
    assert Path(model.path).name == "alice_at_social.example"

    await world.bob.send(world.channel, "!tweet @alice@social.example My dream is")
    embed = world.channel.last_message.embeds[0]
    assert embed.description == "just setting up my twttr"  # the scripted model's words
    assert world.handled_errors() == []


# -- the pieces: sources per network, the command line, the table block --------------------------


def test_network_sources_are_one_for_all_or_one_per_handle() -> None:
    from bot.sources import network_sources
    from training.handles import parse_handle

    masto, bsky = parse_handle("@alice@social.example"), parse_handle("bluesky:bob.bsky.social")
    other = parse_handle("@carol@other.example")
    assert network_sources([masto, other]) == ["mastodon"]
    assert network_sources([masto, bsky]) == ["mastodon", "bluesky"]
    assert network_sources([masto, parse_handle("@jack")]) is None


async def test_a_job_on_two_networks_names_each_in_the_training_command(
    store: Store, bot_settings: BotSettings
) -> None:
    from service_fakes import requests_for

    from bot.jobs import JobRunner
    from training.handles import parse_handle

    runner = JobRunner(store, bot_settings, python="python")
    handles = [parse_handle("@alice@social.example"), parse_handle("bluesky:bob.bsky.social")]
    job = await requests_for(runner).submit(1, 2, 3, handles, ["mastodon", "bluesky"])
    try:
        argv = runner.command(job)
        assert argv[3:7] == [
            "train",
            "mastodon:@alice@social.example",
            "bluesky:bob.bsky.social",
            "--from",
        ]
        assert argv[6:10] == ["--from", "mastodon", "--from", "bluesky"]
        assert job.model_name == "alice_at_social.example+bob.bsky.social"
        single = await requests_for(runner).submit(1, 2, 3, handles[:1], ["mastodon"])
        assert "--mastodon" in runner.command(single) and "--from" not in runner.command(single)
        with pytest.raises(InputError, match="not a mix"):
            await requests_for(runner).submit(
                1, 2, 3, [parse_handle("@jack"), handles[0]], ["api", "mastodon"]
            )
    finally:
        await runner.stop()


def test_the_bots_table_block_shows_the_skipped_rows_only_when_counted() -> None:
    from bot.formatting import data_table_block

    counts = {"tweets_downloaded": 4, "retweets": 1, "short_tweets": 0, "tweets_kept": 3}
    block = data_table_block(
        {"alice@social.example": {**counts, "content_warned": 2, "not_public": 5}, "jack": counts}
    )
    assert "Data                      @alice@social.example  @jack" in block
    assert re.search(r"^Content-warned \(skipped\) +2 +-$", block, re.MULTILINE)
    assert re.search(r"^Not public \(skipped\) +5 +-$", block, re.MULTILINE)
    assert "skipped" not in data_table_block({"jack": counts})
