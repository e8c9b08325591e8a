//! Where notebooks are served, and telling origins apart: each running notebook on an
//! origin of its own (a port of its own, or a subdomain), so that code in a notebook's page
//! can never act as its member on Notebox. No I/O; only the checks of a proxied request at
//! the end (`origin_allowed`) read an HTTP request.
//!
//! Cookies ignore ports (RFC 6265 §8.5) and a notebook's script can write `document.cookie`
//! for the whole host, so Notebox's cookie names (here and in `crate::http`) never collide,
//! a request that carries one of them twice is refused, and under TLS they carry the
//! `__Host-` prefix.

use actix_web::http::{header, Method};
use actix_web::HttpRequest;

use crate::config::{OriginMode, PortRange};
pub use crate::http::{login_csrf_cookie_name, session_cookie_name};

use super::request::is_websocket;

/// A notebook's own cookie: its name carries the notebook's id.
pub fn notebook_cookie_name(notebook_id: &str, https: bool) -> String {
    if https {
        format!("__Host-notebox_nb_{notebook_id}")
    } else {
        format!("notebox_nb_{notebook_id}")
    }
}

/// Whether a cookie name is one Notebox reads (or would): those are never passed to
/// Jupyter, never planted by a notebook's `Set-Cookie`, and never accepted twice.
pub fn is_notebox_cookie(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("notebox") || lower.starts_with("__host-") || lower.starts_with("__secure-")
}

/// The first cookie name of Notebox's that a `Cookie` header list carries more than once
/// (a page planted a second one next to the real one: cookie tossing).
pub fn duplicate_cookie<'a>(headers: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for header in headers {
        for pair in header.split(';') {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
            if name.is_empty() || !is_notebox_cookie(name) {
                continue;
            }
            if seen.contains(&name) {
                return Some(name.to_string());
            }
            seen.push(name);
        }
    }
    None
}

/// The host name of a `host[:port]` (brackets kept for IPv6), and its port if given.
pub fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        if let Some(end) = rest.find(']') {
            let name = &host[..end + 2];
            let port = rest[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (name, port);
        }
        return (host, None);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (host, None),
    }
}

