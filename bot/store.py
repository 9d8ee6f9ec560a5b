"""The bot's state in SQLite (aiosqlite): the only module with SQL in it.

The schema evolves through numbered plain-SQL files in ``bot/migrations/`` (``0001_init.sql``,
``0002_….sql``); ``PRAGMA user_version`` records the last one applied, and each file runs in one
transaction with its version bump, so a crash mid-migration leaves the previous schema.

Everything a server can see is scoped by ``guild_id``: model and job queries take it, so a server
only ever sees what was trained in it. Only the job runner's own bookkeeping (the global training
queue, recovery after a restart) and the scheduler's restore look across servers. Rows come back as
typed, frozen dataclasses, never as raw rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

import aiosqlite

from bot.fair_queue import fair_order
from training.errors import DoppeltweetError, InputError
from training.handles import Handle

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ScheduleKind = Literal["interval", "cron"]
TweetKind = Literal["command", "autopost"]

#: States in which a job still occupies its model's slot (dedupe) and its user's quota.
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_SETTING_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


class StorageError(DoppeltweetError):
    """The bot's database cannot be used: deleted, damaged, locked or on a read-only disk."""


#: What a user is told when the database fails under a command (the details go to the log).
UNAVAILABLE = (
    "I cannot save or read my data right now, so that did not happen; the bot's owner can see "
    "why in its log. Try again later."
)
#: Least seconds between two log lines about the same kind of database failure.
_LOG_EVERY_S = 60.0
#: How long a statement waits for another process's lock before giving up (PRAGMA busy_timeout).
DEFAULT_BUSY_TIMEOUT_MS = 5000


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_dev


