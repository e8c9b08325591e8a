//! The `api_tokens` table (personal access tokens).

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::users::User;
use super::DbError;
use crate::clock::now;

#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

pub fn insert(
    conn: &Connection,
    user_id: i64,
    name: &str,
    token_hash: &str,
    prefix: &str,
) -> Result<i64, DbError> {
    conn.execute(
        "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user_id, name, token_hash, prefix, now()],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn list_for_user(conn: &Connection, user_id: i64) -> Result<Vec<TokenInfo>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, prefix, created_at, last_used_at FROM api_tokens
         WHERE user_id = ?1 ORDER BY created_at DESC, id DESC",
    )?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(TokenInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            prefix: r.get(2)?,
            created_at: r.get(3)?,
            last_used_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes one of the user's tokens; false when it was not theirs or is gone.
pub fn delete(conn: &Connection, user_id: i64, token_id: i64) -> Result<bool, DbError> {
    Ok(conn.execute(
        "DELETE FROM api_tokens WHERE id = ?1 AND user_id = ?2",
        params![token_id, user_id],
    )? == 1)
}

/// The token's user (if enabled), and whether its last use should be recorded (at most
/// once a minute). Read-only, so a busy writer never holds up a request.
pub fn lookup(conn: &Connection, token_hash: &str) -> Result<Option<(User, Option<i64>)>, DbError> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {}, t.id, t.last_used_at
             FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = ?1 AND u.disabled = 0",
            super::users::U_COLUMNS
        ))?
        .query_row([token_hash], |r| {
            let n = super::users::N_COLUMNS;
            Ok((
                r.get::<_, i64>(n)?,
                super::users::from_row(r)?,
                r.get::<_, Option<i64>>(n + 1)?,
            ))
        })
        .optional()?;
    Ok(found.map(|(token_id, user, last_used)| {
        let due = last_used.is_none_or(|l| now() - l >= 60);
        (user, due.then_some(token_id))
    }))
}

pub fn touch(conn: &Connection, token_id: i64) -> Result<(), DbError> {
    conn.execute(
        "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1",
        params![token_id, now()],
    )?;
    Ok(())
}
