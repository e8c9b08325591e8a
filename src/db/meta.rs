//! The `meta` table: small facts about this installation.

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;

pub fn get(conn: &Connection, key: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Returns the stored value, storing `make()` first if there is none.
pub fn get_or_insert(
    conn: &Connection,
    key: &str,
    make: impl FnOnce() -> String,
) -> Result<String, DbError> {
    if let Some(v) = get(conn, key)? {
        return Ok(v);
    }
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
        params![key, make()],
    )?;
    get(conn, key)?.ok_or_else(|| DbError::Worker(format!("meta key {key} vanished")))
}
