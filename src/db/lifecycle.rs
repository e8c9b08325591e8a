//! The state changes of a notebook's life, as named operations. Each one is what the rest
//! of Notebox calls (never a bare `transition`), opens and commits its own transaction
//! where it changes more than one thing, and says what it changes: the notebook's state,
//! its GPU allocations, its usage ledger, its container columns.
//!
//! Each transaction takes the write lock from its start (`write_transaction`). Every
//! change is conditional on the state the caller saw (`WHERE state IN ...`), so the
//! API, the reconciler and the idle policy never overwrite each other's newer decision:
//! each returns whether it applied.

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::notebooks::{self as q, Transition};
use super::{usage, DbError};
use crate::model::{DesiredState, JobState, NotebookState};

use NotebookState::{Failed, Pulling, Queued, Running, Starting, Stopped, Stopping};

/// A transaction that holds the write lock from its start. A deferred one that reads
/// first cannot wait for the lock when it then writes: SQLite answers "database is
/// locked" at once, whatever the busy timeout, while another connection writes (the pass
/// a container's removal wakes, the activity sampler). Immediate ones wait their turn.
fn write_transaction(conn: &mut Connection) -> Result<Transaction<'_>, DbError> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// The states a start goes through before Jupyter answers.
pub const COMING_UP: &[NotebookState] = &[Starting, Pulling];

/// What the page of a notebook whose container was removed behind Notebox's back says.
pub const VANISHED: &str =
    "The container was removed outside Notebox. Start the notebook again; its files are kept.";

/// When a failed notebook's usage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageEnd {
    /// Now (its GPUs are released now, which closes their intervals).
    Now,
    /// When its container stopped, as the engine reports it (Notebox may have been down).
    At(i64),
    /// The engine cannot say: when the ledger last saw it running.
    LastSeen,
}

/// Starting → running, with the container's address: Jupyter answered. Stamps the start
/// and the auto-shutdown time.
pub fn record_started(conn: &mut Connection, id: &str, ip: &str) -> Result<bool, DbError> {
    let tx = write_transaction(conn)?;
    q::set_container_ip(&tx, id, ip)?;
    let moved = q::transition(
        &tx,
        id,
        Transition {
            from: &[Starting],
            to: Running,
            detail: "Jupyter is ready",
            desired: None,
        },
    )?;
    tx.commit()?;
    Ok(moved)
}

/// Starting → running for a job (its container started at `at`; there is no Jupyter),
/// with its start and GPUs written to its history, in one transaction. Whether the webhook
/// is to hear of it (once per job, whatever crashes).
pub fn record_job_started(
    conn: &mut Connection,
    id: &str,
    at: i64,
    gpus: &[String],
) -> Result<bool, DbError> {
    let tx = write_transaction(conn)?;
    let moved = q::transition(
        &tx,
        id,
        Transition {
            from: &[Starting],
            to: Running,
            detail: "Running",
            desired: None,
        },
    )?;
    if moved {
        super::jobs::record_started(&tx, id, at, gpus)?;
    }
    let tell = moved && super::jobs::mark_told_started(&tx, id)?;
    tx.commit()?;
    Ok(tell)
}

/// Starting → pulling: the image is being pulled (`detail` shows the progress).
pub fn record_pulling(conn: &Connection, id: &str, detail: &str) -> Result<bool, DbError> {
    q::transition(
        conn,
        id,
        Transition {
            from: &[Starting],
            to: Pulling,
            detail,
            desired: None,
        },
    )
}

/// Pulling → starting: the image is there.
pub fn record_pulled(conn: &Connection, id: &str) -> Result<bool, DbError> {
    q::transition(
        conn,
        id,
        Transition {
            from: &[Pulling],
            to: Starting,
            detail: "Image pulled",
            desired: None,
        },
    )
}

/// Running, starting or pulling → stopping: the reconciler is taking its container down.
pub fn record_stopping(conn: &Connection, id: &str) -> Result<bool, DbError> {
    q::transition(
        conn,
        id,
        Transition {
            from: &[Running, Starting, Pulling],
            to: Stopping,
            detail: "Stopping",
            desired: None,
        },
    )
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// At rest: stopped, GPUs released, usage closed.
    Stopped,
    /// A restart was asked for: starting again (keeping its GPUs).
    Restarting,
}

/// Stopping → stopped (or → starting, when a restart was asked for), with the container
/// cleared, in one transaction. Stopped: GPUs released and usage closed now.
pub fn record_stopped(
    conn: &mut Connection,
    id: &str,
    detail: &str,
) -> Result<StopOutcome, DbError> {
    let tx = write_transaction(conn)?;
    q::set_container(&tx, id, None)?;
    let restart = q::by_id(&tx, id)?
        .is_some_and(|r| r.restart_requested && r.desired_state == DesiredState::Running);
    let outcome = if restart {
        q::set_restart_requested(&tx, id, false)?;
        q::transition(
            &tx,
            id,
            Transition {
                from: &[Stopping],
                to: Starting,
                detail: "Restarting",
                desired: None,
            },
        )?;
        StopOutcome::Restarting
    } else {
        q::transition(
            &tx,
            id,
            Transition {
                from: &[Stopping],
                to: Stopped,
                detail,
                desired: Some(DesiredState::Stopped),
            },
        )?;
        StopOutcome::Stopped
    };
    tx.commit()?;
    Ok(outcome)
}

