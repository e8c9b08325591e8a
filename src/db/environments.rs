//! The `environments` and `environment_builds` tables: members' environments and their
//! versions (one build each). What a version's image holds is the engine's; this module
//! keeps where each build is, and which notebook uses which version.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::DbError;
use crate::clock::now;
use crate::model::{BuildState, DesiredState, EnvironmentKind, Launcher};

/// An environment, with its owner's name.
#[derive(Debug, Clone)]
pub struct EnvironmentRow {
    pub id: String,
    pub owner_id: i64,
    pub owner: String,
    pub name: String,
    pub shared: bool,
    pub kind: EnvironmentKind,
    /// The source as JSON, without any credential.
    pub source: String,
    pub credential_sealed: Option<Vec<u8>>,
    pub launcher: Launcher,
    pub command: Vec<String>,
    pub created_at: i64,
}

const SELECT_ENV: &str = "SELECT e.id, e.owner_id, u.username, e.name, e.shared, e.kind, e.source,
    e.credential_sealed, e.launcher, e.command, e.created_at
    FROM environments e JOIN users u ON u.id = e.owner_id";

fn env_from_row(r: &Row) -> rusqlite::Result<EnvironmentRow> {
    let command: String = r.get(9)?;
    Ok(EnvironmentRow {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        owner: r.get(2)?,
        name: r.get(3)?,
        shared: r.get(4)?,
        kind: r.get(5)?,
        source: r.get(6)?,
        credential_sealed: r.get(7)?,
        launcher: r.get(8)?,
        command: serde_json::from_str(&command).unwrap_or_default(),
        created_at: r.get(10)?,
    })
}

/// One version of an environment.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRow {
    pub environment_id: String,
    pub version: i64,
    pub state: BuildState,
    pub state_detail: String,
    pub step: String,
    pub failed_step: Option<String>,
    pub requested_ref: Option<String>,
    pub commit: Option<String>,
    pub input_hash: Option<String>,
    pub image: Option<String>,
    pub size_bytes: Option<i64>,
    pub from_notebook: Option<String>,
    pub created_by: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

const SELECT_BUILD: &str = "SELECT environment_id, version, state, state_detail, step, failed_step,
    requested_ref, commit_sha, input_hash, image, size_bytes, from_notebook, created_by,
    created_at, started_at, finished_at FROM environment_builds";

fn build_from_row(r: &Row) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        environment_id: r.get(0)?,
        version: r.get(1)?,
        state: r.get(2)?,
        state_detail: r.get(3)?,
        step: r.get(4)?,
        failed_step: r.get(5)?,
        requested_ref: r.get(6)?,
        commit: r.get(7)?,
        input_hash: r.get(8)?,
        image: r.get(9)?,
        size_bytes: r.get(10)?,
        from_notebook: r.get(11)?,
        created_by: r.get(12)?,
        created_at: r.get(13)?,
        started_at: r.get(14)?,
        finished_at: r.get(15)?,
    })
}

pub struct NewEnvironment<'a> {
    pub id: &'a str,
    pub owner_id: i64,
    pub name: &'a str,
    pub shared: bool,
    pub kind: EnvironmentKind,
    pub source: &'a str,
    pub credential_sealed: Option<&'a [u8]>,
    pub launcher: Launcher,
    pub command: &'a [String],
}

/// Adds an environment; false when its owner has one of that name already.
pub fn insert(conn: &Connection, e: &NewEnvironment) -> Result<bool, DbError> {
    let command = serde_json::to_string(e.command).unwrap_or_else(|_| "[]".into());
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO environments (id, owner_id, name, shared, kind, source,
            credential_sealed, launcher, command, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            e.id,
            e.owner_id,
            e.name,
            e.shared,
            e.kind,
            e.source,
            e.credential_sealed,
            e.launcher,
            command,
            now()
        ],
    )?;
    Ok(inserted == 1)
}

pub fn by_id(conn: &Connection, id: &str) -> Result<Option<EnvironmentRow>, DbError> {
    Ok(conn
        .prepare_cached(&format!("{SELECT_ENV} WHERE e.id = ?1"))?
        .query_row([id], env_from_row)
        .optional()?)
}

pub fn by_owner_and_name(
    conn: &Connection,
    owner_id: i64,
    name: &str,
) -> Result<Option<EnvironmentRow>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "{SELECT_ENV} WHERE e.owner_id = ?1 AND e.name = ?2"
        ))?
        .query_row(params![owner_id, name], env_from_row)
        .optional()?)
}