/// The scheme and `host[:port]` of an `Origin` header value.
fn parse_origin(origin: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    Some((scheme, rest))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// What the admin pages and `notebox doctor` say about notebook isolation: whether it is
/// the weaker mode, and a sentence.
pub fn isolation_note(mode: OriginMode, ports: PortRange, domain: &str) -> (bool, String) {
    match mode {
        OriginMode::Ports => (
            false,
            format!(
                "Each running notebook is served on a port of its own ({ports}), an origin of \
                 its own: code in a notebook cannot act as its member on Notebox. Members' \
                 browsers must reach these ports (open them in the firewall)."
            ),
        ),
        OriginMode::Subdomains => (
            false,
            format!(
                "Each notebook is served on a subdomain of its own (https://{{id}}.{domain}/): \
                 code in a notebook cannot act as its member on Notebox."
            ),
        ),
        OriginMode::Same => (
            true,
            "Notebook isolation is off (notebooks.origin = \"same\"): every notebook is served \
             on Notebox's own origin, so code in a notebook (a package, a forked notebook, a \
             custom image) can act as its member on Notebox — read their pages, create \
             access tokens, publish their notebooks. Use origin = \"ports\" unless the ports \
             cannot be opened."
                .to_string(),
        ),
    }
}

/// With `origin = "ports"`: a warning when the range cannot give every member a port for
/// each notebook they may run (ports belong to members for good), or when every port of it
/// already belongs to someone. `None` when it is roomy enough.
pub fn port_capacity_warning(
    ports: PortRange,
    usage: crate::db::origin_ports::PortUsage,
    per_member: u32,
) -> Option<String> {
    let len = ports.len() as i64;
    let needed = usage.members.saturating_mul(i64::from(per_member));
    if usage.owned >= len {
        return Some(format!(
            "Every notebook port of {ports} belongs to a member now (a port serves one member's \
             notebooks for good): a member who has none gets no port. Widen \
             notebooks.origin_ports."
        ));
    }
    (needed > len).then(|| {
        format!(
            "The notebook ports ({ports}: {len}) are fewer than members × notebooks each may run \
             ({} × {per_member} = {needed}): when the lab is busy a member may find no port \
             free. Widen notebooks.origin_ports, or lower notebooks.max_running_per_user.",
            usage.members
        )
    })
}

/// How notebooks are placed on origins: built from the config once.
#[derive(Debug, Clone)]
pub struct Origins {
    pub mode: OriginMode,
    pub ports: PortRange,
    /// Lower case, no leading dot.
    pub domain: String,
}

impl Origins {
    pub fn new(mode: OriginMode, ports: PortRange, domain: &str) -> Origins {
        Origins {
            mode,
            ports,
            domain: domain.trim().trim_start_matches('.').to_ascii_lowercase(),
        }
    }

    /// Whether notebooks live on origins of their own (`ports` or `subdomains`).
    pub fn isolated(&self) -> bool {
        self.mode != OriginMode::Same
    }

    /// The notebook a request's `Host` names, with `origin = "subdomains"`:
    /// `{id}.{domain}[:port]`.
    pub fn notebook_of_host(&self, host: &str) -> Option<String> {
        if self.mode != OriginMode::Subdomains || self.domain.is_empty() {
            return None;
        }
        let (name, _) = split_host(host);
        let name = name.to_ascii_lowercase();
        let id = name.strip_suffix(&self.domain)?.strip_suffix('.')?;
        (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .then(|| id.to_string())
    }

    /// Whether an `Origin` header names a notebook's origin, seen from a request to
    /// Notebox's own origin at `host` (its `Host` header).
    pub fn is_notebook_origin(&self, origin: &str, host: &str) -> bool {
        let Some((scheme, origin_host)) = parse_origin(origin.trim()) else {
            return false;
        };
        let (origin_name, origin_port) = split_host(origin_host);
        match self.mode {
            OriginMode::Same => false,
            OriginMode::Ports => {
                let (name, _) = split_host(host);
                let port = origin_port.or_else(|| default_port(scheme));
                origin_name.eq_ignore_ascii_case(name)
                    && port.is_some_and(|p| self.ports.contains(p))
            }
            OriginMode::Subdomains => self.notebook_of_host(origin_host).is_some(),
        }
    }

    /// The origin (scheme://host[:port]) a notebook is served on, for a browser that
    /// reached Notebox as `scheme://host`; `port` is the notebook's with `ports`.
    pub fn notebook_origin(
        &self,
        notebook_id: &str,
        scheme: &str,
        host: &str,
        port: Option<u16>,
    ) -> Option<String> {
        match self.mode {
            OriginMode::Same => Some(format!("{scheme}://{host}")),
            OriginMode::Ports => {
                let (name, _) = split_host(host);
                port.map(|p| format!("{scheme}://{name}:{p}"))
            }
            // Subdomains sit behind TLS by design.
            OriginMode::Subdomains => Some(format!("https://{notebook_id}.{}", self.domain)),
        }
    }
}

/// Which origin a proxied request arrived on, and so which credentials count there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// Notebox's own origin. With isolated origins only an `Authorization` header counts
    /// (a browser cannot send one on a navigation, so no page of a notebook is ever
    /// rendered here with the member's cookies).
    Main,
    /// The notebook's own origin (its port or subdomain): its own cookie or a token;
    /// Notebox's session cookie never counts (and never reaches Jupyter).
    Notebook(String),
}

/// Jupyter skips its origin checks for token-authenticated calls, and we always send a
/// token: so the proxy refuses cross-site WebSockets and writes itself. On a notebook's
/// own origin nothing from another origin gets through, reads included: not another
/// notebook's page (`fetch` with credentials, `<script src>`), not Notebox's.
pub fn origin_allowed(req: &HttpRequest, site: &Site) -> bool {
    if matches!(site, Site::Notebook(_)) {
        let fetch_site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes());
        // A link followed to the notebook, in a tab or window: fine. Framing it (iframe,
        // embed) is not: another origin's page could then click for the member.
        let top_level_navigation = header("sec-fetch-mode") == Some(b"navigate")
            && header("sec-fetch-dest").is_none_or(|d| d == b"document");
        // Another origin's page loading something of this notebook's.
        if matches!(fetch_site, "same-site" | "cross-site") && !top_level_navigation {
            return false;
        }
        if req.headers().contains_key(header::ORIGIN) {
            return same_origin(req);
        }
        return true;
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe && !is_websocket(req) {
        return true;
    }
    same_origin(req)
}

/// Whether the request's `Origin` is the origin it was sent to (no `Origin`: not a
/// browser, or a same-origin navigation).
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        // Not a browser (browsers send Origin on WebSockets and cross-site writes).
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let host = req.connection_info().host().to_string();
    let scheme_ok = origin
        .split_once("://")
        .is_some_and(|(s, _)| s.eq_ignore_ascii_case(req.connection_info().scheme()));
    if !scheme_ok {
        return false;
    }
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    origin_host.eq_ignore_ascii_case(&host)
}

