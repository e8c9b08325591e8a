//! Where a notebook that should run goes: starting with its GPUs, queued, or refused; and
//! the queue moving up. Exclusive GPU allocation runs inside one (immediate) transaction
//! that also moves the notebook to `starting` (or `queued`): the `gpu_allocations`
//! primary key, not memory, guarantees that no GPU is ever given twice.

use rusqlite::{Connection, TransactionBehavior};

use super::gpus as q;
use super::notebooks::{self as nq, NewNotebook, NotebookRow, Transition};
use super::DbError;

#[derive(Debug, Clone)]
pub struct PlacementRequest {
    pub notebook_id: String,
    pub owner_id: i64,
    pub gpu_count: i64,
    /// The most GPUs this user may hold or wait for at once.
    pub user_limit: i64,
    /// Queue when GPUs are busy (else refuse).
    pub queue: bool,
    /// Every GPU of the workstation, in index order.
    pub gpus: Vec<String>,
    /// Refuse GPU notebooks of members over their monthly GPU-hour budget (from this
    /// month's start, Unix seconds); None: budgets only warn.
    pub block_over_budget_since: Option<i64>,
    /// The most notebooks the member may have running or on their way at once
    /// (`notebooks.max_running_per_user`); None: not checked (a queued notebook moving up
    /// was counted when it joined the queue).
    pub running_limit: Option<i64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// Starting, with these GPUs (none for a CPU notebook).
    Starting(Vec<String>),
    /// Waiting for GPUs; 1 is next.
    Queued { position: usize },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error("You have {active} notebook(s) running, starting or queued, and a member may have {limit} at once here. Stop one of them first.")]
    TooManyRunning { limit: i64, active: i64 },
    #[error("This machine type needs {wanted} GPU(s), but this workstation has {total}. Choose a smaller machine type.")]
    TooMany { wanted: i64, total: usize },
    #[error("Your limit is {limit} GPU(s) at once and your other notebooks already hold or wait for {held}. Stop one of them first, or ask an admin to raise your limit.")]
    OverLimit { limit: i64, held: i64 },
    #[error("You have used {used:.1} of your {budget:.1} GPU-hours this month, and this Notebox starts no GPU notebook over budget. Use a CPU machine type, or ask an admin to raise your budget.")]
    OverBudget { used: f64, budget: f64 },
    #[error("Not enough free GPUs: this needs {wanted}, and {free} of {total} are free{ahead}. {holders}Try again when one is stopped.")]
    Busy {
        wanted: i64,
        free: usize,
        total: usize,
        /// ", and 2 waiting before it (first come, first served)" when the queue is not empty.
        ahead: String,
        holders: String,
    },
    #[error("You have {active} jobs queued or running, and a member may have {limit} at once here (jobs.max_unfinished_per_member). Wait for one to end, or cancel one.")]
    TooManyJobs { limit: i64, active: i64 },
}

fn free_gpus(conn: &Connection, gpus: &[String]) -> Result<Vec<String>, DbError> {
    let taken: std::collections::HashSet<String> =
        q::all(conn)?.into_iter().map(|a| a.gpu_uuid).collect();
    Ok(gpus
        .iter()
        .filter(|g| !taken.contains(*g))
        .cloned()
        .collect())
}