/// A member's own environments and those shared with the lab, by name.
pub fn visible_to(conn: &Connection, user_id: i64) -> Result<Vec<EnvironmentRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT_ENV} WHERE e.owner_id = ?1 OR e.shared = 1 ORDER BY lower(e.name), e.id"
    ))?;
    let rows = stmt.query_map([user_id], env_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every environment (the admin's disk page).
pub fn all(conn: &Connection) -> Result<Vec<EnvironmentRow>, DbError> {
    let mut stmt =
        conn.prepare_cached(&format!("{SELECT_ENV} ORDER BY u.username, lower(e.name)"))?;
    let rows = stmt.query_map([], env_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn delete(conn: &Connection, id: &str) -> Result<(), DbError> {
    conn.execute("DELETE FROM environments WHERE id = ?1", [id])?;
    Ok(())
}

/// An environment's versions, oldest first.
pub fn builds_of(conn: &Connection, environment_id: &str) -> Result<Vec<BuildRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT_BUILD} WHERE environment_id = ?1 ORDER BY version"
    ))?;
    let rows = stmt.query_map([environment_id], build_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every version, by environment, oldest first.
pub fn all_builds(conn: &Connection) -> Result<HashMap<String, Vec<BuildRow>>, DbError> {
    let mut stmt =
        conn.prepare_cached(&format!("{SELECT_BUILD} ORDER BY environment_id, version"))?;
    let mut out: HashMap<String, Vec<BuildRow>> = HashMap::new();
    for row in stmt.query_map([], build_from_row)? {
        let row = row?;
        out.entry(row.environment_id.clone()).or_default().push(row);
    }
    Ok(out)
}

pub fn build(
    conn: &Connection,
    environment_id: &str,
    version: i64,
) -> Result<Option<BuildRow>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "{SELECT_BUILD} WHERE environment_id = ?1 AND version = ?2"
        ))?
        .query_row(params![environment_id, version], build_from_row)
        .optional()?)
}

/// The newest version notebooks can start from.
pub fn newest_ready(conn: &Connection, environment_id: &str) -> Result<Option<BuildRow>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "{SELECT_BUILD} WHERE environment_id = ?1 AND state = 'ready' ORDER BY version DESC LIMIT 1"
        ))?
        .query_row([environment_id], build_from_row)
        .optional()?)
}

/// A ready version built from exactly these inputs, if there is one.
pub fn ready_with_hash(
    conn: &Connection,
    environment_id: &str,
    input_hash: &str,
) -> Result<Option<BuildRow>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "{SELECT_BUILD} WHERE environment_id = ?1 AND input_hash = ?2 AND state = 'ready'
             ORDER BY version DESC LIMIT 1"
        ))?
        .query_row(params![environment_id, input_hash], build_from_row)
        .optional()?)
}

/// What a new version starts as.
pub struct NewBuild<'a> {
    pub environment_id: &'a str,
    pub state: BuildState,
    pub state_detail: &'a str,
    pub requested_ref: Option<&'a str>,
    pub from_notebook: Option<&'a str>,
    pub created_by: Option<i64>,
}

/// Adds the next version of an environment (its number one past the highest so far).
pub fn add_build(conn: &mut Connection, b: &NewBuild) -> Result<BuildRow, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row(
        "SELECT ifnull(max(version), 0) + 1 FROM environment_builds WHERE environment_id = ?1",
        [b.environment_id],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO environment_builds (environment_id, version, state, state_detail,
            requested_ref, from_notebook, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            b.environment_id,
            version,
            b.state,
            b.state_detail,
            b.requested_ref,
            b.from_notebook,
            b.created_by,
            now()
        ],
    )?;
    let row = tx.query_row(
        &format!("{SELECT_BUILD} WHERE environment_id = ?1 AND version = ?2"),
        params![b.environment_id, version],
        build_from_row,
    )?;
    tx.commit()?;
    Ok(row)
}

/// The oldest queued build, if any.
pub fn next_queued(conn: &Connection) -> Result<Option<BuildRow>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "{SELECT_BUILD} WHERE state = 'queued' AND from_notebook IS NULL ORDER BY created_at, id LIMIT 1"
        ))?
        .query_row([], build_from_row)
        .optional()?)
}

/// Queued → building; false if it is no longer queued (cancelled meanwhile).
pub fn set_building(
    conn: &Connection,
    environment_id: &str,
    version: i64,
) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE environment_builds SET state = 'building', started_at = ?3,
            state_detail = 'Building'
         WHERE environment_id = ?1 AND version = ?2 AND state = 'queued'",
        params![environment_id, version, now()],
    )? == 1)
}

