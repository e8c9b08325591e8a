-- Notebook origins (issue 14): a member enters a notebook's own origin through a
-- single-use code and gets a cookie for that notebook only. The grant behind that cookie
-- hangs off the Notebox session it was issued from: logging out, a password change or
-- disabling the account (which delete sessions) ends it too.
CREATE TABLE notebook_grants (
    -- sha256 of the cookie value; the value itself is never stored
    id_hash      TEXT PRIMARY KEY,
    session_hash TEXT NOT NULL REFERENCES sessions(id_hash) ON DELETE CASCADE,
    notebook_id  TEXT NOT NULL REFERENCES notebooks(id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL
);
CREATE INDEX notebook_grants_session ON notebook_grants(session_hash);
CREATE INDEX notebook_grants_user ON notebook_grants(user_id);
CREATE INDEX notebook_grants_notebook ON notebook_grants(notebook_id);

-- With origin = "ports": the port a notebook was last served on, offered to it again so
-- its URL (for VS Code and scripts) stays the same from run to run when it can.
ALTER TABLE notebooks ADD COLUMN origin_port INTEGER;