/// "Held by alice (“big run”, 2 GPUs), bob (“test”, 1 GPU). "
fn describe_holders(conn: &Connection) -> Result<String, DbError> {
    // (notebook id, owner, notebook name, GPUs)
    let mut per_notebook: Vec<(String, String, String, usize)> = Vec::new();
    for a in q::all(conn)? {
        match per_notebook
            .iter_mut()
            .find(|entry| entry.0 == a.notebook_id)
        {
            Some(entry) => entry.3 += 1,
            None => per_notebook.push((a.notebook_id, a.owner, a.notebook_name, 1)),
        }
    }
    if per_notebook.is_empty() {
        return Ok(String::new());
    }
    let list = per_notebook
        .iter()
        .map(|(_, owner, name, n)| {
            format!(
                "{owner} (“{name}”, {n} GPU{})",
                if *n == 1 { "" } else { "s" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!("Held by {list}. "))
}

/// Inserts a new notebook and places it, in one transaction: a refused notebook is not
/// created at all (nothing to roll back by hand). Returns it as stored, once placed.
pub fn create_and_place(
    conn: &mut Connection,
    notebook: &NewNotebook,
    req: &PlacementRequest,
) -> Result<Result<(Option<NotebookRow>, Placement), Refusal>, DbError> {
    create_and_place_with(conn, notebook, req, |_| Ok(Ok(())))
}

/// `create_and_place`, with `also` run in the same (immediate) transaction after the
/// insert (a job's own record and its limits, checked where no other submission can
/// interleave): refused by it or by placement, nothing is stored.
pub fn create_and_place_with(
    conn: &mut Connection,
    notebook: &NewNotebook,
    req: &PlacementRequest,
    also: impl FnOnce(&Connection) -> Result<Result<(), Refusal>, DbError>,
) -> Result<Result<(Option<NotebookRow>, Placement), Refusal>, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    nq::insert(&tx, notebook)?;
    if let Err(refusal) = also(&tx)? {
        return Ok(Err(refusal)); // dropped: rolled back
    }
    let placement = match place(&tx, req)? {
        Ok(p) => p,
        Err(refusal) => return Ok(Err(refusal)), // dropped: rolled back, nothing created
    };
    let row = nq::by_id(&tx, &req.notebook_id)?;
    tx.commit()?;
    Ok(Ok((row, placement)))
}

/// Places a stopped or failed notebook (started, restarted or forked again), in one
/// transaction: its pending restart and notice are dropped. None when it is no longer at
/// rest (it moved meanwhile); a refusal changes nothing.
pub fn place_stopped(
    conn: &mut Connection,
    req: &PlacementRequest,
) -> Result<Option<Result<Placement, Refusal>>, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id = req.notebook_id.as_str();
    if !nq::by_id(&tx, id)?.is_some_and(|r| r.state.can_start()) {
        return Ok(None);
    }
    nq::set_restart_requested(&tx, id, false)?;
    nq::set_notice(&tx, id, None)?;
    let placed = place(&tx, req)?;
    if placed.is_ok() {
        tx.commit()?;
    }
    Ok(Some(placed))
}

/// Starts queued notebooks whose GPUs came free, first come first served, in one
/// (immediate) transaction; see `admit_queued_within_budgets`. Returns those started.
pub fn admit_queued_now(
    conn: &mut Connection,
    gpus: &[String],
    block_over_budget_since: Option<i64>,
) -> Result<Vec<String>, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let started = admit_queued_within_budgets(&tx, gpus, block_over_budget_since)?;
    tx.commit()?;
    Ok(started)
}

