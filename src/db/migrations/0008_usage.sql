-- Usage ledger (issue 13): one row per GPU a notebook held (or, for a CPU notebook, per
-- run of its cores), opened and closed in the transactions that take and release the GPU.
-- The member's and notebook's names are copied so the ledger outlives renames and deletes.
CREATE TABLE usage_intervals (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL,
    member          TEXT NOT NULL,
    notebook_id     TEXT NOT NULL,
    notebook_name   TEXT NOT NULL,
    machine_id      TEXT NOT NULL,
    -- NULL: the notebook's CPU cores (a CPU notebook)
    gpu_uuid        TEXT,
    cores           REAL NOT NULL,
    started_at      INTEGER NOT NULL,
    -- NULL while held
    ended_at        INTEGER,
    -- GPU: seconds above the busy threshold; CPU: CPU-seconds used
    busy_seconds    REAL NOT NULL DEFAULT 0,
    peak_memory_mib INTEGER NOT NULL DEFAULT 0,
    -- the last accounting sample (Unix ms): the last time it was seen running
    sampled_at_ms   INTEGER,
    sampled_busy    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX usage_intervals_open ON usage_intervals(notebook_id) WHERE ended_at IS NULL;
CREATE INDEX usage_intervals_start ON usage_intervals(started_at);
CREATE INDEX usage_intervals_user ON usage_intervals(user_id, started_at);

-- Busy seconds per interval and hour, so a range that cuts an interval is still exact to
-- the hour; intervals wholly inside a range use their own total.
CREATE TABLE usage_hours (
    interval_id  INTEGER NOT NULL REFERENCES usage_intervals(id) ON DELETE CASCADE,
    hour         INTEGER NOT NULL,
    busy_seconds REAL NOT NULL,
    PRIMARY KEY (interval_id, hour)
) WITHOUT ROWID;

-- A member's monthly GPU-hour budget; NULL = none.
ALTER TABLE users ADD COLUMN gpu_hours_budget REAL;

-- What is held at the upgrade is accounted from when it was taken.
INSERT INTO usage_intervals (user_id, member, notebook_id, notebook_name, machine_id,
        gpu_uuid, cores, started_at)
SELECT n.owner_id, u.username, n.id, n.name, n.machine_id, a.gpu_uuid, n.cpus, a.since
FROM gpu_allocations a JOIN notebooks n ON n.id = a.notebook_id JOIN users u ON u.id = n.owner_id;
INSERT INTO usage_intervals (user_id, member, notebook_id, notebook_name, machine_id,
        gpu_uuid, cores, started_at)
SELECT n.owner_id, u.username, n.id, n.name, n.machine_id, NULL, n.cpus,
       COALESCE(n.started_at, n.updated_at)
FROM notebooks n JOIN users u ON u.id = n.owner_id
WHERE n.gpu_count = 0 AND n.state IN ('pulling', 'starting', 'running', 'stopping');
