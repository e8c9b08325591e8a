//! Entering a notebook's own origin: Notebox (on its origin) issues a single-use code
//! bound to the member, their session, the notebook and the path to open; the notebook's
//! origin exchanges it for a cookie that is good for that notebook only, and only while
//! the session it came from lives.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::secrets;

/// How long a code may take from Notebox's redirect to the notebook's origin.
pub const CODE_LIFETIME: Duration = Duration::from_secs(30);
/// Codes waiting at once; beyond this the oldest are dropped (each is 30 s at most).
const MAX_PENDING: usize = 10_000;
/// Codes waiting at once for one member: their oldest goes first, so nobody can push
/// everyone else's codes out.
const MAX_PENDING_PER_USER: usize = 16;

/// What a code stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub user_id: i64,
    /// Hash of the Notebox session that asked (the grant hangs off it).
    pub session_hash: String,
    pub notebook_id: String,
    /// Where to go inside the notebook, relative to `/nb/{id}/`.
    pub path: String,
}

/// Why a code was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Unknown, already used, or expired.
    Unknown,
    /// Issued for another notebook than the origin it was brought to.
    OtherNotebook,
}

/// The codes issued and not yet used, in memory (they live 30 s; a restart drops them).
#[derive(Default)]
pub struct EntryCodes {
    pending: Mutex<HashMap<String, (Entry, Instant)>>,
}

impl EntryCodes {
    /// A fresh code (256 random bits) for `entry`.
    pub fn issue(&self, entry: Entry) -> String {
        self.issue_at(entry, Instant::now())
    }

    fn issue_at(&self, entry: Entry, now: Instant) -> String {
        let code = secrets::random_secret(32);
        if let Ok(mut pending) = self.pending.lock() {
            pending.retain(|_, (_, at)| now.saturating_duration_since(*at) < CODE_LIFETIME);
            let theirs = pending
                .values()
                .filter(|(e, _)| e.user_id == entry.user_id)
                .count();
            let full = pending.len() >= MAX_PENDING;
            if theirs >= MAX_PENDING_PER_USER || full {
                let oldest = pending
                    .iter()
                    .filter(|(_, (e, _))| full || e.user_id == entry.user_id)
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    pending.remove(&oldest);
                }
            }
            pending.insert(secrets::hash_secret(&code), (entry, now));
        }
        code
    }

    /// Takes a code for `notebook_id`: once, within its lifetime. A code brought to the
    /// wrong notebook is used up all the same (it was shown to that notebook's origin).
    pub fn redeem(&self, code: &str, notebook_id: &str) -> Result<Entry, Refused> {
        self.redeem_at(code, notebook_id, Instant::now())
    }

    fn redeem_at(&self, code: &str, notebook_id: &str, now: Instant) -> Result<Entry, Refused> {
        if code.is_empty() || code.len() > 128 {
            return Err(Refused::Unknown);
        }
        let taken = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&secrets::hash_secret(code)));
        match taken {
            Some((entry, at)) if now.saturating_duration_since(at) < CODE_LIFETIME => {
                if entry.notebook_id == notebook_id {
                    Ok(entry)
                } else {
                    Err(Refused::OtherNotebook)
                }
            }
            _ => Err(Refused::Unknown),
        }
    }
}

/// Where a member may ask to land inside a notebook: a relative path of plain characters
/// (JupyterLab's routes, file paths), never a way out of `/nb/{id}/`.
pub fn valid_path(path: &str) -> bool {
    path.len() <= 1024
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.split('/').any(|s| s == ".." || s == ".")
        && !path.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(nb: &str) -> Entry {
        Entry {
            user_id: 1,
            session_hash: "h".into(),
            notebook_id: nb.into(),
            path: "lab".into(),
        }
    }

    #[test]
    fn a_code_works_once_for_its_notebook_within_30_seconds() {
        let codes = EntryCodes::default();
        let t0 = Instant::now();
        let code = codes.issue_at(entry("a"), t0);
        assert!(code.len() >= 43, "256 bits, base64: {code}");
        assert_eq!(codes.redeem_at(&code, "a", t0), Ok(entry("a")));
        assert_eq!(codes.redeem_at(&code, "a", t0), Err(Refused::Unknown));

        let late = codes.issue_at(entry("a"), t0);
        assert_eq!(
            codes.redeem_at(&late, "a", t0 + CODE_LIFETIME),
            Err(Refused::Unknown)
        );
        let elsewhere = codes.issue_at(entry("a"), t0);
        assert_eq!(
            codes.redeem_at(&elsewhere, "b", t0),
            Err(Refused::OtherNotebook)
        );
        // Used up by the wrong notebook: the right one cannot take it afterwards.
        assert_eq!(codes.redeem_at(&elsewhere, "a", t0), Err(Refused::Unknown));
        assert_eq!(codes.redeem_at("", "a", t0), Err(Refused::Unknown));

        // One member minting codes pushes out their own oldest, never someone else's.
        let bobs = codes.issue_at(
            Entry {
                user_id: 2,
                ..entry("a")
            },
            t0,
        );
        let first = codes.issue_at(entry("a"), t0);
        for _ in 0..MAX_PENDING_PER_USER {
            codes.issue_at(entry("a"), t0 + Duration::from_millis(1));
        }
        assert_eq!(codes.redeem_at(&first, "a", t0), Err(Refused::Unknown));
        assert!(codes.redeem_at(&bobs, "a", t0).is_ok());
        assert_eq!(
            codes.redeem_at(&"x".repeat(500), "a", t0),
            Err(Refused::Unknown)
        );
    }

    #[test]
    fn landing_paths_stay_inside_the_notebook() {
        for ok in ["", "lab", "lab/tree/a b.ipynb", "tree?x=1"] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in [
            "/lab",
            "//evil.example",
            "../x",
            "lab/../../x",
            "a\\b",
            "a\nb",
        ] {
            assert!(!valid_path(bad), "{bad}");
        }
    }
}
