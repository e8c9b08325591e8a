//! Who is asking: session cookies for pages, bearer tokens (or a session plus the CSRF
//! header) for the JSON API. The credentials are read and looked up by the proxy's
//! resolver (`proxy::Credentials`), the one place a credential becomes a user.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};

use crate::auth::User;
use crate::error::{ApiError, PageError, WebError};
use crate::proxy::{Credential, Credentials};

pub use crate::http::{authorization_token, here, CSRF_HEADER, LOGIN_CSRF_COOKIE, SESSION_COOKIE};

/// A logged-in browser.
pub struct SessionUser {
    pub user: User,
    pub csrf: String,
    pub cookie: String,
}

/// A logged-in admin; anyone else gets 404, as if the admin pages did not exist.
pub struct AdminUser(pub SessionUser);

/// A caller of the JSON API.
pub struct ApiUser {
    pub user: User,
}

fn credentials(req: &HttpRequest) -> Result<web::Data<Credentials>, WebError> {
    req.app_data::<web::Data<Credentials>>()
        .cloned()
        .ok_or_else(|| WebError::internal("application state missing"))
}

pub async fn session_from_request(req: &HttpRequest) -> Result<Option<SessionUser>, WebError> {
    let Some(value) = crate::proxy::session_cookie(req) else {
        return Ok(None);
    };
    let credentials = credentials(req)?;
    Ok(credentials
        .session(&value)
        .await?
        .map(|(user, csrf)| SessionUser {
            user,
            csrf,
            cookie: value,
        }))
}

/// The client's address: the peer's, unless the peer is a configured reverse proxy; then
/// the right-most address in `X-Forwarded-For` that is not itself a trusted proxy (the
/// left part of that header is whatever the client chose to send).
pub fn client_address(req: &HttpRequest, trusted_proxies: &[std::net::IpAddr]) -> String {
    let Some(peer) = req.peer_addr().map(|a| a.ip()) else {
        return String::new();
    };
    if !trusted_proxies.contains(&peer) {
        return peer.to_string();
    }
    let forwarded: Vec<std::net::IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .map(|a| a.parse::<std::net::IpAddr>())
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    forwarded
        .into_iter()
        .rev()
        .find(|a| !trusted_proxies.contains(a))
        .unwrap_or(peer)
        .to_string()
}

/// The client's address for an access decision: like `client_address`, but reading
/// `X-Forwarded-For` right to left and giving up (None) on anything it cannot parse, or
/// when a trusted proxy sent none, instead of falling back to the proxy's own address.
pub fn client_ip(
    req: &HttpRequest,
    trusted_proxies: &[std::net::IpAddr],
) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let entries: Vec<String> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| v.to_str().map(str::to_string))
        .collect::<Result<_, _>>()
        .ok()?;
    let mut last = None;
    for entry in entries.iter().flat_map(|v| v.split(',')).rev() {
        let ip = entry.trim().parse::<std::net::IpAddr>().ok()?;
        if !trusted_proxies.contains(&ip) {
            return Some(ip);
        }
        last = Some(ip);
    }
    last
}

impl FromRequest for SessionUser {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            session_from_request(&req)
                .await?
                .ok_or_else(|| PageError(WebError::login_required(&here(&req))))
        })
    }
}

impl FromRequest for AdminUser {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = SessionUser::from_request(req, payload);
        Box::pin(async move {
            let session = session.await?;
            if session.user.is_admin {
                Ok(AdminUser(session))
            } else {
                Err(PageError(WebError::not_found()))
            }
        })
    }
}

impl FromRequest for ApiUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let credentials = credentials(&req)?;
            let header_token =
                crate::proxy::header_token(&req).map_err(|_| WebError::unauthorized())?;
            if let Some(token) = header_token {
                return match credentials.lookup(&Credential::Token(token)).await? {
                    Some(user) => Ok(ApiUser { user }),
                    None => Err(ApiError(WebError::new(
                        actix_web::http::StatusCode::UNAUTHORIZED,
                        "invalid_token",
                        "The access token is not valid: it may have been revoked or mistyped.",
                    ))),
                };
            }
            // A session's writes carried their X-CSRF-Token (checked once, by the
            // middleware in `web::middleware::csrf`, before any handler).
            let session = session_from_request(&req)
                .await?
                .ok_or_else(WebError::unauthorized)?;
            Ok(ApiUser { user: session.user })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxy: std::net::IpAddr = "10.0.0.5".parse().expect("ip");
        let via_proxy = TestRequest::default()
            .peer_addr("10.0.0.5:4000".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "6.6.6.6, 192.0.2.7"))
            .to_http_request();
        // The right-most address the trusted proxy saw is the client; the left part is
        // whatever the client wrote.
        assert_eq!(client_address(&via_proxy, &[proxy]), "192.0.2.7");
        // Without the proxy configured, the header is ignored.
        assert_eq!(client_address(&via_proxy, &[]), "10.0.0.5");
        let direct = TestRequest::default()
            .peer_addr("192.0.2.9:4000".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "1.2.3.4"))
            .to_http_request();
        assert_eq!(client_address(&direct, &[proxy]), "192.0.2.9");
        let garbage = TestRequest::default()
            .peer_addr("10.0.0.5:4000".parse().expect("addr"))
            .insert_header(("x-forwarded-for", "not-an-ip"))
            .to_http_request();
        assert_eq!(client_address(&garbage, &[proxy]), "10.0.0.5");
    }
}
