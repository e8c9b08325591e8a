//! The `shares` table.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::DbError;
use crate::clock::now;
use crate::model::{DesiredState, Visibility};

#[derive(Debug, Clone)]
pub struct ShareRow {
    pub token: String,
    pub notebook_id: String,
    pub visibility: Visibility,
    pub created_at: i64,
    pub notebook_name: String,
    pub owner_id: i64,
    pub owner: String,
    pub image: String,
    pub image_id: Option<String>,
    /// The first words of the shared notebook, for the gallery.
    pub preview: String,
}

const SELECT: &str =
    "SELECT s.token, s.notebook_id, s.visibility, s.created_at, n.name, n.owner_id,
        u.username, n.image, n.image_id, s.preview
    FROM shares s JOIN notebooks n ON n.id = s.notebook_id JOIN users u ON u.id = n.owner_id";

fn from_row(r: &Row) -> rusqlite::Result<ShareRow> {
    Ok(ShareRow {
        token: r.get(0)?,
        notebook_id: r.get(1)?,
        visibility: r.get(2)?,
        created_at: r.get(3)?,
        notebook_name: r.get(4)?,
        owner_id: r.get(5)?,
        owner: r.get(6)?,
        image: r.get(7)?,
        image_id: r.get(8)?,
        preview: r.get(9)?,
    })
}

pub fn insert(
    conn: &Connection,
    token: &str,
    notebook_id: &str,
    visibility: Visibility,
) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO shares (token, notebook_id, visibility, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![token, notebook_id, visibility, now()],
    )?;
    Ok(())
}

/// A live share: its notebook exists and is not being deleted, and its owner's account is
/// enabled (disabling a member hides their shares at once).
pub fn by_token(conn: &Connection, token: &str) -> Result<Option<ShareRow>, DbError> {
    Ok(conn
        .query_row(
            &format!("{SELECT} WHERE s.token = ?1 AND n.desired_state != ?2 AND u.disabled = 0"),
            params![token, DesiredState::Deleted],
            from_row,
        )
        .optional()?)
}

pub fn for_notebook(conn: &Connection, notebook_id: &str) -> Result<Vec<ShareRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE s.notebook_id = ?1 ORDER BY s.created_at DESC"
    ))?;
    let rows = stmt.query_map([notebook_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn public(conn: &Connection, limit: i64) -> Result<Vec<ShareRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE s.visibility = ?2 AND n.desired_state != ?3 AND u.disabled = 0
         ORDER BY s.created_at DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map(
        params![limit, Visibility::Public, DesiredState::Deleted],
        from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes a share of one of `owner_id`'s notebooks; false if there was none.
pub fn delete(conn: &Connection, token: &str, owner_id: i64) -> Result<bool, DbError> {
    Ok(conn.execute(
        "DELETE FROM shares WHERE token = ?1
           AND notebook_id IN (SELECT id FROM notebooks WHERE owner_id = ?2)",
        params![token, owner_id],
    )? == 1)
}

/// Stores the gallery preview of every share of a notebook.
pub fn set_previews(conn: &Connection, notebook_id: &str, preview: &str) -> Result<(), DbError> {
    conn.execute(
        "UPDATE shares SET preview = ?2 WHERE notebook_id = ?1",
        params![notebook_id, preview],
    )?;
    Ok(())
}
