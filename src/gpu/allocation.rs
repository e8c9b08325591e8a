//! Exclusive GPU allocation. Runs inside one database transaction that also moves the
//! notebook to `starting` (or `queued`): the `gpu_allocations` primary key, not memory,
//! guarantees that no GPU is ever given twice.

use rusqlite::Connection;

use crate::db::gpus as q;
use crate::db::DbError;

pub struct PlacementRequest<'a> {
    pub notebook_id: &'a str,
    pub owner_id: i64,
    pub gpu_count: i64,
    /// The most GPUs this user may hold or wait for at once.
    pub user_limit: i64,
    /// Queue when GPUs are busy (else refuse).
    pub queue: bool,
    /// Every GPU of the workstation, in index order.
    pub gpus: &'a [String],
}

#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// Starting, with these GPUs (none for a CPU notebook).
    Starting(Vec<String>),
    /// Waiting for GPUs; 1 is next.
    Queued { position: usize },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("This machine type needs {wanted} GPU(s), but this workstation has {total}. Choose a smaller machine type.")]
    TooMany { wanted: i64, total: usize },
    #[error("Your limit is {limit} GPU(s) at once and your other notebooks already hold or wait for {held}. Stop one of them first, or ask an admin to raise your limit.")]
    OverLimit { limit: i64, held: i64 },
    #[error("Not enough free GPUs: this needs {wanted}, and {free} of {total} are free. {holders}Try again when one is stopped.")]
    Busy {
        wanted: i64,
        free: usize,
        total: usize,
        holders: String,
    },
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

/// Decides where a notebook that should run goes: starting with GPUs, queued, or refused.
/// Call inside a transaction.
pub fn place(
    conn: &Connection,
    req: &PlacementRequest,
) -> Result<Result<Placement, Refusal>, DbError> {
    if req.gpu_count <= 0 {
        q::mark_starting(conn, req.notebook_id)?;
        return Ok(Ok(Placement::Starting(Vec::new())));
    }
    let total = req.gpus.len();
    if req.gpu_count as usize > total {
        return Ok(Err(Refusal::TooMany {
            wanted: req.gpu_count,
            total,
        }));
    }
    let held = q::user_demand(conn, req.owner_id, req.notebook_id)?;
    if held + req.gpu_count > req.user_limit {
        return Ok(Err(Refusal::OverLimit {
            limit: req.user_limit,
            held,
        }));
    }
    let waiting: Vec<(String, i64)> = q::queue(conn)?
        .into_iter()
        .filter(|(id, _)| id != req.notebook_id)
        .collect();
    let free = free_gpus(conn, req.gpus)?;
    // First come, first served: nobody overtakes a notebook that is already waiting.
    if waiting.is_empty() && free.len() >= req.gpu_count as usize {
        let chosen: Vec<String> = free.into_iter().take(req.gpu_count as usize).collect();
        for uuid in &chosen {
            q::insert(conn, uuid, req.notebook_id)?;
        }
        q::mark_starting(conn, req.notebook_id)?;
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
        q::mark_queued(conn, req.notebook_id, &detail)?;
        return Ok(Ok(Placement::Queued {
            position: waiting.len() + 1,
        }));
    }
    Ok(Err(Refusal::Busy {
        wanted: req.gpu_count,
        free: free.len(),
        total,
        holders: describe_holders(conn)?,
    }))
}

/// Starts queued notebooks, first come first served, while their GPUs are free. Also
/// frees GPUs held by notebooks that cannot be using them (after a crash). Returns the
/// notebooks it started.
pub fn admit_queued(conn: &Connection, gpus: &[String]) -> Result<Vec<String>, DbError> {
    q::release_stale(conn)?;
    let mut started = Vec::new();
    for (id, wanted) in q::queue(conn)? {
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
