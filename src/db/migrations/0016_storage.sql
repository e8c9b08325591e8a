-- Storage quotas (issue 27): what each member's `/storage` and notebook folders take, as
-- the background measurer last found it. Pages and refusals read this row; nothing walks
-- a member's files on a request.
CREATE TABLE storage_usage (
    user_id     INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    -- apparent bytes, as `du -sb` counts them (at least this many when `capped` is set)
    used_bytes  INTEGER NOT NULL,
    -- entries counted: files, folders, symlinks (hard links once)
    files       INTEGER NOT NULL,
    -- why the walk stopped short (a cap); NULL = it saw everything
    capped      TEXT,
    -- JSON array of {"path", "bytes"}: the largest top-level entries, largest first
    largest     TEXT NOT NULL DEFAULT '[]',
    measured_at INTEGER NOT NULL,
    -- how long the walk took, in milliseconds
    walk_ms     INTEGER NOT NULL,
    -- when the member was last told they passed 90 % of their quota; NULL once they are
    -- back under it, so the next crossing warns again
    warned_at   INTEGER
);
