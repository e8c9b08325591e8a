//! The `notebooks` table. State changes are conditional updates (`WHERE state IN ...`) so
//! the API and the reconciler never overwrite each other's newer decision.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::DbError;
use crate::clock::now;
use crate::model::{DesiredState, Launcher, NotebookState};

#[derive(Debug, Clone)]
pub struct NotebookRow {
    pub id: String,
    pub owner_id: i64,
    pub owner: String,
    pub name: String,
    pub image_id: Option<String>,
    pub image: String,
    pub launcher: Launcher,
    pub command: Vec<String>,
    pub machine_id: String,
    pub cpus: f64,
    pub memory_mib: i64,
    pub gpu_count: i64,
    pub desired_state: DesiredState,
    pub state: NotebookState,
    pub state_detail: String,
    pub restart_requested: bool,
    pub jupyter_token: String,
    pub container_id: Option<String>,
    pub auto_shutdown_secs: Option<i64>,
    pub auto_shutdown_at: Option<i64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub updated_at: i64,
    pub queued_at: Option<i64>,
    pub forked_from: Option<String>,
    /// An admin exempted it from idle reclaim.
    pub idle_exempt: bool,
    /// A note for its member (why it got its GPUs, ...), until they start or stop it.
    pub notice: Option<String>,
    /// With `origin = "ports"`: the secret segment of its container's base URL.
    pub path_key: Option<String>,
    /// The environment version it runs, if it runs one.
    pub environment: Option<EnvironmentRef>,
    /// The repository its files come from, if it was started from one.
    pub repo: Option<RepoSource>,
    /// The row of a job on its way or running (`jobs`): queued, placed, started and
    /// adopted like a notebook's, never proxied, listed or reclaimed as one.
    pub is_job: bool,
}

/// The environment version a notebook runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRef {
    pub id: String,
    pub version: i64,
    /// Its name (None if the environment was deleted meanwhile).
    pub name: Option<String>,
}

/// A notebook started from a Git repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSource {
    pub url: String,
    /// The branch, tag or commit asked for (None: the default branch).
    pub reference: Option<String>,
    /// The commit fetched into /notebooks; None until its first start fetched it.
    pub commit: Option<String>,
    /// The file to open (relative to /notebooks).
    pub open_path: Option<String>,
}

const SELECT: &str = "SELECT n.id, n.owner_id, u.username, n.name, n.image_id, n.image, n.launcher,
    n.command, n.machine_id, n.cpus, n.memory_mib, n.gpu_count, n.desired_state, n.state,
    n.state_detail, n.restart_requested, n.jupyter_token, n.container_id, n.auto_shutdown_secs,
    n.auto_shutdown_at, n.created_at, n.started_at, n.stopped_at, n.updated_at,
    n.queued_at, n.forked_from, n.idle_exempt, n.notice, n.path_key,
    n.environment_id, n.environment_version, n.repo_url, n.repo_ref, n.repo_commit, n.open_path,
    (SELECT e.name FROM environments e WHERE e.id = n.environment_id), n.kind = 'job'
    FROM notebooks n JOIN users u ON u.id = n.owner_id";

fn from_row(r: &Row) -> rusqlite::Result<NotebookRow> {
    let command: String = r.get(7)?;
    Ok(NotebookRow {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        owner: r.get(2)?,
        name: r.get(3)?,
        image_id: r.get(4)?,
        image: r.get(5)?,
        launcher: r.get(6)?,
        command: serde_json::from_str(&command).unwrap_or_default(),
        machine_id: r.get(8)?,
        cpus: r.get(9)?,
        memory_mib: r.get(10)?,
        gpu_count: r.get(11)?,
        desired_state: r.get(12)?,
        state: r.get(13)?,
        state_detail: r.get(14)?,
        restart_requested: r.get(15)?,
        jupyter_token: r.get(16)?,
        container_id: r.get(17)?,
        auto_shutdown_secs: r.get(18)?,
        auto_shutdown_at: r.get(19)?,
        created_at: r.get(20)?,
        started_at: r.get(21)?,
        stopped_at: r.get(22)?,
        updated_at: r.get(23)?,
        queued_at: r.get(24)?,
        forked_from: r.get(25)?,
        idle_exempt: r.get(26)?,
        notice: r.get(27)?,
        path_key: r.get(28)?,
        environment: match (
            r.get::<_, Option<String>>(29)?,
            r.get::<_, Option<i64>>(30)?,
        ) {
            (Some(id), Some(version)) => Some(EnvironmentRef {
                id,
                version,
                name: r.get(35)?,
            }),
            _ => None,
        },
        repo: r
            .get::<_, Option<String>>(31)?
            .map(|url| -> rusqlite::Result<RepoSource> {
                Ok(RepoSource {
                    url,
                    reference: r.get(32)?,
                    commit: r.get(33)?,
                    open_path: r.get(34)?,
                })
            })
            .transpose()?,
        is_job: r.get(36)?,
    })
}

