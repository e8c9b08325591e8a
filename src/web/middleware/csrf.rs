//! CSRF, checked once for every request that could change something, before any handler.
//!
//! - A page form (any write outside `/api/` and `/nb/`) from a logged-in browser carries
//!   the session's token in its `csrf` field.
//! - The login form carries, in its `csrf` field, the pre-session token of its own cookie
//!   (there is no session yet).
//! - A JSON API write (`/api/…`) made with the session cookie carries the session's token
//!   in the `X-CSRF-Token` header.
//!
//! Exempt: reads (GET, HEAD, OPTIONS); API calls that send `Authorization` (a token, not a
//! cookie, so nothing a browser sends by itself); the notebook proxy (`/nb/…` and a
//! notebook's own subdomain, which check `Origin` themselves); requests without a session
//! (the handler sends them to the login page, or answers 401); and the admin pages for a
//! member who is not an admin (they answer 404, as if they did not exist). A refusal is
//! 403 with the same message as always; a form that cannot be read is the 400 its handler
//! would give.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut, Form};
use futures_util::Stream;
use serde::Deserialize;

use crate::auth::secrets;
use crate::error::{ApiError, PageError, WebError};
use crate::http::CSRF_HEADER;
use crate::web::extract::session_from_request;

/// Where a request's CSRF token must be, decided from its method, path and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfDuty {
    /// Nothing to check.
    Exempt,
    /// The login form: its `csrf` field equals the login cookie.
    LoginForm,
    /// A page form: its `csrf` field equals the session's token.
    SessionForm,
    /// A JSON API write with the session cookie: the `X-CSRF-Token` header equals it.
    SessionHeader,
}

/// What a request must carry. `bearer`: it sends `Authorization`; `notebook_host`: it is
/// addressed to a notebook's own subdomain.
pub fn csrf_duty(method: &Method, path: &str, bearer: bool, notebook_host: bool) -> CsrfDuty {
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if read || notebook_host || path.starts_with("/nb/") {
        CsrfDuty::Exempt
    } else if path.starts_with("/api/") {
        if bearer {
            CsrfDuty::Exempt
        } else {
            CsrfDuty::SessionHeader
        }
    } else if path == "/login" {
        CsrfDuty::LoginForm
    } else {
        CsrfDuty::SessionForm
    }
}

/// Refuses (403) a state-changing request whose CSRF token is missing or wrong; see the
/// module's comment for which requests carry which token.
pub async fn require_csrf(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let duty = csrf_duty(
        req.method(),
        req.path(),
        req.headers()
            .contains_key(actix_web::http::header::AUTHORIZATION),
        super::is_notebook_host(&req),
    );
    let refusal = match duty {
        CsrfDuty::Exempt => None,
        CsrfDuty::LoginForm => check_login_form(&mut req).await,
        CsrfDuty::SessionForm | CsrfDuty::SessionHeader => check_session(&mut req, duty).await,
    };
    match refusal {
        Some(error) => Ok(req.error_response(error)),
        None => Ok(next.call(req).await?.map_into_boxed_body()),
    }
}

/// The login form's field against the login cookie (`login.rs` sets both).
async fn check_login_form(req: &mut ServiceRequest) -> Option<actix_web::Error> {
    let sent = match read_form_token(req).await {
        Ok(sent) => sent,
        Err(unreadable) => return Some(unreadable),
    };
    let cookie = crate::http::login_csrf_cookie_name(crate::http::is_https(req.request()));
    let expected = req.cookie(cookie).map(|c| c.value().to_string());
    let matches =
        matches!(&expected, Some(e) if !sent.is_empty() && secrets::constant_time_eq(e, &sent));
    (!matches).then(|| PageError(WebError::csrf()).into())
}

/// A write from a logged-in browser: the session's token in the form or the header.
async fn check_session(req: &mut ServiceRequest, duty: CsrfDuty) -> Option<actix_web::Error> {
    let as_error = |e: WebError| -> actix_web::Error {
        match duty {
            CsrfDuty::SessionHeader => ApiError(e).into(),
            _ => PageError(e).into(),
        }
    };
    let session = match session_from_request(req.request()).await {
        Ok(Some(session)) => session,
        // Not logged in: the handler answers (login page, 401) without changing anything.
        Ok(None) => return None,
        Err(e) => return Some(as_error(e)),
    };
    if is_admin_page(req.path()) && !session.user.is_admin {
        return None;
    }
    let sent = match duty {
        CsrfDuty::SessionHeader => header_token(req),
        _ => match read_form_token(req).await {
            Ok(sent) => sent,
            Err(unreadable) => return Some(unreadable),
        },
    };
    let matches = secrets::constant_time_eq(&sent, &session.csrf);
    (!matches).then(|| as_error(WebError::csrf()))
}

