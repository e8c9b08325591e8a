//! The usage ledger: `usage_intervals` (one row per GPU held, or per run of a CPU
//! notebook's cores) and `usage_hours` (busy seconds per interval and hour). Intervals are
//! opened and closed inside the transactions that take and release GPUs (`gpus::insert`,
//! `gpus::mark_starting`, `gpus::release`), so the ledger and the allocations never
//! disagree, whatever crashes.

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;
use crate::clock::now;

/// Opens a GPU interval for `notebook_id` (call where the GPU is taken).
pub fn open_gpu(
    conn: &Connection,
    notebook_id: &str,
    gpu_uuid: &str,
    at: i64,
) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO usage_intervals (user_id, member, notebook_id, notebook_name, machine_id,
                gpu_uuid, cores, started_at)
         SELECT n.owner_id, u.username, n.id, n.name, n.machine_id, ?2, n.cpus, ?3
         FROM notebooks n JOIN users u ON u.id = n.owner_id WHERE n.id = ?1",
        params![notebook_id, gpu_uuid, at],
    )?;
    Ok(())
}

/// Opens the cores interval of a CPU notebook that starts (once: a second call while one
/// is open does nothing).
pub fn open_cpu(conn: &Connection, notebook_id: &str, at: i64) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO usage_intervals (user_id, member, notebook_id, notebook_name, machine_id,
                gpu_uuid, cores, started_at)
         SELECT n.owner_id, u.username, n.id, n.name, n.machine_id, NULL, n.cpus, ?2
         FROM notebooks n JOIN users u ON u.id = n.owner_id
         WHERE n.id = ?1 AND n.gpu_count = 0
           AND NOT EXISTS (SELECT 1 FROM usage_intervals i
                           WHERE i.notebook_id = n.id AND i.ended_at IS NULL)",
        params![notebook_id, at],
    )?;
    Ok(())
}

/// Closes a notebook's open intervals at `at` (never before they started).
pub fn close(conn: &Connection, notebook_id: &str, at: i64) -> Result<usize, DbError> {
    Ok(conn.execute(
        "UPDATE usage_intervals SET ended_at = MAX(started_at, ?2)
         WHERE notebook_id = ?1 AND ended_at IS NULL",
        params![notebook_id, at],
    )?)
}

