//! HTTP vocabulary shared by Notebox's own pages and the notebook proxy: cookie and header
//! names, reading credentials from a request, the pages' security policy, and encoding of
//! what goes into URLs and redirects. Both `web` and `proxy` build on it; it knows neither.

use actix_web::HttpRequest;

/// The session cookie's name without TLS; under TLS it is `__Host-notebox_session`
/// (see `session_cookie`).
pub const SESSION_COOKIE: &str = "notebox_session";
pub const LOGIN_CSRF_COOKIE: &str = "notebox_login_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Our pages' policy: nothing but our own scripts and styles, never framed.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Whether the browser reached us over TLS (directly or through a reverse proxy that
/// says so): cookies then get `Secure` and the `__Host-` prefix.
pub fn is_https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// The `Host` the client asked for, as it sent it (never `X-Forwarded-Host`, which any
/// client can send): what routes a request to a notebook's subdomain.
pub fn request_host(req: &HttpRequest) -> String {
    req.headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string))
        .unwrap_or_default()
}

/// The name of Notebox's session cookie for this request.
pub fn session_cookie(req: &HttpRequest) -> &'static str {
    session_cookie_name(is_https(req))
}

/// Notebox's session cookie: `__Host-` under TLS (no notebook can set or shadow it there).
pub fn session_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-notebox_session"
    } else {
        "notebox_session"
    }
}

/// The login form's CSRF cookie (double submit): `__Host-` under TLS, so that no other
/// origin of the site (a notebook's subdomain) can plant one.
pub fn login_csrf_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-notebox_login_csrf"
    } else {
        "notebox_login_csrf"
    }
}

/// The path and query the browser asked for, to come back to after logging in.
pub fn here(req: &HttpRequest) -> String {
    match req.uri().path_and_query() {
        Some(pq) => pq.as_str().to_string(),
        None => "/".to_string(),
    }
}

/// The token in `Authorization: Bearer <t>` or `Authorization: token <t>`.
pub fn authorization_token(req: &HttpRequest) -> Option<String> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        Some(token.trim().to_string())
    } else {
        None
    }
}

/// Bytes that cannot stand in a query value as they are.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Bytes that cannot stand in one path segment as they are.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Bytes that cannot stand in a Location header (controls, spaces, non-ASCII).
const LOCATION: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`');

/// Percent-encodes a string for use in a query value.
pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// Percent-encodes one path segment (a token or id taken from the request's path).
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

/// A redirect target that is always a valid header value, whatever it was built from.
pub fn location(to: &str) -> String {
    percent_encoding::utf8_percent_encode(to, LOCATION).to_string()
}

/// An error with its causes, one after the other ("client error (Connect): tcp connect
/// error: Connection refused"): hyper's and rustls' errors say little on their own.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
