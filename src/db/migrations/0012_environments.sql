-- Environments (issue 24): images Notebox builds for members, each build a version.
-- The source (what to build from) is JSON without secrets; a repository's credential is
-- sealed with the vault's key.
CREATE TABLE environments (
    id                TEXT PRIMARY KEY,
    owner_id          INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    -- 1: every member sees it in the new-notebook form
    shared            INTEGER NOT NULL DEFAULT 0,
    -- repo | files | dockerfile | saved
    kind              TEXT NOT NULL,
    source            TEXT NOT NULL,
    credential_sealed BLOB,
    -- how its notebooks start Jupyter (the base catalog image's launcher and command)
    launcher          TEXT NOT NULL,
    command           TEXT NOT NULL DEFAULT '[]',
    created_at        INTEGER NOT NULL
);
CREATE UNIQUE INDEX environments_owner_name ON environments(owner_id, name);

CREATE TABLE environment_builds (
    id              INTEGER PRIMARY KEY,
    environment_id  TEXT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    version         INTEGER NOT NULL,
    -- queued | building | ready | failed | cancelled | removed
    state           TEXT NOT NULL,
    state_detail    TEXT NOT NULL DEFAULT '',
    -- the step running (or the one that failed): "Step 4/7 : RUN ./postBuild"
    step            TEXT NOT NULL DEFAULT '',
    failed_step     TEXT,
    -- what was asked for: a branch, tag or commit (repositories)
    requested_ref   TEXT,
    -- the resolved commit (repositories)
    commit_sha      TEXT,
    -- sha256 of the inputs (files, base image id, commit); same inputs = same image
    input_hash      TEXT,
    image           TEXT,
    size_bytes      INTEGER,
    -- a notebook saved as this version
    from_notebook   TEXT,
    created_by      INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
);
CREATE UNIQUE INDEX environment_builds_version ON environment_builds(environment_id, version);
CREATE INDEX environment_builds_state ON environment_builds(state);

-- A notebook from an environment runs one version of it (kept while it is used).
ALTER TABLE notebooks ADD COLUMN environment_id TEXT;
ALTER TABLE notebooks ADD COLUMN environment_version INTEGER;
-- A notebook started from a repository: its files are fetched into /notebooks at the
-- first start (repo_commit is set once they are there).
ALTER TABLE notebooks ADD COLUMN repo_url TEXT;
ALTER TABLE notebooks ADD COLUMN repo_ref TEXT;
ALTER TABLE notebooks ADD COLUMN repo_commit TEXT;
ALTER TABLE notebooks ADD COLUMN open_path TEXT;
