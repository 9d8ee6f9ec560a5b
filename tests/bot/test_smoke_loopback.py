"""Full-stack smoke tests: real discord.py over loopback against the fake Discord in this folder."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import discord
import pytest
from discord.ext import commands
from fake_discord import FakeDiscord

from bot.endpoints import apply_discord_endpoints

pytestmark = pytest.mark.timeout(300)


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


async def test_bare_bot_answers_a_slash_command_and_reads_an_attachment_over_loopback(
    fake: FakeDiscord,
) -> None:
    """Hybrid commands by `/` (deferred callback, follow-ups, an edit); attachment downloads."""
    apply_discord_endpoints(fake.api_base, fake.gateway_url)
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    bot = commands.Bot(
        command_prefix="!",
        intents=intents,
        allowed_mentions=discord.AllowedMentions.none(),
        guild_ready_timeout=0.2,
        help_command=None,
    )

    @bot.hybrid_command()
    async def shout(ctx: commands.Context[commands.Bot], text: str, times: int = 1) -> None:
        async with ctx.typing():
            await asyncio.sleep(0)
        first = await ctx.send((text.upper() + " ") * times)
        await ctx.send("and again @everyone")
        await first.edit(content="edited")

    @bot.command()
    async def size(ctx: commands.Context[commands.Bot]) -> None:
        data = await ctx.message.attachments[0].read()
        await ctx.send(f"{ctx.message.attachments[0].filename}: {len(data)} bytes")

    task = asyncio.create_task(bot.start(fake.token))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), timeout=15)
        interaction = await fake.send_slash_command("shout", {"text": "hi", "times": 2})
        answered = await fake.wait_for(
            lambda: (r := fake.interaction_requests(interaction)) and len(r) >= 4 and r,
            what="the slash command's callback, follow-up and edit",
        )
        await fake.send_user_message("!size", files={"tweets.csv": b"text\nhello world\n"})
        sent = await fake.wait_for_sent_messages(1)
    finally:
        await _stop(bot, task)

    assert [r.method for r in answered] == ["POST", "POST", "POST", "PATCH"]
    callback, followup, second, edit = answered
    assert callback.path == f"/interactions/{interaction['id']}/{interaction['token']}/callback"
    assert callback.json["type"] == 5  # typing() on an interaction defers ("thinking…")
    assert followup.method == "POST"
    assert followup.path == f"/webhooks/{fake.application_id}/{interaction['token']}"
    assert followup.json["content"] == "HI HI "
    assert followup.json["allowed_mentions"] == {"parse": []}
    assert second.json == followup.json | {"content": "and again @everyone"}
    assert edit.path.startswith(f"/webhooks/{fake.application_id}/{interaction['token']}/messages/")
    assert edit.json["content"] == "edited"
    assert sent[0].json["content"] == "tweets.csv: 17 bytes"
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


# --------------------------------------------------------------------------- the real bot

T = TypeVar("T")
TOKEN = "smoke-test-token.not-a-real-one"


async def _seed_guild_model(data_dir: Path, guild_id: int, tiny_model_dir: Path) -> Path:
    """A copy of the session's tiny model in the guild's store, recorded in the bot's database."""
    from bot.config import BotSettings
    from bot.store import Store
    from training.handles import parse_handle

    settings = BotSettings(_env_file=None, data_dir=data_dir, db_path=data_dir / "doppeltweet.db")
    folder = settings.guild_models_dir(guild_id) / tiny_model_dir.name
    await asyncio.to_thread(shutil.copytree, tiny_model_dir, folder)
    store = await Store.open(settings.db_file)
    try:
        await store.upsert_model(
            guild_id,
            folder.name,
            handles=[parse_handle("@alice")],
            sources=["tweets.csv"],
            base_model="tiny",
            lora=False,
            path=folder,
            trained_by=None,
        )
    finally:
        await store.close()
    return folder