/// Decides where a notebook that should run goes: starting with GPUs, queued, or refused.
/// Call inside a transaction.
fn place(conn: &Connection, req: &PlacementRequest) -> Result<Result<Placement, Refusal>, DbError> {
    if let Some(limit) = req.running_limit {
        let active = crate::db::notebooks::active_count_of(conn, req.owner_id, &req.notebook_id)?;
        if active >= limit {
            return Ok(Err(Refusal::TooManyRunning { limit, active }));
        }
    }
    if req.gpu_count <= 0 {
        q::mark_starting(conn, &req.notebook_id)?;
        return Ok(Ok(Placement::Starting(Vec::new())));
    }
    let total = req.gpus.len();
    if req.gpu_count as usize > total {
        return Ok(Err(Refusal::TooMany {
            wanted: req.gpu_count,
            total,
        }));
    }
    if let Some(since) = req.block_over_budget_since {
        if let Some(refusal) = over_budget(conn, &req.notebook_id, since)? {
            return Ok(Err(refusal));
        }
    }
    let held = q::user_demand(conn, req.owner_id, &req.notebook_id)?;
    if held + req.gpu_count > req.user_limit {
        return Ok(Err(Refusal::OverLimit {
            limit: req.user_limit,
            held,
        }));
    }
    let waiting: Vec<(String, i64)> = q::queue(conn)?
        .into_iter()
        .filter(|(id, _)| id != &req.notebook_id)
        .collect();
    let free = free_gpus(conn, &req.gpus)?;
    // First come, first served: nobody overtakes a notebook that is already waiting.
    if waiting.is_empty() && free.len() >= req.gpu_count as usize {
        let chosen: Vec<String> = free.into_iter().take(req.gpu_count as usize).collect();
        for uuid in &chosen {
            q::insert(conn, uuid, &req.notebook_id)?;
        }
        q::mark_starting(conn, &req.notebook_id)?;
        return Ok(Ok(Placement::Starting(chosen)));
    }
    if req.queue {
        let detail = format!(
            "Waiting for {} GPU{} ({} of {} free now)",
            req.gpu_count,
            if req.gpu_count == 1 { "" } else { "s" },
            free.len(),
            total
        );
        q::mark_queued(conn, &req.notebook_id, &detail)?;
        return Ok(Ok(Placement::Queued {
            position: waiting.len() + 1,
        }));
    }
    Ok(Err(Refusal::Busy {
        wanted: req.gpu_count,
        free: free.len(),
        total,
        ahead: match waiting.len() {
            0 => String::new(),
            n => format!(
                ", but {n} notebook(s) or job(s) already wait for GPUs (first come, first served)"
            ),
        },
        holders: describe_holders(conn)?,
    }))
}

/// Starts queued notebooks, first come first served, while their GPUs are free. Also
/// frees GPUs held by notebooks that cannot be using them (after a crash). Returns the
/// notebooks it started.
#[cfg(test)]
fn admit_queued(conn: &Connection, gpus: &[String]) -> Result<Vec<String>, DbError> {
    admit_queued_within_budgets(conn, gpus, None)
}

/// `admit_queued`, and with `block_over_budget_since` (budgets that block, counted from
/// this month's start) a queued notebook whose member went over budget while it waited
/// leaves the queue, saying why, instead of starting (or holding up those behind it).
fn admit_queued_within_budgets(
    conn: &Connection,
    gpus: &[String],
    block_over_budget_since: Option<i64>,
) -> Result<Vec<String>, DbError> {
    q::release_stale(conn)?;
    let mut started = Vec::new();
    for (id, wanted) in q::queue(conn)? {
        if let Some(since) = block_over_budget_since {
            if let Some(refusal) = over_budget(conn, &id, since)? {
                nq::transition(
                    conn,
                    &id,
                    Transition {
                        from: &[crate::model::NotebookState::Queued],
                        to: crate::model::NotebookState::Stopped,
                        detail: &format!("Removed from the queue: {refusal}"),
                        desired: Some(crate::model::DesiredState::Stopped),
                    },
                )?;
                continue;
            }
        }
        let free = free_gpus(conn, gpus)?;
        if free.len() < wanted.max(0) as usize {
            break;
        }
        for uuid in free.iter().take(wanted.max(0) as usize) {
            q::insert(conn, uuid, &id)?;
        }
        q::mark_starting(conn, &id)?;
        started.push(id);
    }
    Ok(started)
}

/// The budget refusal for a notebook's member, if they are over their monthly budget.
fn over_budget(
    conn: &Connection,
    notebook_id: &str,
    since: i64,
) -> Result<Option<Refusal>, DbError> {
    let Some(owner) = crate::db::notebooks::by_id(conn, notebook_id)?.map(|n| n.owner_id) else {
        return Ok(None);
    };
    let Some(budget) = crate::db::users::gpu_hours_budget(conn, owner)? else {
        return Ok(None);
    };
    let used = crate::db::usage::gpu_seconds_since(conn, owner, since)? / 3600.0;
    Ok((used >= budget).then_some(Refusal::OverBudget { used, budget }))
}