/// Brings a notebook to rest (`to`: stopped or failed) from one of `from`, inside `tx`:
/// its usage closed at `ended`, its container cleared, its GPUs released (by the
/// transition), and it stays stopped. Changes nothing when it is no longer in one of
/// `from` (it moved meanwhile: a restart).
fn settle(
    tx: &Connection,
    id: &str,
    from: &[NotebookState],
    to: NotebookState,
    detail: &str,
    ended: UsageEnd,
) -> Result<bool, DbError> {
    if !q::by_id(tx, id)?.is_some_and(|r| from.contains(&r.state)) {
        return Ok(false);
    }
    let at = match ended {
        UsageEnd::Now => None,
        UsageEnd::At(t) => Some(t),
        UsageEnd::LastSeen => usage::last_seen(tx, id)?,
    };
    if let Some(at) = at {
        usage::close(tx, id, at)?;
    }
    q::set_container(tx, id, None)?;
    q::transition(
        tx,
        id,
        Transition {
            from,
            to,
            detail,
            desired: Some(DesiredState::Stopped),
        },
    )
}

/// One of `from` → failed, with the reason its member reads, in one transaction (see
/// `settle`).
pub fn record_failed(
    conn: &mut Connection,
    id: &str,
    from: &[NotebookState],
    reason: &str,
    ended: UsageEnd,
) -> Result<bool, DbError> {
    let tx = write_transaction(conn)?;
    let moved = settle(&tx, id, from, Failed, reason, ended)?;
    tx.commit()?;
    Ok(moved)
}

/// Running → stopped because its container is gone (removed while Notebox was down, or
/// behind its back), in one transaction: its usage ends when it was last seen running
/// (see `settle`).
pub fn record_vanished(conn: &mut Connection, id: &str) -> Result<bool, DbError> {
    let tx = write_transaction(conn)?;
    let moved = settle(&tx, id, &[Running], Stopped, VANISHED, UsageEnd::LastSeen)?;
    tx.commit()?;
    Ok(moved)
}

/// Running → stopping, to stay stopped: its auto-shutdown time came (`detail` says so).
pub fn begin_auto_shutdown(conn: &Connection, id: &str, detail: &str) -> Result<bool, DbError> {
    q::transition(
        conn,
        id,
        Transition {
            from: &[Running],
            to: Stopping,
            detail,
            desired: Some(DesiredState::Stopped),
        },
    )
}

/// Running → stopping, to stay stopped, because it sat idle; when it makes way for a
/// queued notebook, that one gets `notice` (why its GPUs came free), in one transaction.
pub fn begin_reclaim(
    conn: &mut Connection,
    id: &str,
    detail: &str,
    beneficiary: Option<(&str, &str)>,
) -> Result<bool, DbError> {
    let tx = write_transaction(conn)?;
    let moved = q::transition(
        &tx,
        id,
        Transition {
            from: &[Running],
            to: Stopping,
            detail,
            desired: Some(DesiredState::Stopped),
        },
    )?;
    if let (true, Some((queued, notice))) = (moved, beneficiary) {
        q::set_notice(&tx, queued, Some(notice))?;
    }
    tx.commit()?;
    Ok(moved)
}

/// Marks a notebook to be stopped: out of the queue (→ stopped), or on its way down
/// (→ stopping, the reconciler does the rest); a pending restart and its notice dropped.
pub fn request_stop_in(conn: &Connection, id: &str, detail: &str) -> Result<(), DbError> {
    q::set_restart_requested(conn, id, false)?;
    q::set_notice(conn, id, None)?;
    q::transition(
        conn,
        id,
        Transition {
            from: &[Queued],
            to: Stopped,
            detail: "Removed from the queue",
            desired: Some(DesiredState::Stopped),
        },
    )?;
    q::transition(
        conn,
        id,
        Transition {
            from: &[Running, Starting, Pulling],
            to: Stopping,
            detail,
            desired: Some(DesiredState::Stopped),
        },
    )?;
    q::set_desired(conn, id, DesiredState::Stopped)?;
    Ok(())
}

/// A member stops a notebook, in one transaction (see `request_stop_in`).
pub fn request_stop(conn: &mut Connection, id: &str, detail: &str) -> Result<(), DbError> {
    let tx = write_transaction(conn)?;
    request_stop_in(&tx, id, detail)?;
    tx.commit()?;
    Ok(())
}

/// Every notebook of a member is to stop (their account was disabled), in one
/// transaction. Returns how many.
pub fn request_stop_all_of(
    conn: &mut Connection,
    owner_id: i64,
    detail: &str,
) -> Result<usize, DbError> {
    let tx = write_transaction(conn)?;
    let n = request_stop_of_owner_in(&tx, owner_id, detail, None)?;
    tx.commit()?;
    Ok(n)
}