def _bot_environment(fake: FakeDiscord, data_dir: Path) -> dict[str, str]:
    """The process environment of `doppeltweet bot`: ours only, nothing from a developer's shell."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DISCORD_", "DOPPELTWEET_", "X_", "HF_TOKEN"))
    }
    env.update(
        DISCORD_TOKEN=TOKEN,
        DISCORD_API_BASE=fake.api_base,
        DISCORD_GATEWAY_URL=fake.gateway_url,
        DOPPELTWEET_DATA_DIR=str(data_dir),
        DOPPELTWEET_DB_PATH=str(data_dir / "doppeltweet.db"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


async def _start_bot(env: dict[str, str], cwd: Path, log_path: Path) -> asyncio.subprocess.Process:
    """Start `doppeltweet bot` through the CLI dispatcher, output (stdout + stderr) to a file."""
    with log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from training.cli import main; sys.exit(main(['bot']))",
            cwd=cwd,  # a folder without .env, so only ``env`` configures the bot
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )


async def _unless_exited(process: asyncio.subprocess.Process, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``, but fail at once if the bot process exits in the meantime."""
    step = asyncio.ensure_future(awaitable)
    exited = asyncio.ensure_future(process.wait())
    await asyncio.wait({step, exited}, return_when=asyncio.FIRST_COMPLETED)
    if step.done():
        exited.cancel()
        return step.result()
    step.cancel()
    raise AssertionError(f"`doppeltweet bot` exited early with code {process.returncode}")


async def test_doppeltweet_bot_answers_help_slash_help_and_tweet_then_stops_on_sigterm(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """`doppeltweet bot` as a user runs it: env config, real gateway + REST, SIGTERM at the end."""
    async with FakeDiscord(token=TOKEN) as fake:
        data_dir = tmp_path / "data"
        model_dir = await _seed_guild_model(data_dir, fake.guild_id, tiny_model_dir)
        log_path = tmp_path / "bot.log"
        process = await _start_bot(_bot_environment(fake, data_dir), tmp_path, log_path)
        failure: Exception | None = None
        try:
            identify = await _unless_exited(process, fake.wait_until_identified(timeout=120))
            assert identify["token"] == TOKEN
            assert identify["intents"] & (1 << 15), "the Message Content intent is requested"

            await fake.send_user_message("!help")
            help_post = (await _unless_exited(process, fake.wait_for_sent_messages(1)))[0]

            slash = await fake.send_slash_command("help")
            answered = fake.wait_for(
                lambda: fake.interaction_requests(slash), what="/help's answer"
            )
            slash_help = (await _unless_exited(process, answered))[0]

            await fake.send_user_message("!tweet hi")
            tweeted = fake.wait_for_sent_messages(2, timeout=120)
            tweet_post = (await _unless_exited(process, tweeted))[1]
        except Exception as error:
            failure = error
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(process.wait(), timeout=60)
            except TimeoutError:
                process.kill()
                await process.wait()
                code = None
        output = log_path.read_text(encoding="utf-8", errors="replace")
    if failure is not None:
        raise AssertionError(f"{failure}\n--- doppeltweet bot ---\n{output[-4000:]}") from failure

    assert code == 0, f"`doppeltweet bot` did not stop cleanly on SIGTERM:\n{output[-4000:]}"
    assert TOKEN not in output, "the token must never be logged"
    assert "Traceback" not in output, output[-4000:]

    help_embed = help_post.json["embeds"][0]
    assert help_embed["title"] == "doppeltweet"
    assert "!tweet" in json.dumps(help_embed)
    assert help_post.json["allowed_mentions"] == {"parse": []}

    assert slash_help.json["type"] == 4
    assert slash_help.json["data"]["embeds"] == [help_embed]
    assert slash_help.json["data"]["allowed_mentions"] == {"parse": []}

    assert tweet_post.json["allowed_mentions"] == {"parse": []}
    tweet = tweet_post.json["embeds"][0]
    assert tweet["description"].startswith("hi")
    assert len(tweet["description"]) > len("hi")
    assert "@alice" in tweet["author"]["name"]
    assert "AI-generated" in tweet["footer"]["text"]
    assert ("POST", f"/channels/{fake.channel_id}/typing") in [
        (r.method, r.path) for r in fake.requests
    ]
    assert fake.unknown_requests == []
    assert model_dir.is_dir(), "the bot must not touch the model it served"


async def test_doppeltweet_bot_with_a_token_discord_rejects_exits_with_one_sentence(
    tmp_path: Path,
) -> None:
    async with FakeDiscord(token="the-real-token") as fake:
        log_path = tmp_path / "bot.log"
        process = await _start_bot(_bot_environment(fake, tmp_path / "data"), tmp_path, log_path)
        try:
            code = await asyncio.wait_for(process.wait(), timeout=120)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    output = log_path.read_text(encoding="utf-8", errors="replace")
    assert code == 2, output[-4000:]
    assert output.rstrip().endswith(
        "error: Discord rejected DISCORD_TOKEN; copy the bot token again from the developer portal."
    )
    assert TOKEN not in output
    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/users/@me")]
    assert fake.identifies == []
