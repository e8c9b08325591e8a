//! GPU bookings: `reservations` and the GPUs each holds (`reservation_gpus`). A booking's
//! GPUs are chosen in the transaction that stores it, so two bookings never hold one GPU
//! at overlapping times.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::DbError;
use crate::clock::Timestamp;

#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub id: String,
    /// None: maintenance.
    pub user_id: Option<i64>,
    pub member: String,
    pub purpose: String,
    pub gpu_name: Option<String>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub created_by: String,
    pub created_at: Timestamp,
    pub gpu_uuids: Vec<String>,
}

impl Reservation {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
    /// GPU-hours the booking covers.
    pub fn gpu_hours(&self) -> f64 {
        (self.ends_at - self.starts_at) as f64 / 3600.0 * self.gpu_uuids.len() as f64
    }
}

/// A booking to store: its GPUs are chosen by `book`.
#[derive(Debug, Clone)]
pub struct NewReservation {
    pub id: String,
    pub user_id: Option<i64>,
    pub member: String,
    pub purpose: String,
    pub gpu_name: Option<String>,
    pub gpus: usize,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub created_by: String,
    /// May take a GPU someone else holds past its start (they are stopped then): an
    /// admin's booking, or one that starts at least `DISPLACE_NOTICE` ahead.
    pub may_displace: bool,
}

/// A member's booking may take a GPU someone else's notebook holds (stopping it at the
/// booking's start) only when it starts at least this far ahead: the holder is told.
pub const DISPLACE_NOTICE: Timestamp = 3600;

/// A GPU of the workstation: uuid, model name.
pub type InventoryGpu = (String, String);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BookingRefusal {
    #[error("Not enough GPUs for that window: {wanted} wanted, {free} of the {total}{model} GPUs are not booked for all of it{held}.{conflicts} Choose another time or fewer GPUs (the calendar shows free slots).")]
    NotEnough {
        wanted: usize,
        free: usize,
        total: usize,
        /// " (2 more are held by notebooks that run past its start: book at least an hour ahead to have them stopped then)"
        held: String,
        /// " A100" when a model was asked for.
        model: String,
        /// " Booked then: alice 14:00–18:00 UTC (2 GPUs)."
        conflicts: String,
    },
    #[error("That would make {booked:.1} GPU-hours of bookings for {member} in the week of {week} (at most {limit:.1} per week, reservations.max_gpu_hours_per_week). Book less, or ask an admin.")]
    OverWeek {
        member: String,
        week: String,
        booked: f64,
        limit: f64,
    },
}

const COLUMNS: &str = "r.id, r.user_id, r.member, r.purpose, r.gpu_name, r.starts_at, r.ends_at,
    r.created_by, r.created_at,
    (SELECT group_concat(gpu_uuid, ' ') FROM reservation_gpus g WHERE g.reservation_id = r.id)";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Reservation> {
    let gpus: Option<String> = r.get(9)?;
    let mut gpu_uuids: Vec<String> = gpus
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    gpu_uuids.sort();
    Ok(Reservation {
        id: r.get(0)?,
        user_id: r.get(1)?,
        member: r.get(2)?,
        purpose: r.get(3)?,
        gpu_name: r.get(4)?,
        starts_at: r.get(5)?,
        ends_at: r.get(6)?,
        created_by: r.get(7)?,
        created_at: r.get(8)?,
        gpu_uuids,
    })
}

/// Bookings overlapping [from, to), by start.
pub fn between(
    conn: &Connection,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Reservation>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM reservations r WHERE r.ends_at > ?1 AND r.starts_at < ?2
         ORDER BY r.starts_at, r.id"
    ))?;
    let rows = stmt.query_map(params![from, to], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn by_id(conn: &Connection, id: &str) -> Result<Option<Reservation>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM reservations r WHERE r.id = ?1"
    ))?;
    Ok(stmt.query_row([id], from_row).optional()?)
}

pub fn delete(conn: &Connection, id: &str) -> Result<bool, DbError> {
    Ok(conn.execute("DELETE FROM reservations WHERE id = ?1", [id])? > 0)
}

