-- doppeltweet's first schema. Timestamps are ISO 8601 UTC text; JSON columns hold JSON text.

-- Per-server settings as key/value pairs (value: JSON), so a new setting needs no migration.
CREATE TABLE guild_settings (
    guild_id   INTEGER NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (guild_id, key)
);

-- The models a server trained; the files live in that server's model store (path).
CREATE TABLE models (
    guild_id    INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    handles     TEXT    NOT NULL,               -- JSON [{"name", "platform"}]
    sources     TEXT    NOT NULL,               -- JSON ["api" | "bluesky" | "<upload path>"]
    base_model  TEXT    NOT NULL,
    lora        INTEGER NOT NULL DEFAULT 0,
    path        TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    trained_by  INTEGER,
    PRIMARY KEY (guild_id, name)
);
CREATE INDEX models_by_recency ON models (guild_id, updated_at);

-- Training jobs; at most one queued or running job per model and server.
CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id          INTEGER NOT NULL,
    channel_id        INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    model_name        TEXT    NOT NULL,
    handles           TEXT    NOT NULL,         -- JSON [{"name", "platform"}]
    sources           TEXT    NOT NULL,         -- JSON, as in models
    options           TEXT    NOT NULL DEFAULT '{}',
    state             TEXT    NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    pid               INTEGER,
    restarts          INTEGER NOT NULL DEFAULT 0, -- re-queued after the bot died mid-training
    created_at        TEXT    NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    error             TEXT,
    status_message_id INTEGER,
    progress          TEXT                      -- JSON: the last progress event
);
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_guild ON jobs (guild_id, state, id);
CREATE INDEX jobs_by_user ON jobs (user_id, state);
CREATE UNIQUE INDEX jobs_one_active_per_model
    ON jobs (guild_id, model_name) WHERE state IN ('queued', 'running');

-- Auto-posting schedules; removed with their model.
CREATE TABLE schedules (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id      INTEGER NOT NULL,
    model_name    TEXT    NOT NULL,
    channel_id    INTEGER NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('interval', 'cron')),
    spec          TEXT    NOT NULL,
    timezone      TEXT    NOT NULL DEFAULT 'UTC',
    jitter_s      INTEGER NOT NULL DEFAULT 0 CHECK (jitter_s >= 0),
    to_x          INTEGER NOT NULL DEFAULT 0,
    ai_label      INTEGER NOT NULL DEFAULT 1,
    paused        INTEGER NOT NULL DEFAULT 0,
    paused_reason TEXT,
    created_by    INTEGER NOT NULL,
    created_at    TEXT    NOT NULL,
    last_run_at   TEXT,
    FOREIGN KEY (guild_id, model_name) REFERENCES models (guild_id, name) ON DELETE CASCADE
);
CREATE INDEX schedules_by_guild ON schedules (guild_id, id);

-- Every generated tweet the bot showed or posted (auto-posts must never repeat one).
CREATE TABLE generated_tweets (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id    INTEGER NOT NULL,
    model_name  TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    prompt      TEXT    NOT NULL DEFAULT '',
    user_id     INTEGER,
    channel_id  INTEGER,
    kind        TEXT    NOT NULL CHECK (kind IN ('command', 'autopost')),
    schedule_id INTEGER REFERENCES schedules (id) ON DELETE SET NULL,
    x_post_id   TEXT,
    created_at  TEXT    NOT NULL
);
CREATE INDEX generated_tweets_by_model ON generated_tweets (guild_id, model_name, kind, text);
