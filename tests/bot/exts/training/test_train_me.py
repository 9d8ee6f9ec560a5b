"""``!train me``: a model of the member who asks, from their own messages in this server.

The bot reads the simulated channels' history itself (simcord serves it), writes the member's
messages into the job's upload as plain text, and the real job runner trains from that file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import discord
import pytest
import simcord
from discord_world import CSV, World

from bot.config import BotSettings
from bot.own_messages import OWN_MESSAGES_FILE
from bot.store import Store
from training.config import TrainingSettings
from training.errors import InputError
from training.handles import Handle
from training.pipeline import open_source

MAX_MESSAGES = 4


@pytest.fixture
def bot_settings(make_settings: Callable[..., BotSettings]) -> BotSettings:
    """The usual test settings with a small ``!train me`` bound, so the bound is visible."""
    return make_settings(train_me_max_messages=MAX_MESSAGES)


def upload_lines(store_sources: tuple[str, ...]) -> list[str]:
    [source] = store_sources
    path = Path(source)
    assert path.name == OWN_MESSAGES_FILE
    return path.read_text(encoding="utf-8").splitlines()


async def test_train_me_learns_only_from_the_members_own_messages(
    world: World,
    store: Store,
    simcord_env: simcord.Env,
    make_training_settings: Callable[..., TrainingSettings],
) -> None:
    hidden = world.guild.create_text_channel(
        "no-history",
        overwrites={simcord_env.bot.user: discord.PermissionOverwrite(read_message_history=False)},
    )
    await world.alice.send(hidden, "a secret the bot may not read")
    await world.alice.send(world.channel, "first thought of the day")
    await world.bob.send(world.channel, "bob's words are not alice's")
    await world.alice.send(world.channel, f"hey <@{world.bob.id}> look at ```print('code')``` this")
    await world.alice.send(world.channel, "!help")
    await world.alice.send(world.channel, "", attachments=[("cat.png", b"\x89PNG not text")])
    await world.alice.send(world.channel, "a ||spoiler|| and `inline code`\nover two lines")
    world.bot_messages()  # the help answer is not what this test is about
    before = len(world.bot_messages())

    await world.alice.send(world.channel, "!train me")

    assert world.handled_errors() == []
    [model] = await store.list_models(world.guild.id)
    assert model.name == "alice+discord" and model.trained_by == world.alice.id
    assert model.owner_id == world.alice.id
    assert upload_lines(model.sources) == [
        "a spoiler and inline code over two lines",
        "hey @bob look at this",
        "first thought of the day",
    ]
    status = world.bot_messages()[before]
    assert status.content == "**Job #1 · alice+discord** — Done"
    # The training reads the upload with its plain-text source, one message per post.
    source = open_source(model.sources[0], Handle("alice"), make_training_settings())
    assert [t.text for t in source.fetch(Handle("alice"))] == upload_lines(model.sources)


async def test_train_me_keeps_the_newest_messages_within_the_bound(
    world: World, store: Store
) -> None:
    for number in range(MAX_MESSAGES + 3):
        await world.alice.send(world.channel, f"message number {number}")
    await world.alice.send(world.channel, "!train me")
    [model] = await store.list_models(world.guild.id)
    assert upload_lines(model.sources) == [
        f"message number {n}" for n in reversed(range(3, MAX_MESSAGES + 3))
    ]


async def test_train_me_without_any_own_message_is_refused_and_leaves_nothing(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    await world.bob.send(world.channel, "only bob talks here")
    await world.alice.send(world.channel, "!train me")
    assert world.handled_errors() == [InputError]
    assert "found none of your own messages of the last 365 days" in (
        world.channel.last_message.content
    )
    assert await store.list_models(world.guild.id) == []
    uploads = bot_settings.guild_uploads_dir(world.guild.id)
    assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))


async def test_admins_can_switch_train_me_off_and_on(world: World, store: Store) -> None:
    await world.alice.send(world.channel, "something I said")
    await world.bob.send(world.channel, "!trainme off")
    assert len(world.handled_errors()) == 1  # not an admin
    await world.admin.send(world.channel, "!trainme off")
    assert world.channel.last_message.content.startswith("`!train me` is off")
    await world.alice.send(world.channel, "!train me")
    assert world.handled_errors() == [InputError]
    assert "switched `!train me` off" in world.channel.last_message.content
    assert await store.list_models(world.guild.id) == []

    await world.admin.send(world.channel, "!trainme on")
    await world.alice.send(world.channel, "!train me")
    assert [m.name for m in await store.list_models(world.guild.id)] == ["alice+discord"]


async def test_an_upload_named_like_the_own_messages_file_makes_nobodys_own_model(
    world: World, store: Store
) -> None:
    await world.bob.send(
        world.channel, "!train @alice", attachments=[(OWN_MESSAGES_FILE, b"bob pretends\n")]
    )
    assert world.handled_errors() == []
    [model] = await store.list_models(world.guild.id)
    assert model.name == "alice" and model.owner_id is None
    # Nobody is locked out of that model: the admin trains it again from another file ...
    await world.admin.send(world.channel, "!train @alice", attachments=[("tweets.csv", CSV)])
    assert world.handled_errors() == []
    # ... and alice's own model is another one, hers.
    await world.alice.send(world.channel, "my own words")
    await world.alice.send(world.channel, "!train me")
    assert world.handled_errors() == []
    owners = {m.name: m.owner_id for m in await store.list_models(world.guild.id)}
    assert owners == {"alice": None, "alice+discord": world.alice.id}


async def test_another_members_train_of_a_username_does_not_claim_it(
    world: World, store: Store
) -> None:
    await world.bob.send(world.channel, "!train @alice", attachments=[("tweets.csv", CSV)])
    await world.alice.send(world.channel, "my own words")
    await world.alice.send(world.channel, "!train me")
    assert world.handled_errors() == []
    [own] = await store.models_owned_by(world.guild.id, world.alice.id)
    assert own.name == "alice+discord" and own.trained_by == world.alice.id
    # bob's model of the X handle alice is still his.
    other = await store.get_model(world.guild.id, "alice")
    assert other is not None and other.trained_by == world.bob.id and other.owner_id is None


async def test_an_admins_retrain_keeps_the_members_ownership(world: World, store: Store) -> None:
    await world.alice.send(world.channel, "my own words")
    await world.alice.send(world.channel, "!train me")
    await world.admin.send(world.channel, "!retrain @alice")
    assert world.handled_errors() == []
    [model] = await store.list_models(world.guild.id)
    assert model.name == "alice+discord"
    assert model.trained_by == world.admin.id and model.owner_id == world.alice.id
    # alice can still train it again herself.
    await world.alice.send(world.channel, "!train me")
    assert world.handled_errors() == []
    [model] = await store.models_owned_by(world.guild.id, world.alice.id)
    assert model.trained_by == world.alice.id


async def test_an_own_model_of_someone_else_under_the_same_username_is_never_replaced(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    # A member who left had the username alice and trained a model of themselves.
    path = bot_settings.guild_models_dir(world.guild.id) / "alice+discord"
    await store.upsert_model(
        world.guild.id,
        "alice+discord",
        handles=[Handle("alice")],
        sources=["bluesky"],
        base_model="tiny",
        lora=False,
        path=path,
        trained_by=999,
        owner_id=999,
    )
    await world.alice.send(world.channel, "my own words")
    await world.alice.send(world.channel, "!train me")
    assert world.handled_errors() == [InputError]
    assert "own model of a member who had your username" in world.last_text()
    [model] = await store.list_models(world.guild.id)
    assert model.owner_id == 999


async def test_train_me_reads_only_messages_within_the_age_bound(
    world: World, store: Store, bot_settings: BotSettings, simcord_env: simcord.Env
) -> None:
    bot_settings.train_me_max_age_days = 1
    await world.alice.send(world.channel, "said long ago")
    await simcord_env.advance_time(2 * 24 * 3600)
    await world.alice.send(world.channel, "said today")
    await world.alice.send(world.channel, "!train me")
    [model] = await store.list_models(world.guild.id)
    assert upload_lines(model.sources) == ["said today"]


async def test_forgetme_removes_the_own_model_and_every_copy_of_the_messages(
    world: World, store: Store, bot_settings: BotSettings, simcord_env: simcord.Env
) -> None:
    await world.alice.send(world.channel, "words only alice wrote")
    await world.alice.send(world.channel, "!train me")
    await world.bob.send(world.channel, "!train @bob", attachments=[("tweets.csv", CSV)])
    await world.alice.send(world.channel, "!tweet @alice quokka lighthouse")
    await world.bob.send(world.channel, "!tweet @bob")
    assert world.handled_errors() == []
    [own] = await store.models_owned_by(world.guild.id, world.alice.id)
    upload = Path(own.sources[0])
    cache = simcord_env.bot.cache
    assert own.path.is_dir() and upload.is_file() and own.path in cache
    [tweet] = await store.recent_tweets(world.guild.id, own.name)
    assert tweet.prompt == "quokka lighthouse"

    await world.alice.send(world.channel, "!forgetme")

    assert world.handled_errors() == []
    assert world.last_text() == (
        "Deleted your own model **alice+discord** with every copy of your messages I kept (the "
        "model's files, your messages file and the tweets it wrote)."
    )
    assert not own.path.exists() and not upload.exists() and not upload.parent.exists()
    assert own.path not in cache
    assert await store.get_model(world.guild.id, own.name) is None
    assert await store.recent_tweets(world.guild.id, own.name) == []
    # Nor does the database file (or its write-ahead log) keep the deleted tweet's prompt.
    wal = store.path.with_name(store.path.name + "-wal")
    raw = store.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert b"quokka lighthouse" not in raw
    jobs = await store.recent_jobs(world.guild.id)
    assert [j.model_name for j in jobs] == ["bob"]
    # bob's model and what it wrote are untouched.
    bob = await store.get_model(world.guild.id, "bob")
    assert bob is not None and bob.path.is_dir()
    assert len(await store.recent_tweets(world.guild.id, "bob")) == 1


async def test_forgetme_without_an_own_model_says_there_is_nothing(
    world: World, store: Store
) -> None:
    await world.bob.send(world.channel, "!train @alice", attachments=[("tweets.csv", CSV)])
    await world.alice.send(world.channel, "!forgetme")
    assert world.handled_errors() == []
    assert world.last_text().startswith("I keep no model of your own messages in this server")
    assert [m.name for m in await store.list_models(world.guild.id)] == ["alice"]


async def test_tweet_with_a_members_mention_uses_their_own_model(
    world: World, store: Store, scripted_generator: Any
) -> None:
    await world.bob.send(world.channel, "!train @alice", attachments=[("tweets.csv", CSV)])
    await world.alice.send(world.channel, "words only alice wrote")
    await world.alice.send(world.channel, "!train me")
    # Discord turns a typed @alice into a mention of the member: that names her own model.
    await world.bob.send(world.channel, f"!tweet {world.alice.mention} My dream is")
    assert world.handled_errors() == []
    [logged] = await store.recent_tweets(world.guild.id, "alice+discord")
    assert logged.prompt == "My dream is" and scripted_generator.prompts[-1] == "My dream is"
    assert await store.recent_tweets(world.guild.id, "alice") == []


async def test_a_prompt_that_only_looks_like_a_mention_is_kept_whole(
    world: World, store: Store, scripted_generator: Any
) -> None:
    await world.alice.send(world.channel, "words only alice wrote")
    await world.alice.send(world.channel, "!train me")
    await world.bob.send(world.channel, "!tweet <@ to be or not")
    assert world.handled_errors() == []
    assert scripted_generator.prompts[-1] == "<@ to be or not"


async def test_forgetting_a_member_during_the_training_cancels_it_and_deletes_the_messages(
    world: World, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    seen: list[Path] = []

    async def forget_when_running() -> tuple[list[Any], int]:
        async with asyncio.timeout(20):
            while not (running := await store.running_jobs(None)):
                await asyncio.sleep(0.05)
        [job] = running
        assert job.owner_id == world.alice.id
        seen.append(Path(job.sources[0]))
        assert seen[0].is_file()
        models = world.env.bot.models  # type: ignore[attr-defined]
        return await models.forget_member(world.guild.id, world.alice.id)

    forgetting = asyncio.get_running_loop().create_task(forget_when_running())
    await world.alice.send(world.channel, "words only alice wrote")
    await world.alice.send(world.channel, "!train me")
    assert await forgetting == ([], 1)
    assert not seen[0].exists()
    assert await store.recent_jobs(world.guild.id) == []
    assert await store.list_models(world.guild.id) == []
