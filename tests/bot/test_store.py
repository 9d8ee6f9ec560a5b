"""Store: migrations, guild scoping and the typed records of models, jobs, schedules and tweets."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import store as store_module
from bot.store import Store, migrations
from training.errors import InputError
from training.handles import parse_handle, parse_handles

GUILD, OTHER_GUILD = 1, 2


async def add_model(store: Store, name: str = "alice", guild: int = GUILD, **changes: object):
    fields: dict[str, object] = {
        "handles": parse_handles([name.split("-")[0]]),
        "sources": ["api"],
        "base_model": "gpt2",
        "lora": False,
        "path": Path(f"/models/{guild}/{name}"),
        "trained_by": 7,
    }
    fields.update(changes)
    return await store.upsert_model(guild, name, **fields)  # type: ignore[arg-type]


async def add_job(store: Store, name: str = "alice", guild: int = GUILD, user: int = 7):
    return await store.create_job(
        guild,
        10,
        user,
        name,
        handles=parse_handles([name]),
        sources=["api"],
        options={"lora": True},
    )


# -- migrations ---------------------------------------------------------------------------------


async def test_a_new_database_is_migrated_to_the_latest_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "bot.db"
    store = await Store.open(path)
    try:
        assert await store.schema_version() == len(migrations()) >= 1
        with sqlite3.connect(path) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        assert {"guild_settings", "models", "jobs", "schedules", "generated_tweets"} <= tables
        assert mode == "wal"
    finally:
        await store.close()


async def test_reopening_keeps_the_data_and_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    store = await Store.open(path)
    await add_model(store)
    await store.close()
    store = await Store.open(path)
    try:
        assert await store.schema_version() == len(migrations())
        assert [m.name for m in await store.list_models(GUILD)] == ["alice"]
    finally:
        await store.close()


async def test_a_later_migration_is_applied_to_an_existing_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bot.db"
    store = await Store.open(path)
    await store.close()
    extra = (len(migrations()) + 1, "9999_extra.sql", "ALTER TABLE models ADD COLUMN note TEXT;")
    known = migrations()
    monkeypatch.setattr(store_module, "migrations", lambda: [*known, extra])
    store = await Store.open(path)
    try:
        assert await store.schema_version() == len(known) + 1
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(models)")]
    assert "note" in columns


async def test_a_failing_migration_leaves_the_previous_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bot.db"
    await (await Store.open(path)).close()
    known = migrations()
    broken = (
        len(known) + 1,
        "9999_broken.sql",
        "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1);",
    )
    monkeypatch.setattr(store_module, "migrations", lambda: [*known, broken])
    with pytest.raises(store_module.StorageError, match="no such table"):
        await Store.open(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(known)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half" not in tables


async def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 999")
    with pytest.raises(InputError, match=r"newer doppeltweet \(schema 999"):
        await Store.open(path)


def test_the_packaged_migrations_are_numbered_without_gaps() -> None:
    found = migrations()
    assert [n for n, _, _ in found] == list(range(1, len(found) + 1))
    assert found[0][1] == "0001_init.sql"


# -- guild settings -----------------------------------------------------------------------------


async def test_guild_settings_are_json_values_scoped_by_server(store: Store) -> None:
    await store.set_guild_setting(GUILD, "base_model", "smollm2-135m")
    await store.set_guild_setting(GUILD, "lora", True)
    await store.set_guild_setting(GUILD, "base_model", "tiny")
    assert await store.guild_settings(GUILD) == {"base_model": "tiny", "lora": True}
    assert await store.get_guild_setting(OTHER_GUILD, "base_model", "gpt2") == "gpt2"
    assert await store.delete_guild_setting(GUILD, "lora") is True
    assert await store.get_guild_setting(GUILD, "lora") is None
    with pytest.raises(InputError, match="not a setting name"):
        await store.set_guild_setting(GUILD, "Robert'); DROP TABLE models;--", 1)


# -- models -------------------------------------------------------------------------------------


async def test_models_are_scoped_by_server(store: Store) -> None:
    await add_model(store, "alice", GUILD)
    await add_model(store, "bob", OTHER_GUILD)
    assert [m.name for m in await store.list_models(GUILD)] == ["alice"]
    assert await store.get_model(GUILD, "bob") is None
    assert await store.delete_model(GUILD, "bob") is False
    assert await store.get_model(OTHER_GUILD, "bob") is not None


async def test_a_retrained_model_keeps_its_creation_time_and_becomes_the_latest(
    store: Store,
) -> None:
    first = await add_model(store, "alice")
    await add_model(store, "bob")
    assert (await store.latest_model(GUILD)).name == "bob"  # type: ignore[union-attr]
    again = await add_model(store, "alice", base_model="tiny", lora=True, sources=["/u/a.csv"])
    assert again.created_at == first.created_at and again.updated_at > first.updated_at
    assert (again.base_model, again.lora, again.sources) == ("tiny", True, ("/u/a.csv",))
    assert [m.name for m in await store.list_models(GUILD)] == ["alice", "bob"]
    assert (await store.latest_model(GUILD)).name == "alice"  # type: ignore[union-attr]
    assert await store.latest_model(OTHER_GUILD) is None


async def test_models_for_a_handle_include_models_shared_with_other_handles(store: Store) -> None:
    await add_model(store, "alice")
    await add_model(store, "alice-bob", handles=parse_handles(["alice", "bob"]))
    await add_model(store, "carol")
    await add_model(store, "alice", guild=OTHER_GUILD)
    found = await store.models_for_handle(GUILD, parse_handle("@Alice"))
    assert [m.name for m in found] == ["alice-bob", "alice"]
    bluesky = parse_handle("bluesky:alice.bsky.social")
    assert await store.models_for_handle(GUILD, bluesky) == []


async def test_deleting_a_model_removes_its_schedules(store: Store) -> None:
    await add_model(store, "alice")
    await store.add_schedule(
        GUILD, "alice", 5, kind="interval", spec="6h", timezone="UTC", created_by=7
    )
    assert await store.delete_model(GUILD, "alice") is True
    assert await store.list_schedules(GUILD) == []


# -- jobs ---------------------------------------------------------------------------------------


async def test_a_job_goes_from_queued_to_running_to_succeeded(store: Store) -> None:
    job = await add_job(store)
    assert (job.state, job.position, job.options, job.restarts) == ("queued", 1, {"lora": True}, 0)
    assert job.handles == tuple(parse_handles(["alice"]))

    running = await store.mark_job_running(job.id, 1234)
    assert running is not None and running.state == "running" and running.pid == 1234
    assert running.started_at is not None
    assert await store.mark_job_running(job.id, 99) is None  # no longer queued

    await store.save_job_progress(job.id, {"phase": "training", "step": 3, "total": 9})
    progressed = await store.get_job(GUILD, job.id)
    assert progressed is not None and progressed.progress == {
        "phase": "training",
        "step": 3,
        "total": 9,
    }

    done = await store.finish_job(job.id, "succeeded")
    assert done.state == "succeeded" and done.finished_at is not None and not done.active
    # A finished job stays as it ended.
    assert (await store.finish_job(job.id, "failed", "late")).state == "succeeded"


async def test_only_one_active_job_per_model_and_server(store: Store) -> None:
    job = await add_job(store, "alice")
    with pytest.raises(InputError, match="already queued or training"):
        await add_job(store, "alice")
    await add_job(store, "alice", guild=OTHER_GUILD)
    await store.finish_job(job.id, "cancelled", "no")
    assert (await add_job(store, "alice")).state == "queued"


async def test_queue_positions_are_global_and_views_are_scoped(store: Store) -> None:
    a = await add_job(store, "a", GUILD)
    b = await add_job(store, "b", OTHER_GUILD)
    c = await add_job(store, "c", GUILD, user=8)
    await store.mark_job_running(a.id, 1)
    queued = await store.queued_jobs(GUILD)
    assert [(j.id, j.position) for j in queued] == [(c.id, 2)]
    assert [(j.id, j.position) for j in await store.queued_jobs(None)] == [(b.id, 1), (c.id, 2)]
    assert [j.id for j in await store.running_jobs(GUILD)] == [a.id]
    assert await store.running_jobs(OTHER_GUILD) == []
    assert await store.get_job(OTHER_GUILD, a.id) is None
    assert (await store.job_by_id(a.id)).guild_id == GUILD  # type: ignore[union-attr]
    assert [j.id for j in await store.recent_jobs(GUILD)] == [c.id, a.id]
    assert (await store.active_job_for_model(GUILD, "c")).position == 2  # type: ignore[union-attr]


async def _order(store: Store) -> list[str]:
    return [j.model_name for j in await store.queued_jobs(None)]


async def test_the_queue_takes_servers_in_turn_not_by_arrival(store: Store) -> None:
    first = await add_job(store, "a1", GUILD)
    for name in ("a2", "a3"):
        await add_job(store, name, GUILD)
    await add_job(store, "b1", OTHER_GUILD, user=9)
    assert await _order(store) == ["a1", "b1", "a2", "a3"]
    # Server A has been served: server B's job goes next, then A's in turn.
    await store.mark_job_running(first.id, 1)
    assert await _order(store) == ["b1", "a2", "a3"]
    await store.finish_job(first.id, "succeeded")
    assert await _order(store) == ["b1", "a2", "a3"]
    assert [j.position for j in await store.queued_jobs(GUILD)] == [2, 3]
    job = await store.active_job_for_model(OTHER_GUILD, "b1")
    assert job is not None and job.position == 1


async def test_within_a_server_members_take_turns_and_each_members_jobs_keep_their_order(
    store: Store,
) -> None:
    await add_job(store, "x1", GUILD, user=7)
    await add_job(store, "x2", GUILD, user=7)
    await add_job(store, "y1", GUILD, user=8)
    await add_job(store, "x3", GUILD, user=7)
    await add_job(store, "z1", GUILD, user=9)
    assert await _order(store) == ["x1", "y1", "z1", "x2", "x3"]


async def test_the_server_and_member_served_longest_ago_go_first(store: Store) -> None:
    old = await add_job(store, "old", OTHER_GUILD, user=9)
    await store.mark_job_running(old.id, 1)
    await store.finish_job(old.id, "succeeded")
    recent = await add_job(store, "recent", GUILD, user=7)
    await store.mark_job_running(recent.id, 2)
    await store.finish_job(recent.id, "succeeded")
    # Server 1 queued first, but server 2 was served longer ago.
    await add_job(store, "a", GUILD, user=7)
    await add_job(store, "b", OTHER_GUILD, user=9)
    # Within server 1, member 8 has never trained: ahead of member 7, who queued earlier.
    await add_job(store, "c", GUILD, user=8)
    assert await _order(store) == ["b", "c", "a"]


async def test_active_jobs_are_counted_per_user_across_servers(store: Store) -> None:
    first = await add_job(store, "a", GUILD)
    await add_job(store, "b", OTHER_GUILD)
    await add_job(store, "c", GUILD, user=8)
    assert await store.count_active_jobs_for_user(7) == 2
    assert [j.model_name for j in await store.user_active_jobs(GUILD, 7)] == ["a"]
    await store.finish_job(first.id, "failed", "boom")
    assert await store.count_active_jobs_for_user(7) == 1


async def test_requeueing_counts_restarts_only_when_asked(store: Store) -> None:
    job = await add_job(store)
    await store.mark_job_running(job.id, 5)
    again = await store.requeue_job(job.id, count_restart=True)
    assert again is not None and (again.state, again.pid, again.restarts) == ("queued", None, 1)
    await store.mark_job_running(job.id, 6)
    again = await store.requeue_job(job.id, count_restart=False)
    assert again is not None and again.restarts == 1
    assert await store.requeue_job(job.id, count_restart=True) is None  # not running


async def test_the_status_message_is_remembered_only_in_its_server(store: Store) -> None:
    job = await add_job(store)
    await store.set_job_status_message(OTHER_GUILD, job.id, 555)
    assert (await store.get_job(GUILD, job.id)).status_message_id is None  # type: ignore[union-attr]
    await store.set_job_status_message(GUILD, job.id, 555)
    assert (await store.get_job(GUILD, job.id)).status_message_id == 555  # type: ignore[union-attr]


async def test_finishing_with_a_non_final_state_is_a_programming_error(store: Store) -> None:
    job = await add_job(store)
    with pytest.raises(ValueError, match="not a final job state"):
        await store.finish_job(job.id, "running")  # type: ignore[arg-type]


# -- schedules ----------------------------------------------------------------------------------


async def test_schedules_are_added_paused_resumed_and_removed_per_server(store: Store) -> None:
    await add_model(store, "alice")
    schedule = await store.add_schedule(
        GUILD,
        "alice",
        55,
        kind="cron",
        spec="09:00",
        timezone="Europe/Berlin",
        created_by=7,
        jitter_s=300,
        to_x=True,
    )
    assert (schedule.kind, schedule.spec, schedule.timezone) == ("cron", "09:00", "Europe/Berlin")
    assert (schedule.jitter_s, schedule.to_x, schedule.ai_label, schedule.paused) == (
        300,
        True,
        True,
        False,
    )

    paused = await store.set_schedule_paused(GUILD, schedule.id, True, "X said 402: no credits.")
    assert (
        paused is not None and paused.paused and paused.paused_reason == "X said 402: no credits."
    )
    assert await store.set_schedule_paused(OTHER_GUILD, schedule.id, False) is None
    resumed = await store.set_schedule_paused(GUILD, schedule.id, False, "ignored")
    assert resumed is not None and not resumed.paused and resumed.paused_reason is None

    at = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
    await store.mark_schedule_run(schedule.id, at)
    assert (await store.get_schedule(GUILD, schedule.id)).last_run_at == at  # type: ignore[union-attr]
    assert await store.get_schedule(OTHER_GUILD, schedule.id) is None
    assert [s.id for s in await store.all_schedules()] == [schedule.id]
    assert await store.delete_schedule(OTHER_GUILD, schedule.id) is False
    assert await store.delete_schedule(GUILD, schedule.id) is True
    assert await store.list_schedules(GUILD) == []


async def test_a_schedule_needs_a_model_in_its_server(store: Store) -> None:
    await add_model(store, "alice", guild=OTHER_GUILD)
    with pytest.raises(InputError, match="no model alice in this server"):
        await store.add_schedule(
            GUILD, "alice", 5, kind="interval", spec="6h", timezone="UTC", created_by=7
        )


# -- generated tweets ---------------------------------------------------------------------------


async def test_generated_tweets_are_logged_and_autoposts_are_remembered(store: Store) -> None:
    await add_model(store, "alice")
    schedule = await store.add_schedule(
        GUILD, "alice", 5, kind="interval", spec="6h", timezone="UTC", created_by=7
    )
    shown = await store.log_tweet(
        GUILD, "alice", "hello world", prompt="hello", user_id=7, channel_id=5
    )
    assert (shown.kind, shown.prompt, shown.user_id) == ("command", "hello", 7)
    await store.log_tweet(
        GUILD, "alice", "posted once", kind="autopost", schedule_id=schedule.id, x_post_id="123"
    )
    await store.log_tweet(OTHER_GUILD, "alice", "elsewhere", kind="autopost")

    assert await store.posted_texts(GUILD, "alice") == ["posted once"]
    recent = await store.recent_tweets(GUILD, "alice")
    assert [t.text for t in recent] == ["posted once", "hello world"]
    assert recent[0].x_post_id == "123" and recent[0].schedule_id == schedule.id
    assert [t.text for t in await store.recent_tweets(GUILD, "alice", kind="command")] == [
        "hello world"
    ]

    # The log outlives the schedule that posted.
    await store.delete_schedule(GUILD, schedule.id)
    assert (await store.recent_tweets(GUILD, "alice", kind="autopost"))[0].schedule_id is None


# -- migration 0002: schedule targets and prompts ---------------------------------------------


async def test_migration_0002_upgrades_a_database_made_by_0001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bot.db"
    known = migrations()
    assert known[1][1] == "0002_schedule_targets_and_prompt.sql"
    monkeypatch.setattr(store_module, "migrations", lambda: known[:1])
    old = await Store.open(path)
    await old.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        db.execute(
            "INSERT INTO models (guild_id, name, handles, sources, base_model, path, created_at, "
            "updated_at) VALUES (?, 'alice', '[]', '[]', 'tiny', '/m/alice', ?, ?)",
            (GUILD, datetime.now(UTC).isoformat(), datetime.now(UTC).isoformat()),
        )
        made_id = db.execute(
            "INSERT INTO schedules (guild_id, model_name, channel_id, kind, spec, created_by, "
            "created_at) VALUES (?, 'alice', 5, 'cron', '09:00', 7, ?)",
            (GUILD, datetime.now(UTC).isoformat()),
        ).lastrowid
        db.execute(
            "INSERT INTO generated_tweets (guild_id, model_name, text, kind, x_post_id, "
            "created_at) VALUES (?, 'alice', 'an old post', 'autopost', '99', ?)",
            (GUILD, datetime.now(UTC).isoformat()),
        )
    monkeypatch.setattr(store_module, "migrations", lambda: known)
    store = await Store.open(path)
    try:
        assert await store.schema_version() == len(known) >= 2
        [schedule] = await store.list_schedules(GUILD)
        assert (schedule.id, schedule.spec, schedule.to_x) == (made_id, "09:00", False)
        assert (schedule.to_bluesky, schedule.to_mastodon, schedule.prompt) == (False, False, "")
        [old_post] = await store.recent_tweets(GUILD, "alice")
        assert (old_post.x_post_id, old_post.posted_to) == ("99", {})
    finally:
        await store.close()


async def test_schedules_keep_their_networks_and_prompt(store: Store) -> None:
    await add_model(store, "alice")
    made = await store.add_schedule(
        GUILD, "alice", 5, kind="interval", spec="6h", timezone="UTC", created_by=7,
        to_bluesky=True, to_mastodon=True, prompt="My dream is",
    )  # fmt: skip
    assert made.targets == ("bluesky", "mastodon")
    assert made.prompt == "My dream is"
    assert await store.get_schedule(GUILD, made.id) == made
    logged = await store.log_tweet(
        GUILD, "alice", "posted", kind="autopost", schedule_id=made.id,
        posted_to={"bluesky": "https://bsky.app/profile/a/post/1"},
    )  # fmt: skip
    [again] = await store.recent_tweets(GUILD, "alice")
    assert again.posted_to == logged.posted_to == {"bluesky": "https://bsky.app/profile/a/post/1"}


# -- migration 0003: who a model is made of ---------------------------------------------------


async def test_migration_0003_gives_no_model_an_owner_by_its_upload_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bot.db"
    known = migrations()
    assert known[2][1] == "0003_model_owner.sql"
    monkeypatch.setattr(store_module, "migrations", lambda: known[:2])
    old = await Store.open(path)
    await old.close()
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(path) as db:
        # Before, a model was "own" when its upload was called discord-messages.txt: anyone's
        # upload could be.
        db.execute(
            "INSERT INTO models (guild_id, name, handles, sources, base_model, path, created_at, "
            'updated_at, trained_by) VALUES (?, \'alice\', \'[{"name": "alice", '
            "\"platform\": \"x\"}]', '[\"/up/1/discord-messages.txt\"]', 'tiny', '/m/alice', "
            "?, ?, 7)",
            (GUILD, now, now),
        )
    monkeypatch.setattr(store_module, "migrations", lambda: known)
    store = await Store.open(path)
    try:
        model = await store.get_model(GUILD, "alice")
        assert model is not None and model.trained_by == 7 and model.owner_id is None
        assert await store.models_owned_by(GUILD, 7) == []
    finally:
        await store.close()


async def test_a_models_owner_stays_whoever_trains_it_again(store: Store) -> None:
    fields = {"handles": parse_handles(["alice"]), "sources": ["api"], "base_model": "gpt2"}
    path = Path("/models/alice+discord")
    await store.upsert_model(GUILD, "alice+discord", **fields, lora=False, path=path,
                             trained_by=7, owner_id=7)  # fmt: skip
    await store.upsert_model(GUILD, "alice+discord", **fields, lora=False, path=path,
                             trained_by=1, owner_id=None)  # fmt: skip
    model = await store.get_model(GUILD, "alice+discord")
    assert model is not None and (model.trained_by, model.owner_id) == (1, 7)


# -- forgetting a member ------------------------------------------------------------------------


def _raw_bytes(path: Path) -> bytes:
    """The database file and its write-ahead log, as they lie on disk."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def test_a_forgotten_members_words_leave_no_trace_in_the_database_file(
    store: Store,
) -> None:
    own = Path("/models/alice+discord")
    fields = {"handles": parse_handles(["alice"]), "sources": ["api"], "base_model": "gpt2"}
    await store.upsert_model(GUILD, "alice+discord", **fields, lora=False, path=own,
                             trained_by=7, owner_id=7)  # fmt: skip
    await add_model(store, "bob")
    secret = "quokka lighthouse marmalade 7731"
    for n in range(20):
        await store.log_tweet(GUILD, "alice+discord", f"{secret} #{n}", prompt="zebra crossing")
    await store.log_tweet(GUILD, "bob", "bob keeps his pelican words")
    assert secret.encode() in _raw_bytes(store.path)

    await store.forget_member(GUILD, 7, ["alice+discord"])

    raw = _raw_bytes(store.path)
    assert secret.encode() not in raw and b"zebra crossing" not in raw
    assert b"bob keeps his pelican words" in raw
    assert [t.text for t in await store.recent_tweets(GUILD, "bob")] == [
        "bob keeps his pelican words"
    ]


def test_every_record_field_is_read_from_its_column_by_a_known_rule() -> None:
    """A field whose type needs converting (a date, JSON, a path) has its rule in _FROM_COLUMN;
    every other field is a plain SQLite value, taken as read."""
    import dataclasses

    as_read = {"int", "str", "int | None", "str | None", "JobState", "ScheduleKind", "TweetKind"}
    records = (
        store_module.ModelRecord,
        store_module.Job,
        store_module.Schedule,
        store_module.GeneratedTweet,
    )
    for record in records:
        for item in dataclasses.fields(record):
            assert item.type in store_module._FROM_COLUMN or item.type in as_read, (
                record.__name__,
                item.name,
                item.type,
            )
