//! Time as Notebox stores and shows it: whole Unix seconds (`Timestamp`) in the database,
//! the ledger and the pages; milliseconds where samples need them; RFC 3339 on the wire.

/// Seconds since the Unix epoch, UTC: the one timestamp type of the database and the
/// domain (rows, ledger intervals, deadlines).
pub type Timestamp = i64;

/// Now, in whole seconds.
pub fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now, in milliseconds (activity samples and the usage ledger's sample times).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// "2026-12-07T03:22:52Z": how the API and the pages write a timestamp.
pub fn rfc3339(ts: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// An RFC 3339 time (Docker's, Jupyter's) as a timestamp; None when it does not parse.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_and_write_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert!(now() > 1_700_000_000 && now_ms() / 1000 >= now() - 1);
    }
}
