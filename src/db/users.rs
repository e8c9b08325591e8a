//! The `users` table.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::DbError;
use crate::clock::now;

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub max_gpus: Option<i64>,
    pub created_at: i64,
    /// Where the account comes from: "local", "ldap" or "oidc:{id}".
    pub source: String,
    /// The directory's name for them; empty for most local accounts.
    pub display_name: String,
    /// The Notebox groups the directory put them in at its last check.
    pub directory_groups: Vec<String>,
}

impl User {
    /// Whether the account's password is checked by a directory, not by Notebox.
    pub fn from_directory(&self) -> bool {
        self.source != "local"
    }
    /// The name to greet them by.
    pub fn shown_name(&self) -> &str {
        if self.display_name.is_empty() {
            &self.username
        } else {
            &self.display_name
        }
    }
}

const COLUMNS: &str =
    "id, username, is_admin, disabled, max_gpus, created_at, source, display_name, directory_groups";
/// `COLUMNS` of the `users` table aliased `u`, for joins elsewhere (then `from_row`).
pub(super) const U_COLUMNS: &str = "u.id, u.username, u.is_admin, u.disabled, u.max_gpus, \
     u.created_at, u.source, u.display_name, u.directory_groups";
/// How many columns `from_row` reads.
pub(super) const N_COLUMNS: usize = 9;

/// A user from a row whose first columns are `COLUMNS` (also for joins elsewhere).
pub(super) fn from_row(r: &Row) -> rusqlite::Result<User> {
    let groups: String = r.get(8)?;
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        is_admin: r.get(2)?,
        disabled: r.get(3)?,
        max_gpus: r.get(4)?,
        created_at: r.get(5)?,
        source: r.get(6)?,
        display_name: r.get(7)?,
        directory_groups: split_groups(&groups),
    })
}

pub fn split_groups(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|g| !g.is_empty())
        .map(String::from)
        .collect()
}

pub fn count(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}

/// Inserts a user; `Ok(None)` when the name is taken.
pub fn insert(
    conn: &Connection,
    username: &str,
    password_hash: &str,
    is_admin: bool,
) -> Result<Option<User>, DbError> {
    let inserted = conn.execute(
        "INSERT INTO users (username, password_hash, is_admin, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(username) DO NOTHING",
        params![username, password_hash, is_admin, now()],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    by_id(conn, conn.last_insert_rowid())
}

pub fn by_id(conn: &Connection, id: i64) -> Result<Option<User>, DbError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

pub fn by_name(conn: &Connection, username: &str) -> Result<Option<User>, DbError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM users WHERE username = ?1"),
            [username],
            from_row,
        )
        .optional()?)
}

/// The user and their password hash, for checking a login.
pub fn credentials(conn: &Connection, username: &str) -> Result<Option<(User, String)>, DbError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS}, password_hash FROM users WHERE username = ?1"),
            [username],
            |r| Ok((from_row(r)?, r.get(N_COLUMNS)?)),
        )
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<User>, DbError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users ORDER BY username"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_password_hash(conn: &Connection, id: i64, hash: &str) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE users SET password_hash = ?2 WHERE id = ?1",
        params![id, hash],
    )? == 1)
}

pub fn set_admin(conn: &Connection, id: i64, is_admin: bool) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE users SET is_admin = ?2 WHERE id = ?1",
        params![id, is_admin],
    )? == 1)
}

/// An admin disables or enables the account.
pub fn set_disabled(conn: &Connection, id: i64, disabled: bool) -> Result<bool, DbError> {
    let by = if disabled { "admin" } else { "" };
    Ok(conn.execute(
        "UPDATE users SET disabled = ?2, disabled_by = ?3, disabled_reason = '' WHERE id = ?1",
        params![id, disabled, by],
    )? == 1)
}

pub fn set_max_gpus(conn: &Connection, id: i64, max_gpus: Option<i64>) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE users SET max_gpus = ?2 WHERE id = ?1",
        params![id, max_gpus],
    )? == 1)
}

/// Admins that can still log in; the last one must not be demoted or disabled.
pub fn active_admin_count(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM users WHERE is_admin = 1 AND disabled = 0",
        [],
        |r| r.get(0),
    )?)
}

/// A member's monthly GPU-hour budget (None: no budget).
pub fn set_gpu_hours_budget(
    conn: &Connection,
    id: i64,
    hours: Option<f64>,
) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE users SET gpu_hours_budget = ?2 WHERE id = ?1",
        params![id, hours],
    )? == 1)
}

pub fn gpu_hours_budget(conn: &Connection, id: i64) -> Result<Option<f64>, DbError> {
    Ok(conn
        .query_row(
            "SELECT COALESCE(gpu_hours_budget, group_gpu_hours_budget) FROM users WHERE id = ?1",
            [id],
            |r| r.get::<_, Option<f64>>(0),
        )
        .optional()?
        .flatten())
}

/// Every member's own budget (set by an admin), for the admin page.
pub fn gpu_hours_budgets(
    conn: &Connection,
) -> Result<std::collections::HashMap<i64, f64>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, gpu_hours_budget FROM users WHERE gpu_hours_budget IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
