-- Notebook ports belong to members (issue 22): a port of `origin_ports` that served a
-- member's notebook never serves another member's, for the life of the install (a page
-- a notebook left open in a browser keeps that port's origin). A member's notebooks
-- share the member's ports, one running notebook a port.
CREATE TABLE origin_ports (
    port         INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    -- the notebook it served last (no foreign key: the port outlives the notebook)
    notebook_id  TEXT,
    last_used_at INTEGER NOT NULL
);
CREATE INDEX origin_ports_user ON origin_ports(user_id);

-- Ports the earlier rule handed out, to the owner of the notebook that had each (a port
-- two members' notebooks had goes to one of them; nothing else is known of the past).
-- notebooks.origin_port is read here for the last time: origin_ports.notebook_id says
-- which notebook a port served last.
INSERT OR IGNORE INTO origin_ports (port, user_id, notebook_id, last_used_at)
    SELECT origin_port, owner_id, id, updated_at FROM notebooks
    WHERE origin_port IS NOT NULL ORDER BY updated_at DESC;

-- With origin = "ports": a random path segment in the notebook's base URL, new for each
-- container (`/nb/{id}/{path_key}/`). The notebook's cookie is confined to it, so a page
-- of an earlier notebook of the same member on the same port cannot name its URLs.
ALTER TABLE notebooks ADD COLUMN path_key TEXT;