/// When a notebook's open intervals were last seen running (Unix seconds): the time to
/// close them at when the container is found gone and Docker cannot say when it stopped.
pub fn last_seen(conn: &Connection, notebook_id: &str) -> Result<Option<i64>, DbError> {
    Ok(conn
        .query_row(
            "SELECT MAX(COALESCE(sampled_at_ms / 1000, started_at)) FROM usage_intervals
             WHERE notebook_id = ?1 AND ended_at IS NULL",
            [notebook_id],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten())
}

/// An open interval, for the accounting sampler.
#[derive(Debug, Clone)]
pub struct OpenInterval {
    pub id: i64,
    pub notebook_id: String,
    pub gpu_uuid: Option<String>,
    pub started_at: i64,
    pub sampled_at_ms: Option<i64>,
    pub sampled_busy: bool,
}

pub fn open_intervals(conn: &Connection) -> Result<Vec<OpenInterval>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, notebook_id, gpu_uuid, started_at, sampled_at_ms, sampled_busy
         FROM usage_intervals WHERE ended_at IS NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(OpenInterval {
            id: r.get(0)?,
            notebook_id: r.get(1)?,
            gpu_uuid: r.get(2)?,
            started_at: r.get(3)?,
            sampled_at_ms: r.get(4)?,
            sampled_busy: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One accounting sample of an open interval.
#[derive(Debug, Clone)]
pub struct Sample {
    pub interval_id: i64,
    pub at_ms: i64,
    pub busy: bool,
    /// Busy seconds since the previous sample, split by hour: (hour, seconds).
    pub busy_by_hour: Vec<(i64, f64)>,
    pub memory_mib: u64,
}

/// Records samples, in one transaction: each adds its busy seconds (in total and by hour)
/// and peak memory to its interval, if that is still open.
pub fn record(conn: &mut Connection, samples: &[Sample]) -> Result<(), DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    record_in(&tx, samples)?;
    tx.commit()?;
    Ok(())
}

fn record_in(conn: &Connection, samples: &[Sample]) -> Result<(), DbError> {
    let mut interval = conn.prepare_cached(
        "UPDATE usage_intervals SET busy_seconds = busy_seconds + ?2,
             peak_memory_mib = MAX(peak_memory_mib, ?3), sampled_at_ms = ?4, sampled_busy = ?5
         WHERE id = ?1 AND ended_at IS NULL",
    )?;
    let mut hour = conn.prepare_cached(
        "INSERT INTO usage_hours (interval_id, hour, busy_seconds) VALUES (?1, ?2, ?3)
         ON CONFLICT (interval_id, hour) DO UPDATE SET busy_seconds = busy_seconds + ?3",
    )?;
    for s in samples {
        let total: f64 = s.busy_by_hour.iter().map(|(_, b)| b).sum();
        let changed = interval.execute(params![
            s.interval_id,
            total,
            s.memory_mib as i64,
            s.at_ms,
            s.busy
        ])?;
        if changed == 1 {
            for (h, busy) in s.busy_by_hour.iter().filter(|(_, b)| *b > 0.0) {
                hour.execute(params![s.interval_id, h, busy])?;
            }
        }
    }
    Ok(())
}

pub use crate::model::UsageInterval as Interval;

/// Intervals that overlap `[from, to)`, of one member or of everyone.
pub fn overlapping(
    conn: &Connection,
    from: i64,
    to: i64,
    user_id: Option<i64>,
) -> Result<Vec<Interval>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, user_id, member, notebook_id, gpu_uuid, cores, started_at, ended_at,
                busy_seconds, peak_memory_mib
         FROM usage_intervals
         WHERE started_at < ?2 AND (ended_at IS NULL OR ended_at > ?1)
           AND (?3 IS NULL OR user_id = ?3)
         ORDER BY started_at",
    )?;
    let rows = stmt.query_map(params![from, to, user_id], |r| {
        Ok(Interval {
            id: r.get(0)?,
            user_id: r.get(1)?,
            member: r.get(2)?,
            notebook_id: r.get(3)?,
            gpu_uuid: r.get(4)?,
            cores: r.get(5)?,
            started_at: r.get(6)?,
            ended_at: r.get(7)?,
            busy_seconds: r.get(8)?,
            peak_memory_mib: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An interval's busy seconds per hour, for the hours in `[from_hour, to_hour]`.
pub fn hours_of(
    conn: &Connection,
    interval_id: i64,
    from_hour: i64,
    to_hour: i64,
) -> Result<Vec<(i64, f64)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT hour, busy_seconds FROM usage_hours
         WHERE interval_id = ?1 AND hour BETWEEN ?2 AND ?3 ORDER BY hour",
    )?;
    let rows = stmt.query_map(params![interval_id, from_hour, to_hour], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// All-time totals per member, for the Prometheus counters: (member, GPU-seconds held,
/// GPU-seconds busy), open intervals counted up to their last sample (so the total does
/// not go down when a crashed notebook's interval is closed at its last sign of life).
pub fn totals_by_member(conn: &Connection) -> Result<Vec<(String, f64, f64)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT member,
                SUM(COALESCE(ended_at, sampled_at_ms / 1000, started_at) - started_at),
                SUM(busy_seconds)
         FROM usage_intervals WHERE gpu_uuid IS NOT NULL GROUP BY member ORDER BY member",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get::<_, f64>(1)?, r.get::<_, f64>(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// GPU-seconds a member held from `from` until now (their month so far, for budgets).
pub fn gpu_seconds_since(conn: &Connection, user_id: i64, from: i64) -> Result<f64, DbError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(MIN(COALESCE(ended_at, ?3), ?3) - MAX(started_at, ?2)), 0)
         FROM usage_intervals
         WHERE user_id = ?1 AND gpu_uuid IS NOT NULL
           AND (ended_at IS NULL OR ended_at > ?2)",
        params![user_id, from, now()],
        |r| r.get::<_, f64>(0),
    )?)
}

/// A member's recent GPU-hours for fair share: each GPU-second held weighted by
/// 2^(−age/half_life) at `at` (intervals older than 20 half-lives count for nothing).
pub fn decayed_gpu_hours(
    conn: &Connection,
    user_id: i64,
    at: i64,
    half_life: i64,
) -> Result<f64, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT started_at, MIN(COALESCE(ended_at, ?2), ?2) FROM usage_intervals
         WHERE user_id = ?1 AND gpu_uuid IS NOT NULL AND (ended_at IS NULL OR ended_at > ?3)",
    )?;
    let rows = stmt.query_map(params![user_id, at, at - 20 * half_life.max(1)], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut seconds = 0.0;
    for row in rows {
        let (start, end) = row?;
        seconds += crate::sharing::fair_share::decayed_seconds(start, end, at, half_life);
    }
    Ok(seconds / 3600.0)
}