/// The step running, and a line about it.
pub fn set_progress(
    conn: &Connection,
    environment_id: &str,
    version: i64,
    step: &str,
    detail: &str,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE environment_builds SET step = ?3, state_detail = ?4
         WHERE environment_id = ?1 AND version = ?2 AND state = 'building'",
        params![environment_id, version, step, detail],
    )?;
    Ok(())
}

/// What the build found out before building: the commit and the inputs' hash.
pub fn set_inputs(
    conn: &Connection,
    environment_id: &str,
    version: i64,
    commit: Option<&str>,
    input_hash: &str,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE environment_builds SET commit_sha = ?3, input_hash = ?4
         WHERE environment_id = ?1 AND version = ?2",
        params![environment_id, version, commit, input_hash],
    )?;
    Ok(())
}

/// How a build ended.
pub struct BuildEnd<'a> {
    pub state: BuildState,
    pub state_detail: &'a str,
    pub failed_step: Option<&'a str>,
    pub image: Option<&'a str>,
    pub size_bytes: Option<i64>,
}

/// Ends a queued or building version; false if it had ended already.
pub fn finish(
    conn: &Connection,
    environment_id: &str,
    version: i64,
    end: &BuildEnd,
) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE environment_builds SET state = ?3, state_detail = ?4, failed_step = ?5,
            image = ?6, size_bytes = ?7, finished_at = ?8
         WHERE environment_id = ?1 AND version = ?2 AND state IN ('queued', 'building')",
        params![
            environment_id,
            version,
            end.state,
            end.state_detail,
            end.failed_step,
            end.image,
            end.size_bytes,
            now()
        ],
    )? == 1)
}

/// Cancels a version that is still queued; false if it is not (the builder took it).
pub fn cancel_queued(
    conn: &Connection,
    environment_id: &str,
    version: i64,
) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE environment_builds SET state = 'cancelled', finished_at = ?3,
            state_detail = 'Cancelled before it started'
         WHERE environment_id = ?1 AND version = ?2 AND state = 'queued'",
        params![environment_id, version, now()],
    )? == 1)
}

/// How many builds a member has queued or running (saves included).
pub fn open_builds_of(conn: &Connection, user_id: i64) -> Result<i64, DbError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM environment_builds
         WHERE created_by = ?1 AND state IN ('queued', 'building')",
        [user_id],
        |r| r.get(0),
    )?)
}

/// How many environments a member has.
pub fn count_of(conn: &Connection, owner_id: i64) -> Result<i64, DbError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM environments WHERE owner_id = ?1",
        [owner_id],
        |r| r.get(0),
    )?)
}

/// Whether a ready version (of any environment) runs this image.
pub fn image_is_kept(conn: &Connection, image: &str) -> Result<bool, DbError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM environment_builds WHERE image = ?1 AND state = 'ready')",
        [image],
        |r| r.get(0),
    )?)
}

/// A ready version whose image was removed.
pub fn mark_removed(
    conn: &Connection,
    environment_id: &str,
    version: i64,
    why: &str,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE environment_builds SET state = 'removed', state_detail = ?3
         WHERE environment_id = ?1 AND version = ?2 AND state = 'ready'",
        params![environment_id, version, why],
    )?;
    Ok(())
}

/// Builds that were running when Notebox stopped: failed, with the reason. Returns how many.
pub fn fail_interrupted(conn: &Connection) -> Result<usize, DbError> {
    Ok(conn.execute(
        "UPDATE environment_builds SET state = 'failed', finished_at = ?1,
            state_detail = 'Notebox stopped during the build; build it again'
         WHERE state = 'building' OR (state = 'queued' AND from_notebook IS NOT NULL)",
        [now()],
    )?)
}

/// The versions notebooks (not deleted ones) run, by environment.
pub fn versions_in_use(conn: &Connection) -> Result<HashMap<String, Vec<i64>>, DbError> {
    // Only notebooks whose owner may still use the environment hold a version.
    let mut stmt = conn.prepare_cached(
        "SELECT n.environment_id, n.environment_version FROM notebooks n
         JOIN environments e ON e.id = n.environment_id
         WHERE n.desired_state != ?1 AND (e.owner_id = n.owner_id OR e.shared = 1)",
    )?;
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for row in stmt.query_map([DesiredState::Deleted], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (env, version) = row?;
        out.entry(env).or_default().push(version);
    }
    Ok(out)
}
