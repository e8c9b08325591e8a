//! The typed values settings hold, each parsed once where it enters (the TOML file or a
//! `NOTEBOX_*` variable), with the message a person needs when it does not parse.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// The address Notebox listens on when nothing else is set.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// Parses `listen` ("127.0.0.1:8080", "[::]:8080").
pub fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("'{value}' is not an address:port like 127.0.0.1:8080"))
}

/// The lab's time zone for job schedules (`jobs.time_zone`): an IANA name ("Europe/Berlin")
/// or, when empty, the system's, falling back to UTC.
pub fn time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    use jiff::tz::TimeZone;
    let name = name.trim();
    if name.is_empty() {
        return Ok(TimeZone::try_system().unwrap_or(TimeZone::UTC));
    }
    // Names are looked up as files under /usr/share/zoneinfo: keep to what IANA names use.
    let plausible = name.len() <= 64
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
    match plausible.then(|| TimeZone::get(name)) {
        Some(Ok(tz)) => Ok(tz),
        _ => Err(format!(
            "unknown time zone '{name}' (use an IANA name such as Europe/Berlin)"
        )),
    }
}

/// Where notebooks are served (`notebooks.origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OriginMode {
    /// Each running notebook on a port of its own: an origin of its own with no DNS work.
    #[default]
    Ports,
    /// Each notebook on `{id}.{origin_domain}`.
    Subdomains,
    /// Every notebook on Notebox's own origin: code in a notebook can act as its member.
    Same,
}

impl OriginMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OriginMode::Ports => "ports",
            OriginMode::Subdomains => "subdomains",
            OriginMode::Same => "same",
        }
    }

    pub fn parse(value: &str) -> Result<OriginMode, String> {
        match value {
            "ports" => Ok(OriginMode::Ports),
            "subdomains" => Ok(OriginMode::Subdomains),
            "same" => Ok(OriginMode::Same),
            other => Err(format!(
                "'{other}' is not an origin mode; use ports, subdomains or same"
            )),
        }
    }
}

/// An inclusive range of TCP ports, written "8100-8199".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn parse(value: &str) -> Result<PortRange, String> {
        let bad =
            || format!("'{value}' is not a port range; write it as FIRST-LAST, e.g. \"8100-8199\"");
        let (a, b) = value.trim().split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(format!(
                "'{value}': the first port must be above 0 and not above the last"
            ));
        }
        Ok(PortRange { first, last })
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
        let text = String::deserialize(d)?;
        PortRange::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A checked webhook URL (`webhook.url`): http or https, with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(hyper::Uri);

impl WebhookUrl {
    pub fn parse(text: &str) -> Result<WebhookUrl, String> {
        let uri: hyper::Uri = text.trim().parse().map_err(|e| {
            format!(
                "'{text}' is not a URL ({e}); write it like https://chat.lab.example/hooks/notebox"
            )
        })?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(format!("'{text}' must start with http:// or https://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("'{text}' names no host"));
        }
        Ok(WebhookUrl(uri))
    }

    /// The URL as the HTTP client takes it.
    pub fn uri(&self) -> &hyper::Uri {
        &self.0
    }
}

impl std::str::FromStr for WebhookUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<WebhookUrl, String> {
        WebhookUrl::parse(text)
    }
}

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a monthly GPU-hour budget does when a member goes over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverBudget {
    /// Show a warning; nothing is refused.
    #[default]
    Warn,
    /// Also refuse to start GPU notebooks until the next month (or a bigger budget).
    Block,
}

/// What happens to an idle notebook once its machine type's idle timeout has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reclaim {
    /// Stopped when idle past the timeout.
    Always,
    /// Stopped when idle past the timeout and another notebook waits for its GPUs.
    WhenNeeded,
}