#[cfg(test)]
mod tests {
    #[test]
    fn port_capacity_warns_when_members_times_limit_exceed_the_range() {
        use crate::db::origin_ports::PortUsage;
        let range = PortRange {
            first: 8100,
            last: 8199,
        };
        let roomy = PortUsage {
            owned: 10,
            members: 25,
        };
        assert_eq!(port_capacity_warning(range, roomy, 4), None);
        let crowded = PortUsage {
            owned: 10,
            members: 30,
        };
        let w = port_capacity_warning(range, crowded, 4).unwrap_or_default();
        assert!(
            w.contains("30 × 4 = 120") && w.contains("origin_ports"),
            "{w}"
        );
        let full = PortUsage {
            owned: 100,
            members: 3,
        };
        let w = port_capacity_warning(range, full, 4).unwrap_or_default();
        assert!(w.contains("Every notebook port"), "{w}");
    }

    use super::*;

    fn ports() -> Origins {
        Origins::new(
            OriginMode::Ports,
            PortRange {
                first: 8100,
                last: 8199,
            },
            "",
        )
    }

    #[test]
    fn notebook_origins_are_told_from_notebox_s_own() {
        let o = ports();
        assert!(o.is_notebook_origin("http://lab:8101", "lab:8080"));
        assert!(o.is_notebook_origin("http://LAB:8199", "lab:8080"));
        assert!(!o.is_notebook_origin("http://lab:8080", "lab:8080"));
        assert!(!o.is_notebook_origin("http://lab:8200", "lab:8080"));
        assert!(!o.is_notebook_origin("http://other:8101", "lab:8080"));
        assert!(!o.is_notebook_origin("null", "lab:8080"));
        assert!(o.is_notebook_origin("http://[::1]:8101", "[::1]:8080"));
        assert_eq!(
            o.notebook_origin("x", "http", "lab:8080", Some(8101))
                .as_deref(),
            Some("http://lab:8101")
        );

        let s = Origins::new(OriginMode::Subdomains, o.ports, ".NB.lab.example");
        assert_eq!(
            s.notebook_of_host("ab12.nb.lab.example").as_deref(),
            Some("ab12")
        );
        assert_eq!(
            s.notebook_of_host("AB12.nb.lab.example:443").as_deref(),
            Some("ab12")
        );
        assert_eq!(s.notebook_of_host("nb.lab.example"), None);
        assert_eq!(s.notebook_of_host("a.b.nb.lab.example"), None);
        assert_eq!(s.notebook_of_host("xnb.lab.example"), None);
        assert!(s.is_notebook_origin("https://ab12.nb.lab.example", "lab.example"));
        assert!(!s.is_notebook_origin("https://lab.example", "lab.example"));

        let same = Origins::new(OriginMode::Same, o.ports, "");
        assert!(!same.is_notebook_origin("http://lab:8101", "lab:8080"));
    }

    #[test]
    fn a_cookie_planted_next_to_notebox_s_is_found() {
        assert_eq!(
            duplicate_cookie(["a=1; notebox_session=x"].into_iter()),
            None
        );
        assert_eq!(
            duplicate_cookie(["notebox_session=x; b=2", "notebox_session=y"].into_iter())
                .as_deref(),
            Some("notebox_session")
        );
        assert_eq!(
            duplicate_cookie(["notebox_nb_a=1; notebox_nb_a=2"].into_iter()).as_deref(),
            Some("notebox_nb_a")
        );
        // Jupyter's own cookies may repeat (per-path _xsrf); they are not ours.
        assert_eq!(duplicate_cookie(["_xsrf=1; _xsrf=2"].into_iter()), None);
        assert_eq!(split_host("lab:8080"), ("lab", Some(8080)));
        assert_eq!(split_host("[::1]:8080"), ("[::1]", Some(8080)));
        assert_eq!(split_host("lab"), ("lab", None));
        assert_eq!(notebook_cookie_name("ab", true), "__Host-notebox_nb_ab");
    }
}
