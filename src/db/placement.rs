//! Where a notebook that should run goes: starting with its GPUs, queued, or refused; and
//! the queue moving up. Exclusive GPU allocation runs inside one (immediate) transaction
//! that also moves the notebook to `starting` (or `queued`): the `gpu_allocations`
//! primary key, not memory, guarantees that no GPU is ever given twice.

use rusqlite::{Connection, TransactionBehavior};

use std::collections::{HashMap, HashSet};

use super::gpus as q;
use super::notebooks::{self as nq, NewNotebook, NotebookRow, Transition};
use super::reservations::{self as rq, Reservation};
use super::DbError;
use crate::sharing::fair_share::{self, QueueOrder, Waiting};

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
    /// The queue's order (first come first served, or fair share).
    pub order: QueueOrder,
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
    #[error("Not enough free GPUs: this needs {wanted}, and {free} of {total} are free{ahead}.{booked} {holders}Try again when one is stopped.")]
    Busy {
        wanted: i64,
        free: usize,
        total: usize,
        /// ", and 2 waiting before it (first come, first served)" when the queue is not empty.
        ahead: String,
        holders: String,
        /// " 2 more are free but booked by alice from …" when bookings keep GPUs from it.
        booked: String,
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
    order: &QueueOrder,
) -> Result<Vec<String>, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    displace_for_bookings(&tx)?;
    let started = admit_queued_within_budgets(&tx, gpus, block_over_budget_since, order)?;
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
    if let Some(refusal) = gpu_limits(conn, req)? {
        return Ok(Err(refusal));
    }
    let total = req.gpus.len();
    let now = crate::clock::now();
    let me = this_one(conn, req, now)?;
    let mut waiting = ordered_queue(conn, &req.order, now)?;
    waiting.retain(|w| w.id != req.notebook_id);
    let limit_secs = me.limit_secs;
    waiting.push(me);
    fair_share::sort(&mut waiting, &req.order, now);
    let ahead = waiting
        .iter()
        .position(|w| w.id == req.notebook_id)
        .unwrap_or(0);
    let free = free_gpus(conn, &req.gpus)?;
    let bookings = rq::current_by_gpu(conn, now)?;
    // Nobody takes a GPU that one ahead of it could use (it waits for more, or starts at
    // the next pass); a member's own booked GPUs are theirs alone.
    let held = held_back_by(&waiting[..ahead], &bookings, &free, now);
    let fit = Fit::of(&bookings, &free, req.owner_id, limit_secs, now);
    let wanted = req.gpu_count as usize;
    let pool: Vec<String> = fit
        .ordered()
        .into_iter()
        .filter(|g| !held.contains(g))
        .collect();
    if pool.len() >= wanted {
        let chosen = fit.take(conn, &req.notebook_id, &pool, wanted)?;
        return Ok(Ok(Placement::Starting(chosen)));
    }
    let booked = fit.describe_kept();
    if req.queue {
        let detail = format!(
            "Waiting for {} GPU{} ({} of {} free now).{booked}",
            req.gpu_count,
            if req.gpu_count == 1 { "" } else { "s" },
            free.len(),
            total
        );
        q::mark_queued(conn, &req.notebook_id, detail.trim_end())?;
        return Ok(Ok(Placement::Queued {
            position: ahead + 1,
        }));
    }
    Ok(Err(Refusal::Busy {
        wanted: req.gpu_count,
        free: fit.ordered().len(),
        total,
        ahead: match ahead {
            0 => String::new(),
            n => format!(
                ", but {n} notebook(s) or job(s) wait for GPUs before it ({})",
                order_name(&req.order)
            ),
        },
        holders: describe_holders(conn)?,
        booked,
    }))
}

/// A GPU request past what the workstation has, the member's budget or their GPU limit.
fn gpu_limits(conn: &Connection, req: &PlacementRequest) -> Result<Option<Refusal>, DbError> {
    let total = req.gpus.len();
    if req.gpu_count as usize > total {
        return Ok(Some(Refusal::TooMany {
            wanted: req.gpu_count,
            total,
        }));
    }
    if let Some(since) = req.block_over_budget_since {
        if let Some(refusal) = over_budget(conn, &req.notebook_id, since)? {
            return Ok(Some(refusal));
        }
    }
    let held = q::user_demand(conn, req.owner_id, &req.notebook_id)?;
    Ok(
        (held + req.gpu_count > req.user_limit).then_some(Refusal::OverLimit {
            limit: req.user_limit,
            held,
        }),
    )
}