impl Reclaim {
    pub fn as_str(self) -> &'static str {
        match self {
            Reclaim::Always => "always",
            Reclaim::WhenNeeded => "when_needed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuBackend {
    Auto,
    Nvml,
    Simulated,
    None,
}

impl GpuBackend {
    pub fn parse(value: &str) -> Result<GpuBackend, String> {
        match value {
            "auto" => Ok(GpuBackend::Auto),
            "nvml" => Ok(GpuBackend::Nvml),
            "simulated" => Ok(GpuBackend::Simulated),
            "none" => Ok(GpuBackend::None),
            other => Err(format!(
                "'{other}' is not a GPU backend; use auto, nvml, simulated or none"
            )),
        }
    }
}

/// Auto-shutdown choices offered to users, in the order shown.
pub const AUTO_SHUTDOWN_CHOICES: &[&str] = &["1h", "6h", "12h", "1d", "1w", "never"];

/// Parses an auto-shutdown choice: `Ok(None)` for "never".
pub fn parse_auto_shutdown(value: &str) -> Result<Option<Duration>, String> {
    let v = value.trim();
    if v == "never" {
        return Ok(None);
    }
    if !AUTO_SHUTDOWN_CHOICES.contains(&v) {
        return Err(format!(
            "'{value}' is not an auto-shutdown choice; use one of {}",
            AUTO_SHUTDOWN_CHOICES.join(", ")
        ));
    }
    parse_duration(v).map(Some)
}

/// The choice's name for an auto-shutdown length ("6h", "never"), as the forms show it.
pub fn auto_shutdown_name(value: Option<Duration>) -> String {
    match value {
        None => "never".into(),
        Some(d) => AUTO_SHUTDOWN_CHOICES
            .iter()
            .find(|c| parse_auto_shutdown(c).ok().flatten() == Some(d))
            .map(|c| c.to_string())
            .unwrap_or_else(|| humantime::format_duration(d).to_string()),
    }
}

/// Parses "90s", "5m", "6h", "1d", "1w" (and anything humantime accepts).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("'{value}' is not a duration ({e}); write it like 90s, 5m, 6h or 1d"))
}

/// serde for `notebooks.default_auto_shutdown`: one of the choices, "never" as None.
pub(super) mod auto_shutdown_choice {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_auto_shutdown(&s).map_err(serde::de::Error::custom)
    }
}

/// serde for an optional duration that may also be "never": absent → None (the default
/// applies), "never" → Some(None), "30m" → Some(Some(30 min)).
pub(super) mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Duration>>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "never" {
            return Ok(Some(None));
        }
        super::parse_duration(&s)
            .map(|d| Some(Some(d)))
            .map_err(|e| serde::de::Error::custom(format!("{e}, or \"never\"")))
    }
}

/// Parses a size: "200GiB", "500 MiB", "1TiB", "1048576" (bytes); GB/MB are read as
/// GiB/MiB (disk tools disagree; the larger reading errs on keeping images).
pub fn parse_byte_size(value: &str) -> Result<u64, String> {
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{value}' is not a size like 200GiB or 500MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "'{other}' is not a size unit; use B, KiB, MiB, GiB or TiB (like 200GiB)"
            ))
        }
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{value}' is not a size Notebox can hold"));
    }
    Ok(bytes as u64)
}

/// A size for people, the way `parse_byte_size` reads it back: "104.2 GiB", "100 GiB",
/// "512 KiB", "12 bytes".
pub fn byte_size_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            let value = format!("{:.1}", bytes as f64 / size as f64);
            let value = value.strip_suffix(".0").unwrap_or(&value);
            return format!("{value} {unit}");
        }
    }
    format!("{bytes} bytes")
}

/// `max_disk = "200GiB"` (a string) or a number of bytes.
pub(super) mod byte_size {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Size::deserialize(d)? {
            Size::Bytes(b) => Ok(b),
            Size::Text(t) => super::parse_byte_size(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// How much of the data dir's filesystem must stay free before Notebox warns
/// (`[storage] min_free`): a share of the filesystem ("5%") or a size ("2GiB").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    Percent(f64),
    Bytes(u64),
}

impl MinFree {
    /// The threshold in bytes on a filesystem of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            MinFree::Percent(p) => (total as f64 * p / 100.0) as u64,
            MinFree::Bytes(b) => b,
        }
    }
}

impl std::fmt::Display for MinFree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MinFree::Percent(p) => write!(f, "{p} %"),
            MinFree::Bytes(b) => f.write_str(&byte_size_text(*b)),
        }
    }
}

/// Parses `min_free`: "5%" (more than 0, less than 100) or a size ("2GiB", "500 MiB").
pub fn parse_min_free(value: &str) -> Result<MinFree, String> {
    let text = value.trim();
    let Some(number) = text.strip_suffix('%') else {
        return parse_byte_size(text)
            .map(MinFree::Bytes)
            .map_err(|e| format!("{e}; or give a share of the filesystem like \"5%\""));
    };
    match number.trim().parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 && p < 100.0 => Ok(MinFree::Percent(p)),
        _ => Err(format!(
            "'{value}' is not a share of the filesystem: use a percentage above 0 and below \
             100, like \"5%\", or a size like \"2GiB\""
        )),
    }
}