pub struct NewNotebook<'a> {
    pub id: &'a str,
    pub owner_id: i64,
    pub name: &'a str,
    pub image_id: Option<&'a str>,
    pub image: &'a str,
    pub launcher: Launcher,
    pub command: &'a [String],
    pub machine_id: &'a str,
    pub cpus: f64,
    pub memory_mib: i64,
    pub gpu_count: i64,
    pub jupyter_token: &'a str,
    pub auto_shutdown_secs: Option<i64>,
    pub forked_from: Option<&'a str>,
    /// Running to start right away.
    pub desired_state: DesiredState,
    pub state: NotebookState,
    pub state_detail: &'a str,
    /// The environment (id, version) it runs.
    pub environment: Option<(&'a str, i64)>,
    /// The repository (url, ref, file to open) its files are fetched from at first start.
    pub repo: Option<(&'a str, Option<&'a str>, Option<&'a str>)>,
}

pub fn insert(conn: &Connection, n: &NewNotebook) -> Result<(), DbError> {
    let t = now();
    let command = serde_json::to_string(n.command).unwrap_or_else(|_| "[]".into());
    conn.execute(
        "INSERT INTO notebooks (id, owner_id, name, image_id, image, launcher, command, machine_id,
            cpus, memory_mib, gpu_count, desired_state, state, state_detail, jupyter_token,
            auto_shutdown_secs, created_at, updated_at, forked_from, environment_id,
            environment_version, repo_url, repo_ref, open_path)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?17, ?18,
            ?19, ?20, ?21, ?22, ?23)",
        params![
            n.id,
            n.owner_id,
            n.name,
            n.image_id,
            n.image,
            n.launcher,
            command,
            n.machine_id,
            n.cpus,
            n.memory_mib,
            n.gpu_count,
            n.desired_state,
            n.state,
            n.state_detail,
            n.jupyter_token,
            n.auto_shutdown_secs,
            t,
            n.forked_from,
            n.environment.map(|e| e.0),
            n.environment.map(|e| e.1),
            n.repo.map(|r| r.0),
            n.repo.and_then(|r| r.1),
            n.repo.and_then(|r| r.2),
        ],
    )?;
    Ok(())
}

/// The commit a repository notebook's files were fetched from (its first start).
pub fn set_repo_commit(conn: &Connection, id: &str, commit: &str) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET repo_commit = ?2 WHERE id = ?1",
        params![id, commit],
    )?;
    Ok(())
}