/// The free GPUs that the items `ahead` (in the order they are served) would take or wait
/// for: each one's usable GPUs, given the bookings and those before it.
fn held_back_by(
    ahead: &[Waiting],
    bookings: &HashMap<String, Vec<Reservation>>,
    free: &[String],
    now: i64,
) -> HashSet<String> {
    let mut held: HashSet<String> = HashSet::new();
    for w in ahead {
        let left: Vec<String> = free
            .iter()
            .filter(|g| !held.contains(*g))
            .cloned()
            .collect();
        let pool = Fit::of(bookings, &left, w.owner_id, w.limit_secs, now).ordered();
        held.extend(pool.into_iter().take(w.gpu_count.max(0) as usize));
    }
    held
}

fn order_name(order: &QueueOrder) -> &'static str {
    if order.is_fair_share() {
        "fair share: who used fewer GPU-hours recently goes first"
    } else {
        "first come, first served"
    }
}

/// Seconds a start may take before its auto-shutdown clock runs: a notebook whose limit
/// ends within this of a booking's start does not use the booked GPU.
pub const START_MARGIN: i64 = 120;

/// Which free GPUs a member's notebook or job may take, given the bookings, best first.
#[derive(Debug, Default)]
struct Fit {
    /// In the member's own booking, now.
    own_active: Vec<String>,
    /// When those bookings end, per GPU.
    own_until: HashMap<String, i64>,
    /// In nobody's booking.
    unbooked: Vec<String>,
    /// Booked by the member later.
    own_future: Vec<String>,
    /// Booked by someone else later, and it ends before that.
    before_booking: Vec<String>,
    /// Free GPUs someone else's booking keeps from it: how many, and the first such
    /// booking (start, member).
    kept: Option<(usize, i64, String)>,
}

impl Fit {
    fn of(
        bookings: &HashMap<String, Vec<Reservation>>,
        free: &[String],
        owner: i64,
        limit_secs: Option<i64>,
        now: i64,
    ) -> Fit {
        let ends = limit_secs.map(|s| now + s + START_MARGIN);
        let mut fit = Fit::default();
        for gpu in free {
            let theirs = bookings.get(gpu).map(Vec::as_slice).unwrap_or_default();
            let mine = |r: &Reservation| r.user_id == Some(owner);
            let own_now = theirs.iter().find(|r| mine(r) && r.is_active(now));
            // On its member's booked GPU a notebook stops when the booking ends.
            let ends = match own_now {
                Some(r) => Some(ends.map_or(r.ends_at, |e| e.min(r.ends_at))),
                None => ends,
            };
            let blocking = theirs
                .iter()
                .filter(|r| !mine(r))
                .find(|r| r.is_active(now) || ends.is_none_or(|end| end > r.starts_at));
            if let Some(r) = blocking {
                if !r.is_active(now) {
                    let first = fit
                        .kept
                        .take()
                        .map_or((0, r.starts_at, r.member.clone()), |k| {
                            if r.starts_at < k.1 {
                                (k.0, r.starts_at, r.member.clone())
                            } else {
                                k
                            }
                        });
                    fit.kept = Some((first.0 + 1, first.1, first.2));
                }
                continue;
            }
            if let Some(r) = own_now {
                fit.own_until.insert(gpu.clone(), r.ends_at);
            }
            let list = if own_now.is_some() {
                &mut fit.own_active
            } else if theirs.iter().any(|r| !mine(r)) {
                &mut fit.before_booking
            } else if theirs.is_empty() {
                &mut fit.unbooked
            } else {
                &mut fit.own_future
            };
            list.push(gpu.clone());
        }
        fit
    }

    /// Takes `wanted` GPUs of `pool` for the notebook: it moves to starting, and runs
    /// until the end of the member's booking when it got booked GPUs.
    fn take(
        &self,
        conn: &Connection,
        id: &str,
        pool: &[String],
        wanted: usize,
    ) -> Result<Vec<String>, DbError> {
        let chosen: Vec<String> = pool.iter().take(wanted).cloned().collect();
        for uuid in &chosen {
            q::insert(conn, uuid, id)?;
        }
        q::mark_starting(conn, id)?;
        let until = chosen.iter().filter_map(|g| self.own_until.get(g)).min();
        conn.execute(
            "UPDATE notebooks SET booked_until = ?2 WHERE id = ?1",
            rusqlite::params![id, until],
        )?;
        Ok(chosen)
    }