/// `min_free = "5%"`, `"2GiB"` (strings) or a number of bytes.
pub(super) mod min_free {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Bytes(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::MinFree, D::Error> {
        match Text::deserialize(d)? {
            Text::Bytes(b) => Ok(super::MinFree::Bytes(b)),
            Text::Text(t) => super::parse_min_free(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// `soft_quota = "100GiB"`, a number of bytes, or "" (none).
pub(super) mod optional_byte_size {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Size::deserialize(d)? {
            Size::Bytes(b) => Ok(Some(b)),
            Size::Text(t) if t.trim().is_empty() => Ok(None),
            Size::Text(t) => super::parse_byte_size(&t)
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("{e}, or \"\" for none"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_df() {
        assert_eq!(byte_size_text(0), "0 bytes");
        assert_eq!(byte_size_text(1536), "1.5 KiB");
        assert_eq!(byte_size_text(64 << 20), "64 MiB");
    }

    #[test]
    fn min_free_is_a_share_or_a_size() {
        assert_eq!(parse_min_free("5%"), Ok(MinFree::Percent(5.0)));
        assert_eq!(parse_min_free(" 2.5 % "), Ok(MinFree::Percent(2.5)));
        assert_eq!(parse_min_free("2GiB"), Ok(MinFree::Bytes(2 << 30)));
        assert_eq!(MinFree::Percent(5.0).bytes_of(1000), 50);
        for bad in ["0%", "100%", "-3%", "lots%", "five"] {
            let e = parse_min_free(bad).unwrap_err();
            assert!(e.contains("5%"), "{bad}: {e}");
        }
    }

    #[test]
    fn min_free_in_the_file_is_checked_where_it_is_read() {
        use crate::config::Config;
        use std::path::Path;
        let c = Config::from_toml("[storage]\nmin_free = \"2GiB\"\n", Path::new("c.toml"))
            .expect("a size");
        assert_eq!(c.storage.min_free, MinFree::Bytes(2 << 30));
        let c = Config::from_toml("", Path::new("c.toml")).expect("defaults");
        assert_eq!(c.storage.min_free, MinFree::Percent(5.0));
        let e = Config::from_toml("[storage]\nmin_free = \"150%\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml") && e.contains("line 2"), "{e}");
        assert!(e.contains("'150%' is not a share of the filesystem"), "{e}");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_byte_size("200GiB"), Ok(200 << 30));
        assert_eq!(parse_byte_size("1.5 MiB"), Ok(3 << 19));
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert!(parse_byte_size("lots").is_err());
        assert!(parse_byte_size("5 parsecs").unwrap_err().contains("unit"));
    }

    #[test]
    fn sizes_are_written_the_way_people_write_them() {
        assert_eq!(byte_size_text(100 << 30), "100 GiB");
        assert_eq!(byte_size_text((1042 << 30) / 10), "104.2 GiB");
        assert_eq!(byte_size_text(3 << 19), "1.5 MiB");
        assert_eq!(byte_size_text(12), "12 bytes");
        assert_eq!(parse_byte_size(&byte_size_text(200 << 30)), Ok(200 << 30));
    }

    #[test]
    fn listen_parses_once_with_the_old_message() {
        assert_eq!(parse_listen("127.0.0.1:8080"), Ok(DEFAULT_LISTEN));
        assert_eq!(
            parse_listen("[::]:9000").map(|a| a.port()),
            Ok(9000),
            "IPv6 too"
        );
        assert_eq!(
            parse_listen("nonsense").unwrap_err(),
            "'nonsense' is not an address:port like 127.0.0.1:8080"
        );
    }

    #[test]
    fn webhook_urls_are_checked() {
        let url: WebhookUrl = "https://chat.lab.example/hooks/x".parse().expect("https");
        assert_eq!(url.uri().host(), Some("chat.lab.example"));
        assert!(WebhookUrl::parse(" http://127.0.0.1:9000/ ").is_ok());
        assert!(WebhookUrl::parse("ftp://x/")
            .unwrap_err()
            .contains("must start with http:// or https://"));
        assert!(WebhookUrl::parse("not a url")
            .unwrap_err()
            .contains("is not a URL"));
        assert!(WebhookUrl::parse("/relative").is_err());
    }

    #[test]
    fn backends_and_port_ranges_parse() {
        assert_eq!(GpuBackend::parse("nvml"), Ok(GpuBackend::Nvml));
        assert!(GpuBackend::parse("cuda").unwrap_err().contains("cuda"));
        let r = PortRange::parse(" 9000 - 9009 ").expect("range");
        assert_eq!((r.len(), r.to_string()), (10, "9000-9009".to_string()));
        assert!(r.contains(9009) && !r.contains(9010));
        assert!(PortRange::parse("0-10").is_err());
    }
}
