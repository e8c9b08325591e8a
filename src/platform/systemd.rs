//! Running under systemd (Type=notify): say READY once the database is open and the
//! listener bound, and ping the watchdog only while the database answers.

use crate::db::Db;

/// Makes the allocator keep less memory resident. Big blocks go back to the system when
/// they are freed: each login check allocates 19 MiB for argon2; with glibc's adaptive
/// threshold those blocks come from per-thread arenas after the first free and stay
/// resident (200 concurrent logins left 333 MiB behind). A fixed threshold keeps them in
/// their own mappings. And the threads share two arenas (below).
pub fn return_big_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before other threads start.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
        if ok != 1 {
            tracing::debug!("mallopt(M_MMAP_THRESHOLD) was refused");
        }
        // glibc gives each thread that allocates an arena of its own (up to 8 per core),
        // and each keeps its freed memory: with a dozen threads that was ~3 MiB of free
        // but resident memory (docs/PERFORMANCE.md, "Memory"). Two arenas serve our few
        // busy threads without contention worth measuring.
        // SAFETY: as above.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        if ok != 1 {
            tracing::debug!("mallopt(M_ARENA_MAX) was refused");
        }
    }
}

/// Tells systemd the service is ready. A no-op outside systemd.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify READY failed");
    }
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Pings systemd's watchdog at half its interval while a trivial query succeeds in time;
/// a wedged database stops the pings and systemd restarts the service. Returns at once
/// when no watchdog is configured.
pub async fn watchdog(db: Db) {
    let interval = match sd_notify::watchdog_enabled() {
        Some(interval) if !interval.is_zero() => interval,
        _ => return,
    };
    let every = interval / 2;
    tracing::info!(
        interval_ms = every.as_millis() as u64,
        "systemd watchdog enabled"
    );
    loop {
        tokio::time::sleep(every).await;
        let probe = db.call(|c| crate::db::ping(c));
        match tokio::time::timeout(every, probe).await {
            Ok(Ok(())) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            other => {
                tracing::error!(result = ?other.map(|r| r.map_err(|e| e.to_string())), "database check failed; not pinging the watchdog")
            }
        }
    }
}