    fn ordered(&self) -> Vec<String> {
        [
            &self.own_active,
            &self.unbooked,
            &self.own_future,
            &self.before_booking,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    /// " 2 more are free but booked by alice from 2026-12-10 14:00 UTC: …" or "".
    fn describe_kept(&self) -> String {
        let Some((n, from, member)) = &self.kept else {
            return String::new();
        };
        format!(
            " {n} more {} free but booked by {member} from {}: with an auto-shutdown that ends before then (“until the booking”, it stops at {}) it can use {}.",
            if *n == 1 { "is" } else { "are" },
            rq::short_time(*from),
            rq::short_time(from - START_MARGIN),
            if *n == 1 { "it" } else { "them" }
        )
    }
}

/// The queue in the order it is served.
fn ordered_queue(conn: &Connection, order: &QueueOrder, now: i64) -> Result<Vec<Waiting>, DbError> {
    let mut usage: HashMap<i64, f64> = HashMap::new();
    let mut waiting = Vec::new();
    for (id, gpu_count, owner_id, owner, groups, queued_at, limit_secs) in q::queue_entries(conn)? {
        let (usage_hours, weight) = match order {
            QueueOrder::Fifo => (0.0, 1.0),
            QueueOrder::FairShare(fs) => {
                let hours = match usage.get(&owner_id) {
                    Some(h) => *h,
                    None => {
                        let h = super::usage::decayed_gpu_hours(conn, owner_id, now, fs.half_life)?;
                        usage.insert(owner_id, h);
                        h
                    }
                };
                (hours, fs.weights.of(&owner, &groups))
            }
        };
        waiting.push(Waiting {
            id,
            owner_id,
            owner,
            gpu_count,
            queued_at,
            usage_hours,
            weight,
            limit_secs,
        });
    }
    fair_share::sort(&mut waiting, order, now);
    Ok(waiting)
}

/// The notebook being placed, as a queue entry (it joins the queue now).
fn this_one(conn: &Connection, req: &PlacementRequest, now: i64) -> Result<Waiting, DbError> {
    let row = nq::by_id(conn, &req.notebook_id)?;
    let owner = super::users::by_id(conn, req.owner_id)?;
    let (usage_hours, weight) = match (&req.order, &owner) {
        (QueueOrder::FairShare(fs), Some(u)) => (
            super::usage::decayed_gpu_hours(conn, req.owner_id, now, fs.half_life)?,
            fs.weights.of(&u.username, &u.directory_groups),
        ),
        _ => (0.0, 1.0),
    };
    Ok(Waiting {
        id: req.notebook_id.clone(),
        owner_id: req.owner_id,
        owner: owner.map(|u| u.username).unwrap_or_default(),
        gpu_count: req.gpu_count,
        // A queued_at left from an earlier wait does not count.
        queued_at: row
            .as_ref()
            .filter(|r| r.state == crate::model::NotebookState::Queued)
            .and_then(|r| r.queued_at)
            .unwrap_or(now),
        usage_hours,
        weight,
        limit_secs: row.and_then(|r| r.auto_shutdown_secs),
    })
}

/// Notebooks and jobs on GPUs that a booking now gives to someone else are asked to stop
/// (they started before the booking was made; placement keeps others off booked GPUs), and
/// so are those that ran on their member's booking when it ends.
fn displace_for_bookings(conn: &Connection) -> Result<(), DbError> {
    let now = crate::clock::now();
    let ended = rq::booking_ended(conn, now)?;
    for (id, is_job, why) in rq::displaced(conn, now)?.into_iter().chain(ended) {
        if is_job {
            super::lifecycle::request_job_end_in(
                conn,
                &id,
                crate::model::JobState::Cancelled,
                &why,
            )?;
        } else {
            super::lifecycle::request_stop_in(conn, &id, &format!("Stopping: {why}"))?;
        }
    }
    Ok(())
}

/// Starts queued notebooks, first come first served, while their GPUs are free. Also
/// frees GPUs held by notebooks that cannot be using them (after a crash). Returns the
/// notebooks it started.
#[cfg(test)]
fn admit_queued(conn: &Connection, gpus: &[String]) -> Result<Vec<String>, DbError> {
    admit_queued_within_budgets(conn, gpus, None, &QueueOrder::Fifo)
}

/// `admit_queued`, and with `block_over_budget_since` (budgets that block, counted from
/// this month's start) a queued notebook whose member went over budget while it waited
/// leaves the queue, saying why, instead of starting (or holding up those behind it).
fn admit_queued_within_budgets(
    conn: &Connection,
    gpus: &[String],
    block_over_budget_since: Option<i64>,
    order: &QueueOrder,
) -> Result<Vec<String>, DbError> {
    q::release_stale(conn)?;
    let now = crate::clock::now();
    let bookings = rq::current_by_gpu(conn, now)?;
    let mut started = Vec::new();
    // Once one cannot start, those after it wait too (nobody overtakes), except on GPUs
    // their member has booked for now.
    // GPUs those that could not start could use: nobody behind them takes these.
    let mut held: HashSet<String> = HashSet::new();
    for w in ordered_queue(conn, order, now)? {
        if let Some(since) = block_over_budget_since {
            if let Some(refusal) = over_budget(conn, &w.id, since)? {
                nq::transition(
                    conn,
                    &w.id,
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
        let fit = Fit::of(&bookings, &free, w.owner_id, w.limit_secs, now);
        let pool: Vec<String> = fit
            .ordered()
            .into_iter()
            .filter(|g| !held.contains(g))
            .collect();
        let wanted = w.gpu_count.max(0) as usize;
        if pool.len() < wanted {
            held.extend(pool);
            continue;
        }
        fit.take(conn, &w.id, &pool, wanted)?;
        started.push(w.id);
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

/// Each queued notebook's place in the queue (1 is next), and for those of `owner` (all
/// when None) why it stands there.
pub fn queue_positions(
    conn: &Connection,
    order: &QueueOrder,
    owner: Option<i64>,
) -> Result<HashMap<String, (usize, String)>, DbError> {
    let now = crate::clock::now();
    let waiting = ordered_queue(conn, order, now)?;
    Ok(waiting
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let why = if owner.is_none_or(|o| o == w.owner_id) {
                fair_share::explain(&waiting, i, order, now)
            } else {
                String::new()
            };
            (w.id.clone(), (i + 1, why))
        })
        .collect())
}

/// The queue as it is served, for the GPUs page.
pub fn queue_in_order(conn: &Connection, order: &QueueOrder) -> Result<Vec<Waiting>, DbError> {
    ordered_queue(conn, order, crate::clock::now())
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
        notebook_limited(db, id, owner_id, gpu_count, None);
    }

    fn notebook_limited(db: &Db, id: &str, owner_id: i64, gpu_count: i64, limit: Option<i64>) {
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
                    auto_shutdown_secs: limit,
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
                    order: QueueOrder::Fifo,
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
                            crate::model::NotebookState::Stopping,
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
            .with_conn(|c| admit_queued_within_budgets(c, &all, Some(0), &QueueOrder::Fifo))
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
        let positions = db
            .with_conn(|c| queue_positions(c, &QueueOrder::Fifo, None))
            .expect("positions");
        assert_eq!(positions.get("nb-3").map(|p| p.0), Some(1));
        assert_eq!(positions.get("nb-4").map(|p| p.0), Some(2));
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
        let positions = db
            .with_conn(|c| queue_positions(c, &QueueOrder::Fifo, None))
            .expect("positions");
        assert_eq!(positions.get("nb-4").map(|p| p.0), Some(1), "nb-4 moved up");

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

    fn fair() -> QueueOrder {
        QueueOrder::FairShare(crate::sharing::fair_share::FairShare {
            half_life: 7 * 86400,
            max_wait: 4 * 3600,
            weights: Default::default(),
        })
    }

    /// `hours` GPU-hours of use for `owner`, ended an hour ago.
    fn used(db: &Db, owner: i64, hours: i64) {
        let end = crate::clock::now() - 3600;
        db.with_conn(|c| {
            c.execute(
                "INSERT INTO usage_intervals (user_id, member, notebook_id, notebook_name, machine_id,
                    gpu_uuid, cores, started_at, ended_at) VALUES (?1, 'm', 'old', 'old', 'gpu', 'g', 1, ?2, ?3)",
                rusqlite::params![owner, end - hours * 3600, end],
            )?;
            Ok(())
        })
        .expect("ledger");
    }

    fn admit(db: &Db, all: &[String], order: &QueueOrder) -> Vec<String> {
        db.with_conn(|c| admit_queued_now(c, all, None, order))
            .expect("admit")
    }

    #[test]
    fn fair_share_starts_the_light_user_first_and_fifo_the_first_to_come() {
        for (order, first) in [(fair(), "bob-nb"), (QueueOrder::Fifo, "alice-nb")] {
            let (_dir, db) = crate::db::test_db();
            let all = gpus(1);
            let (alice, bob, carol) = (user(&db, "alice"), user(&db, "bob"), user(&db, "carol"));
            used(&db, alice, 40);
            used(&db, bob, 1);
            for (id, owner) in [("carol-nb", carol), ("alice-nb", alice), ("bob-nb", bob)] {
                notebook(&db, id, owner, 1);
                let placed = place_in(&db, id, owner, 1, 8, true, &all);
                assert!(placed.is_ok(), "{placed:?}");
            }
            let why = db
                .with_conn(|c| queue_positions(c, &order, None))
                .expect("positions");
            stop(&db, "carol-nb");
            assert_eq!(admit(&db, &all, &order), [first]);
            if order.is_fair_share() {
                let (pos, reason) = why.get("alice-nb").cloned().expect("alice queued");
                assert_eq!(pos, 2);
                assert!(
                    reason.starts_with("Ahead of you: bob (1.0 GPU-hours recently). You used 36.7"),
                    "{reason}"
                );
            }
        }
    }

    /// A member's booking ("user{id}"), at short notice (it takes no held GPU).
    fn new_booking(
        id: &str,
        owner: Option<i64>,
        gpus: usize,
        from: i64,
        to: i64,
    ) -> rq::NewReservation {
        rq::NewReservation {
            id: id.into(),
            user_id: owner,
            member: format!("user{}", owner.unwrap_or(0)),
            purpose: String::new(),
            gpu_name: None,
            gpus,
            starts_at: from,
            ends_at: to,
            created_by: "t".into(),
            may_displace: false,
        }
    }

    fn book(
        db: &Db,
        owner: Option<i64>,
        n: usize,
        from: i64,
        to: i64,
        all: &[String],
    ) -> Reservation {
        let inventory: Vec<(String, String)> =
            all.iter().map(|g| (g.clone(), "A100".into())).collect();
        let mut new = new_booking(
            &format!("r{from}{n}{}", owner.unwrap_or(0)),
            owner,
            n,
            from,
            to,
        );
        new.may_displace = true;
        db.with_conn(|c| rq::book(c, &new, &inventory, None))
            .expect("book")
            .expect("booked")
    }

    #[test]
    fn bookings_keep_gpus_from_notebooks_that_would_outlast_their_start() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(3);
        let (alice, bob) = (user(&db, "alice"), user(&db, "bob"));
        let now = crate::clock::now();
        let booking = book(&db, Some(alice), 2, now + 120, now + 3600, &all);
        // Beyond capacity: refused, saying who booked.
        let inventory: Vec<(String, String)> =
            all.iter().map(|g| (g.clone(), "A100".into())).collect();
        let mut more = new_booking("x", Some(bob), 2, now + 600, now + 1200);
        let refused = db
            .with_conn(|c| rq::book(c, &more, &inventory, None))
            .expect("book");
        assert!(
            matches!(&refused, Err(rq::BookingRefusal::NotEnough { free: 1, .. })),
            "{refused:?}"
        );
        assert!(refused.unwrap_err().to_string().contains("user1"));
        more.gpus = 1;
        assert!(db
            .with_conn(|c| rq::book(c, &more, &inventory, None))
            .expect("book")
            .is_ok());
        // Bob's 6 h notebook goes to the unbooked GPU; his second waits, told why.
        notebook_limited(&db, "bob-1", bob, 1, Some(6 * 3600));
        let placed = place_in(&db, "bob-1", bob, 1, 8, true, &all);
        let Ok(Placement::Starting(g)) = placed else {
            panic!("{placed:?}")
        };
        assert!(!booking.gpu_uuids.contains(&g[0]), "placed on a booked GPU");
        notebook_limited(&db, "bob-2", bob, 1, Some(6 * 3600));
        assert_eq!(
            place_in(&db, "bob-2", bob, 1, 8, true, &all),
            Ok(Placement::Queued { position: 1 })
        );
        let detail = db
            .with_conn(|c| nq::by_id(c, "bob-2"))
            .expect("row")
            .expect("row")
            .state_detail;
        assert!(
            detail.contains("booked by user1") && detail.contains("until the booking"),
            "{detail}"
        );
        // Without a queue, the refusal says it too.
        notebook_limited(&db, "bob-4", bob, 1, Some(6 * 3600));
        let refused = place_in(&db, "bob-4", bob, 1, 8, false, &all).expect_err("refused");
        assert!(refused.to_string().contains("booked by user1"), "{refused}");
        // Alice's own notebook may use her booked GPUs, even before the window.
        notebook(&db, "alice-1", alice, 2);
        db.with_conn(|c| {
            c.execute("DELETE FROM notebooks WHERE id = 'bob-2'", [])?;
            Ok(())
        })
        .expect("drop");
        let placed = place_in(&db, "alice-1", alice, 2, 8, true, &all);
        assert_eq!(placed, Ok(Placement::Starting(booking.gpu_uuids.clone())));
    }

    #[test]
    fn a_short_notebook_fits_before_a_booking_and_a_holder_is_displaced_at_its_start() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(1);
        let (alice, bob) = (user(&db, "alice"), user(&db, "bob"));
        let now = crate::clock::now();
        book(&db, Some(alice), 1, now + 3 * 3600, now + 4 * 3600, &all);
        notebook_limited(&db, "bob-1h", bob, 1, Some(3600));
        assert!(matches!(
            place_in(&db, "bob-1h", bob, 1, 8, true, &all),
            Ok(Placement::Starting(_))
        ));
        // A booking that starts now (made while bob holds the GPU): bob is asked to stop,
        // alice's queued notebook starts once the GPU is free.
        db.with_conn(|c| {
            c.execute("DELETE FROM reservations", [])?;
            Ok(())
        })
        .expect("clear");
        book(&db, Some(alice), 1, now - 10, now + 3600, &all);
        notebook(&db, "alice-1", alice, 1);
        assert_eq!(
            place_in(&db, "alice-1", alice, 1, 8, true, &all),
            Ok(Placement::Queued { position: 1 })
        );
        assert!(admit(&db, &all, &QueueOrder::Fifo).is_empty());
        let bob_row = db
            .with_conn(|c| nq::by_id(c, "bob-1h"))
            .expect("row")
            .expect("row");
        assert_eq!(bob_row.desired_state, crate::model::DesiredState::Stopped);
        assert!(
            bob_row.state_detail.contains("booked by user1"),
            "{}",
            bob_row.state_detail
        );
        stop(&db, "bob-1h");
        assert_eq!(admit(&db, &all, &QueueOrder::Fifo), ["alice-1"]);
    }

    /// Review findings: a member's booking cannot take a held GPU at short notice; one
    /// waiting item kept off by a booking does not stall those behind it; a member's own
    /// booking is usable even when another follows it on the same GPU.
    #[test]
    fn bookings_neither_evict_at_short_notice_nor_stall_the_queue() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(1);
        let (alice, bob, carol) = (user(&db, "alice"), user(&db, "bob"), user(&db, "carol"));
        let now = crate::clock::now();
        let inventory: Vec<(String, String)> =
            all.iter().map(|g| (g.clone(), "A100".into())).collect();
        notebook(&db, "bob-never", bob, 1);
        assert!(matches!(
            place_in(&db, "bob-never", bob, 1, 8, true, &all),
            Ok(Placement::Starting(_))
        ));
        let mut new = new_booking("soon", Some(alice), 1, now, now + 3600);
        let refused = db
            .with_conn(|c| rq::book(c, &new, &inventory, None))
            .expect("book");
        let message = refused.expect_err("a held GPU at short notice").to_string();
        assert!(
            message.contains("1 more is held by notebooks or jobs that run past its start"),
            "{message}"
        );
        // With notice (an hour ahead, or an admin) it may: bob's notebook is told now.
        new.may_displace = true;
        new.starts_at = now + 2 * 3600;
        new.ends_at = now + 3 * 3600;
        assert!(db
            .with_conn(|c| rq::book(c, &new, &inventory, None))
            .expect("book")
            .is_ok());
        let row = db
            .with_conn(|c| nq::by_id(c, "bob-never"))
            .expect("row")
            .expect("row");
        assert!(row
            .notice
            .unwrap_or_default()
            .contains(&format!("booked by user{alice}")));
        stop(&db, "bob-never");
        // carol's "never" notebook cannot use the GPU (booked in 2 h); bob's 1 h one can,
        // although carol's waits before it.
        notebook(&db, "carol-never", carol, 1);
        assert_eq!(
            place_in(&db, "carol-never", carol, 1, 8, true, &all),
            Ok(Placement::Queued { position: 1 })
        );
        notebook_limited(&db, "bob-1h", bob, 1, Some(1800));
        assert!(matches!(
            place_in(&db, "bob-1h", bob, 1, 8, true, &all),
            Ok(Placement::Starting(_))
        ));
        stop(&db, "bob-1h");
    }

    #[test]
    fn a_members_own_booking_is_usable_when_another_follows_it() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(1);
        let (alice, bob) = (user(&db, "alice"), user(&db, "bob"));
        let now = crate::clock::now();
        // Alice's own booking now, bob's right after it on the same GPU: her 6 h notebook
        // runs on her booking (until it ends), not kept off by bob's.
        book(&db, Some(alice), 1, now - 10, now + 3600, &all);
        book(&db, Some(bob), 1, now + 3600, now + 7200, &all);
        notebook_limited(&db, "alice-6h", alice, 1, Some(6 * 3600));
        assert!(matches!(
            place_in(&db, "alice-6h", alice, 1, 8, true, &all),
            Ok(Placement::Starting(_))
        ));
        let row = db
            .with_conn(|c| nq::by_id(c, "alice-6h"))
            .expect("row")
            .expect("row");
        assert_eq!(row.auto_shutdown_secs, Some(6 * 3600));
        let until: Option<i64> = db
            .with_conn(|c| {
                Ok(c.query_row(
                    "SELECT booked_until FROM notebooks WHERE id = 'alice-6h'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .expect("booked_until");
        assert_eq!(until, Some(now + 3600));
    }

    #[test]
    fn cancelling_a_booking_under_way_ends_it_and_weeks_count_each_part() {
        let (_dir, db) = crate::db::test_db();
        let all = gpus(8);
        let alice = user(&db, "alice");
        let now = crate::clock::now();
        let r = book(&db, Some(alice), 8, now - 600, now + 3600, &all);
        assert!(db.with_conn(|c| rq::cancel(c, &r.id, now)).expect("cancel"));
        let kept = db
            .with_conn(|c| rq::by_id(c, &r.id))
            .expect("by id")
            .expect("kept as history");
        assert_eq!(kept.ends_at, now);
        let (week, _) = rq::week_of(now);
        let used = db
            .with_conn(|c| rq::booked_gpu_seconds(c, alice, week, week + 7 * 86400))
            .expect("hours");
        assert!(
            used >= 8.0 * 600.0 - 1.0 || now - 600 < week,
            "its hours still count: {used}"
        );
        // A booking across Sunday night counts in both weeks: 64 GPU-h in the next week,
        // then 8 GPUs from Sunday 20:00 to Monday 04:00 is 32 GPU-h more there: refused.
        let monday = rq::week_of(now).1 + 7 * 86400;
        let inventory: Vec<(String, String)> =
            all.iter().map(|g| (g.clone(), "A100".into())).collect();
        let mut new = new_booking(
            "week",
            Some(alice),
            8,
            monday + 4 * 3600,
            monday + 12 * 3600,
        );
        assert!(db
            .with_conn(|c| rq::book(c, &new, &inventory, Some(64.0)))
            .expect("book")
            .is_ok());
        new.id = "across".into();
        new.starts_at = monday - 4 * 3600;
        new.ends_at = monday + 4 * 3600;
        let refused = db
            .with_conn(|c| rq::book(c, &new, &inventory, Some(64.0)))
            .expect("book");
        assert!(
            matches!(refused, Err(rq::BookingRefusal::OverWeek { .. })),
            "{refused:?}"
        );
    }
}