/// The admin pages answer 404 to anyone but an admin, whatever the request carries.
fn is_admin_page(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

fn header_token(req: &ServiceRequest) -> String {
    req.headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The one field this layer reads from a form; handlers read the rest.
#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Reads the form's `csrf` field with the app's form rules (content type, size, encoding:
/// an unreadable form gets the 400 its handler would give) and hands the handler the
/// same body, byte for byte.
async fn read_form_token(req: &mut ServiceRequest) -> Result<String, actix_web::Error> {
    let copy = Rc::new(RefCell::new(BytesMut::new()));
    let (_, payload) = req.parts_mut();
    let recording = Recording {
        inner: payload.take(),
        copy: copy.clone(),
    };
    let recording: Pin<Box<dyn Stream<Item = _>>> = Box::pin(recording);
    req.set_payload(Payload::from(recording));
    let form = req.extract::<Form<CsrfField>>().await?;
    // The form was read to its end: the handler gets what was read.
    let body: Bytes = copy.take().freeze();
    req.set_payload(Payload::from(body));
    Ok(form.into_inner().csrf)
}

/// A request body that keeps a copy of every chunk read through it.
struct Recording {
    inner: Payload,
    copy: Rc<RefCell<BytesMut>>,
}

impl Stream for Recording {
    type Item = Result<Bytes, actix_web::error::PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            self.copy.borrow_mut().extend_from_slice(chunk);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests_carry_which_token() {
        use CsrfDuty::*;
        let post = Method::POST;
        for (method, path, bearer, notebook_host, duty) in [
            (Method::GET, "/settings/tokens", false, false, Exempt),
            (Method::HEAD, "/", false, false, Exempt),
            (Method::OPTIONS, "/api/v1/notebooks", false, false, Exempt),
            (post.clone(), "/settings/tokens", false, false, SessionForm),
            (post.clone(), "/settings/tokens", true, false, SessionForm),
            (post.clone(), "/logout", false, false, SessionForm),
            (post.clone(), "/s/tok/fork", false, false, SessionForm),
            (post.clone(), "/admin/users", false, false, SessionForm),
            (post.clone(), "/login", false, false, LoginForm),
            (post.clone(), "/login", true, false, LoginForm),
            (
                post.clone(),
                "/api/v1/notebooks",
                false,
                false,
                SessionHeader,
            ),
            (
                Method::DELETE,
                "/api/v1/shares/x",
                false,
                false,
                SessionHeader,
            ),
            (Method::PUT, "/api/v1/x", true, false, Exempt),
            (post.clone(), "/nb/abc/api/kernels", false, false, Exempt),
            (post.clone(), "/login", false, true, Exempt),
            (post.clone(), "/anything", false, true, Exempt),
        ] {
            assert_eq!(
                csrf_duty(&method, path, bearer, notebook_host),
                duty,
                "{method} {path} bearer={bearer} notebook_host={notebook_host}"
            );
        }
    }

    #[test]
    fn admin_pages_are_told_apart() {
        assert!(is_admin_page("/admin") && is_admin_page("/admin/users/3/admin"));
        assert!(
            !is_admin_page("/administrivia") && !is_admin_page("/api/v1/admin/users/1/gpu-budget")
        );
    }

    #[actix_web::test]
    async fn the_handler_reads_the_same_form() {
        let body = "csrf=t%2Bk&name=a+b";
        let mut req = actix_web::test::TestRequest::post()
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .set_payload(body)
            .to_srv_request();
        assert_eq!(read_form_token(&mut req).await.expect("form"), "t+k");
        let again = req.extract::<Bytes>().await.expect("body again");
        assert_eq!(again, body.as_bytes());
        let mut req = actix_web::test::TestRequest::post()
            .insert_header(("content-type", "application/json"))
            .set_payload("{}")
            .to_srv_request();
        assert!(read_form_token(&mut req).await.is_err(), "not a form");
    }
}