pub fn by_id(conn: &Connection, id: &str) -> Result<Option<NotebookRow>, DbError> {
    Ok(conn
        .prepare_cached(&format!("{SELECT} WHERE n.id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

pub fn list_for_owner(conn: &Connection, owner_id: i64) -> Result<Vec<NotebookRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE n.owner_id = ?1 AND n.desired_state != ?2 AND n.kind = 'notebook' ORDER BY n.created_at DESC, n.id"
    ))?;
    let rows = stmt.query_map(params![owner_id, DesiredState::Deleted], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every notebook, deleted-but-not-yet-cleaned-up ones included (for the reconciler).
pub fn list_all(conn: &Connection) -> Result<Vec<NotebookRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!("{SELECT} ORDER BY n.created_at, n.id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Notebooks that are not at rest (queued, pulling, starting, running, stopping), deleted
/// ones on their way out included: what the GPU map and the admin's running page show.
/// Reads the state index, so it costs what is running, not a lab's whole history.
pub fn list_active(conn: &Connection) -> Result<Vec<NotebookRow>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE n.state IN (?1, ?2, ?3, ?4, ?5) ORDER BY n.created_at, n.id"
    ))?;
    let rows = stmt.query_map(
        params![
            NotebookState::Queued,
            NotebookState::Pulling,
            NotebookState::Starting,
            NotebookState::Running,
            NotebookState::Stopping
        ],
        from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many notebooks are in each state (deleted ones not counted).
pub fn count_by_state(conn: &Connection) -> Result<Vec<(String, i64)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT state, count(*) FROM notebooks WHERE desired_state != ?1 GROUP BY state",
    )?;
    let rows = stmt.query_map([DesiredState::Deleted], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A state change: from one of `from` to `to`, with the detail the notebook's page shows,
/// optionally changing what the notebook should be.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    pub from: &'a [NotebookState],
    pub to: NotebookState,
    pub detail: &'a str,
    pub desired: Option<DesiredState>,
}

/// The states of `from` as one `,a,b,` list: the statement stays one constant text
/// whatever the number of states.
fn state_list(from: &[NotebookState]) -> String {
    let mut list = String::from(",");
    for f in from {
        list.push_str(f.as_str());
        list.push(',');
    }
    list
}

/// Applies a transition; the building block of the operations in `db::lifecycle`, which
/// are what the rest of Notebox calls. Returns false (changing nothing) when the notebook
/// was not in one of `from`. Changes:
/// - entering `running`: stamps its start and its auto-shutdown time;
/// - reaching a state at rest (stopped, failed): stamps its stop, clears the
///   auto-shutdown time, and releases its GPUs (`gpus::release`, which closes their usage
///   intervals now), so a notebook at rest never holds a GPU.
pub(crate) fn transition(conn: &Connection, id: &str, t: Transition) -> Result<bool, DbError> {
    debug_assert!(
        t.from.iter().all(|f| f.can_become(t.to)),
        "no transition {:?} → {}",
        t.from,
        t.to
    );
    let changed = conn
        .prepare_cached(
            "UPDATE notebooks SET state = ?2, state_detail = ?3, updated_at = ?4,
                desired_state = COALESCE(?5, desired_state),
                started_at = CASE WHEN ?2 = ?6 AND state != ?6 THEN ?4 ELSE started_at END,
                stopped_at = CASE WHEN ?7 THEN ?4 ELSE stopped_at END,
                auto_shutdown_at = CASE
                    WHEN ?2 = ?6 AND state != ?6 AND auto_shutdown_secs IS NOT NULL
                        THEN ?4 + auto_shutdown_secs
                    WHEN ?7 THEN NULL
                    ELSE auto_shutdown_at END
             WHERE id = ?1 AND instr(?8, ',' || state || ',') > 0",
        )?
        .execute(params![
            id,
            t.to,
            t.detail,
            now(),
            t.desired,
            NotebookState::Running,
            t.to.is_at_rest(),
            state_list(t.from),
        ])?;
    let moved = changed == 1;
    if moved && t.to.is_at_rest() {
        super::gpus::release(conn, id)?;
    }
    Ok(moved)
}

/// Updates only the human-readable detail (pull progress, readiness waits).
pub fn set_detail(
    conn: &Connection,
    id: &str,
    state: NotebookState,
    detail: &str,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET state_detail = ?3, updated_at = ?4 WHERE id = ?1 AND state = ?2",
        params![id, state, detail, now()],
    )?;
    Ok(())
}

/// The ids of a member's notebooks that are not being deleted.
pub fn ids_of_owner(conn: &Connection, owner_id: i64) -> Result<Vec<String>, DbError> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM notebooks WHERE owner_id = ?1 AND desired_state != ?2 AND kind = 'notebook'")?;
    let ids = stmt.query_map(params![owner_id, DesiredState::Deleted], |r| r.get(0))?;
    Ok(ids.collect::<Result<_, _>>()?)
}

pub fn set_desired(conn: &Connection, id: &str, desired: DesiredState) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE notebooks SET desired_state = ?2, updated_at = ?3 WHERE id = ?1 AND desired_state != ?4",
        params![id, desired, now(), DesiredState::Deleted],
    )? == 1)
}

pub fn set_restart_requested(conn: &Connection, id: &str, value: bool) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET restart_requested = ?2 WHERE id = ?1",
        params![id, value],
    )?;
    Ok(())
}

pub fn set_container(
    conn: &Connection,
    id: &str,
    container_id: Option<&str>,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET container_id = ?2, container_ip = NULL WHERE id = ?1",
        params![id, container_id],
    )?;
    Ok(())
}

/// Restarts the auto-shutdown timer (and optionally changes its length).
pub fn set_auto_shutdown(conn: &Connection, id: &str, secs: Option<i64>) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET auto_shutdown_secs = ?2,
            auto_shutdown_at = CASE WHEN state = ?4 AND ?2 IS NOT NULL THEN ?3 + ?2 ELSE NULL END,
            updated_at = ?3
         WHERE id = ?1",
        params![id, secs, now(), NotebookState::Running],
    )?;
    Ok(())
}