/// Bookings that still matter (not yet ended at `now`), per GPU.
pub fn current_by_gpu(
    conn: &Connection,
    now: Timestamp,
) -> Result<HashMap<String, Vec<Reservation>>, DbError> {
    let mut map: HashMap<String, Vec<Reservation>> = HashMap::new();
    for r in between(conn, now, Timestamp::MAX)? {
        for g in &r.gpu_uuids {
            map.entry(g.clone()).or_default().push(r.clone());
        }
    }
    Ok(map)
}

/// The next time a booking starts or ends after `now`: the queue is looked at again then.
pub fn next_boundary(conn: &Connection, now: Timestamp) -> Result<Option<Timestamp>, DbError> {
    Ok(conn.query_row(
        "SELECT MIN(t) FROM (SELECT MIN(starts_at) AS t FROM reservations WHERE starts_at > ?1
                          UNION ALL SELECT MIN(ends_at) FROM reservations WHERE ends_at > ?1)",
        [now],
        |r| r.get(0),
    )?)
}

/// When the next booking not of `user_id` starts (after `now`).
pub fn next_start_of_others(
    conn: &Connection,
    user_id: i64,
    now: Timestamp,
) -> Result<Option<Timestamp>, DbError> {
    Ok(conn.query_row(
        "SELECT MIN(starts_at) FROM reservations
         WHERE starts_at > ?2 AND (user_id IS NULL OR user_id != ?1)",
        params![user_id, now],
        |r| r.get(0),
    )?)
}

/// GPU-seconds a member has booked in [from, to) (bookings cut at the range).
pub fn booked_gpu_seconds(
    conn: &Connection,
    user_id: i64,
    from: Timestamp,
    to: Timestamp,
) -> Result<f64, DbError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM((MIN(r.ends_at, ?3) - MAX(r.starts_at, ?2)) *
                (SELECT count(*) FROM reservation_gpus g WHERE g.reservation_id = r.id)), 0)
         FROM reservations r WHERE r.user_id = ?1 AND r.ends_at > ?2 AND r.starts_at < ?3",
        params![user_id, from, to],
        |r| r.get::<_, i64>(0),
    )? as f64)
}