/// Inside the caller's transaction: every notebook of a member that is wanted running is to
/// stop — with `keep`, only those whose machine type is not in it (their groups no longer
/// allow it). Returns how many.
pub fn request_stop_of_owner_in(
    conn: &Connection,
    owner_id: i64,
    detail: &str,
    keep: Option<&[String]>,
) -> Result<usize, DbError> {
    let mut n = 0;
    for nb in q::list_for_owner(conn, owner_id)? {
        let kept = keep.is_some_and(|k| k.contains(&nb.machine_id));
        if nb.desired_state == DesiredState::Running && !kept {
            request_stop_in(conn, &nb.id, detail)?;
            n += 1;
        }
    }
    // Their jobs end the same way (cancelled, with the same reason).
    let note = detail.strip_prefix("Stopping: ").unwrap_or(detail);
    for (id, machine_id) in q::unfinished_jobs_of_owner(conn, owner_id)? {
        if !keep.is_some_and(|k| k.contains(&machine_id)) {
            request_job_end_in(conn, &id, JobState::Cancelled, note)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Inside the caller's transaction: a job is to end (`Cancelled` or `TimedOut`, `note`
/// saying why on its page): out of the queue, or its container taken down by the
/// reconciler, which then writes the end (`end_job`). Whether this asked (false: it ended,
/// or was asked to, already).
pub fn request_job_end_in(
    conn: &Connection,
    id: &str,
    end: JobState,
    note: &str,
) -> Result<bool, DbError> {
    let asked = super::jobs::request_end(conn, id, end, note)?;
    if asked {
        request_stop_in(conn, id, &format!("Stopping: {note}"))?;
    }
    Ok(asked)
}

/// `request_job_end_in` in a transaction of its own.
pub fn request_job_end(
    conn: &mut Connection,
    id: &str,
    end: JobState,
    note: &str,
) -> Result<bool, DbError> {
    let tx = write_transaction(conn)?;
    let asked = request_job_end_in(&tx, id, end, note)?;
    tx.commit()?;
    Ok(asked)
}

/// A job ended: its usage closed at `ended`, its GPUs released, its row in `notebooks`
/// removed and its end written (`jobs::write_end`), in one transaction, so its GPUs are
/// free exactly when its history says it ended. False when it had ended already.
pub fn end_job(
    conn: &mut Connection,
    id: &str,
    ended: UsageEnd,
    end: &super::jobs::JobEnd,
) -> Result<bool, DbError> {
    let tx = write_transaction(conn)?;
    let at = match ended {
        UsageEnd::Now => crate::clock::now(),
        UsageEnd::At(t) => t,
        UsageEnd::LastSeen => usage::last_seen(&tx, id)?.unwrap_or_else(crate::clock::now),
    };
    usage::close(&tx, id, at)?;
    super::gpus::release(&tx, id)?;
    let end = super::jobs::JobEnd {
        finished_at: at,
        ..end.clone()
    };
    let written = super::jobs::write_end(&tx, id, &end)?;
    q::delete(&tx, id)?;
    tx.commit()?;
    Ok(written)
}

/// `request_stop_of_owner_in` in a transaction of its own.
pub fn request_stop_of_owner(
    conn: &mut Connection,
    owner_id: i64,
    detail: &str,
    keep: Option<&[String]>,
) -> Result<usize, DbError> {
    let tx = write_transaction(conn)?;
    let n = request_stop_of_owner_in(&tx, owner_id, detail, keep)?;
    tx.commit()?;
    Ok(n)
}

/// Running, starting or pulling → stopping, to start again (keeping its GPUs).
pub fn request_restart(conn: &mut Connection, id: &str) -> Result<bool, DbError> {
    let tx = write_transaction(conn)?;
    let moved = q::transition(
        &tx,
        id,
        Transition {
            from: &[Running, Starting, Pulling],
            to: Stopping,
            detail: "Restarting",
            desired: Some(DesiredState::Running),
        },
    )?;
    if moved {
        q::set_restart_requested(&tx, id, true)?;
    }
    tx.commit()?;
    Ok(moved)
}

/// The notebook is to be deleted (the reconciler removes its container and files, then
/// its row); its page says "Deleting" meanwhile.
pub fn request_delete(
    conn: &mut Connection,
    id: &str,
    state: NotebookState,
) -> Result<(), DbError> {
    let tx = write_transaction(conn)?;
    q::set_desired(&tx, id, DesiredState::Deleted)?;
    q::set_detail(&tx, id, state, "Deleting")?;
    // Its jobs run in its folder, which goes: they end, and its schedules with it.
    for job in super::jobs::unfinished_of_notebook(&tx, id)? {
        request_job_end_in(&tx, &job, JobState::Cancelled, "its notebook was deleted")?;
    }
    super::jobs::delete_schedules_of_notebook(&tx, id)?;
    tx.commit()?;
    Ok(())
}
