"""``!train``, ``!jobs``, ``!cancel`` and the job status messages against a simulated Discord.

The job runner is real and spawns a real background process: the protocol-speaking stand-in for
the training CLI from ``tests/bot/conftest.py`` (milliseconds per job). simcord settles only once
the bot's work is done, so one ``send`` covers the whole job: queue, progress edits, the report.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import simcord
from discord.ext import commands
from discord_world import CSV, World, add_model

from bot.config import BotSettings
from bot.store import Store
from training.errors import InputError
from training.handles import parse_handles


def uploads(settings: BotSettings, guild_id: int) -> list[Path]:
    folder = settings.guild_uploads_dir(guild_id)
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def edits_of(env: simcord.Env, channel_id: int, message_id: int) -> list[dict]:
    return [
        r.json
        for r in env.http_requests
        if r.method == "PATCH" and r.path == f"/channels/{channel_id}/messages/{message_id}"
    ]


async def test_train_with_a_csv_runs_the_job_and_reports_the_result(
    world: World, store: Store, bot_settings: BotSettings, simcord_env: simcord.Env
) -> None:
    await world.alice.send(world.channel, "!train @jack", attachments=[("tweets.csv", CSV)])
    messages = world.bot_messages()
    status, report = messages[0], messages[-1]
    assert status.content == "**Job #1 · jack** — Done"
    edits = edits_of(simcord_env, world.channel.id, status.id)
    assert edits[0]["content"].startswith("**Job #1 · jack** — ")
    assert all(e["allowed_mentions"] == {"parse": []} for e in edits)
    lines = report.content.splitlines()
    assert lines[0] == "**jack** is trained."
    assert re.search(r"^Tweets downloaded +100$", report.content, re.MULTILINE)
    assert "Validation perplexity: 80.5 → 20.2" in report.content
    assert "**Samples** (AI-generated)\n> just setting up my twttr" in report.content
    assert [a.filename for a in report.attachments] == ["loss.png"]
    [upload] = uploads(bot_settings, world.guild.id)
    assert upload.name == "tweets.csv" and upload.read_bytes() == CSV
    [model] = await store.list_models(world.guild.id)
    assert model.name == "jack" and model.sources == (str(upload),)
    assert world.handled_errors() == []


async def test_status_message_edits_are_throttled_to_the_configured_interval(
    world: World, simcord_env: simcord.Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_STEPS", "30")
    await world.alice.send(world.channel, "!train @jack", attachments=[("tweets.csv", CSV)])
    status = world.bot_messages()[0]
    edits = edits_of(simcord_env, world.channel.id, status.id)
    # Virtual time stands still while the job runs: one progress edit, then the final one.
    assert len(edits) == 2
    assert edits[-1]["content"] == "**Job #1 · jack** — Done"


async def test_progress_text_shows_phase_bar_loss_and_eta() -> None:
    from bot.exts.training._reports import status_text
    from bot.store import Job

    job = Job(
        id=7,
        guild_id=1,
        channel_id=2,
        user_id=3,
        model_name="jack",
        handles=tuple(parse_handles(["jack"])),
        sources=("bluesky",),
        options={},
        state="running",
        pid=1,
        restarts=0,
        created_at=None,
        started_at=None,  # type: ignore[arg-type]
        finished_at=None,
        error=None,
        status_message_id=None,
        progress=None,
    )
    event = {"phase": "training", "step": 5, "total": 20, "loss": 3.21, "eta_s": 75.0}
    assert status_text(job, event) == (
        "**Job #7 · jack** — Training\n"
        "`█████░░░░░░░░░░░░░░░ 25%` step 5/20\n"
        "loss 3.210 · ETA 1m 15s"
    )


async def test_a_language_note_stays_in_the_status_message_and_the_report() -> None:
    from bot.exts.training._reports import status_text, summary_text
    from bot.jobs import JobResult
    from bot.store import Job

    job = Job(
        id=8,
        guild_id=1,
        channel_id=2,
        user_id=3,
        model_name="li",
        handles=tuple(parse_handles(["li"])),
        sources=("api",),
        options={},
        state="running",
        pid=1,
        restarts=0,
        created_at=None,
        started_at=None,  # type: ignore[arg-type]
        finished_at=None,
        error=None,
        status_message_id=None,
        progress=None,
    )
    warning = (
        "The base model smollm2-135m writes mostly English; tweets in Chinese will be poor — a "
        "bot admin can set a multilingual base such as Qwen/Qwen2.5-0.5B for this language."
    )
    noted = {"phase": "cleaning", "message": warning, "notes": [warning]}
    assert status_text(job, noted) == f"**Job #8 · li** — Cleaning tweets\n⚠️ {warning}"
    training = {"phase": "training", "step": 1, "total": 4, "notes": [warning]}
    assert status_text(job, training).endswith(f"step 1/4\n⚠️ {warning}")
    record = {
        "languages": {"warning": warning},
        "likeness": {
            "recognisability": {
                "generated_pct": 83.0,
                "held_out_pct": 91.0,
                "panel": ["BarackObama", "Goethe"],
            }
        },
    }
    result = JobResult(job, None, Path("li"), {}, None, None, None, record)  # type: ignore[arg-type]
    assert summary_text(job, result).splitlines()[1:] == [
        "A classifier that knows @li's real posts and those of 2 other public accounts picks @li "
        "for 83 % of this model's tweets (and for 91 % of @li's own held-out posts).",
        f"⚠️ {warning}",
    ]


async def test_train_with_bluesky_handles_needs_no_attachment(world: World, store: Store) -> None:
    await world.alice.send(world.channel, "!train bluesky:alice.bsky.social")
    [model] = await store.list_models(world.guild.id)
    assert model.sources == ("bluesky",)
    assert world.bot_messages()[-1].content.startswith("**alice.bsky.social** is trained.")


async def test_train_with_api_when_the_x_api_is_not_configured_says_so(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.config import get_settings

    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    monkeypatch.delenv("DOPPELTWEET_X_BEARER_TOKEN", raising=False)
    get_settings.cache_clear()
    await world.alice.send(world.channel, "!train @jack api")
    assert world.last_text().startswith("The X API is not configured on this bot")
    assert world.handled_errors() == [InputError]


async def test_train_with_api_uses_the_x_api_when_configured(
    world: World, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.config import get_settings

    monkeypatch.setenv("X_BEARER_TOKEN", "test-bearer")
    get_settings.cache_clear()
    try:
        await world.alice.send(world.channel, "!train @jack api")
    finally:
        get_settings.cache_clear()
    [model] = await store.list_models(world.guild.id)
    assert model.sources == ("api",)


async def test_train_without_a_source_explains_the_three_options(world: World) -> None:
    await world.alice.send(world.channel, "!train @jack")
    assert world.last_text() == (
        "Attach your X archive (the zip, or tweets.js and the other .js files from its data/ "
        "folder), a CSV, JSONL or plain-text (.txt, one post per line) file of tweets to "
        "`!train @handle`, or name Bluesky handles (bluesky:name.bsky.social) or Mastodon handles "
        "(mastodon:@name@server), or add `api` to read the paid X API."
    )
    assert world.handled_errors() == [InputError]


async def test_train_checks_the_attachment_size_before_downloading(
    world: World, bot_settings: BotSettings, simcord_env: simcord.Env
) -> None:
    bot_settings.max_attachment_mb = 0.001  # 1,048 bytes
    await world.alice.send(world.channel, "!train @jack", attachments=[("tweets.csv", b"x" * 5000)])
    assert world.last_text() == (
        "That file is 5,000 bytes, over this bot's limit of 1,048 bytes (0.001 MB); attach only "
        "the .js files from your archive's data/ folder (tweets.js, and note-tweet.js or "
        "tweets-part1.js… if you have them) instead of the whole zip."
    )
    assert world.handled_errors() == [InputError]
    assert uploads(bot_settings, world.guild.id) == []
    assert not any(r.path.startswith("/attachments") for r in simcord_env.http_requests)


async def test_train_refuses_a_file_type_it_cannot_read(
    world: World, bot_settings: BotSettings
) -> None:
    await world.alice.send(world.channel, "!train @jack", attachments=[("tweets.exe", b"MZ")])
    assert world.last_text().startswith("“tweets.exe” is not a file I can train from")
    assert world.handled_errors() == [InputError]
    assert uploads(bot_settings, world.guild.id) == []


async def test_train_with_an_x_archive_zip_saves_it_for_the_job(
    world: World, bot_settings: BotSettings, store: Store
) -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data/tweets.js", "window.YTD.tweets.part0 = []")
    await world.alice.send(
        world.channel, "!train @jack", attachments=[("twitter-archive.zip", buffer.getvalue())]
    )
    [upload] = uploads(bot_settings, world.guild.id)
    assert upload.name == "twitter-archive.zip"
    assert zipfile.ZipFile(upload).namelist() == ["data/tweets.js"]
    assert (await store.list_models(world.guild.id))[0].name == "jack"


async def test_train_refuses_a_member_mention_and_asks_for_the_x_handle(world: World) -> None:
    await world.alice.send(
        world.channel, f"!train {world.bob.mention}", attachments=[("t.csv", CSV)]
    )
    assert world.last_text() == (
        "Discord turned that into a mention of a server member; type the X handle without the "
        "@ (e.g. jack) or in backticks (`@jack`)."
    )
    assert world.handled_errors() == [InputError]


async def test_train_refuses_an_invalid_handle_with_the_parsers_sentence(world: World) -> None:
    await world.alice.send(world.channel, "!train @not-a-handle", attachments=[("t.csv", CSV)])
    assert world.last_text().startswith("“@not-a-handle” is not an X handle")
    assert world.handled_errors() == [InputError]


async def test_train_of_a_model_already_queued_is_refused_and_the_upload_removed(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    await store.create_job(
        world.guild.id,
        world.channel.id,
        world.bob.id,
        "jack",
        handles=parse_handles(["jack"]),
        sources=["bluesky"],
    )
    await world.alice.send(world.channel, "!train @jack", attachments=[("t.csv", CSV)])
    assert world.last_text() == (
        "The model jack is already queued (position 1) as job #1; wait for it or cancel it "
        "with !cancel 1."
    )
    assert world.handled_errors() == [InputError]
    assert uploads(bot_settings, world.guild.id) == []


async def test_train_beyond_the_per_user_cap_is_refused(world: World, store: Store) -> None:
    for name in ("one", "two"):
        await store.create_job(
            world.guild.id,
            world.channel.id,
            world.alice.id,
            name,
            handles=parse_handles([name]),
            sources=["bluesky"],
        )
    await world.alice.send(world.channel, "!train @jack", attachments=[("t.csv", CSV)])
    assert world.last_text().startswith("You already have 2 training jobs queued or running")
    assert world.handled_errors() == [InputError]


async def test_a_failing_training_posts_its_one_sentence(
    world: World, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "error")
    await world.alice.send(world.channel, "!train @jack", attachments=[("t.csv", CSV)])
    [status] = world.bot_messages()  # one message per job: its status says why it failed
    assert status.content == (
        "**Job #1 · jack** — Failed: Too few tweets are left after cleaning to train a model."
    )
    assert await store.list_models(world.guild.id) == []


async def test_a_failed_retrain_keeps_serving_the_previous_model(
    world: World, store: Store, bot_settings: BotSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_model(store, bot_settings, world.guild.id, "jack")
    monkeypatch.setenv("FAKE_TRAINING_MODE", "crash")
    await world.alice.send(world.channel, "!train @jack", attachments=[("t.csv", CSV)])
    assert world.bot_messages()[-1].content == (
        "**Job #1 · jack** — Failed: The training process stopped with exit code 3; the "
        "previous model is still served."
    )
    await world.alice.send(world.channel, "!tweet @jack")
    assert world.channel.last_message.embeds[0].footer.text.endswith("· jack")


async def test_kill_9_of_the_training_process_is_reported_in_one_sentence(
    world: World, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")

    async def kill_when_running() -> None:
        async with asyncio.timeout(20):
            while True:
                running = await store.running_jobs(None)
                if running and running[0].pid:
                    os.kill(running[0].pid, signal.SIGKILL)
                    return
                await asyncio.sleep(0.05)

    killer = asyncio.get_running_loop().create_task(kill_when_running())
    await world.alice.send(world.channel, "!train @jack", attachments=[("t.csv", CSV)])
    await killer
    assert world.bot_messages()[-1].content == (
        "**Job #1 · jack** — Failed: The training process was killed (signal 9); no model was "
        "saved."
    )
    [job] = await store.recent_jobs(world.guild.id)
    assert job.state == "failed"


async def test_jobs_shows_the_queue_with_positions_and_the_running_progress(
    world: World, store: Store
) -> None:
    running = await store.create_job(
        world.guild.id,
        world.channel.id,
        world.bob.id,
        "bob",
        handles=parse_handles(["bob"]),
        sources=["bluesky"],
    )
    await store.mark_job_running(running.id, os.getpid())
    await store.save_job_progress(
        running.id, {"phase": "training", "step": 10, "total": 40, "loss": 2.5, "eta_s": 30.0}
    )
    await store.create_job(
        world.guild.id,
        world.channel.id,
        world.alice.id,
        "jack",
        handles=parse_handles(["jack"]),
        sources=["bluesky"],
    )
    await world.alice.send(world.channel, "!jobs")
    started = (await store.get_job(world.guild.id, running.id)).started_at  # type: ignore[union-attr]
    ready = int(started.timestamp() + 300)
    text = re.sub(r"expected to start <t:\d+:R>", "expected to start <t:…:R>", world.last_text())
    assert text == (
        "**Job #1 · bob** — Training\n"
        "`█████░░░░░░░░░░░░░░░ 25%` step 10/40\n"
        "loss 2.500 · ETA 30s\n"
        f"Budget 5m 00s · ready <t:{ready}:R>\n"
        "**Your queued jobs**\n"
        f"1. Job #2 · jack — by <@{world.alice.id}>; expected to start <t:…:R>"
    )
    [request] = [r for r in world.env.http_requests if r.method == "POST"][-1:]
    assert request.json["allowed_mentions"] == {"parse": []}


async def test_jobs_with_nothing_queued_says_so(world: World) -> None:
    await world.alice.send(world.channel, "!jobs")
    assert world.last_text() == "No training jobs are queued or running."


async def _queued(store: Store, world: World, user_id: int, name: str) -> int:
    job = await store.create_job(
        world.guild.id,
        world.channel.id,
        user_id,
        name,
        handles=parse_handles([name]),
        sources=["bluesky"],
    )
    return job.id


async def test_cancel_without_an_id_cancels_your_latest_job(world: World, store: Store) -> None:
    await _queued(store, world, world.alice.id, "one")
    latest = await _queued(store, world, world.alice.id, "two")
    await world.alice.send(world.channel, "!cancel")
    assert world.last_text() == (
        f"Cancelled Job #{latest} · two. Training of two was cancelled before it started."
    )
    states = {j.model_name: j.state for j in await store.recent_jobs(world.guild.id)}
    assert states == {"one": "queued", "two": "cancelled"}


async def test_cancel_of_someone_elses_job_is_refused_but_an_admin_may(
    world: World, store: Store
) -> None:
    job_id = await _queued(store, world, world.bob.id, "bob")
    await world.alice.send(world.channel, f"!cancel {job_id}")
    assert world.last_text().startswith(f"Job #{job_id} is someone else's")
    assert world.handled_errors() == [InputError]
    await world.admin.send(world.channel, f"!cancel {job_id}")
    assert world.last_text().startswith(f"Cancelled Job #{job_id} · bob.")


async def test_cancel_with_nothing_to_cancel_is_one_sentence(world: World) -> None:
    await world.alice.send(world.channel, "!cancel")
    assert world.last_text() == "You have no queued or running training job in this server."
    assert world.handled_errors() == [InputError]


async def test_cancel_with_a_bad_job_id_is_one_sentence(world: World) -> None:
    await world.alice.send(world.channel, "!cancel soon")
    assert world.last_text() == (
        'Converting to "int" failed for parameter "job_id"; see `!help` for how to use `!cancel`.'
    )
    assert world.handled_errors() == [commands.BadArgument]


async def test_cancel_of_a_running_job_stops_its_process(
    world: World, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "hang")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()

    async def cancel_when_running() -> None:
        async with asyncio.timeout(20):
            while not await store.running_jobs(None):
                await asyncio.sleep(0.05)
        runner = world.env.bot.runner  # type: ignore[attr-defined]
        await runner.cancel(1, guild_id=world.guild.id, user_id=world.alice.id, is_admin=False)

    canceller = asyncio.get_running_loop().create_task(cancel_when_running())
    await world.alice.send(world.channel, "!train @jack", attachments=[("t.csv", CSV)])
    await canceller
    status = world.bot_messages()[0]
    assert status.content == "**Job #1 · jack** — Cancelled"
    [job] = await store.recent_jobs(world.guild.id)
    assert job.state == "cancelled"


@pytest.mark.simcord(strict_sync=False)
async def test_slash_train_takes_the_attachment_as_an_option(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    result = await world.alice.slash(
        world.channel, "train", handles="@jack", archive=("tweets.csv", CSV)
    )
    assert result.response is not None
    assert result.response.content == "**Job #1 · jack** — Done"
    assert world.bot_messages()[-1].content.startswith("**jack** is trained.")
    [upload] = uploads(bot_settings, world.guild.id)
    assert upload.read_bytes() == CSV


@pytest.mark.simcord(strict_sync=False)
async def test_slash_train_too_large_is_refused_before_download(
    world: World, bot_settings: BotSettings
) -> None:
    bot_settings.max_attachment_mb = 0.001
    result = await world.alice.slash(
        world.channel, "train", handles="@jack", archive=("tweets.csv", b"x" * 5000)
    )
    assert result.response is not None and result.response.ephemeral
    assert result.response.content.startswith("That file is 5,000 bytes, over this bot's")
    assert world.handled_errors() == [InputError]
    assert uploads(bot_settings, world.guild.id) == []


@pytest.mark.simcord(strict_sync=False)
async def test_slash_jobs_and_cancel_answer_the_interaction(world: World, store: Store) -> None:
    job_id = await _queued(store, world, world.alice.id, "jack")
    listing = await world.alice.slash(world.channel, "jobs")
    assert listing.response is not None
    assert f"1. Job #{job_id} · jack" in listing.response.content
    cancelled = await world.alice.slash(world.channel, "cancel", job_id=job_id)
    assert cancelled.response is not None
    assert cancelled.response.content.startswith(f"Cancelled Job #{job_id} · jack.")


# ---------------------------------------------------------------------------------------------
# What people meet first: replies, refusals with their table, the files they really have


def posts_to(env: simcord.Env, channel_id: int) -> list[dict]:
    return [
        r.json
        for r in env.http_requests
        if r.method == "POST" and r.path == f"/channels/{channel_id}/messages"
    ]


async def test_the_status_message_replies_to_the_command_and_pings_nobody(
    world: World, simcord_env: simcord.Env
) -> None:
    command = await world.alice.send(
        world.channel, "!train @jack", attachments=[("tweets.csv", CSV)]
    )
    [status_post, *_] = posts_to(simcord_env, world.channel.id)
    assert status_post["message_reference"]["message_id"] == command.id
    assert status_post["allowed_mentions"]["parse"] == []
    assert status_post["allowed_mentions"].get("replied_user") is False
    assert status_post["content"] == "**Job #1 · jack** — Starting."


async def test_a_queued_job_says_how_many_jobs_are_ahead(
    world: World, store: Store, simcord_env: simcord.Env
) -> None:
    for name in ("someone", "other"):
        await _queued(store, world, world.bob.id, name)
    await world.alice.send(world.channel, "!train @jack", attachments=[("tweets.csv", CSV)])
    first = posts_to(simcord_env, world.channel.id)[0]["content"]
    assert first.startswith("**Job #3 · jack** — Queued: ")
    from bot.exts.training._reports import queued_text

    job = next(j for j in await store.recent_jobs(world.guild.id) if j.id == 3)
    assert queued_text(replace(job, position=1)) == "**Job #3 · jack** — Queued: next in line."
    assert queued_text(replace(job, position=3)) == "**Job #3 · jack** — Queued: 2 jobs ahead."
    assert queued_text(replace(job, position=None)) == "**Job #3 · jack** — Starting."


async def test_a_refused_training_shows_the_table_in_its_one_status_message(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINING_MODE", "refuse")
    await world.alice.send(world.channel, "!train @jack", attachments=[("tweets.csv", CSV)])
    [status] = world.bot_messages()
    lines = status.content.splitlines()
    assert lines[0] == (
        "**Job #1 · jack** — Failed: Only 2,055 characters of tweets by @jack are left after "
        "cleaning."
    )
    assert re.search(r"^Tweets downloaded +22$", status.content, re.MULTILINE)
    assert re.search(r"^Retweets +2$", status.content, re.MULTILINE)
    assert re.search(r"^Short tweets +3$", status.content, re.MULTILINE)
    assert re.search(r"^Tweets kept +17$", status.content, re.MULTILINE)
    assert re.search(r"^Characters kept +2055$", status.content, re.MULTILINE)


async def test_several_js_files_train_as_one_archive(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    files = [
        ("tweets.js", b"window.YTD.tweets.part0 = []"),
        ("tweets-part1.js", b"window.YTD.tweets.part1 = []"),
        ("note-tweet.js", b"window.YTD.note_tweet.part0 = []"),
    ]
    await world.alice.send(world.channel, "!train @jack", attachments=files)
    saved = uploads(bot_settings, world.guild.id)
    assert sorted(p.name for p in saved) == ["note-tweet.js", "tweets-part1.js", "tweets.js"]
    assert len({p.parent for p in saved}) == 1 and saved[0].parent.name == "data"
    [model] = await store.list_models(world.guild.id)
    assert model.sources == (str(saved[0].parent),)
    assert world.handled_errors() == []


@pytest.mark.parametrize(
    ("files", "sentence"),
    [
        (
            [("tweets.js", b"x"), ("tweets.csv", b"x")],
            "Several files train as one X archive, so each must be a .js file from its data/ "
            "folder (tweets.js, note-tweet.js, tweets-part1.js…), not “tweets.csv”.",
        ),
        (
            [("tweets.js", b"x"), ("TWEETS.js", b"y")],
            "Two of the attached files have the same name; attach each once.",
        ),
        (
            [(f"tweets-part{i}.js", b"x") for i in range(11)],
            "Attach at most 10 files to one training, not 11.",
        ),
    ],
)
async def test_bad_sets_of_files_are_refused_before_any_job(
    world: World,
    store: Store,
    bot_settings: BotSettings,
    files: list[tuple[str, bytes]],
    sentence: str,
) -> None:
    await world.alice.send(world.channel, "!train @jack", attachments=files)
    assert world.last_text() == sentence
    assert world.handled_errors() == [InputError]
    assert uploads(bot_settings, world.guild.id) == []
    assert await store.recent_jobs(world.guild.id) == []


async def test_a_plain_text_file_is_accepted(
    world: World, store: Store, bot_settings: BotSettings
) -> None:
    await world.alice.send(
        world.channel, "!train @jack", attachments=[("posts.txt", b"Dear diary, one post\n")]
    )
    [model] = await store.list_models(world.guild.id)
    assert model.sources[0].endswith("posts.txt")
    assert world.handled_errors() == []


def test_a_size_over_the_limit_never_reads_as_within_it() -> None:
    from bot.services.training_requests import size_refusal

    limit = 10 * 1024 * 1024
    assert size_refusal(limit + 1, limit, 10) == (
        "10,485,761 bytes, over this bot's limit of 10,485,760 bytes (10 MB)"
    )
    assert size_refusal(int(10.5 * 1024 * 1024), limit, 10) == (
        "10.50 MB, over this bot's 10 MB limit"
    )


async def test_several_files_are_checked_for_their_total_size_before_downloading(
    world: World, bot_settings: BotSettings, simcord_env: simcord.Env
) -> None:
    bot_settings.max_upload_total_mb = 0.002  # 2,097 bytes; each file is within its own limit
    files = [("tweets.js", b"x" * 1500), ("tweets-part1.js", b"y" * 1500)]
    await world.alice.send(world.channel, "!train @jack", attachments=files)
    assert world.last_text() == (
        "Together the files are 3,000 bytes, over this bot's limit of 2,097 bytes (0.002 MB) "
        "for one training; attach only tweets.js (and note-tweet.js or tweets-part1.js… if you "
        "have them) from your archive's data/ folder."
    )
    assert world.handled_errors() == [InputError]
    assert uploads(bot_settings, world.guild.id) == []
    assert not any(r.path.startswith("/attachments") for r in simcord_env.http_requests)
