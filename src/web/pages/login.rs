//! The login page, logging in and out.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::auth::{secrets, AuthError};
use crate::error::{PageError, WebError};
use crate::web::extract::{session_from_request, SessionUser};
use crate::web::{safe_next, AppState};

use super::see_other;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
    /// (id, name) of each OpenID Connect provider: "Sign in with {name}".
    providers: Vec<(String, String)>,
    /// The LDAP directory could not be reached lately (the why is on the admin's page).
    directory_down: bool,
}

impl LoginPage {
    fn new(state: &AppState, csrf: String, next: String) -> LoginPage {
        LoginPage {
            csrf,
            next,
            username: String::new(),
            error: None,
            providers: state.oidc.list(),
            directory_down: state
                .accounts
                .ldap()
                .is_some_and(|l| l.recent_failure().is_some()),
        }
    }
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

pub use crate::http::is_https;

fn render_login(
    status: StatusCode,
    page: LoginPage,
    csrf_cookie: Option<Cookie<'static>>,
) -> Result<HttpResponse, PageError> {
    let body = page.render().map_err(WebError::internal)?;
    let mut res = HttpResponse::build(status);
    res.content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"));
    if let Some(c) = csrf_cookie {
        res.cookie(c);
    }
    Ok(res.body(body))
}

/// The pre-session CSRF token lives in its own cookie and is echoed by the form.
fn login_csrf(req: &HttpRequest) -> (String, Option<Cookie<'static>>) {
    let https = is_https(req);
    let name = crate::proxy::origin::login_csrf_cookie_name(https);
    if let Some(c) = req.cookie(name) {
        if c.value().len() >= 32 && c.value().len() <= 128 {
            return (c.value().to_string(), None);
        }
    }
    let token = secrets::random_secret(32);
    // `__Host-` cookies must have Path=/.
    let cookie = Cookie::build(name, token.clone())
        .path(if https { "/" } else { "/login" })
        .http_only(true)
        .secure(https)
        .same_site(SameSite::Lax)
        .finish();
    (token, Some(cookie))
}

pub async fn login_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, PageError> {
    let next = safe_next(query.next.as_deref());
    if session_from_request(&req).await?.is_some() {
        return Ok(see_other(&next));
    }
    let (csrf, cookie) = login_csrf(&req);
    render_login(StatusCode::OK, LoginPage::new(&state, csrf, next), cookie)
}

/// The login page again, with what went wrong.
pub(super) fn login_refused(
    req: &HttpRequest,
    state: &AppState,
    next: String,
    username: &str,
    e: AuthError,
) -> Result<HttpResponse, PageError> {
    let web_error = WebError::from(e);
    tracing::info!(user = %username, code = web_error.code, "login refused");
    let (csrf, cookie) = login_csrf(req);
    let mut page = LoginPage::new(state, csrf, next);
    page.username = username.to_string();
    page.error = Some(web_error.message.clone());
    let mut res = render_login(web_error.status, page, cookie)?;
    if let Some(secs) = web_error.retry_after {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
            res.headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, v);
        }
    }
    Ok(res)
}

/// Sends the browser on with a new session cookie.
pub(super) fn logged_in(
    req: &HttpRequest,
    state: &AppState,
    session: crate::auth::NewSession,
    next: &str,
) -> HttpResponse {
    tracing::info!(user = %session.user.username, source = %session.user.source, "logged in");
    let cookie = Cookie::build(crate::http::session_cookie(req), session.cookie_value)
        .path("/")
        .http_only(true)
        .secure(is_https(req))
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(
            state.config.auth.session_lifetime.as_secs() as i64,
        ))
        .finish();
    HttpResponse::SeeOther()
        .insert_header(("location", crate::web::location(next)))
        .insert_header(("cache-control", "no-store"))
        .cookie(cookie)
        .finish()
}

pub async fn login_submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, PageError> {
    // Its `csrf` field was checked against the login cookie (web::middleware::csrf).
    let form = form.into_inner();
    let next = safe_next(form.next.as_deref());
    let address = crate::web::extract::client_address(&req, &state.config.auth.trusted_proxies);
    match state
        .accounts
        .login(&form.username, &form.password, &address)
        .await
    {
        Ok(session) => Ok(logged_in(&req, &state, session, &next)),
        Err(e @ (AuthError::Internal(_) | AuthError::Db(_))) => Err(e.into()),
        Err(e) => {
            let name: String = form.username.trim().chars().take(64).collect();
            login_refused(&req, &state, next, &name, e)
        }
    }
}

pub async fn logout(
    req: HttpRequest,
    session: SessionUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    state.accounts.logout(&session.cookie).await?;
    // Signed in through a provider with an end-session endpoint: offer to sign out there.
    let provider = session.user.source.strip_prefix("oidc:").map(String::from);
    let end_session = match &provider {
        Some(id) => state.oidc.end_session_url(id).await,
        None => None,
    };
    let mut gone = Cookie::build(crate::http::session_cookie(&req), "")
        .path("/")
        .http_only(true)
        .secure(is_https(&req))
        .same_site(SameSite::Lax)
        .finish();
    gone.make_removal();
    if let (Some(id), Some(url)) = (provider, end_session) {
        let page = SignedOut {
            provider: crate::auth::directory::source_name(&state.config, &format!("oidc:{id}")),
            end_session: url,
        };
        let body = page.render().map_err(WebError::internal)?;
        return Ok(HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .cookie(gone)
            .body(body));
    }
    Ok(HttpResponse::SeeOther()
        .insert_header(("location", "/login"))
        .cookie(gone)
        .finish())
}

#[derive(Template)]
#[template(path = "signed_out.html")]
struct SignedOut {
    provider: String,
    end_session: String,
}
