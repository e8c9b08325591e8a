-- Directory login (issue 25): accounts from LDAP or an OpenID Connect provider.
-- source: 'local' | 'ldap' | 'oidc:{id}'; external_id: the LDAP DN or the OIDC subject.
ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
ALTER TABLE users ADD COLUMN external_id TEXT;
ALTER TABLE users ADD COLUMN display_name TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN email TEXT NOT NULL DEFAULT '';
-- The Notebox groups the directory put the account in at its last check, comma-separated.
ALTER TABLE users ADD COLUMN directory_groups TEXT NOT NULL DEFAULT '';
-- The most generous monthly GPU-hour budget of the account's groups (a member's own
-- budget, gpu_hours_budget, comes first); kept with the groups.
ALTER TABLE users ADD COLUMN group_gpu_hours_budget REAL;
-- Who disabled the account: '' (nobody / an admin before this column) | 'admin' |
-- 'directory' (the directory no longer lets them in; a later allowed login enables it).
ALTER TABLE users ADD COLUMN disabled_by TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN disabled_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN directory_checked_at INTEGER;

-- Someone the directory vouched for, whose name a local (or other directory's) account
-- already has: never taken over silently; an admin links the account or dismisses this.
CREATE TABLE link_requests (
    username     TEXT NOT NULL,
    source       TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    -- the LDAP DN or the OIDC subject, to show
    entry        TEXT NOT NULL DEFAULT '',
    display_name TEXT NOT NULL DEFAULT '',
    requested_at INTEGER NOT NULL,
    PRIMARY KEY (username, source)
);