pub fn set_idle_exempt(conn: &Connection, id: &str, exempt: bool) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE notebooks SET idle_exempt = ?2 WHERE id = ?1",
        params![id, exempt],
    )? == 1)
}

pub fn set_notice(conn: &Connection, id: &str, notice: Option<&str>) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET notice = ?2 WHERE id = ?1",
        params![id, notice],
    )?;
    Ok(())
}

/// A running notebook, with what the activity sampler needs to reach it.
#[derive(Debug, Clone)]
pub struct RunningNotebook {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub machine_id: String,
    pub container_id: Option<String>,
    pub container_ip: Option<String>,
    pub jupyter_token: String,
    pub idle_exempt: bool,
    pub path_key: Option<String>,
}

pub fn running(conn: &Connection) -> Result<Vec<RunningNotebook>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT n.id, u.username, n.name, n.machine_id, n.container_id, n.container_ip,
                n.jupyter_token, n.idle_exempt, n.path_key
         FROM notebooks n JOIN users u ON u.id = n.owner_id
         WHERE n.state = ?1 AND n.desired_state = ?2 AND n.kind = 'notebook'",
    )?;
    let rows = stmt.query_map(
        params![NotebookState::Running, DesiredState::Running],
        |r| {
            Ok(RunningNotebook {
                id: r.get(0)?,
                owner: r.get(1)?,
                name: r.get(2)?,
                machine_id: r.get(3)?,
                container_id: r.get(4)?,
                container_ip: r.get(5)?,
                jupyter_token: r.get(6)?,
                idle_exempt: r.get(7)?,
                path_key: r.get(8)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A new secret segment for the notebook's base URL (before its container is created);
/// `None` outside `origin = "ports"`.
pub fn set_path_key(conn: &Connection, id: &str, key: Option<&str>) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET path_key = ?2 WHERE id = ?1",
        params![id, key],
    )?;
    Ok(())
}

/// How many of a member's notebooks are running or on their way (queued, pulling,
/// starting, running), `except` not counted: what `notebooks.max_running_per_user` limits.
pub fn active_count_of(conn: &Connection, owner_id: i64, except: &str) -> Result<i64, DbError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM notebooks
         WHERE owner_id = ?1 AND id != ?2 AND desired_state = ?3 AND state IN (?4, ?5, ?6, ?7)
           AND kind = 'notebook'",
        params![
            owner_id,
            except,
            DesiredState::Running,
            NotebookState::Queued,
            NotebookState::Pulling,
            NotebookState::Starting,
            NotebookState::Running
        ],
        |r| r.get(0),
    )?)
}

/// A member's jobs wanted running (on their way or running): (id, machine type).
pub fn unfinished_jobs_of_owner(
    conn: &Connection,
    owner_id: i64,
) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, machine_id FROM notebooks
         WHERE owner_id = ?1 AND kind = 'job' AND desired_state = ?2",
    )?;
    let rows = stmt.query_map(params![owner_id, DesiredState::Running], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes a notebook's row (its GPUs go with it); its usage stays in the ledger, closed.
pub fn delete(conn: &Connection, id: &str) -> Result<(), DbError> {
    super::usage::close(conn, id, now())?;
    conn.execute("DELETE FROM notebooks WHERE id = ?1", [id])?;
    Ok(())
}

pub fn set_container_ip(conn: &Connection, id: &str, ip: &str) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET container_ip = ?2 WHERE id = ?1",
        params![id, ip],
    )?;
    Ok(())
}

/// Sets a state without the rules of `transition` (GPUs are not released): what a crash
/// in the middle of a change leaves behind, for tests of the recovery.
#[cfg(test)]
pub fn force_state_for_tests(
    conn: &Connection,
    id: &str,
    state: NotebookState,
    desired: DesiredState,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET state = ?2, desired_state = ?3 WHERE id = ?1",
        params![id, state, desired],
    )?;
    Ok(())
}

/// What the proxy needs to route a request, in one small query.
#[derive(Debug, Clone)]
pub struct ProxyTarget {
    pub owner_id: i64,
    pub state: NotebookState,
    pub jupyter_token: String,
    pub container_ip: Option<String>,
    pub name: String,
    /// The secret segment of its base URL (`origin = "ports"`), if its container has one.
    pub path_key: Option<String>,
}

