//! The `gpu_allocations` table and the queue of notebooks waiting for GPUs.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::DbError;
use crate::clock::now;
use crate::model::{DesiredState, NotebookState};

/// A held GPU: which notebook, whose, since when.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub gpu_uuid: String,
    pub notebook_id: String,
    pub notebook_name: String,
    pub owner: String,
    pub since: i64,
}

pub fn all(conn: &Connection) -> Result<Vec<Allocation>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.gpu_uuid, a.notebook_id, n.name, u.username, a.since
         FROM gpu_allocations a JOIN notebooks n ON n.id = a.notebook_id JOIN users u ON u.id = n.owner_id
         ORDER BY a.gpu_uuid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Allocation {
            gpu_uuid: r.get(0)?,
            notebook_id: r.get(1)?,
            notebook_name: r.get(2)?,
            owner: r.get(3)?,
            since: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// GPU UUIDs held by each notebook.
pub fn by_notebook(conn: &Connection) -> Result<HashMap<String, Vec<String>>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT notebook_id, gpu_uuid FROM gpu_allocations ORDER BY gpu_uuid")?;
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (nb, uuid) = row?;
        map.entry(nb).or_default().push(uuid);
    }
    Ok(map)
}

pub fn of_notebook(conn: &Connection, notebook_id: &str) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT gpu_uuid FROM gpu_allocations WHERE notebook_id = ?1 ORDER BY gpu_uuid",
    )?;
    let rows = stmt.query_map([notebook_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Takes a GPU for a notebook, and opens its usage interval in the same transaction.
pub fn insert(conn: &Connection, gpu_uuid: &str, notebook_id: &str) -> Result<(), DbError> {
    let t = now();
    conn.execute(
        "INSERT INTO gpu_allocations (gpu_uuid, notebook_id, since) VALUES (?1, ?2, ?3)",
        params![gpu_uuid, notebook_id, t],
    )?;
    super::usage::open_gpu(conn, notebook_id, gpu_uuid, t)
}

/// Releases a notebook's GPUs and closes its usage intervals (now).
pub fn release(conn: &Connection, notebook_id: &str) -> Result<usize, DbError> {
    super::usage::close(conn, notebook_id, now())?;
    Ok(conn.execute(
        "DELETE FROM gpu_allocations WHERE notebook_id = ?1",
        [notebook_id],
    )?)
}

/// Allocations of notebooks that cannot be holding a GPU (left by a crash).
pub fn release_stale(conn: &Connection) -> Result<usize, DbError> {
    // Their intervals end when they were last seen running, not now.
    let mut stale = conn.prepare_cached(
        "SELECT DISTINCT i.notebook_id FROM usage_intervals i JOIN notebooks n ON n.id = i.notebook_id
         WHERE i.ended_at IS NULL AND n.state IN (?1, ?2, ?3)",
    )?;
    let ids: Vec<String> = stale
        .query_map(
            params![
                NotebookState::Stopped,
                NotebookState::Failed,
                NotebookState::Queued
            ],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    for id in ids {
        let at = super::usage::last_seen(conn, &id)?.unwrap_or_else(now);
        super::usage::close(conn, &id, at)?;
    }
    Ok(conn.execute(
        "DELETE FROM gpu_allocations WHERE notebook_id IN
            (SELECT id FROM notebooks WHERE state IN (?1, ?2, ?3))",
        params![
            NotebookState::Stopped,
            NotebookState::Failed,
            NotebookState::Queued
        ],
    )?)
}

/// GPUs held by notebooks on their way down (no longer wanted running; a restart keeps
/// its GPUs):
/// they come free without anyone else being stopped.
pub fn leaving(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM gpu_allocations a JOIN notebooks n ON n.id = a.notebook_id
         WHERE n.desired_state != ?1",
        params![DesiredState::Running],
        |r| r.get(0),
    )?)
}

/// GPUs a user's notebooks hold or wait for, not counting `except`.
pub fn user_demand(conn: &Connection, owner_id: i64, except: &str) -> Result<i64, DbError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(gpu_count), 0) FROM notebooks
         WHERE owner_id = ?1 AND id != ?2 AND desired_state = ?3
           AND state IN (?4, ?5, ?6, ?7, ?8)",
        params![
            owner_id,
            except,
            DesiredState::Running,
            NotebookState::Queued,
            NotebookState::Pulling,
            NotebookState::Starting,
            NotebookState::Running,
            NotebookState::Stopping
        ],
        |r| r.get(0),
    )?)
}

/// Queued notebooks, first come first.
pub fn queue(conn: &Connection) -> Result<Vec<(String, i64)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, gpu_count FROM notebooks WHERE state = ?1 AND desired_state = ?2
         ORDER BY queued_at, rowid",
    )?;
    let rows = stmt.query_map(params![NotebookState::Queued, DesiredState::Running], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Queued notebooks and jobs with their owners (name, directory groups), first come
/// first: (id, gpu_count, owner id, owner, directory groups, queued_at, auto-shutdown secs).
pub type QueueEntry = (String, i64, i64, String, Vec<String>, i64, Option<i64>);

pub fn queue_entries(conn: &Connection) -> Result<Vec<QueueEntry>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT n.id, n.gpu_count, n.owner_id, u.username, u.directory_groups,
                COALESCE(n.queued_at, n.created_at), n.auto_shutdown_secs
         FROM notebooks n JOIN users u ON u.id = n.owner_id
         WHERE n.state = ?1 AND n.desired_state = ?2
         ORDER BY n.queued_at, n.rowid",
    )?;
    let rows = stmt.query_map(params![NotebookState::Queued, DesiredState::Running], |r| {
        let groups: String = r.get(4)?;
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            super::users::split_groups(&groups),
            r.get(5)?,
            r.get(6)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many notebooks wait for GPUs, and since when the first one waits.
pub fn queue_summary(conn: &Connection) -> Result<(i64, Option<i64>), DbError> {
    Ok(conn.query_row(
        "SELECT count(*), MIN(queued_at) FROM notebooks WHERE state = ?1 AND desired_state = ?2",
        params![NotebookState::Queued, DesiredState::Running],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

pub fn mark_queued(conn: &Connection, notebook_id: &str, detail: &str) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET state = ?4, desired_state = ?5, state_detail = ?2,
            queued_at = CASE WHEN state = ?4 THEN COALESCE(queued_at, ?3) ELSE ?3 END,
            updated_at = ?3
         WHERE id = ?1",
        params![
            notebook_id,
            detail,
            now(),
            NotebookState::Queued,
            DesiredState::Running
        ],
    )?;
    Ok(())
}

/// Moves a placed notebook to starting; a CPU notebook's usage interval opens here.
pub fn mark_starting(conn: &Connection, notebook_id: &str) -> Result<(), DbError> {
    super::usage::open_cpu(conn, notebook_id, now())?;
    conn.execute(
        "UPDATE notebooks SET state = ?3, desired_state = ?4,
            state_detail = 'Waiting to start', queued_at = NULL, updated_at = ?2
         WHERE id = ?1",
        params![
            notebook_id,
            now(),
            NotebookState::Starting,
            DesiredState::Running
        ],
    )?;
    Ok(())
}
