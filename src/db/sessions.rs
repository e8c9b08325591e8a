//! The `sessions` and `login_failures` tables.

use rusqlite::{params, Connection, OptionalExtension};

use super::users::User;
use super::{meta, DbError};
use crate::clock::now;

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
        .prepare_cached(&format!(
            "SELECT {}, s.csrf_token
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id_hash = ?1 AND s.expires_at > ?2 AND u.disabled = 0",
            super::users::U_COLUMNS
        ))?
        .query_row(params![id_hash, now()], |r| {
            Ok((super::users::from_row(r)?, r.get(super::users::N_COLUMNS)?))
        })
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

/// Ends every session of a user but one (the one changing its own password).
pub fn delete_for_user_except(
    conn: &Connection,
    user_id: i64,
    keep_id_hash: &str,
) -> Result<(), DbError> {
    conn.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND id_hash != ?2",
        params![user_id, keep_id_hash],
    )?;
    Ok(())
}

pub fn delete_expired(conn: &Connection) -> Result<usize, DbError> {
    Ok(conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now()])?)
}

/// How many failed logins are allowed in the window, per scope.
pub struct FailureLimits {
    /// One account from one address.
    pub account_from_address: i64,
    /// One account from all addresses together.
    pub account: i64,
    /// One address, all accounts together.
    pub address: i64,
}

/// The outcome of asking to check a password.
pub enum Reservation {
    /// A failure row was written before the check; it is removed if the password is right.
    Reserved(i64),
    Throttled {
        scope: &'static str,
        oldest: Option<i64>,
    },
}

/// Reserves a login attempt atomically: counts the failures since `since` and writes a
/// failure row in one IMMEDIATE transaction, so concurrent attempts cannot all pass the
/// count before any failure is recorded.
pub fn reserve_attempt(
    conn: &mut Connection,
    username: &str,
    address: &str,
    since: i64,
    limits: &FailureLimits,
) -> Result<Reservation, DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let count = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<(i64, Option<i64>), DbError> {
        Ok(tx.query_row(sql, args, |r| Ok((r.get(0)?, r.get(1)?)))?)
    };
    // (what is throttled, (failures, the oldest of them), the limit)
    type Check = (&'static str, (i64, Option<i64>), i64);
    let checks: [Check; 3] = [
        (
            "for this account from your address",
            count(
                "SELECT count(*), min(at) FROM login_failures
                 WHERE username = ?1 AND address = ?2 AND at > ?3",
                &[&username, &address, &since],
            )?,
            limits.account_from_address,
        ),
        (
            "for this account",
            count(
                "SELECT count(*), min(at) FROM login_failures WHERE username = ?1 AND at > ?2",
                &[&username, &since],
            )?,
            limits.account,
        ),
        (
            "from your address",
            count(
                "SELECT count(*), min(at) FROM login_failures WHERE address = ?1 AND at > ?2",
                &[&address, &since],
            )?,
            limits.address,
        ),
    ];
    for (scope, (n, oldest), limit) in checks {
        if n >= limit {
            return Ok(Reservation::Throttled { scope, oldest });
        }
    }
    tx.execute(
        "INSERT INTO login_failures (username, address, at) VALUES (?1, ?2, ?3)",
        params![username, address, now()],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Reservation::Reserved(id))
}

/// An attempt that could not be judged (the directory did not answer): its reservation
/// goes, so an outage does not lock members out.
pub fn release(conn: &Connection, reservation: i64) -> Result<(), DbError> {
    conn.execute("DELETE FROM login_failures WHERE id = ?1", [reservation])?;
    Ok(())
}

/// A right password: its reservation and the earlier failures from that address go.
pub fn clear_failures(conn: &Connection, username: &str, address: &str) -> Result<(), DbError> {
    conn.execute(
        "DELETE FROM login_failures WHERE username = ?1 AND address = ?2",
        params![username, address],
    )?;
    Ok(())
}

pub fn delete_failures_before(conn: &Connection, before: i64) -> Result<usize, DbError> {
    Ok(conn.execute("DELETE FROM login_failures WHERE at <= ?1", [before])?)
}

/// Bumps the credentials epoch: another process (the CLI) changed a password, and the
/// server, which polls it, drops its caches and re-checks open WebSockets.
pub fn bump_credentials_epoch(conn: &Connection) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('credentials_epoch', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [],
    )?;
    Ok(())
}

pub fn credentials_epoch(conn: &Connection) -> Result<i64, DbError> {
    Ok(meta::get(conn, "credentials_epoch")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}
