-- Private registries' credentials and members' variables and secrets (issue 24). Every
-- value is sealed with the vault's key (`vault.key` in the data dir), secret or not: the
-- database alone reveals none of them. A NULL user_id is the lab's (set by an admin).
CREATE TABLE registry_credentials (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER REFERENCES users(id) ON DELETE CASCADE,
    -- normalised: lower case, "docker.io" for Docker Hub, with its port if it has one
    host            TEXT NOT NULL,
    username        TEXT NOT NULL,
    password_sealed BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX registry_credentials_owner_host
    ON registry_credentials(ifnull(user_id, 0), host);

CREATE TABLE variables (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- 1: write-only after saving (never shown again); 0: shown back to its owner
    secret       INTEGER NOT NULL,
    value_sealed BLOB NOT NULL,
    -- the value's length in bytes (the limits on an owner's total are checked with it)
    value_bytes  INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX variables_owner_name ON variables(ifnull(user_id, 0), name);

-- The last change to each owner's variables (0: the lab's), as a number that only grows,
-- and the number a notebook's container was given its variables at: a running notebook
-- whose number is below its owner's (or the lab's) last change has older values.
CREATE TABLE variable_changes (
    owner_key  INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL
);
ALTER TABLE notebooks ADD COLUMN variables_generation INTEGER;
