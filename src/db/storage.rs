//! The `storage_usage` table: each member's last measured storage use.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::DbError;
use crate::clock::Timestamp;

/// One member's last measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageUsageRow {
    pub user_id: i64,
    pub used_bytes: i64,
    pub files: i64,
    /// Why the walk stopped short; None: complete.
    pub capped: Option<String>,
    /// JSON array of {"path", "bytes"}.
    pub largest: String,
    pub measured_at: Timestamp,
    pub walk_ms: i64,
    pub warned_at: Option<Timestamp>,
}

const SELECT: &str = "SELECT user_id, used_bytes, files, capped, largest, measured_at, walk_ms,
    warned_at FROM storage_usage";

fn from_row(r: &Row) -> rusqlite::Result<StorageUsageRow> {
    Ok(StorageUsageRow {
        user_id: r.get(0)?,
        used_bytes: r.get(1)?,
        files: r.get(2)?,
        capped: r.get(3)?,
        largest: r.get(4)?,
        measured_at: r.get(5)?,
        walk_ms: r.get(6)?,
        warned_at: r.get(7)?,
    })
}

/// Records a measurement; `warned_at` is the warning state after it (kept, set or
/// cleared by the caller's rule).
pub fn record(conn: &Connection, row: &StorageUsageRow) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO storage_usage (user_id, used_bytes, files, capped, largest, measured_at,
            walk_ms, warned_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (user_id) DO UPDATE SET used_bytes = excluded.used_bytes,
            files = excluded.files, capped = excluded.capped, largest = excluded.largest,
            measured_at = excluded.measured_at, walk_ms = excluded.walk_ms,
            warned_at = excluded.warned_at",
        params![
            row.user_id,
            row.used_bytes,
            row.files,
            row.capped,
            row.largest,
            row.measured_at,
            row.walk_ms,
            row.warned_at
        ],
    )?;
    Ok(())
}

pub fn of_user(conn: &Connection, user_id: i64) -> Result<Option<StorageUsageRow>, DbError> {
    Ok(conn
        .query_row(&format!("{SELECT} WHERE user_id = ?1"), [user_id], from_row)
        .optional()?)
}

/// Every member's last measurement, by user id.
pub fn all(conn: &Connection) -> Result<std::collections::HashMap<i64, StorageUsageRow>, DbError> {
    let mut stmt = conn.prepare(SELECT)?;
    let rows = stmt.query_map([], from_row)?;
    let mut out = std::collections::HashMap::new();
    for row in rows {
        let row = row?;
        out.insert(row.user_id, row);
    }
    Ok(out)
}

/// The folders of a member's notebooks (not their jobs' rows: a job writes into its
/// notebook's folder): (id, name).
pub fn notebook_folders_of(
    conn: &Connection,
    user_id: i64,
) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt = conn.prepare(
        "SELECT id, name FROM notebooks WHERE owner_id = ?1 AND kind = 'notebook' ORDER BY created_at",
    )?;
    let rows = stmt.query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The owner of a notebook, for a measurement after it stops.
pub fn owner_of_notebook(conn: &Connection, notebook_id: &str) -> Result<Option<i64>, DbError> {
    Ok(conn
        .query_row(
            "SELECT owner_id FROM notebooks WHERE id = ?1",
            [notebook_id],
            |r| r.get(0),
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measurement_is_recorded_and_replaced() {
        let (_dir, db) = crate::db::test_db();
        let got = db
            .with_conn(|c| {
                c.execute(
                    "INSERT INTO users (username, password_hash, created_at) VALUES ('ann', 'x', 0)",
                    [],
                )?;
                let id = c.last_insert_rowid();
                let mut row = StorageUsageRow {
                    user_id: id,
                    used_bytes: 10,
                    files: 2,
                    capped: None,
                    largest: "[]".into(),
                    measured_at: 5,
                    walk_ms: 1,
                    warned_at: None,
                };
                record(c, &row)?;
                row.used_bytes = 20;
                row.warned_at = Some(6);
                record(c, &row)?;
                Ok((of_user(c, id)?, all(c)?.len(), row))
            })
            .expect("db");
        assert_eq!(got.0, Some(got.2));
        assert_eq!(got.1, 1);
    }
}