pub fn proxy_target(conn: &Connection, id: &str) -> Result<Option<ProxyTarget>, DbError> {
    Ok(conn
        .query_row(
            "SELECT owner_id, state, jupyter_token, container_ip, name, path_key FROM notebooks
             WHERE id = ?1 AND desired_state != ?2 AND kind = 'notebook'",
            params![id, DesiredState::Deleted],
            |r| {
                Ok(ProxyTarget {
                    owner_id: r.get(0)?,
                    state: r.get(1)?,
                    jupyter_token: r.get(2)?,
                    container_ip: r.get(3)?,
                    name: r.get(4)?,
                    path_key: r.get(5)?,
                })
            },
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{gpus, test_db, users};

    fn notebook(conn: &Connection, owner_id: i64, id: &str) {
        insert(
            conn,
            &NewNotebook {
                id,
                owner_id,
                name: "n",
                image_id: Some("test"),
                image: "img:1",
                launcher: Launcher::JupyterLab,
                command: &[],
                machine_id: "gpu",
                cpus: 1.0,
                memory_mib: 1024,
                gpu_count: 1,
                jupyter_token: "t",
                auto_shutdown_secs: Some(3600),
                forked_from: None,
                desired_state: DesiredState::Running,
                state: NotebookState::Stopped,
                state_detail: "",
                environment: None,
                repo: None,
            },
        )
        .expect("insert");
    }

    fn tr<'a>(
        from: &'a [NotebookState],
        to: NotebookState,
        detail: &'a str,
        desired: Option<DesiredState>,
    ) -> Transition<'a> {
        Transition {
            from,
            to,
            detail,
            desired,
        }
    }

    #[test]
    fn transitions_are_conditional_typed_and_release_gpus_at_rest() {
        let (_dir, db) = test_db();
        db.with_conn(|c| {
            let owner = users::insert(c, "alice", "hash", false)?.expect("user").id;
            notebook(c, owner, "nb1");
            use NotebookState::*;
            // Only from one of `from`.
            assert!(!transition(c, "nb1", tr(&[Running], Stopping, "x", None))?);
            assert!(transition(
                c,
                "nb1",
                tr(&[Stopped], Starting, "Waiting", None)
            )?);
            gpus::insert(c, "GPU-1", "nb1")?;
            assert!(transition(
                c,
                "nb1",
                tr(&[Starting], Running, "ready", None)
            )?);
            let row = by_id(c, "nb1")?.expect("row");
            assert_eq!(
                (row.state, row.desired_state),
                (Running, DesiredState::Running)
            );
            assert!(row.started_at.is_some() && row.auto_shutdown_at.is_some());
            // Still holding its GPU while stopping; released when it is at rest.
            assert!(transition(
                c,
                "nb1",
                tr(
                    &[Running],
                    Stopping,
                    "Stopping",
                    Some(DesiredState::Stopped)
                )
            )?);
            assert_eq!(gpus::of_notebook(c, "nb1")?, vec!["GPU-1".to_string()]);
            assert!(transition(
                c,
                "nb1",
                tr(&[Stopping], Stopped, "Stopped", None)
            )?);
            assert!(gpus::of_notebook(c, "nb1")?.is_empty());
            let row = by_id(c, "nb1")?.expect("row");
            assert_eq!(row.desired_state, DesiredState::Stopped);
            assert!(row.auto_shutdown_at.is_none() && row.stopped_at.is_some());
            // Deleted notebooks are gone for their owner's queries.
            assert!(set_desired(c, "nb1", DesiredState::Deleted)?);
            assert!(!set_desired(c, "nb1", DesiredState::Running)?);
            assert!(list_for_owner(c, owner)?.is_empty());
            assert!(proxy_target(c, "nb1")?.is_none());
            Ok(())
        })
        .expect("db");
    }

    #[test]
    fn an_unknown_state_in_the_database_is_an_error_not_a_guess() {
        let (_dir, db) = test_db();
        let found = db.with_conn(|c| {
            let owner = users::insert(c, "bob", "hash", false)?.expect("user").id;
            notebook(c, owner, "nb2");
            c.execute("UPDATE notebooks SET state = 'stoped' WHERE id = 'nb2'", [])?;
            by_id(c, "nb2")
        });
        assert!(
            found.is_err(),
            "a typo in a stored state must not read as a state"
        );
    }
}
