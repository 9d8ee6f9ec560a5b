"""Full-stack smoke tests: real discord.py over loopback against the fake Discord in this folder."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import discord
import pytest
from discord.ext import commands
from discord_world import CSV
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


async def _sigterm(process: asyncio.subprocess.Process) -> int | None:
    """Stop the bot as a service manager does; its exit code (None when it had to be killed)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), timeout=60)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None


async def _wait_for_line(log_path: Path, text: str, timeout: float = 30) -> None:
    """Wait (at most ``timeout`` seconds) until the bot's output contains ``text``."""
    for _ in range(int(timeout / 0.1)):
        if text in log_path.read_text(encoding="utf-8", errors="replace"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the bot never logged {text!r}")


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


# ---------------------------------------------------------------- a server that answers badly
# The real bot, store, job runner and model cache in this process (the training process is the
# stand-in from conftest.py, the model the scripted one), against the fake over loopback; the
# fake refuses chosen requests or sends a malformed event.

SECRET = "secret-payload-text-7f3a"


def _bot_messages(fake: FakeDiscord) -> list[dict[str, Any]]:
    """The messages the bot has in #general now, oldest first."""
    return [
        m
        for m in sorted(fake.messages.values(), key=lambda m: int(m["id"]))
        if m["author"]["id"] == str(fake.bot_user.id) and m["channel_id"] == str(fake.channel_id)
    ]


def _bot_message(fake: FakeDiscord, start: str) -> dict[str, Any] | None:
    return next((m for m in _bot_messages(fake) if m["content"].startswith(start)), None)


def _said(fake: FakeDiscord) -> str:
    """Everything the bot ever tried to say, refused requests included."""
    return "\n".join(
        str((r.json or {}).get("content") or (r.json or {}).get("data", {}).get("content"))
        for r in fake.requests
        if r.method in ("POST", "PATCH")
    )


@pytest.fixture
async def loopback_bot(
    fake: FakeDiscord,
    bot_settings: Any,
    store: Any,
    fake_training: Path,
    scripted_generator: Any,
    reset_cooldowns: None,
) -> AsyncIterator[tuple[Any, asyncio.Task[None]]]:
    """The doppeltweet bot connected to the fake, and the task that runs it."""
    from discord_world import assemble_bot

    apply_discord_endpoints(fake.api_base, fake.gateway_url)
    bot = assemble_bot(
        bot_settings,
        store,
        generator=scripted_generator,
        python=fake_training,
        guild_ready_timeout=0.2,
    )
    task = asyncio.create_task(bot.start(fake.token))
    try:
        ready = asyncio.ensure_future(bot.wait_until_ready())
        await asyncio.wait({ready, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise AssertionError(f"the bot did not get ready: {task}")
        yield bot, task
    finally:
        if not task.done():
            await asyncio.wait_for(bot.close(), timeout=30)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
        await bot.cache.close()


async def _eventually(predicate: Callable[[], object], what: str, timeout: float = 10) -> None:
    """Poll a condition on the bot's side (the fake is not told of it), at most ``timeout`` s."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _answer(fake: FakeDiscord, command: dict[str, Any]) -> dict[str, Any]:
    """The bot's first message after ``command`` that is not a training report."""
    return await fake.wait_for(
        lambda: next(
            (
                m
                for m in _bot_messages(fake)
                if int(m["id"]) > int(command["id"]) and "is trained." not in m["content"]
            ),
            None,
        ),
        what=f"the answer to {command['content']}",
    )


async def _train(fake: FakeDiscord) -> dict[str, Any]:
    return await fake.send_user_message("!train @jack", files={"tweets.csv": CSV})


async def _report(fake: FakeDiscord, *, timeout: float = 60) -> dict[str, Any]:
    """The finished job's report, once its samples are in."""
    return await fake.wait_for(
        lambda: (
            (m := _bot_message(fake, "**jack** is trained."))
            and "**Samples**" in m["content"]
            and m
        ),
        timeout=timeout,
        what="the training report with its samples",
    )


async def test_a_malformed_gateway_event_while_a_training_edits_its_status_is_skipped(
    fake: FakeDiscord,
    loopback_bot: tuple[Any, asyncio.Task[None]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server echoes every status edit as a MESSAGE_UPDATE whose member.roles holds role
    objects, which makes discord.py's parser raise; the bot logs the event type once, skips
    those events, and the training goes on to its report."""
    bot, task = loopback_bot
    monkeypatch.setenv("FAKE_TRAINING_STEPS", "15")
    monkeypatch.setenv("FAKE_TRAINING_DELAY", "0.2")
    role_objects = [r for r in fake.guild_payload()["roles"] if r["name"] == "admins"]

    def malformed(message: dict[str, Any]) -> dict[str, Any]:
        return dict(
            message,
            member=dict(message["member"], roles=role_objects),
            nonce=SECRET,  # stands for whatever private a payload holds
        )

    fake.echo_edits = malformed
    with caplog.at_level(logging.DEBUG, logger="bot.gateway_guard"):
        await _train(fake)
        status = await fake.wait_for(
            lambda: _bot_message(fake, "**Job #1 · jack**"), what="the status message"
        )
        await _eventually(
            lambda: bot.skipped_events.get("MESSAGE_UPDATE"), "an edit's malformed echo"
        )
        jobs = await _answer(fake, await fake.send_user_message("!jobs"))
        report = await _report(fake)
        edits = [r for r in fake.requests if r.method == "PATCH"]  # progress, done, samples
        await _eventually(
            lambda: bot.skipped_events == {"MESSAGE_UPDATE": len(edits)},
            "every edit's echo skipped",
        )

    assert not task.done(), "the bot must keep running"
    assert len(edits) >= 3
    assert jobs["content"].startswith(("**Job #1 · jack** — ", "No training jobs"))
    assert fake.messages[int(status["id"])]["content"] == "**Job #1 · jack** — Done"
    assert "Validation perplexity: 80.5 → 20.2" in report["content"]
    assert [a["filename"] for a in report["attachments"]] == ["loss.png"]
    errors = [r for r in caplog.records if r.name == "bot.gateway_guard" and r.levelname == "ERROR"]
    assert len(errors) == 1, "logged once per event type"
    assert "MESSAGE_UPDATE" in errors[0].getMessage()
    assert "TypeError" in errors[0].getMessage()
    assert SECRET not in caplog.text
    assert "went wrong" not in _said(fake)


async def test_a_status_reply_refused_with_400_falls_back_to_a_plain_message(
    fake: FakeDiscord, loopback_bot: tuple[Any, asyncio.Task[None]]
) -> None:
    _, task = loopback_bot
    replies = fake.refuse(
        "POST",
        fake.messages_path(),
        status=400,
        when=lambda r: "message_reference" in (r.json or {}),
    )
    await _train(fake)
    report = await _report(fake)

    assert len(replies.refused) == 1
    assert replies.refused[0].json["content"] == "**Job #1 · jack** — Starting."
    first = _bot_messages(fake)[0]
    assert "message_reference" not in first
    assert first["content"] == "**Job #1 · jack** — Done"  # the plain status, edited to the end
    assert report["content"].startswith("**jack** is trained.")
    assert "went wrong" not in _said(fake)
    assert "refused" not in _said(fake)
    assert not task.done()


async def test_a_slash_train_whose_interaction_answer_is_refused_posts_its_status_plainly(
    fake: FakeDiscord, loopback_bot: tuple[Any, asyncio.Task[None]]
) -> None:
    _, task = loopback_bot
    callbacks = fake.refuse("POST", r"/interactions/\d+/[^/]+/callback", status=400)
    await fake.send_slash_command("train", {"handles": "bluesky:jack.bsky.social"})
    report = await fake.wait_for(
        lambda: (
            (m := _bot_message(fake, "**jack.bsky.social** is trained."))
            and "**Samples**" in m["content"]
            and m
        ),
        timeout=60,
        what="the training report",
    )

    assert [r.json["data"]["content"] for r in callbacks.refused] == [
        "**Job #1 · jack.bsky.social** — Starting."
    ]
    assert _bot_messages(fake)[0]["content"] == "**Job #1 · jack.bsky.social** — Done"
    assert "went wrong" not in _said(fake)
    assert report["attachments"][0]["filename"] == "loss.png"
    assert not task.done()


async def test_a_job_whose_reply_and_plain_status_are_refused_still_runs_and_jobs_shows_it(
    fake: FakeDiscord,
    loopback_bot: tuple[Any, asyncio.Task[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, task = loopback_bot
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    both = fake.refuse("POST", fake.messages_path(), status=400, times=2)
    await _train(fake)
    await fake.wait_for(lambda: len(both.refused) == 2, what="the reply and the plain message")
    # The job's progress posts its status once Discord takes messages again.
    status = await fake.wait_for(
        lambda: _bot_message(fake, "**Job #1 · jack**"), what="the status from the job's progress"
    )
    jobs = await _answer(fake, await fake.send_user_message("!jobs"))

    assert [r.json["content"] for r in both.refused] == ["**Job #1 · jack** — Starting."] * 2
    assert "message_reference" not in status
    assert jobs["content"].startswith("**Job #1 · jack** — ")
    assert "went wrong" not in _said(fake)
    assert not task.done()


async def test_a_report_whose_loss_curve_is_refused_with_500_is_posted_as_text(
    fake: FakeDiscord, loopback_bot: tuple[Any, asyncio.Task[None]]
) -> None:
    """discord.py retries a 500 with backoff (about 25 s in all) before giving up on the upload."""
    from bot.exts.training._reports import LOSS_CURVE_MISSING

    _, task = loopback_bot
    uploads = fake.refuse("POST", fake.messages_path(), status=500, when=lambda r: bool(r.files))
    await _train(fake)
    report = await _report(fake, timeout=120)

    assert uploads.refused, "the upload was tried"
    assert {f.filename for r in uploads.refused for f in r.files} == {"loss.png"}
    assert uploads.refused[0].json["content"].startswith("**jack** is trained.")
    lines = report["content"].splitlines()
    assert lines[0] == "**jack** is trained."
    assert "Validation perplexity: 80.5 → 20.2" in report["content"]
    assert LOSS_CURVE_MISSING in lines
    assert "**Samples** (AI-generated)\n> just setting up my twttr" in report["content"]
    assert report["attachments"] == []
    assert _bot_messages(fake)[0]["content"] == "**Job #1 · jack** — Done"
    assert not task.done()


async def test_doppeltweet_bot_skips_a_malformed_event_logs_ready_and_keeps_answering(
    tmp_path: Path,
) -> None:
    """The process itself: a malformed MESSAGE_UPDATE is one log line, not an exit."""
    async with FakeDiscord(token=TOKEN) as fake:
        log_path = tmp_path / "bot.log"
        process = await _start_bot(_bot_environment(fake, tmp_path / "data"), tmp_path, log_path)
        failure: Exception | None = None
        try:
            await _unless_exited(process, fake.wait_until_identified(timeout=120))
            command = await fake.send_user_message("!help")
            await _unless_exited(process, fake.wait_for_sent_messages(1))
            malformed = dict(command, content=SECRET)
            malformed["member"] = dict(command["member"], roles=fake.guild_payload()["roles"])
            await fake.dispatch("MESSAGE_UPDATE", malformed)
            await fake.send_user_message("!help")
            await _unless_exited(process, fake.wait_for_sent_messages(2))
            # discord.py reports ready once no more servers arrive (guild_ready_timeout).
            await _unless_exited(process, _wait_for_line(log_path, "Ready as "))
        except Exception as error:
            failure = error
        finally:
            code = await _sigterm(process)
        output = log_path.read_text(encoding="utf-8", errors="replace")
    if failure is not None:
        raise AssertionError(f"{failure}\n--- doppeltweet bot ---\n{output[-4000:]}") from failure

    assert code == 0, output[-4000:]
    assert f"Using a Discord-compatible server: REST {fake.api_base}, gateway" in output
    assert "Ready as doppeltweet" in output and "in 1 server." in output
    assert output.count("Skipped a MESSAGE_UPDATE gateway event") == 1, output[-4000:]
    assert SECRET not in output
    assert TOKEN not in output
    assert "Traceback" not in output, output[-4000:]


async def test_doppeltweet_bot_with_a_gateway_url_that_answers_http_200_exits_with_one_sentence(
    tmp_path: Path,
) -> None:
    async with FakeDiscord(token=TOKEN) as fake:
        fake.gateway_answers_http = True
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
        f"error: The gateway at DISCORD_GATEWAY_URL ({fake.gateway_url}) answered HTTP 200 "
        "instead of accepting a websocket connection; set DISCORD_GATEWAY_URL to the server's "
        "websocket gateway (ws:// or wss://), or leave it empty for Discord's."
    ), output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert "Using a Discord-compatible server" in output
    assert fake.gateway_queries, "the bot dialled the gateway"
    assert TOKEN not in output