def _open_failed(path: Path, error: BaseException) -> StorageError:
    """The sentence for a database that cannot be opened at start (for the operator's shell)."""
    why = (error.strerror if isinstance(error, OSError) else None) or str(error)
    return StorageError(
        f"The bot cannot use its database {path} ({why}); make DOPPELTWEET_DATA_DIR (or "
        "DOPPELTWEET_DB_PATH) a writable folder with an undamaged database, then start it again."
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _handles_json(handles: Iterable[Handle]) -> str:
    return json.dumps([{"name": h.name, "platform": h.platform} for h in handles])


def _handles(value: str) -> tuple[Handle, ...]:
    return tuple(Handle(d["name"], d["platform"]) for d in json.loads(value))


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A model a server trained; ``sources`` are what ``!retrain`` uses again."""

    guild_id: int
    name: str
    handles: tuple[Handle, ...]
    sources: tuple[str, ...]
    base_model: str
    lora: bool
    path: Path
    created_at: datetime
    updated_at: datetime
    trained_by: int | None
    #: The member whose own messages the model is made of (``!train me``); None otherwise.
    owner_id: int | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A training job. ``position`` is its place in the global queue (1 = next), when queued."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    model_name: str
    handles: tuple[Handle, ...]
    sources: tuple[str, ...]
    options: dict[str, Any] = field(compare=False)
    state: JobState
    pid: int | None
    restarts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    status_message_id: int | None
    progress: dict[str, Any] | None = field(compare=False)
    position: int | None = None
    #: The member whose own messages the job trains on (``!train me``); None otherwise.
    owner_id: int | None = None

    @property
    def active(self) -> bool:
        """Queued or running: the job still holds its model's slot."""
        return self.state in ACTIVE_STATES


class PostTargets:
    """What a schedule and a request for one share: the public networks it also posts to."""

    __slots__ = ()
    to_x: bool
    to_bluesky: bool
    to_mastodon: bool

    @property
    def targets(self) -> tuple[str, ...]:
        """The public networks it also posts to, by option key (``x``, ``bluesky``, …)."""
        chosen = (("x", self.to_x), ("bluesky", self.to_bluesky), ("mastodon", self.to_mastodon))
        return tuple(key for key, on in chosen if on)


@dataclass(frozen=True, slots=True)
class Schedule(PostTargets):
    """An auto-posting schedule: ``spec`` is an interval (e.g. ``6h``) or a cron-like time."""

    id: int
    guild_id: int
    model_name: str
    channel_id: int
    kind: ScheduleKind
    spec: str
    timezone: str
    jitter_s: int
    to_x: bool
    ai_label: bool
    paused: bool
    paused_reason: str | None
    created_by: int
    created_at: datetime
    last_run_at: datetime | None
    to_bluesky: bool = False
    to_mastodon: bool = False
    #: How each post starts ('' = the model opens the tweet).
    prompt: str = ""


@dataclass(frozen=True, slots=True)
class GeneratedTweet:
    """One generated tweet the bot showed (``command``) or posted on a schedule (``autopost``)."""

    id: int
    guild_id: int
    model_name: str
    text: str
    prompt: str
    user_id: int | None
    channel_id: int | None
    kind: TweetKind
    schedule_id: int | None
    x_post_id: str | None
    created_at: datetime
    #: Where each public network shows the post (its address, else its id), by network key.
    posted_to: dict[str, str] = field(default_factory=dict, compare=False)


def _json_or_none(value: str | None) -> Any:
    return None if value is None else json.loads(value)


#: How a column becomes its field, by the field's declared type; other columns are taken as read.
_FROM_COLUMN: dict[str, Callable[[Any], Any]] = {
    "bool": bool,
    "Path": Path,
    "datetime": _dt,
    "datetime | None": _dt,
    "tuple[Handle, ...]": _handles,
    "tuple[str, ...]": lambda value: tuple(json.loads(value)),
    "dict[str, Any]": json.loads,
    "dict[str, str]": json.loads,
    "dict[str, Any] | None": _json_or_none,
}

_Record = TypeVar("_Record")


def _from_row(cls: type[_Record], row: sqlite3.Row, **given: Any) -> _Record:
    """A record from a row: each field from its column, converted by the field's type
    (:data:`_FROM_COLUMN`); ``given`` fields are not columns."""
    values = dict(given)
    for item in fields(cls):  # type: ignore[arg-type]
        if item.name not in values:
            convert = _FROM_COLUMN.get(cast(str, item.type))
            value = row[item.name]
            values[item.name] = value if convert is None else convert(value)
    return cls(**values)


def _model(row: sqlite3.Row) -> ModelRecord:
    return _from_row(ModelRecord, row)


def _job(row: sqlite3.Row, position: int | None = None) -> Job:
    return _from_row(Job, row, position=position)


def _schedule(row: sqlite3.Row) -> Schedule:
    return _from_row(Schedule, row)


def _tweet(row: sqlite3.Row) -> GeneratedTweet:
    return _from_row(GeneratedTweet, row)


def migrations() -> list[tuple[int, str, str]]:
    """The packaged migrations as ``(number, file name, sql)``, numbered 1, 2, … without gaps."""
    folder = resources.files("bot") / "migrations"
    found: list[tuple[int, str, str]] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"bot/migrations must be numbered 0001, 0002, … without gaps: {numbers}")
    return found


