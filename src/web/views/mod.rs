//! Data the page templates share, small display helpers, and the view models of pages
//! whose numbers are worth a test (`usage`: the usage charts' geometry).

pub mod storage;
pub mod usage;

use crate::auth::User;

use super::extract::SessionUser;

/// The frame around every page: who is logged in, the CSRF token for the logout form,
/// which navigation item is current.
pub struct Chrome {
    pub username: String,
    pub is_admin: bool,
    pub csrf: String,
    pub nav: &'static str,
    /// Admin pages: "Only 1.2 GiB (3 %) free …" when below `[storage] min_free`.
    pub disk_warning: Option<String>,
}

impl Chrome {
    pub fn new(session: &SessionUser, nav: &'static str) -> Chrome {
        Chrome::for_user(&session.user, &session.csrf, nav)
    }
    pub fn for_user(user: &User, csrf: &str, nav: &'static str) -> Chrome {
        Chrome {
            username: user.username.clone(),
            is_admin: user.is_admin,
            csrf: csrf.to_string(),
            nav,
            disk_warning: None,
        }
    }
    /// An admin page's chrome: it warns when the data dir's filesystem runs low.
    pub fn for_admin(session: &SessionUser, disk: &crate::disk::DiskWatch) -> Chrome {
        Chrome {
            disk_warning: disk.low_space_warning(),
            ..Chrome::new(session, "admin")
        }
    }
}

/// "3 minutes ago", "in 2 hours"; for lists and countdowns rendered on the server.
pub fn relative_time(ts: i64) -> String {
    let delta = ts - crate::clock::now();
    let (abs, past) = (delta.unsigned_abs(), delta <= 0);
    let amount = match abs {
        0..=44 => {
            return if past {
                "just now".into()
            } else {
                "in a moment".into()
            }
        }
        45..=5399 => plural(abs.div_ceil(60).max(1), "minute"),
        5400..=129_599 => plural((abs + 1800) / 3600, "hour"),
        _ => plural((abs + 43_200) / 86_400, "day"),
    };
    if past {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// How long since `ts`: "under a minute", "5 min", "3 h 20 min", "2 days".
pub fn duration_since(ts: i64) -> String {
    let secs = (crate::clock::now() - ts).max(0);
    match secs {
        0..=59 => "under a minute".into(),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
        _ => plural((secs / 86_400) as u64, "day"),
    }
}

/// "2026-11-26 14:03 UTC".
pub fn datetime(ts: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ts.to_string())
}
