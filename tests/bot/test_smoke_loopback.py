"""Full-stack smoke tests: real discord.py over loopback against the fake Discord in this folder."""

from __future__ import annotations

import asyncio
import io
import zlib
from collections.abc import AsyncIterator, Iterator

import discord
import pytest
from discord.ext import commands
from fake_discord import FakeDiscord

from bot.endpoints import apply_discord_endpoints

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _restore_discord_endpoints() -> Iterator[None]:
    yield
    apply_discord_endpoints(None, None)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server
    assert not server.errors


async def _stop(client: discord.Client, task: asyncio.Task[None]) -> None:
    """Close the client and make sure its connect loop ended without an error."""
    await asyncio.wait_for(client.close(), timeout=10)
    await asyncio.wait_for(task, timeout=10)


async def test_bare_discord_py_bot_logs_in_connects_and_answers_over_loopback(
    fake: FakeDiscord,
) -> None:
    apply_discord_endpoints(fake.api_base, fake.gateway_url)
    intents = discord.Intents.default()
    intents.message_content = True
    intents.members = True
    bot = commands.Bot(
        command_prefix="!",
        intents=intents,
        allowed_mentions=discord.AllowedMentions.none(),
        guild_ready_timeout=0.2,
        help_command=None,
    )
    seen: list[str] = []

    @bot.command()
    async def ping(ctx: commands.Context[commands.Bot]) -> None:
        seen.append(f"{ctx.author.name}@{ctx.guild.name}#{ctx.channel.name}")
        async with ctx.typing():
            message = await ctx.send(
                "pong <@&1> @everyone",
                embed=discord.Embed(title="t", description="d"),
                file=discord.File(io.BytesIO(b"\x89PNG fake"), filename="loss.png"),
            )
        await message.edit(content="pong!")
        await ctx.message.reply("done", mention_author=False)

    task = asyncio.create_task(bot.start(fake.token))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), timeout=15)
        identify = await fake.wait_until_identified()
        assert identify["token"] == fake.token
        assert identify["intents"] == intents.value
        assert fake.gateway_queries[0] == {"v": "10", "encoding": "json", "compress": "zlib-stream"}

        guild = bot.get_guild(fake.guild_id)
        assert guild is not None and guild.get_channel(fake.channel_id).name == "general"
        assert {m.name for m in guild.members} == {"doppeltweet", "alice", "root"}
        assert guild.get_member(fake.root.id).guild_permissions.manage_guild
        assert not guild.get_member(fake.alice.id).guild_permissions.manage_guild
        assert bot.user.id == fake.bot_user.id

        await fake.send_user_message("!ping")
        sent = await fake.wait_for_sent_messages(2)
        edits = await fake.wait_for(
            lambda: [r for r in fake.requests if r.method == "PATCH"], what="the edit"
        )
    finally:
        await _stop(bot, task)

    assert seen == ["alice@Fake Guild#general"]
    first, reply = sent[0], sent[1]
    assert first.json["content"] == "pong <@&1> @everyone"
    assert first.json["embeds"][0]["title"] == "t"
    assert first.json["allowed_mentions"] == {"parse": []}
    assert [(f.filename, f.data) for f in first.files] == [("loss.png", b"\x89PNG fake")]
    assert edits[0].json["content"] == "pong!"
    assert reply.json["content"] == "done"
    assert reply.json["message_reference"]["message_id"]
    assert ("POST", f"/channels/{fake.channel_id}/typing") in [
        (r.method, r.path) for r in fake.requests
    ]
    assert fake.unknown_requests == []


async def test_fake_discord_answers_unknown_routes_and_messages_with_json_404(
    fake: FakeDiscord,
) -> None:
    apply_discord_endpoints(fake.api_base, fake.gateway_url)
    client = discord.Client(intents=discord.Intents.none())
    await client.login(fake.token)
    try:
        with pytest.raises(discord.NotFound) as route:
            await client.fetch_guild(123)
        with pytest.raises(discord.NotFound) as message:
            await client.http.get_message(fake.channel_id, 42)
    finally:
        await client.close()
    assert route.value.text == "404: Not Found"
    assert message.value.code == 10008
    assert [(r.method, r.path) for r in fake.unknown_requests] == [
        ("GET", "/guilds/123"),
        ("GET", f"/channels/{fake.channel_id}/messages/42"),
    ]


async def test_fake_discord_refuses_a_wrong_token_at_login(fake: FakeDiscord) -> None:
    apply_discord_endpoints(fake.api_base, fake.gateway_url)
    client = discord.Client(intents=discord.Intents.none())
    try:
        with pytest.raises(discord.LoginFailure):
            await client.login("not-the-token")
    finally:
        await client.close()


async def test_fake_gateway_speaks_zlib_stream_with_a_sync_flush_per_message(
    fake: FakeDiscord,
) -> None:
    """The fake's compression is what discord.py's decompressor expects: one zlib stream."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(fake.gateway_url + "?v=10&encoding=json&compress=zlib-stream") as ws,
    ):
        inflate = zlib.decompressobj()
        hello = await asyncio.wait_for(ws.receive_bytes(), timeout=5)
        assert hello.endswith(b"\x00\x00\xff\xff")
        assert b'"op": 10' in inflate.decompress(hello)
        await ws.send_json({"op": 1, "d": None})
        ack = await asyncio.wait_for(ws.receive_bytes(), timeout=5)
        assert b'"op": 11' in inflate.decompress(ack)
