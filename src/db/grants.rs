//! The `notebook_grants` table: what a notebook's own cookie stands for.

use rusqlite::{params, Connection, OptionalExtension};

use super::users::User;
use super::DbError;
use crate::clock::now;

/// Records a grant for the live session `session_hash` (false when that session is gone:
/// logged out between the code and its exchange).
pub fn insert(
    conn: &Connection,
    id_hash: &str,
    session_hash: &str,
    notebook_id: &str,
    user_id: i64,
) -> Result<bool, DbError> {
    let inserted = conn.execute(
        "INSERT INTO notebook_grants (id_hash, session_hash, notebook_id, user_id, created_at)
         SELECT ?1, s.id_hash, ?3, ?4, ?5 FROM sessions s
         WHERE s.id_hash = ?2 AND s.user_id = ?4 AND s.expires_at > ?5",
        params![id_hash, session_hash, notebook_id, user_id, now()],
    )?;
    Ok(inserted == 1)
}

/// The user behind a notebook's cookie: only for that notebook, only while the session it
/// came from is live and the account enabled.
pub fn lookup(
    conn: &Connection,
    id_hash: &str,
    notebook_id: &str,
) -> Result<Option<User>, DbError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {}
                 FROM notebook_grants g
                 JOIN sessions s ON s.id_hash = g.session_hash
                 JOIN users u ON u.id = g.user_id AND u.id = s.user_id
                 WHERE g.id_hash = ?1 AND g.notebook_id = ?2 AND s.expires_at > ?3
                   AND u.disabled = 0",
                super::users::U_COLUMNS
            ),
            params![id_hash, notebook_id, now()],
            super::users::from_row,
        )
        .optional()?)
}

/// Ends every notebook cookie of a user (a password change ends them all, also those of
/// the session that changed it).
pub fn delete_for_user(conn: &Connection, user_id: i64) -> Result<(), DbError> {
    conn.execute("DELETE FROM notebook_grants WHERE user_id = ?1", [user_id])?;
    Ok(())
}
