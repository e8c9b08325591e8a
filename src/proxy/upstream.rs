//! The way to Jupyter: the upstream client (kept-alive connections with TCP_NODELAY), and
//! what of a request reaches Jupyter and what of its answer reaches the browser (headers
//! and cookies).

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::HttpRequest;

/// Request headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Per-worker upstream client: keeps connections to Jupyter alive between requests.
pub struct UpstreamClient {
    client: awc::Client,
}

impl UpstreamClient {
    pub fn client(&self) -> &awc::Client {
        &self.client
    }
}

/// awc's TCP connector, plus TCP_NODELAY on every upstream connection: proxied bodies
/// arrive in pieces, and Nagle's algorithm would hold each small piece back.
#[derive(Clone, Default)]
struct NoDelayConnector(actix_tls::connect::ConnectorService);

impl actix_service::Service<actix_tls::connect::ConnectInfo<awc::http::Uri>> for NoDelayConnector {
    type Response = actix_tls::connect::Connection<awc::http::Uri, actix_web::rt::net::TcpStream>;
    type Error = actix_tls::connect::ConnectError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>>>>;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        actix_service::Service::<actix_tls::connect::ConnectInfo<awc::http::Uri>>::poll_ready(
            &self.0, cx,
        )
    }

    fn call(&self, req: actix_tls::connect::ConnectInfo<awc::http::Uri>) -> Self::Future {
        let connecting = self.0.call(req);
        Box::pin(async move {
            let connection = connecting.await?;
            if let Err(e) = connection.io_ref().set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY upstream");
            }
            Ok(connection)
        })
    }
}

impl Default for UpstreamClient {
    fn default() -> Self {
        let connector = awc::Connector::new()
            .connector(NoDelayConnector::default())
            .conn_lifetime(Duration::from_secs(3600))
            .limit(0) // no cap on concurrent upstream connections (WebSockets are long-lived)
            .conn_keep_alive(Duration::from_secs(60))
            .timeout(Duration::from_secs(5));
        UpstreamClient {
            client: awc::Client::builder()
                .connector(connector)
                .disable_timeout() // long downloads and uploads must not be cut off
                .disable_redirects()
                .max_http_version(awc::http::Version::HTTP_11)
                .finish(),
        }
    }
}

/// The name of jupyter_server's login cookie for requests to `host`: `username-{host}` with
/// every character but ASCII letters and digits made a `-` (its IdentityProvider).
fn jupyter_login_cookie(host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("username-{host}")
}

/// The headers Jupyter gets: the client's, minus hop-by-hop headers and the client's
/// credentials; plus the notebook's token and X-Forwarded-*.
pub fn upstream_headers(req: &HttpRequest, jupyter_token: &str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in req.headers() {
        if is_hop_by_hop(name)
            || name == header::AUTHORIZATION
            || name == header::COOKIE
            || name.as_str().starts_with("x-forwarded-")
            || name.as_str().starts_with("sec-websocket-")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Some(cookies) = jupyters_cookies(req) {
        out.insert(header::COOKIE, cookies);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("token {jupyter_token}")) {
        out.insert(header::AUTHORIZATION, v);
    }
    add_forwarded(req, &mut out);
    out
}

/// Of the cookies only Jupyter's own pass: `_xsrf` and its login cookie for this host. A
/// browser sends every cookie of the host whatever port set it (Grafana's, Portainer's,
/// code-server's sessions, another Jupyter's login), and code in the notebook could read
/// them here. A fixed list, not names learned from Jupyter's `Set-Cookie`: a notebook could
/// set a cookie named like another app's and then be sent both.
fn jupyters_cookies(req: &HttpRequest) -> Option<HeaderValue> {
    let login_cookie = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(jupyter_login_cookie);
    let cookies: Vec<&str> = req
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| {
            let name = c.split_once('=').map_or(*c, |(n, _)| n).trim();
            name == "_xsrf" || login_cookie.as_deref() == Some(name)
        })
        .collect();
    let value = HeaderValue::from_str(&cookies.join("; ")).ok()?;
    (!cookies.is_empty()).then_some(value)
}

/// `X-Forwarded-For` (the peer added to what came), `-Proto` and `-Host`.
fn add_forwarded(req: &HttpRequest, out: &mut HeaderMap) {
    let info = req.connection_info();
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let forwarded_for = match req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => format!("{prior}, {peer}"),
        None => peer,
    };
    for (name, value) in [
        ("x-forwarded-for", forwarded_for.as_str()),
        ("x-forwarded-proto", info.scheme()),
        ("x-forwarded-host", info.host()),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), v);
        }
    }
}

/// An upstream `Set-Cookie`, confined to the notebook's own base URL (`/nb/{id}/`, with its
/// path key when it has one; `Domain` dropped, `Path` replaced); cookies named like
/// Notebox's own are dropped so a notebook cannot plant them.
pub fn scoped_set_cookie(value: &HeaderValue, base: &str) -> Option<HeaderValue> {
    let value = value.to_str().ok()?;
    let mut parts = value.split(';');
    let pair = parts.next()?.trim();
    let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
    if name.is_empty() || super::origin::is_notebox_cookie(name) {
        return None;
    }
    let mut out = pair.to_string();
    for attribute in parts {
        let attribute = attribute.trim();
        let key = attribute
            .split_once('=')
            .map_or(attribute, |(k, _)| k)
            .trim()
            .to_ascii_lowercase();
        if attribute.is_empty() || key == "path" || key == "domain" {
            continue;
        }
        out.push_str("; ");
        out.push_str(attribute);
    }
    out.push_str(&format!("; Path={base}"));
    HeaderValue::from_str(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scoped(v: &str) -> Option<String> {
        scoped_set_cookie(&HeaderValue::from_str(v).expect("header"), "/nb/abc123/")
            .map(|h| h.to_str().expect("ascii").to_string())
    }

    #[test]
    fn only_jupyters_login_cookie_for_this_host_is_its_own() {
        assert_eq!(
            jupyter_login_cookie("127.0.0.1:8080"),
            "username-127-0-0-1-8080"
        );
        assert_eq!(
            jupyter_login_cookie("nb-x.lab.example"),
            "username-nb-x-lab-example"
        );
    }

    #[test]
    fn upstream_cookies_stay_under_the_notebook_path() {
        assert_eq!(
            scoped("_xsrf=2|x|y; expires=Wed, 01 Jan 2031 00:00:00 GMT; Path=/").as_deref(),
            Some("_xsrf=2|x|y; expires=Wed, 01 Jan 2031 00:00:00 GMT; Path=/nb/abc123/")
        );
        assert_eq!(
            scoped("a=b; Domain=example.org; path=/other; HttpOnly").as_deref(),
            Some("a=b; HttpOnly; Path=/nb/abc123/")
        );
        // A notebook cannot plant Notebox's own cookies, nor host-wide ones.
        assert_eq!(scoped("notebox_session=stolen; Path=/"), None);
        assert_eq!(scoped("NOTEBOX_login_csrf=x"), None);
        assert_eq!(scoped("__Host-x=1; Path=/; Secure"), None);
        assert_eq!(scoped("=novalue"), None);
    }
}