/// Each queued notebook's place in the queue (1 is next).
pub fn queue_positions(
    conn: &Connection,
) -> Result<std::collections::HashMap<String, usize>, DbError> {
    Ok(q::queue(conn)?
        .into_iter()
        .enumerate()
        .map(|(i, (id, _))| (id, i + 1))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{gpus as gq, users, Db};

    fn gpus(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("GPU-{i}")).collect()
    }

    fn user(db: &Db, name: &str) -> i64 {
        db.with_conn(|c| users::insert(c, name, "hash", false))
            .expect("insert user")
            .expect("new user")
            .id
    }

    /// A stopped notebook asking for `gpu_count` GPUs. Ids sort in creation order, as the
    /// queue breaks ties (same second) by id.
    fn notebook(db: &Db, id: &str, owner_id: i64, gpu_count: i64) {
        db.with_conn(|c| {
            nq::insert(
                c,
                &NewNotebook {
                    id,
                    owner_id,
                    name: id,
                    image_id: Some("test"),
                    image: "test:1",
                    launcher: crate::model::Launcher::JupyterLab,
                    command: &[],
                    machine_id: "gpu",
                    cpus: 1.0,
                    memory_mib: 1024,
                    gpu_count,
                    jupyter_token: "t",
                    auto_shutdown_secs: None,
                    forked_from: None,
                    desired_state: crate::model::DesiredState::Stopped,
                    state: crate::model::NotebookState::Stopped,
                    state_detail: "",
                    environment: None,
                    repo: None,
                },
            )
        })
        .expect("insert notebook");
    }

    /// Places a notebook the way the runtime does: in one transaction, committed only when
    /// it was not refused.
    fn place_in(
        db: &Db,
        id: &str,
        owner_id: i64,
        gpu_count: i64,
        user_limit: i64,
        queue: bool,
        all: &[String],
    ) -> Result<Placement, Refusal> {
        db.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let placed = place(
                &tx,
                &PlacementRequest {
                    notebook_id: id.to_string(),
                    owner_id,
                    gpu_count,
                    user_limit,
                    queue,
                    gpus: all.to_vec(),
                    block_over_budget_since: None,
                    running_limit: None,
                },
            )?;
            if placed.is_ok() {
                tx.commit()?;
            }
            Ok(placed)
        })
        .expect("place")
    }

    fn state(db: &Db, id: &str) -> crate::model::NotebookState {
        db.with_conn(|c| nq::by_id(c, id))
            .expect("by_id")
            .expect("row")
            .state
    }

    fn held_by(db: &Db, id: &str) -> Vec<String> {
        db.with_conn(|c| gq::of_notebook(c, id))
            .expect("of_notebook")
    }

    /// Stops a notebook as the runtime does (which frees its GPUs).
    fn stop(db: &Db, id: &str) {
        let moved = db
            .with_conn(|c| {
                nq::transition(
                    c,
                    id,
                    Transition {
                        from: &[
                            crate::model::NotebookState::Starting,
                            crate::model::NotebookState::Running,
                            crate::model::NotebookState::Queued,
                        ],
                        to: crate::model::NotebookState::Stopped,
                        detail: "",
                        desired: Some(crate::model::DesiredState::Stopped),
                    },
                )
            })
            .expect("transition");
        assert!(moved, "{id} was stopped");
    }

    /// (notebook, GPU, open?) of every ledger interval.
    fn ledger(db: &Db) -> Vec<(String, Option<String>, bool)> {
        db.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT notebook_id, gpu_uuid, ended_at IS NULL FROM usage_intervals ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .expect("ledger")
    }

    #[test]
    fn the_ledger_opens_and_closes_with_the_allocation() {
        let (_dir, db) = crate::db::test_db();
        let ada = user(&db, "ada");
        let all = gpus(2);
        notebook(&db, "a", ada, 2);
        notebook(&db, "b", ada, 1);
        notebook(&db, "c", ada, 0);
        assert!(place_in(&db, "a", ada, 2, 8, true, &all).is_ok());
        // Queued: no GPU, no interval. Refused: nothing at all.
        assert_eq!(
            place_in(&db, "b", ada, 1, 8, true, &all),
            Ok(Placement::Queued { position: 1 })
        );
        assert!(place_in(&db, "c", ada, 0, 8, true, &all).is_ok());
        let open: Vec<_> = ledger(&db).into_iter().filter(|l| l.2).collect();
        assert_eq!(
            open,
            vec![
                ("a".to_string(), Some("GPU-0".to_string()), true),
                ("a".to_string(), Some("GPU-1".to_string()), true),
                ("c".to_string(), None, true),
            ]
        );
        // Stopping "a" closes its intervals in the same transaction and admits "b".
        stop(&db, "a");
        let started = db.with_conn(|c| admit_queued(c, &all)).expect("admit");
        assert_eq!(started, vec!["b".to_string()]);
        let l = ledger(&db);
        assert_eq!(l.iter().filter(|x| x.0 == "a" && x.2).count(), 0, "{l:?}");
        assert_eq!(l.iter().filter(|x| x.0 == "b" && x.2).count(), 1, "{l:?}");
        // Deleting a notebook's row keeps its usage, closed.
        db.with_conn(|c| nq::delete(c, "c")).expect("delete");
        let l = ledger(&db);
        assert!(l.iter().any(|x| x.0 == "c" && !x.2), "{l:?}");
    }

    #[test]
    fn a_member_over_a_blocking_budget_leaves_the_queue_and_the_next_starts() {
        let (_dir, db) = crate::db::test_db();
        let (ada, bob) = (user(&db, "ada"), user(&db, "bob"));
        let all = gpus(1);
        notebook(&db, "a", ada, 1);
        notebook(&db, "b", ada, 1);
        notebook(&db, "c", bob, 1);
        assert!(place_in(&db, "a", ada, 1, 8, true, &all).is_ok());
        assert!(place_in(&db, "b", ada, 1, 8, true, &all).is_ok());
        assert!(place_in(&db, "c", bob, 1, 8, true, &all).is_ok());
        // Ada goes over her budget while "b" waits; "a" stops.
        db.with_conn(|c| users::set_gpu_hours_budget(c, ada, Some(0.0)))
            .expect("budget");
        stop(&db, "a");
        let started = db
            .with_conn(|c| admit_queued_within_budgets(c, &all, Some(0)))
            .expect("admit");
        assert_eq!(
            started,
            vec!["c".to_string()],
            "Bob's starts, Ada's leaves the queue"
        );
        let b = db
            .with_conn(|c| nq::by_id(c, "b"))
            .expect("b")
            .expect("row");
        assert_eq!(b.state, crate::model::NotebookState::Stopped);
        assert!(
            b.state_detail
                .starts_with("Removed from the queue: You have used"),
            "{}",
            b.state_detail
        );
    }

    #[test]
    fn places_on_free_gpus_and_never_gives_one_twice() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(4);
        let alice = user(&db, "alice");
        let bob = user(&db, "bob");
        notebook(&db, "nb-1", alice, 2);
        notebook(&db, "nb-2", bob, 2);
        let Ok(Placement::Starting(a)) = place_in(&db, "nb-1", alice, 2, 8, true, &all) else {
            panic!("nb-1 starts");
        };
        let Ok(Placement::Starting(b)) = place_in(&db, "nb-2", bob, 2, 8, true, &all) else {
            panic!("nb-2 starts");
        };
        assert_eq!(a.len(), 2);
        assert_eq!(b.len(), 2);
        let mut both: Vec<&String> = a.iter().chain(b.iter()).collect();
        both.sort();
        both.dedup();
        assert_eq!(both.len(), 4, "disjoint: {a:?} {b:?}");
        assert_eq!(held_by(&db, "nb-1"), a);
        assert_eq!(held_by(&db, "nb-2"), b);
        assert_eq!(state(&db, "nb-1"), crate::model::NotebookState::Starting);
        assert_eq!(state(&db, "nb-2"), crate::model::NotebookState::Starting);

        // The database itself refuses a second holder of a GPU.
        let twice = db.with_conn(|c| gq::insert(c, &a[0], "nb-2"));
        assert!(twice.is_err(), "a GPU given twice was accepted");
    }

    #[test]
    fn a_cpu_notebook_starts_without_gpus() {
        let (_dir, db) = crate::db::test_db();
        let alice = user(&db, "alice");
        notebook(&db, "cpu", alice, 0);
        assert_eq!(
            place_in(&db, "cpu", alice, 0, 0, false, &[]),
            Ok(Placement::Starting(Vec::new()))
        );
        assert_eq!(state(&db, "cpu"), crate::model::NotebookState::Starting);
    }

    #[test]
    fn busy_gpus_queue_in_order_and_stopping_one_admits_the_next() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(2);
        let alice = user(&db, "alice");
        let bob = user(&db, "bob");
        for (id, owner) in [
            ("nb-1", alice),
            ("nb-2", bob),
            ("nb-3", alice),
            ("nb-4", bob),
        ] {
            notebook(&db, id, owner, 1);
        }
        assert!(matches!(
            place_in(&db, "nb-1", alice, 1, 8, true, &all),
            Ok(Placement::Starting(_))
        ));
        assert!(matches!(
            place_in(&db, "nb-2", bob, 1, 8, true, &all),
            Ok(Placement::Starting(_))
        ));
        assert_eq!(
            place_in(&db, "nb-3", alice, 1, 8, true, &all),
            Ok(Placement::Queued { position: 1 })
        );
        assert_eq!(
            place_in(&db, "nb-4", bob, 1, 8, true, &all),
            Ok(Placement::Queued { position: 2 })
        );
        assert_eq!(state(&db, "nb-3"), crate::model::NotebookState::Queued);
        assert!(held_by(&db, "nb-3").is_empty());
        let positions = db.with_conn(|c| queue_positions(c)).expect("positions");
        assert_eq!(positions.get("nb-3"), Some(&1));
        assert_eq!(positions.get("nb-4"), Some(&2));
        assert_eq!(positions.len(), 2);

        // Nothing is free: a pass admits nobody.
        let started = db.with_conn(|c| admit_queued(c, &all)).expect("admit");
        assert!(started.is_empty(), "{started:?}");

        // Stopping nb-1 frees its GPU: the first in the queue gets exactly that one.
        let freed = held_by(&db, "nb-1");
        stop(&db, "nb-1");
        assert!(held_by(&db, "nb-1").is_empty());
        let started = db.with_conn(|c| admit_queued(c, &all)).expect("admit");
        assert_eq!(started, vec!["nb-3".to_string()]);
        assert_eq!(held_by(&db, "nb-3"), freed);
        assert_eq!(state(&db, "nb-3"), crate::model::NotebookState::Starting);
        assert_eq!(state(&db, "nb-4"), crate::model::NotebookState::Queued);
        let positions = db.with_conn(|c| queue_positions(c)).expect("positions");
        assert_eq!(positions.get("nb-4"), Some(&1), "nb-4 moved up");

        // A newcomer does not overtake the queue, even when a GPU is free.
        stop(&db, "nb-2");
        notebook(&db, "nb-5", alice, 1);
        assert_eq!(
            place_in(&db, "nb-5", alice, 1, 8, true, &all),
            Ok(Placement::Queued { position: 2 })
        );
        let started = db.with_conn(|c| admit_queued(c, &all)).expect("admit");
        assert_eq!(started, vec!["nb-4".to_string()]);
        assert_eq!(state(&db, "nb-5"), crate::model::NotebookState::Queued);
        let mut holders: Vec<String> = held_by(&db, "nb-3");
        holders.extend(held_by(&db, "nb-4"));
        holders.sort();
        assert_eq!(holders, all, "each GPU held once");
    }

    #[test]
    fn admission_frees_gpus_a_crash_left_held() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(1);
        let alice = user(&db, "alice");
        notebook(&db, "nb-1", alice, 1);
        notebook(&db, "nb-2", alice, 1);
        assert!(matches!(
            place_in(&db, "nb-1", alice, 1, 8, true, &all),
            Ok(Placement::Starting(_))
        ));
        assert_eq!(
            place_in(&db, "nb-2", alice, 1, 8, true, &all),
            Ok(Placement::Queued { position: 1 })
        );
        // As if a crash left nb-1 stopped but still holding its GPU.
        db.with_conn(|c| {
            nq::force_state_for_tests(
                c,
                "nb-1",
                crate::model::NotebookState::Stopped,
                crate::model::DesiredState::Stopped,
            )
        })
        .expect("update");
        assert_eq!(held_by(&db, "nb-1"), all);
        let started = db.with_conn(|c| admit_queued(c, &all)).expect("admit");
        assert_eq!(started, vec!["nb-2".to_string()]);
        assert!(held_by(&db, "nb-1").is_empty());
        assert_eq!(held_by(&db, "nb-2"), all);
    }

    #[test]
    fn without_a_queue_busy_is_refused_and_nothing_changes() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(2);
        let alice = user(&db, "alice");
        let bob = user(&db, "bob");
        notebook(&db, "big", alice, 2);
        notebook(&db, "late", bob, 1);
        assert!(matches!(
            place_in(&db, "big", alice, 2, 8, false, &all),
            Ok(Placement::Starting(_))
        ));
        let refused = place_in(&db, "late", bob, 1, 8, false, &all);
        let Err(Refusal::Busy {
            wanted,
            free,
            total,
            holders,
            ..
        }) = refused
        else {
            panic!("busy: {refused:?}");
        };
        assert_eq!((wanted, free, total), (1, 0, 2));
        assert!(
            holders.contains("alice") && holders.contains("big") && holders.contains("2 GPUs"),
            "{holders}"
        );
        assert_eq!(state(&db, "late"), crate::model::NotebookState::Stopped);
        assert!(held_by(&db, "late").is_empty());
    }

    #[test]
    fn the_per_user_limit_counts_held_and_queued_gpus() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(4);
        let alice = user(&db, "alice");
        let bob = user(&db, "bob");
        for id in ["a-1", "a-2", "a-3"] {
            notebook(&db, id, alice, 2);
        }
        notebook(&db, "b-1", bob, 2);
        notebook(&db, "b-2", bob, 2);
        assert!(matches!(
            place_in(&db, "a-1", alice, 2, 3, true, &all),
            Ok(Placement::Starting(_))
        ));
        // 2 held + 2 more is over a limit of 3.
        assert_eq!(
            place_in(&db, "a-2", alice, 2, 3, true, &all),
            Err(Refusal::OverLimit { limit: 3, held: 2 })
        );
        // Bob fills the GPUs; his next one queues, and queued GPUs count against him too.
        assert!(matches!(
            place_in(&db, "b-1", bob, 2, 4, true, &all),
            Ok(Placement::Starting(_))
        ));
        notebook(&db, "b-3", bob, 1);
        assert_eq!(
            place_in(&db, "b-2", bob, 2, 4, true, &all),
            Ok(Placement::Queued { position: 1 })
        );
        assert_eq!(
            place_in(&db, "b-3", bob, 1, 4, true, &all),
            Err(Refusal::OverLimit { limit: 4, held: 4 })
        );
        // Placing a notebook again does not count its own GPUs against its owner.
        assert_eq!(
            place_in(&db, "b-2", bob, 2, 4, true, &all),
            Ok(Placement::Queued { position: 1 })
        );
        // Once stopped, they no longer count: a-3 is within a limit of 2 and waits behind b-2.
        stop(&db, "a-1");
        assert_eq!(
            place_in(&db, "a-3", alice, 2, 2, true, &all),
            Ok(Placement::Queued { position: 2 })
        );
    }

    #[test]
    fn more_gpus_than_the_workstation_has_are_refused() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(4);
        let alice = user(&db, "alice");
        notebook(&db, "huge", alice, 8);
        assert_eq!(
            place_in(&db, "huge", alice, 8, 100, true, &all),
            Err(Refusal::TooMany {
                wanted: 8,
                total: 4
            })
        );
        assert_eq!(state(&db, "huge"), crate::model::NotebookState::Stopped);
        notebook(&db, "none-here", alice, 1);
        assert_eq!(
            place_in(&db, "none-here", alice, 1, 100, true, &[]),
            Err(Refusal::TooMany {
                wanted: 1,
                total: 0
            })
        );
    }
}