/// When each held GPU's holder will give it back at the latest (its auto-shutdown or time
/// limit; None: no limit), and whose it is.
fn holders(
    conn: &Connection,
    now: Timestamp,
) -> Result<HashMap<String, (i64, Option<Timestamp>)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.gpu_uuid, n.owner_id, n.auto_shutdown_at, n.auto_shutdown_secs
         FROM gpu_allocations a JOIN notebooks n ON n.id = a.notebook_id",
    )?;
    let rows = stmt.query_map([], |r| {
        let at: Option<i64> = r.get(2)?;
        let secs: Option<i64> = r.get(3)?;
        Ok((
            r.get::<_, String>(0)?,
            (r.get::<_, i64>(1)?, at.or(secs.map(|s| now + s))),
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores a booking, choosing its GPUs, in one (immediate) transaction: GPUs of the asked
/// model not booked at any time of the window, those nobody else will still hold at its
/// start first. `week`: the member's weekly limit (limit, week start, week end, week name).
pub fn book(
    conn: &mut Connection,
    new: &NewReservation,
    inventory: &[InventoryGpu],
    week_limit: Option<f64>,
) -> Result<Result<Reservation, BookingRefusal>, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(refusal) = over_week(&tx, new, week_limit)? {
        return Ok(Err(refusal));
    }
    let free = match choose(&tx, new, inventory)? {
        Ok(free) => free,
        Err(refusal) => return Ok(Err(refusal)),
    };
    tx.execute(
        "INSERT INTO reservations (id, user_id, member, purpose, gpu_name, starts_at, ends_at,
            created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            new.id,
            new.user_id,
            new.member,
            new.purpose,
            new.gpu_name,
            new.starts_at,
            new.ends_at,
            new.created_by,
            crate::clock::now()
        ],
    )?;
    for uuid in &free {
        tx.execute(
            "INSERT INTO reservation_gpus (reservation_id, gpu_uuid) VALUES (?1, ?2)",
            params![new.id, uuid],
        )?;
    }
    warn_holders(&tx, new, &free)?;
    let stored = by_id(&tx, &new.id)?;
    tx.commit()?;
    Ok(stored.ok_or(BookingRefusal::NotEnough {
        wanted: new.gpus,
        free: 0,
        total: 0,
        held: String::new(),
        model: String::new(),
        conflicts: String::new(),
    }))
}

/// The member's bookings in the week with this one, over the weekly limit.
fn over_week(
    conn: &Connection,
    new: &NewReservation,
    limit: Option<f64>,
) -> Result<Option<BookingRefusal>, DbError> {
    let (Some(limit), Some(uid)) = (limit, new.user_id) else {
        return Ok(None);
    };
    // Each week the booking touches, with the part of it inside that week.
    let mut week = week_of(new.starts_at);
    while week.0 < new.ends_at {
        let inside = new.ends_at.min(week.1) - new.starts_at.max(week.0);
        let hours = inside as f64 / 3600.0 * new.gpus as f64;
        let booked = booked_gpu_seconds(conn, uid, week.0, week.1)? / 3600.0 + hours;
        if booked > limit + 1e-9 {
            return Ok(Some(BookingRefusal::OverWeek {
                member: new.member.clone(),
                week: crate::clock::rfc3339(week.0).chars().take(10).collect(),
                booked,
                limit,
            }));
        }
        week = (week.1, week.1 + 7 * 86400);
    }
    Ok(None)
}

/// The week (Monday 00:00 UTC to the next) holding `t`.
pub fn week_of(t: Timestamp) -> (Timestamp, Timestamp) {
    let day = t.div_euclid(86400);
    // 1970-01-01 was a Thursday: Monday is 3 days before.
    let monday = day - (day + 3).rem_euclid(7);
    (monday * 86400, monday * 86400 + 7 * 86400)
}

/// The GPUs for a booking: of the asked model, in no other booking at any time of its
/// window, those nobody else will still hold at its start first.
fn choose(
    conn: &Connection,
    new: &NewReservation,
    inventory: &[InventoryGpu],
) -> Result<Result<Vec<String>, BookingRefusal>, DbError> {
    let model: Vec<&InventoryGpu> = inventory
        .iter()
        .filter(|(_, name)| {
            new.gpu_name
                .as_ref()
                .is_none_or(|want| name.eq_ignore_ascii_case(want))
        })
        .collect();
    let overlapping = between(conn, new.starts_at, new.ends_at)?;
    let taken: std::collections::HashSet<&String> = overlapping
        .iter()
        .flat_map(|r| r.gpu_uuids.iter())
        .collect();
    let held = holders(conn, crate::clock::now())?;
    let mut free: Vec<&InventoryGpu> = model
        .iter()
        .copied()
        .filter(|(u, _)| !taken.contains(u))
        .collect();
    // Held by someone else past the booking's start: last, and only with notice.
    let outlasts = |u: &String| {
        held.get(u).is_some_and(|(owner, until)| {
            Some(*owner) != new.user_id && until.is_none_or(|t| t > new.starts_at)
        })
    };
    free.sort_by_key(|(u, _)| outlasts(u));
    let held_past = free.iter().filter(|(u, _)| outlasts(u)).count();
    if !new.may_displace {
        free.retain(|(u, _)| !outlasts(u));
    }
    if free.len() < new.gpus {
        return Ok(Err(BookingRefusal::NotEnough {
            wanted: new.gpus,
            free: free.len(),
            total: model.len(),
            held: if new.may_displace || held_past == 0 {
                String::new()
            } else {
                format!(
                    " ({held_past} more {} held by notebooks or jobs that run past its start: book at least an hour ahead to have them stopped then)",
                    if held_past == 1 { "is" } else { "are" }
                )
            },
            model: new
                .gpu_name
                .as_ref()
                .map(|m| format!(" {m}"))
                .unwrap_or_default(),
            conflicts: describe(&overlapping),
        }));
    }
    Ok(Ok(free
        .iter()
        .take(new.gpus)
        .map(|(u, _)| u.clone())
        .collect()))
}

/// Notebooks and jobs of others that hold a GPU of the booking past its start are told
/// now that they will be stopped then.
fn warn_holders(conn: &Connection, new: &NewReservation, gpus: &[String]) -> Result<(), DbError> {
    let note = format!(
        "Its GPU is booked by {} from {}: it will be stopped then.",
        new.member,
        short_time(new.starts_at)
    );
    for gpu in gpus {
        conn.execute(
            "UPDATE notebooks SET notice = ?3 WHERE id IN
                (SELECT a.notebook_id FROM gpu_allocations a JOIN notebooks n ON n.id = a.notebook_id
                 WHERE a.gpu_uuid = ?1 AND (?2 IS NULL OR n.owner_id != ?2)
                   AND (n.auto_shutdown_at IS NULL OR n.auto_shutdown_at > ?4))",
            params![gpu, new.user_id, note, new.starts_at],
        )?;
    }
    Ok(())
}

/// Cancels a booking: one that has not started is removed; one under way ends now (it
/// stays as history and in its member's weekly hours), and its member's notebooks on its
/// GPUs carry on as ordinary ones.
pub fn cancel(conn: &mut Connection, id: &str, now: Timestamp) -> Result<bool, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(r) = by_id(&tx, id)? else {
        return Ok(false);
    };
    if r.starts_at > now {
        tx.execute("DELETE FROM reservations WHERE id = ?1", [id])?;
    } else {
        let end = now.max(r.starts_at + 1);
        tx.execute(
            "UPDATE reservations SET ends_at = ?2 WHERE id = ?1",
            params![id, end],
        )?;
        tx.execute(
            "UPDATE notebooks SET booked_until = NULL WHERE owner_id = ?1 AND booked_until = ?2",
            params![r.user_id, r.ends_at],
        )?;
    }
    tx.commit()?;
    Ok(true)
}

/// " Booked then: alice 14:00–18:00 UTC (2 GPUs), maintenance …."
fn describe(overlapping: &[Reservation]) -> String {
    if overlapping.is_empty() {
        return String::new();
    }
    let list: Vec<String> = overlapping
        .iter()
        .map(|r| {
            format!(
                "{} {}–{} ({} GPU{})",
                r.member,
                short_time(r.starts_at),
                short_time(r.ends_at),
                r.gpu_uuids.len(),
                if r.gpu_uuids.len() == 1 { "" } else { "s" }
            )
        })
        .collect();
    format!(" Booked then: {}.", list.join(", "))
}

/// "2026-12-10 14:00 UTC".
pub fn short_time(ts: Timestamp) -> String {
    let full = crate::clock::rfc3339(ts);
    match (full.get(..10), full.get(11..16)) {
        (Some(day), Some(hm)) => format!("{day} {hm} UTC"),
        _ => full,
    }
}

/// Notebooks and jobs holding a GPU that an active booking gives to someone else (they
/// started before the booking was made): (notebook id, is a job, why).
pub fn displaced(
    conn: &Connection,
    now: Timestamp,
) -> Result<Vec<(String, bool, String)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT n.id, n.kind = 'job', r.member, r.starts_at, r.ends_at
         FROM gpu_allocations a
         JOIN notebooks n ON n.id = a.notebook_id
         JOIN reservation_gpus g ON g.gpu_uuid = a.gpu_uuid
         JOIN reservations r ON r.id = g.reservation_id
         WHERE r.starts_at <= ?1 AND r.ends_at > ?1
           AND (r.user_id IS NULL OR r.user_id != n.owner_id)
           AND n.desired_state = 'running'",
    )?;
    let rows = stmt.query_map([now], |r| {
        let (member, from, to): (String, i64, i64) = (r.get(2)?, r.get(3)?, r.get(4)?);
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, bool>(1)?,
            format!(
                "its GPU is booked by {member} from {} to {}",
                short_time(from),
                short_time(to)
            ),
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Notebooks and jobs that ran on GPUs booked for their member, whose booking has ended:
/// (notebook id, is a job, why).
pub fn booking_ended(
    conn: &Connection,
    now: Timestamp,
) -> Result<Vec<(String, bool, String)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind = 'job', booked_until FROM notebooks
         WHERE booked_until IS NOT NULL AND booked_until <= ?1 AND desired_state = 'running'
           AND state IN ('starting', 'pulling', 'running')",
    )?;
    let rows = stmt.query_map([now], |r| {
        let until: i64 = r.get(2)?;
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, bool>(1)?,
            format!("the booking of its GPUs ended at {}", short_time(until)),
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
