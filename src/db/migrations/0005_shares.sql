-- Share links. The token is the capability (>= 128 random bits); it is kept so the owner
-- can copy the link again.
CREATE TABLE shares (
    token       TEXT PRIMARY KEY,
    notebook_id TEXT NOT NULL REFERENCES notebooks(id) ON DELETE CASCADE,
    -- link | public
    visibility  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX shares_notebook ON shares(notebook_id);
CREATE INDEX shares_public ON shares(visibility, created_at);
