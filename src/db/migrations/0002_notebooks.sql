-- Notebooks: what each should be (desired_state) and what it was last seen to be (state).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE notebooks (
    id                 TEXT PRIMARY KEY,
    owner_id           INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    -- catalog id, or NULL for a custom image
    image_id           TEXT,
    image              TEXT NOT NULL,
    launcher           TEXT NOT NULL,
    -- JSON array, for launcher = 'command'
    command            TEXT NOT NULL DEFAULT '[]',
    machine_id         TEXT NOT NULL,
    cpus               REAL NOT NULL,
    memory_mib         INTEGER NOT NULL,
    gpu_count          INTEGER NOT NULL DEFAULT 0,
    -- running | stopped | deleted
    desired_state      TEXT NOT NULL,
    -- stopped | queued | pulling | starting | running | stopping | failed
    state              TEXT NOT NULL,
    state_detail       TEXT NOT NULL DEFAULT '',
    -- set when a stop is really a restart
    restart_requested  INTEGER NOT NULL DEFAULT 0,
    jupyter_token      TEXT NOT NULL,
    container_id       TEXT,
    -- NULL = never
    auto_shutdown_secs INTEGER,
    auto_shutdown_at   INTEGER,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    stopped_at         INTEGER,
    updated_at         INTEGER NOT NULL,
    last_activity_at   INTEGER,
    queued_at          INTEGER,
    forked_from        TEXT
);
CREATE INDEX notebooks_owner ON notebooks(owner_id, created_at);
CREATE INDEX notebooks_state ON notebooks(desired_state, state);
