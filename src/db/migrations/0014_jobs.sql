-- Jobs (issue 26): a notebook or a command run headless through the GPU queue.
--
-- While a job is queued, starting or running it also has a row in `notebooks` (kind
-- 'job', same id): the queue, the GPU allocations, the usage ledger, the reconciler and
-- adoption after a crash work on that row as on any notebook's. When the job ends, that
-- row is removed in the same transaction that writes the outcome here; this table is the
-- job's history.
ALTER TABLE notebooks ADD COLUMN kind TEXT NOT NULL DEFAULT 'notebook';

-- A job definition that runs on a schedule (cron, the lab's time zone).
CREATE TABLE job_schedules (
    id              TEXT PRIMARY KEY,
    owner_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    notebook_id     TEXT NOT NULL,
    path            TEXT,
    -- JSON array (command jobs)
    command         TEXT,
    parameters      TEXT NOT NULL DEFAULT '{}',
    image           TEXT,
    environment_id  TEXT,
    machine_id      TEXT NOT NULL,
    time_limit_secs INTEGER,
    cron            TEXT NOT NULL,
    -- 'skip' | 'queue'
    overlap         TEXT NOT NULL,
    next_run_at     INTEGER NOT NULL,
    -- a run is owed once the previous one ends (overlap 'queue')
    pending         INTEGER NOT NULL DEFAULT 0,
    skipped         INTEGER NOT NULL DEFAULT 0,
    last_note       TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX job_schedules_due ON job_schedules(next_run_at);
CREATE INDEX job_schedules_owner ON job_schedules(owner_id);

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    owner_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- the notebook whose folder it runs in (its name copied: the history outlives it)
    notebook_id     TEXT NOT NULL,
    notebook_name   TEXT NOT NULL,
    path            TEXT,
    command         TEXT,
    parameters      TEXT NOT NULL DEFAULT '{}',
    image           TEXT NOT NULL,
    machine_id      TEXT NOT NULL,
    gpu_count       INTEGER NOT NULL DEFAULT 0,
    time_limit_secs INTEGER,
    schedule_id     TEXT REFERENCES job_schedules(id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    -- NULL while not finished: 'succeeded' | 'failed' | 'cancelled' | 'timed_out'
    outcome         TEXT,
    -- set by a cancel or the time limit before the container is taken down
    requested_end   TEXT,
    requested_note  TEXT,
    state_detail    TEXT NOT NULL DEFAULT '',
    exit_code       INTEGER,
    cells           INTEGER,
    cell            INTEGER,
    failed_cell     INTEGER,
    error_name      TEXT,
    error_value     TEXT,
    gpu_seconds     REAL NOT NULL DEFAULT 0,
    gpus            TEXT NOT NULL DEFAULT '[]',
    told_started    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_owner ON jobs(owner_id, created_at);
CREATE INDEX jobs_notebook ON jobs(notebook_id);
CREATE INDEX jobs_schedule ON jobs(schedule_id, created_at);
CREATE INDEX jobs_unfinished ON jobs(outcome) WHERE outcome IS NULL;