class Store:
    """The bot's SQLite database. Open with :meth:`open`; every method is a coroutine.

    One connection serves the whole bot; an asyncio lock keeps one coroutine's transaction from
    interleaving with another's statements on it.
    """

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self.path = path
        # The file the connection opened: if it is deleted or replaced while the bot runs,
        # SQLite would go on writing into the deleted file and lose everything on restart.
        self._identity = _file_identity(path)
        self._logged: dict[str, float] = {}
        self._wal = False

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, path: Path | str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    ) -> Store:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date.

        A database that cannot be used (a read-only or missing folder, a damaged or foreign
        file, a lock held too long) is one :class:`StorageError` sentence for the operator.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise _open_failed(path, error) from error
        try:
            db.row_factory = aiosqlite.Row
            # Each PRAGMA's cursor is closed at once: one left open (journal_mode returns a row)
            # keeps a statement in progress and makes the first migration's COMMIT fail.
            # secure_delete zeroes deleted rows, so what `!forgetme` removes leaves no copy in
            # the file's free space.
            answers = []
            for pragma in (
                "PRAGMA journal_mode = WAL",
                "PRAGMA foreign_keys = ON",
                f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
                "PRAGMA synchronous = NORMAL",
                "PRAGMA secure_delete = ON",
            ):
                async with db.execute(pragma) as cursor:
                    answers.append(await cursor.fetchall())
            store = cls(db, path)
            store._wal = bool(answers[0]) and str(answers[0][0][0]).lower() == "wal"
            await store._migrate()
            # A read-only file or folder shows only on the first write: try one now (the
            # schema version rewritten as it is, then rolled back).
            version = await store.schema_version()
            await db.execute("BEGIN IMMEDIATE")
            try:
                await db.execute(f"PRAGMA user_version = {version}")
            finally:
                await db.execute("ROLLBACK")
        except sqlite3.Error as error:
            await db.close()
            raise _open_failed(path, error) from error
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection (pending writes are already committed)."""
        async with self._lock:
            await self._db.close()

    async def schema_version(self) -> int:
        """The number of the last migration applied (``PRAGMA user_version``)."""
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        current = await self.schema_version()
        known = migrations()
        if current > len(known):
            raise InputError(
                f"The database {self.path} was written by a newer doppeltweet (schema {current}, "
                f"this one knows {len(known)}); upgrade doppeltweet or set DOPPELTWEET_DB_PATH "
                "to another file."
            )
        for number, _name, sql in known[current:]:
            script = f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;\n"
            try:
                await self._db.executescript(script)
            except BaseException:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise

    # -- failures ---------------------------------------------------------------------------

    def _unavailable(self, error: BaseException | str) -> StorageError:
        """Log why the database failed (once a minute per kind) and return the user's sentence."""
        detail = str(error) or type(error).__name__
        now = time.monotonic()
        if now - self._logged.get(detail, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[detail] = now
            log.error(
                "The database %s cannot be used (%s): commands that save or read data fail "
                "until it is usable again; restore or fix the file, then restart the bot.",
                self.path,
                detail,
            )
        return StorageError(UNAVAILABLE)

    def _check_file(self) -> None:
        if self._identity is not None and _file_identity(self.path) != self._identity:
            raise self._unavailable("its file was deleted or replaced while the bot ran")

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Turn SQLite's failures (not constraint violations: callers explain those) into
        :class:`StorageError`."""
        self._check_file()
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as error:
            raise self._unavailable(error) from error

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock, self._guard():
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                raise
            try:
                await self._db.execute("COMMIT")
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                raise

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock, self._guard(), self._db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        async with self._lock, self._guard(), self._db.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; returns the number of rows it changed."""
        async with self._transaction() as db, db.execute(sql, params) as cursor:
            return cursor.rowcount

    # -- guild settings -------------------------------------------------------------------------

    @staticmethod
    def _check_key(key: str) -> None:
        if not _SETTING_KEY.fullmatch(key):
            raise InputError(f"“{key[:40]}” is not a setting name (lower-case letters, digits, _).")

    async def set_guild_setting(self, guild_id: int, key: str, value: Any) -> None:
        """Set one of a server's settings (any JSON value, e.g. its default base model)."""
        self._check_key(key)
        await self._write(
            "INSERT INTO guild_settings (guild_id, key, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (guild_id, key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            (guild_id, key, json.dumps(value), _ts(_now())),
        )

    async def get_guild_setting(self, guild_id: int, key: str, default: Any = None) -> Any:
        """One of a server's settings, or ``default`` when it was never set."""
        self._check_key(key)
        row = await self._fetchone(
            "SELECT value FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key)
        )
        return default if row is None else json.loads(row["value"])

    async def delete_guild_setting(self, guild_id: int, key: str) -> bool:
        """Forget a server's setting (back to the bot-wide default); True if it was set."""
        self._check_key(key)
        return (
            await self._write(
                "DELETE FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key)
            )
            > 0
        )

    async def guild_settings(self, guild_id: int) -> dict[str, Any]:
        """All of a server's settings."""
        rows = await self._fetchall(
            "SELECT key, value FROM guild_settings WHERE guild_id = ? ORDER BY key", (guild_id,)
        )
        return {row["key"]: json.loads(row["value"]) for row in rows}

    # -- models ---------------------------------------------------------------------------------

    async def upsert_model(
        self,
        guild_id: int,
        name: str,
        *,
        handles: Sequence[Handle],
        sources: Sequence[str],
        base_model: str,
        lora: bool,
        path: Path,
        trained_by: int | None,
        owner_id: int | None = None,
    ) -> ModelRecord:
        """Record a freshly trained model (a retrain keeps ``created_at``, bumps ``updated_at``).

        ``owner_id`` is the member a ``!train me`` model is made of; a model that has an owner
        keeps it whoever trains it again.
        """
        now = _ts(_now())
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO models (guild_id, name, handles, sources, base_model, lora, path, "
                "created_at, updated_at, trained_by, owner_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (guild_id, name) DO UPDATE SET handles = excluded.handles, "
                "sources = excluded.sources, base_model = excluded.base_model, "
                "lora = excluded.lora, path = excluded.path, updated_at = excluded.updated_at, "
                "trained_by = excluded.trained_by, "
                "owner_id = coalesce(models.owner_id, excluded.owner_id)",
                (
                    guild_id,
                    name,
                    _handles_json(handles),
                    json.dumps(list(sources)),
                    base_model,
                    int(lora),
                    str(path),
                    now,
                    now,
                    trained_by,
                    owner_id,
                ),
            )
            async with db.execute(
                "SELECT * FROM models WHERE guild_id = ? AND name = ?", (guild_id, name)
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return _model(row)

    async def get_model(self, guild_id: int, name: str) -> ModelRecord | None:
        """The server's model of that name, or None."""
        row = await self._fetchone(
            "SELECT * FROM models WHERE guild_id = ? AND name = ?", (guild_id, name)
        )
        return None if row is None else _model(row)

    async def list_models(self, guild_id: int) -> list[ModelRecord]:
        """The server's models, most recently trained first."""
        rows = await self._fetchall(
            "SELECT * FROM models WHERE guild_id = ? ORDER BY updated_at DESC, rowid DESC",
            (guild_id,),
        )
        return [_model(r) for r in rows]

    async def latest_model(self, guild_id: int) -> ModelRecord | None:
        """The server's most recently trained model (what ``!tweet`` uses without a handle)."""
        models = await self.list_models(guild_id)
        return models[0] if models else None

    async def models_for_handle(self, guild_id: int, handle: Handle) -> list[ModelRecord]:
        """The server's models that learned from ``handle``, most recent first."""
        rows = await self._fetchall(
            "SELECT DISTINCT m.* FROM models AS m, json_each(m.handles) AS h "
            "WHERE m.guild_id = ? AND json_extract(h.value, '$.name') = ? "
            "AND json_extract(h.value, '$.platform') = ? "
            "ORDER BY m.updated_at DESC, m.rowid DESC",
            (guild_id, handle.name, handle.platform),
        )
        return [_model(r) for r in rows]

    async def models_owned_by(self, guild_id: int, owner_id: int) -> list[ModelRecord]:
        """The server's models made of that member's own messages, most recent first."""
        rows = await self._fetchall(
            "SELECT * FROM models WHERE guild_id = ? AND owner_id = ? "
            "ORDER BY updated_at DESC, rowid DESC",
            (guild_id, owner_id),
        )
        return [_model(r) for r in rows]

    async def forget_member(self, guild_id: int, owner_id: int, names: Sequence[str]) -> list[str]:
        """Remove, in one transaction, what the server's records keep of a member's own
        messages: the models ``names`` (their schedules go with them), every tweet they
        generated, and the member's finished ``!train me`` jobs. Returns those jobs' sources
        (the uploads they read), for the caller to delete."""
        async with self._transaction() as db:
            for name in names:
                await db.execute(
                    "DELETE FROM generated_tweets WHERE guild_id = ? AND model_name = ?",
                    (guild_id, name),
                )
                await db.execute(
                    "DELETE FROM models WHERE guild_id = ? AND name = ?", (guild_id, name)
                )
            where = "WHERE guild_id = ? AND owner_id = ? AND state NOT IN ('queued', 'running')"
            async with db.execute(f"SELECT sources FROM jobs {where}", (guild_id, owner_id)) as cur:
                sources = [s for row in await cur.fetchall() for s in json.loads(row["sources"])]
            await db.execute(f"DELETE FROM jobs {where}", (guild_id, owner_id))
        await self._erase_wal()
        return sources

    async def _erase_wal(self) -> None:
        """Copy the write-ahead log into the database and empty it, so the deleted rows' old
        pages leave the log too. A checkpoint that cannot finish (another connection is
        reading) is logged: the rows are deleted all the same."""
        if not self._wal:
            return
        try:
            async with (
                self._lock,
                self._guard(),
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor,
            ):
                row = await cursor.fetchone()
        except StorageError:
            return
        if row is not None and row[0]:
            log.warning(
                "The write-ahead log of %s could not be emptied after a member was forgotten "
                "(another connection was reading): old copies of the deleted rows stay in it "
                "until SQLite reuses that space.",
                self.path,
            )

    async def delete_model(self, guild_id: int, name: str) -> bool:
        """Forget a model and its schedules; True if it existed. Its files are the caller's."""
        return (
            await self._write(
                "DELETE FROM models WHERE guild_id = ? AND name = ?", (guild_id, name)
            )
            > 0
        )

    # -- jobs -----------------------------------------------------------------------------------

    async def create_job(
        self,
        guild_id: int,
        channel_id: int,
        user_id: int,
        model_name: str,
        *,
        handles: Sequence[Handle],
        sources: Sequence[str],
        options: dict[str, Any] | None = None,
        owner_id: int | None = None,
    ) -> Job:
        """Queue a job; InputError if that model already has a queued or running job here.

        ``owner_id``: the member whose own messages the job trains on (``!train me``)."""
        try:
            async with self._transaction() as db:
                async with db.execute(
                    "INSERT INTO jobs (guild_id, channel_id, user_id, model_name, handles, "
                    "sources, options, state, created_at, owner_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                    (
                        guild_id,
                        channel_id,
                        user_id,
                        model_name,
                        _handles_json(handles),
                        json.dumps(list(sources)),
                        json.dumps(options or {}),
                        _ts(_now()),
                        owner_id,
                    ),
                ) as cursor:
                    job_id = cursor.lastrowid
                async with db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cursor:
                    row = await cursor.fetchone()
        except sqlite3.IntegrityError as error:
            raise InputError(
                f"The model {model_name} is already queued or training in this server."
            ) from error
        assert row is not None
        return await self._positioned(_job(row))

    async def get_job(self, guild_id: int, job_id: int) -> Job | None:
        """The server's job with that id, or None (another server's job is invisible)."""
        row = await self._fetchone(
            "SELECT * FROM jobs WHERE guild_id = ? AND id = ?", (guild_id, job_id)
        )
        return None if row is None else await self._positioned(_job(row))

    async def job_by_id(self, job_id: int) -> Job | None:
        """Any server's job: for the runner's own bookkeeping, never for showing to users."""
        row = await self._fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else await self._positioned(_job(row))

    async def _positioned(self, job: Job) -> Job:
        if job.state != "queued":
            return job
        position = next((j.position for j in await self.queued_jobs(None) if j.id == job.id), None)
        return replace(job, position=position)

    async def active_job_for_model(self, guild_id: int, model_name: str) -> Job | None:
        """The queued or running job of that model in this server, if any."""
        row = await self._fetchone(
            "SELECT * FROM jobs WHERE guild_id = ? AND model_name = ? "
            "AND state IN ('queued', 'running')",
            (guild_id, model_name),
        )
        return None if row is None else await self._positioned(_job(row))

    async def count_active_jobs_for_user(self, user_id: int) -> int:
        """How many jobs the user has queued or running, in any server (the per-user cap)."""
        row = await self._fetchone(
            "SELECT COUNT(*) AS n FROM jobs WHERE user_id = ? AND state IN ('queued', 'running')",
            (user_id,),
        )
        return int(row["n"]) if row else 0

    async def user_active_jobs(self, guild_id: int, user_id: int) -> list[Job]:
        """The user's queued or running jobs in this server, oldest first."""
        rows = await self._fetchall(
            "SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? "
            "AND state IN ('queued', 'running') ORDER BY id",
            (guild_id, user_id),
        )
        return [await self._positioned(_job(r)) for r in rows]

    async def queued_jobs(self, guild_id: int | None) -> list[Job]:
        """Queued jobs, first to run first (round-robin across servers, then members:
        :func:`bot.fair_queue.fair_order`), each with its position in the global queue.

        ``guild_id=None`` is the runner's view of every server's queue.
        """
        rows = await self._fetchall("SELECT * FROM jobs WHERE state = 'queued' ORDER BY id")
        if not rows:
            return []
        served = await self._fetchall(
            "SELECT guild_id, user_id, MAX(started_at) AS last FROM jobs "
            "WHERE started_at IS NOT NULL GROUP BY guild_id, user_id"
        )
        last_started = {
            (r["guild_id"], r["user_id"]): cast(datetime, _dt(r["last"])) for r in served
        }
        ordered = fair_order([_job(row) for row in rows], last_started)
        jobs = [replace(job, position=n) for n, job in enumerate(ordered, start=1)]
        return [j for j in jobs if guild_id is None or j.guild_id == guild_id]

    async def running_jobs(self, guild_id: int | None) -> list[Job]:
        """Running jobs (``guild_id=None``: every server's, for the runner)."""
        if guild_id is None:
            rows = await self._fetchall("SELECT * FROM jobs WHERE state = 'running' ORDER BY id")
        else:
            rows = await self._fetchall(
                "SELECT * FROM jobs WHERE state = 'running' AND guild_id = ? ORDER BY id",
                (guild_id,),
            )
        return [_job(r) for r in rows]

    async def recent_jobs(self, guild_id: int, limit: int = 10) -> list[Job]:
        """The server's latest jobs in any state, newest first."""
        rows = await self._fetchall(
            "SELECT * FROM jobs WHERE guild_id = ? ORDER BY id DESC LIMIT ?", (guild_id, limit)
        )
        return [await self._positioned(_job(r)) for r in rows]

    async def _update_job(self, job_id: int, sql: str, params: Sequence[Any]) -> Job | None:
        """Run an ``UPDATE jobs … WHERE id = ?``; the job after it, or None if no row changed."""
        async with self._transaction() as db:
            async with db.execute(sql, params) as cursor:
                changed = cursor.rowcount
            async with db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cursor:
                row = await cursor.fetchone()
        return _job(row) if changed and row is not None else None

    async def mark_job_running(self, job_id: int, pid: int) -> Job | None:
        """queued → running with the process id; None if the job was no longer queued."""
        return await self._update_job(
            job_id,
            "UPDATE jobs SET state = 'running', pid = ?, started_at = ?, progress = NULL, "
            "error = NULL WHERE id = ? AND state = 'queued'",
            (pid, _ts(_now()), job_id),
        )

    async def save_job_progress(self, job_id: int, progress: dict[str, Any]) -> None:
        """Keep the latest progress event of a running job (for ``!jobs`` and after restarts)."""
        await self._write(
            "UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running'",
            (json.dumps(progress), job_id),
        )

    async def finish_job(self, job_id: int, state: JobState, error: str | None = None) -> Job:
        """queued/running → succeeded, failed or cancelled (a finished job stays as it was)."""
        if state not in FINAL_STATES:
            raise ValueError(f"{state!r} is not a final job state")
        job = await self._update_job(
            job_id,
            "UPDATE jobs SET state = ?, error = ?, finished_at = ? "
            "WHERE id = ? AND state IN ('queued', 'running')",
            (state, error, _ts(_now()), job_id),
        )
        if job is None:
            current = await self.job_by_id(job_id)
            if current is None:
                raise LookupError(f"no job {job_id}")
            return current
        return job

    async def requeue_job(self, job_id: int, *, count_restart: bool) -> Job | None:
        """running → queued again (after a restart or a clean stop); None if it was not running."""
        return await self._update_job(
            job_id,
            "UPDATE jobs SET state = 'queued', pid = NULL, started_at = NULL, "
            "restarts = restarts + ? WHERE id = ? AND state = 'running'",
            (1 if count_restart else 0, job_id),
        )

    async def set_job_status_message(self, guild_id: int, job_id: int, message_id: int) -> None:
        """Remember the Discord message that shows the job's progress (edited as it runs)."""
        await self._write(
            "UPDATE jobs SET status_message_id = ? WHERE guild_id = ? AND id = ?",
            (message_id, guild_id, job_id),
        )

    # -- schedules ------------------------------------------------------------------------------

    async def add_schedule(
        self,
        guild_id: int,
        model_name: str,
        channel_id: int,
        *,
        kind: ScheduleKind,
        spec: str,
        timezone: str,
        created_by: int,
        jitter_s: int = 0,
        to_x: bool = False,
        ai_label: bool = True,
        to_bluesky: bool = False,
        to_mastodon: bool = False,
        prompt: str = "",
    ) -> Schedule:
        """Add an auto-posting schedule for one of the server's models."""
        if kind not in get_args(ScheduleKind):
            raise ValueError(f"{kind!r} is not a schedule kind")
        try:
            async with self._transaction() as db:
                async with db.execute(
                    "INSERT INTO schedules (guild_id, model_name, channel_id, kind, spec, "
                    "timezone, jitter_s, to_x, ai_label, to_bluesky, to_mastodon, prompt, "
                    "created_by, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        guild_id,
                        model_name,
                        channel_id,
                        kind,
                        spec,
                        timezone,
                        jitter_s,
                        int(to_x),
                        int(ai_label),
                        int(to_bluesky),
                        int(to_mastodon),
                        prompt,
                        created_by,
                        _ts(_now()),
                    ),
                ) as cursor:
                    schedule_id = cursor.lastrowid
                async with db.execute(
                    "SELECT * FROM schedules WHERE id = ?", (schedule_id,)
                ) as cursor:
                    row = await cursor.fetchone()
        except sqlite3.IntegrityError as error:
            raise InputError(
                f"There is no model {model_name} in this server to auto-post from."
            ) from error
        assert row is not None
        return _schedule(row)

    async def get_schedule(self, guild_id: int, schedule_id: int) -> Schedule | None:
        """The server's schedule with that id, or None."""
        row = await self._fetchone(
            "SELECT * FROM schedules WHERE guild_id = ? AND id = ?", (guild_id, schedule_id)
        )
        return None if row is None else _schedule(row)

    async def list_schedules(self, guild_id: int) -> list[Schedule]:
        """The server's schedules, oldest first."""
        rows = await self._fetchall(
            "SELECT * FROM schedules WHERE guild_id = ? ORDER BY id", (guild_id,)
        )
        return [_schedule(r) for r in rows]

    async def all_schedules(self) -> list[Schedule]:
        """Every server's schedules: what the scheduler restores when the bot starts."""
        rows = await self._fetchall("SELECT * FROM schedules ORDER BY id")
        return [_schedule(r) for r in rows]

    async def set_schedule_paused(
        self, guild_id: int, schedule_id: int, paused: bool, reason: str | None = None
    ) -> Schedule | None:
        """Pause (with the reason shown to admins) or resume a schedule; None if unknown."""
        async with self._transaction() as db:
            async with db.execute(
                "UPDATE schedules SET paused = ?, paused_reason = ? WHERE guild_id = ? AND id = ?",
                (int(paused), reason if paused else None, guild_id, schedule_id),
            ) as cursor:
                changed = cursor.rowcount
            async with db.execute("SELECT * FROM schedules WHERE id = ?", (schedule_id,)) as cursor:
                row = await cursor.fetchone()
        return _schedule(row) if changed and row is not None else None

    async def mark_schedule_run(self, schedule_id: int, at: datetime | None = None) -> None:
        """Record when a schedule last posted (for listing and coalescing missed runs)."""
        await self._write(
            "UPDATE schedules SET last_run_at = ? WHERE id = ?", (_ts(at or _now()), schedule_id)
        )

    async def delete_schedule(self, guild_id: int, schedule_id: int) -> bool:
        """Remove a schedule; True if it existed in this server."""
        return (
            await self._write(
                "DELETE FROM schedules WHERE guild_id = ? AND id = ?", (guild_id, schedule_id)
            )
            > 0
        )

    async def schedule_by_id(self, schedule_id: int) -> Schedule | None:
        """Any server's schedule: for the scheduler's own runs, never for showing to users."""
        row = await self._fetchone("SELECT * FROM schedules WHERE id = ?", (schedule_id,))
        return None if row is None else _schedule(row)

    async def pause_schedule_if_active(self, schedule_id: int, reason: str) -> bool:
        """Pause a running schedule after an error; True only for the call that paused it.

        The scheduler tells the channel about an error once: only when this returns True.
        """
        return (
            await self._write(
                "UPDATE schedules SET paused = 1, paused_reason = ? WHERE id = ? AND paused = 0",
                (reason, schedule_id),
            )
            > 0
        )

    # -- generated tweets -----------------------------------------------------------------------

    async def log_tweet(
        self,
        guild_id: int,
        model_name: str,
        text: str,
        *,
        kind: TweetKind = "command",
        prompt: str = "",
        user_id: int | None = None,
        channel_id: int | None = None,
        schedule_id: int | None = None,
        x_post_id: str | None = None,
        posted_to: dict[str, str] | None = None,
    ) -> GeneratedTweet:
        """Log a generated tweet that was shown or posted (``posted_to``: where, by network)."""
        if kind not in get_args(TweetKind):
            raise ValueError(f"{kind!r} is not a tweet kind")
        async with self._transaction() as db:
            async with db.execute(
                "INSERT INTO generated_tweets (guild_id, model_name, text, prompt, user_id, "
                "channel_id, kind, schedule_id, x_post_id, posted_to, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    guild_id,
                    model_name,
                    text,
                    prompt,
                    user_id,
                    channel_id,
                    kind,
                    schedule_id,
                    x_post_id,
                    json.dumps(posted_to or {}),
                    _ts(_now()),
                ),
            ) as cursor:
                tweet_id = cursor.lastrowid
            async with db.execute(
                "SELECT * FROM generated_tweets WHERE id = ?", (tweet_id,)
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return _tweet(row)

    async def recent_tweets(
        self, guild_id: int, model_name: str, *, kind: TweetKind | None = None, limit: int = 20
    ) -> list[GeneratedTweet]:
        """The model's latest logged tweets in this server, newest first."""
        rows = await self._fetchall(
            "SELECT * FROM generated_tweets WHERE guild_id = ? AND model_name = ? "
            "AND (? IS NULL OR kind = ?) ORDER BY id DESC LIMIT ?",
            (guild_id, model_name, kind, kind, limit),
        )
        return [_tweet(r) for r in rows]

    async def latest_shown_tweet(self, guild_id: int, channel_id: int) -> GeneratedTweet | None:
        """The newest ``!tweet`` shown in this channel of this server (what ``!post`` posts)."""
        row = await self._fetchone(
            "SELECT * FROM generated_tweets WHERE guild_id = ? AND channel_id = ? "
            "AND kind = 'command' ORDER BY id DESC LIMIT 1",
            (guild_id, channel_id),
        )
        return None if row is None else _tweet(row)

    async def add_posted_to(self, tweet_id: int, posted_to: Mapping[str, str]) -> GeneratedTweet:
        """Record that a logged tweet now also stands on these networks (merged, by network)."""
        async with self._transaction() as db:
            async with db.execute(
                "SELECT * FROM generated_tweets WHERE id = ?", (tweet_id,)
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                raise KeyError(f"no generated tweet {tweet_id}")
            merged = {**json.loads(row["posted_to"]), **posted_to}
            x_id = row["x_post_id"]
            if "x" in posted_to and not x_id:
                x_id = posted_to["x"].rsplit("/", 1)[-1]
            await db.execute(
                "UPDATE generated_tweets SET posted_to = ?, x_post_id = ? WHERE id = ?",
                (json.dumps(merged), x_id, tweet_id),
            )
            async with db.execute(
                "SELECT * FROM generated_tweets WHERE id = ?", (tweet_id,)
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return _tweet(row)

    async def posted_texts(self, guild_id: int, model_name: str) -> list[str]:
        """Every text the model auto-posted in this server: a new post must not repeat one."""
        rows = await self._fetchall(
            "SELECT DISTINCT text FROM generated_tweets WHERE guild_id = ? AND model_name = ? "
            "AND kind = 'autopost'",
            (guild_id, model_name),
        )
        return [r["text"] for r in rows]
