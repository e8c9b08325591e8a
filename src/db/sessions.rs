//! The `sessions` and `login_failures` tables.

use rusqlite::{params, Connection, OptionalExtension};

use super::users::User;
use super::{now, DbError};

pub fn insert(
    conn: &Connection,
    id_hash: &str,
    user_id: i64,
    csrf_token: &str,
    expires_at: i64,
) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id_hash, user_id, csrf_token, now(), expires_at],
    )?;
    Ok(())
}

/// The live session's user and CSRF token; expired sessions and disabled users find nothing.
pub fn lookup(conn: &Connection, id_hash: &str) -> Result<Option<(User, String)>, DbError> {
    Ok(conn
        .query_row(
            "SELECT u.id, u.username, u.is_admin, u.disabled, u.max_gpus, u.created_at, s.csrf_token
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id_hash = ?1 AND s.expires_at > ?2 AND u.disabled = 0",
            params![id_hash, now()],
            |r| {
                Ok((
                    User {
                        id: r.get(0)?,
                        username: r.get(1)?,
                        is_admin: r.get(2)?,
                        disabled: r.get(3)?,
                        max_gpus: r.get(4)?,
                        created_at: r.get(5)?,
                    },
                    r.get(6)?,
                ))
            },
        )
        .optional()?)
}

pub fn delete(conn: &Connection, id_hash: &str) -> Result<(), DbError> {
    conn.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])?;
    Ok(())
}

pub fn delete_for_user(conn: &Connection, user_id: i64) -> Result<(), DbError> {
    conn.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])?;
    Ok(())
}

pub fn delete_expired(conn: &Connection) -> Result<usize, DbError> {
    Ok(conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now()])?)
}

pub fn record_failure(conn: &Connection, username: &str, address: &str) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO login_failures (username, address, at) VALUES (?1, ?2, ?3)",
        params![username, address, now()],
    )?;
    Ok(())
}

/// Failures since `since` for the account and for the address, with the oldest of each.
pub struct FailureCounts {
    pub account: i64,
    pub account_oldest: Option<i64>,
    pub address: i64,
    pub address_oldest: Option<i64>,
}

pub fn failures_since(
    conn: &Connection,
    username: &str,
    address: &str,
    since: i64,
) -> Result<FailureCounts, DbError> {
    let (account, account_oldest) = conn.query_row(
        "SELECT count(*), min(at) FROM login_failures WHERE username = ?1 AND at > ?2",
        params![username, since],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (address, address_oldest) = conn.query_row(
        "SELECT count(*), min(at) FROM login_failures WHERE address = ?1 AND at > ?2",
        params![address, since],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(FailureCounts {
        account,
        account_oldest,
        address,
        address_oldest,
    })
}

pub fn clear_failures(conn: &Connection, username: &str) -> Result<(), DbError> {
    conn.execute("DELETE FROM login_failures WHERE username = ?1", [username])?;
    Ok(())
}

pub fn delete_failures_before(conn: &Connection, before: i64) -> Result<usize, DbError> {
    Ok(conn.execute("DELETE FROM login_failures WHERE at <= ?1", [before])?)
}
