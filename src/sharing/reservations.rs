//! GPU bookings as members and admins make them: the limits (`[reservations]`), who may
//! book for whom, the calendar's rows and the iCalendar feed. Knows nothing of HTTP.

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::config::Config;
use crate::db::reservations::{self as rq, BookingRefusal, NewReservation, Reservation};
use crate::db::users::User;
use crate::db::{Db, DbError};
use crate::gpu::telemetry::Telemetry;

/// What `member` names to book for maintenance (admins only).
pub const MAINTENANCE: &str = "maintenance";
/// A booking may start this much in the past (a form filled a minute ago).
const START_SLACK: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("No such booking.")]
    NotFound,
    #[error("{0}")]
    Refused(#[from] BookingRefusal),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A booking as asked for.
#[derive(Debug, Clone)]
pub struct BookRequest {
    pub gpus: i64,
    pub gpu_name: Option<String>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// Admins: another member's name, or "maintenance".
    pub member: Option<String>,
    pub purpose: String,
}

#[derive(Clone)]
pub struct Reservations {
    db: Db,
    config: Arc<Config>,
    telemetry: Telemetry,
}

impl Reservations {
    pub fn new(db: Db, config: Arc<Config>, telemetry: Telemetry) -> Reservations {
        Reservations {
            db,
            config,
            telemetry,
        }
    }

    /// The workstation's GPUs: (uuid, model), in index order.
    pub fn inventory(&self) -> Vec<(String, String)> {
        let mut gpus = self.telemetry.snapshot().gpus;
        gpus.sort_by_key(|g| g.index);
        gpus.into_iter().map(|g| (g.uuid, g.name)).collect()
    }

    pub async fn book(&self, by: &User, req: BookRequest) -> Result<Reservation, ReservationError> {
        let now = crate::clock::now();
        let inventory = self.inventory();
        check_window(&self.config, by, &req, now)?;
        check_gpus(&inventory, &req)?;
        let (user_id, member) = self.for_whom(by, req.member.as_deref()).await?;
        let week_limit = (!by.is_admin && self.config.reservations.max_gpu_hours_per_week > 0.0)
            .then_some(self.config.reservations.max_gpu_hours_per_week);
        let new = NewReservation {
            id: crate::model::new_id(),
            user_id,
            member,
            purpose: req.purpose.trim().chars().take(200).collect(),
            gpu_name: req.gpu_name.clone().filter(|n| !n.trim().is_empty()),
            gpus: req.gpus as usize,
            starts_at: req.starts_at,
            ends_at: req.ends_at,
            created_by: by.username.clone(),
            may_displace: by.is_admin || req.starts_at >= now + rq::DISPLACE_NOTICE,
        };
        let booked = self
            .db
            .call(move |c| rq::book(c, &new, &inventory, week_limit))
            .await??;
        tracing::info!(id = %booked.id, member = %booked.member, gpus = booked.gpu_uuids.len(), "GPUs booked");
        Ok(booked)
    }

    /// Whose booking it is: the caller's, or (admins) a named member's or maintenance.
    async fn for_whom(
        &self,
        by: &User,
        member: Option<&str>,
    ) -> Result<(Option<i64>, String), ReservationError> {
        let Some(name) = member
            .map(str::trim)
            .filter(|m| !m.is_empty() && *m != by.username)
        else {
            return Ok((Some(by.id), by.username.clone()));
        };
        if !by.is_admin {
            return Err(ReservationError::Forbidden(
                "Only an admin can book GPUs for someone else or for maintenance.".into(),
            ));
        }
        if name == MAINTENANCE {
            return Ok((None, MAINTENANCE.into()));
        }
        let wanted = name.to_string();
        let user = self
            .db
            .call(move |c| crate::db::users::by_name(c, &wanted))
            .await?
            .ok_or_else(|| {
                ReservationError::Invalid(format!("There is no member named '{name}'."))
            })?;
        Ok((Some(user.id), user.username))
    }

    /// Bookings overlapping [from, to).
    pub async fn between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Reservation>, ReservationError> {
        Ok(self.db.call(move |c| rq::between(c, from, to)).await?)
    }

    pub async fn get(&self, id: &str) -> Result<Reservation, ReservationError> {
        let id = id.to_string();
        self.db
            .call(move |c| rq::by_id(c, &id))
            .await?
            .ok_or(ReservationError::NotFound)
    }

    /// Cancels a booking: its member's or (any) an admin's. One under way ends now and
    /// stays as history (and in its member's weekly hours); one that has ended stays too.
    pub async fn cancel(&self, by: &User, id: &str) -> Result<(), ReservationError> {
        let r = self.get(id).await?;
        if !by.is_admin && r.user_id != Some(by.id) {
            return Err(ReservationError::Forbidden(
                "Only its member or an admin can cancel a booking.".into(),
            ));
        }
        if r.ends_at <= crate::clock::now() {
            return Err(ReservationError::Invalid(
                "That booking has ended; it stays in the calendar as history.".into(),
            ));
        }
        let id = r.id.clone();
        let now = crate::clock::now();
        self.db.call(move |c| rq::cancel(c, &id, now)).await?;
        Ok(())
    }

    /// A member's bookings as an iCalendar feed (RFC 5545), from a week ago on.
    pub async fn ical(&self, user: &User, base_url: &str) -> Result<String, ReservationError> {
        let now = crate::clock::now();
        let uid = user.id;
        let mine: Vec<Reservation> = self
            .between(now - 7 * 86400, Timestamp::MAX)
            .await?
            .into_iter()
            .filter(|r| r.user_id == Some(uid))
            .collect();
        Ok(ical(&mine, &self.inventory(), base_url, now))
    }
}

/// The API's view of a booking.
pub fn wire(r: &Reservation, now: Timestamp) -> crate::model::wire::Reservation {
    crate::model::wire::Reservation {
        id: r.id.clone(),
        member: r.member.clone(),
        purpose: r.purpose.clone(),
        gpus: r.gpu_uuids.len(),
        gpu_name: r.gpu_name.clone(),
        gpu_uuids: r.gpu_uuids.clone(),
        start: crate::clock::rfc3339(r.starts_at),
        end: crate::clock::rfc3339(r.ends_at),
        active: r.is_active(now),
        created_by: r.created_by.clone(),
    }
}

/// A time typed into the booking form ("2026-12-10T14:00", a `datetime-local` field), in
/// the lab's time zone; or an RFC 3339 time.
pub fn parse_time(text: &str, tz: &jiff::tz::TimeZone) -> Option<Timestamp> {
    let text = text.trim();
    if let Some(t) = crate::clock::parse_rfc3339(text) {
        return Some(t);
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    civil
        .to_zoned(tz.clone())
        .ok()
        .map(|z| z.timestamp().as_second())
}

/// "Thu 10 Dec 14:00" in the lab's time zone.
pub fn local_time(ts: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_second(ts)
        .map(|t| {
            t.to_zoned(tz.clone())
                .strftime("%a %-d %b %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// "2026-12-10T14:00", for a `datetime-local` field.
pub fn form_time(ts: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_second(ts)
        .map(|t| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%dT%H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

fn check_window(
    config: &Config,
    by: &User,
    req: &BookRequest,
    now: Timestamp,
) -> Result<(), ReservationError> {
    let invalid = |m: String| Err(ReservationError::Invalid(m));
    if req.ends_at <= req.starts_at {
        return invalid("The booking must end after it starts.".into());
    }
    if req.starts_at < now - START_SLACK {
        return invalid("The booking starts in the past: choose a start from now on.".into());
    }
    if by.is_admin {
        return Ok(()); // admins book without the members' limits
    }
    let limits = &config.reservations;
    let length = req.ends_at - req.starts_at;
    if length > limits.max_length.as_secs() as i64 {
        return invalid(format!(
            "A booking may last at most {} (reservations.max_length); this one lasts {}.",
            crate::idle::describe_duration(limits.max_length.as_secs() as i64),
            crate::idle::describe_duration(length)
        ));
    }
    if req.starts_at > now + limits.max_ahead.as_secs() as i64 {
        return invalid(format!(
            "A booking may start at most {} ahead (reservations.max_ahead).",
            crate::idle::describe_duration(limits.max_ahead.as_secs() as i64)
        ));
    }
    Ok(())
}

fn check_gpus(inventory: &[(String, String)], req: &BookRequest) -> Result<(), ReservationError> {
    let invalid = |m: String| Err(ReservationError::Invalid(m));
    if inventory.is_empty() {
        return invalid("This workstation has no GPUs to book.".into());
    }
    if let Some(name) = req.gpu_name.as_deref().filter(|n| !n.trim().is_empty()) {
        if !inventory.iter().any(|(_, n)| n.eq_ignore_ascii_case(name)) {
            let mut models: Vec<&str> = inventory.iter().map(|(_, n)| n.as_str()).collect();
            models.dedup();
            return invalid(format!(
                "No GPU here is a '{name}': the models are {}.",
                models.join(", ")
            ));
        }
    }
    if req.gpus < 1 || req.gpus as usize > inventory.len() {
        return invalid(format!(
            "Book from 1 to {} GPUs (this workstation has {}).",
            inventory.len(),
            inventory.len()
        ));
    }
    Ok(())
}

pub use crate::db::reservations::week_of;

/// "20261210T140000Z"
fn ical_time(ts: Timestamp) -> String {
    crate::clock::rfc3339(ts).replace(['-', ':'], "")
}

/// Escapes a TEXT value (RFC 5545 §3.3.11) and keeps it on one line.
fn ical_text(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .replace('\\', "\\\\")
        .replace(';', "\\;")
        .replace(',', "\\,")
}

/// A content line folded at 75 octets (RFC 5545 §3.1): the rest on lines that start with
/// a space, never inside a character.
fn fold(line: &str) -> String {
    let mut out = String::new();
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        width += c.len_utf8();
        out.push(c);
    }
    out
}

/// The feed: one VEVENT per booking; lines end in CRLF.
pub fn ical(
    bookings: &[Reservation],
    inventory: &[(String, String)],
    base_url: &str,
    now: Timestamp,
) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//Notebox//GPU bookings//EN".into(),
        "CALSCALE:GREGORIAN".into(),
    ];
    for r in bookings {
        let gpus: Vec<String> = r
            .gpu_uuids
            .iter()
            .map(|u| {
                inventory
                    .iter()
                    .position(|(id, _)| id == u)
                    .map_or_else(|| u.clone(), |i| format!("GPU {i} ({})", inventory[i].1))
            })
            .collect();
        let summary = format!(
            "{} GPU{} booked{}",
            r.gpu_uuids.len(),
            if r.gpu_uuids.len() == 1 { "" } else { "s" },
            if r.purpose.is_empty() {
                String::new()
            } else {
                format!(": {}", r.purpose)
            }
        );
        lines.extend([
            "BEGIN:VEVENT".to_string(),
            format!("UID:{}@notebox", r.id),
            format!("DTSTAMP:{}", ical_time(now)),
            format!("DTSTART:{}", ical_time(r.starts_at)),
            format!("DTEND:{}", ical_time(r.ends_at)),
            format!("SUMMARY:{}", ical_text(&summary)),
            format!("DESCRIPTION:{}", ical_text(&gpus.join(", "))),
            format!("URL:{}/reservations", base_url.trim_end_matches('/')),
            "END:VEVENT".into(),
        ]);
    }
    lines.push("END:VCALENDAR".into());
    lines
        .iter()
        .map(|l| fold(l))
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_read_in_the_lab_time_zone() {
        let utc = jiff::tz::TimeZone::UTC;
        let t = parse_time("2026-12-10T14:00", &utc).unwrap_or(0);
        assert_eq!(crate::clock::rfc3339(t), "2026-12-10T14:00:00Z");
        assert_eq!(
            parse_time("2026-12-10T14:00:00+01:00", &utc),
            Some(t - 3600)
        );
        assert_eq!(form_time(t, &utc), "2026-12-10T14:00");
        assert_eq!(local_time(t, &utc), "Thu 10 Dec 14:00");
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap_or(utc);
        assert_eq!(parse_time("2026-12-10T15:00", &berlin), Some(t));
        assert_eq!(parse_time("tomorrow", &berlin), None);
    }

    #[test]
    fn weeks_start_on_monday_utc() {
        // 2026-12-07 is a Monday.
        let monday = crate::clock::parse_rfc3339("2026-12-07T00:00:00Z").unwrap_or(0);
        let thursday = monday + 3 * 86400 + 14 * 3600;
        assert_eq!(week_of(thursday), (monday, monday + 7 * 86400));
        assert_eq!(week_of(monday), (monday, monday + 7 * 86400));
        assert_eq!(week_of(monday - 1).1, monday);
    }

    #[test]
    fn the_feed_escapes_text_and_lists_each_booking() {
        let r = Reservation {
            id: "abc".into(),
            user_id: Some(1),
            member: "alice".into(),
            purpose: "paper; final, runs\nBEGIN:VEVENT".into(),
            gpu_name: None,
            starts_at: 1_800_000_000,
            ends_at: 1_800_003_600,
            created_by: "alice".into(),
            created_at: 0,
            gpu_uuids: vec!["GPU-1".into()],
        };
        let inv = vec![
            ("GPU-0".to_string(), "A100".to_string()),
            ("GPU-1".into(), "A100".into()),
        ];
        let feed = ical(&[r], &inv, "http://lab:8080/", 1_800_000_000);
        assert!(
            feed.contains("SUMMARY:1 GPU booked: paper\\; final\\, runsBEGIN:VEVENT\r\n"),
            "{feed}"
        );
        assert_eq!(
            feed.matches("BEGIN:VEVENT").count(),
            2,
            "one event (the other is inside escaped text)"
        );
        assert!(feed.contains("DTSTART:20270115T080000Z\r\n"), "{feed}");
        assert!(feed.contains("DESCRIPTION:GPU 1 (A100)\r\n"));
        assert!(feed.ends_with("END:VCALENDAR\r\n"));
        let long = fold(&format!("SUMMARY:{}", "é".repeat(60)));
        assert!(long.split("\r\n").all(|l| l.len() <= 75), "{long}");
        assert_eq!(
            long.replace("\r\n ", ""),
            format!("SUMMARY:{}", "é".repeat(60))
        );
    }
}
