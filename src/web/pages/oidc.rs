//! "Sign in with …": the OpenID Connect redirect to the provider and its way back.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::auth::AuthError;
use crate::directory::DirectoryError;
use crate::error::PageError;
use crate::web::extract::session_from_request;
use crate::web::{safe_next, AppState};

use super::login::{is_https, logged_in, login_refused};

/// Binds a sign-in to the browser that started it (its `state` alone would let another
/// browser finish it: a login CSRF).
fn browser_cookie_name(https: bool) -> &'static str {
    if https {
        "__Secure-notebox_oidc"
    } else {
        "notebox_oidc"
    }
}

#[derive(Deserialize)]
pub struct BeginQuery {
    next: Option<String>,
}

/// Where the provider sends the browser back: `{public_url}/login/oidc/{id}/callback`, or
/// the request's own scheme and host.
fn redirect_uri(req: &HttpRequest, state: &AppState, id: &str) -> String {
    let base = match state.config.public_url.trim_end_matches('/') {
        "" => {
            let scheme = if is_https(req) { "https" } else { "http" };
            format!("{scheme}://{}", crate::http::request_host(req))
        }
        url => url.to_string(),
    };
    format!("{base}/login/oidc/{id}/callback")
}

pub async fn begin(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<BeginQuery>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let next = safe_next(query.next.as_deref());
    let redirect = redirect_uri(&req, &state, &id);
    let address = crate::web::extract::client_address(&req, &state.config.auth.trusted_proxies);
    match state.oidc.begin(&id, &redirect, &next, &address).await {
        Ok(started) => {
            let cookie = Cookie::build(browser_cookie_name(is_https(&req)), started.browser_secret)
                .path("/login/oidc")
                .http_only(true)
                .secure(is_https(&req))
                .same_site(SameSite::Lax)
                .max_age(actix_web::cookie::time::Duration::minutes(10))
                .finish();
            Ok(HttpResponse::SeeOther()
                .insert_header(("location", started.url))
                .insert_header(("cache-control", "no-store"))
                .cookie(cookie)
                .finish())
        }
        Err(e) => login_refused(&req, &state, next, "", signin_error(&state, &id, e)),
    }
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<CallbackQuery>,
) -> Result<HttpResponse, PageError> {
    let id = path.into_inner();
    let q = query.into_inner();
    let browser = req
        .cookie(browser_cookie_name(is_https(&req)))
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    let finished = match q.error {
        Some(error) => {
            let said: String = q
                .error_description
                .unwrap_or(error)
                .chars()
                .take(200)
                .collect();
            Err(DirectoryError::Refused(format!(
                "{} did not sign you in: {said}",
                provider_name(&state, &id)
            )))
        }
        None if q.code.is_empty()
            || q.state.is_empty()
            || q.state.len() > 200
            || q.code.len() > 2048 =>
        {
            Err(DirectoryError::Refused(
                "the provider's answer has no code or state".into(),
            ))
        }
        None => state.oidc.finish(&id, &q.state, &q.code, &browser).await,
    };
    let mut gone = Cookie::build(browser_cookie_name(is_https(&req)), "")
        .path("/login/oidc")
        .secure(is_https(&req))
        .finish();
    gone.make_removal();
    // Never replace the session of someone else logged in here (a sign-in someone else
    // started, finished in this browser, would log its owner out and them in).
    let finished = match (finished, session_from_request(&req).await?) {
        (Ok((identity, _)), Some(session)) if session.user.username != identity.username => {
            Err(DirectoryError::Refused(format!(
                "you are logged in here as {}; log out first, then sign in as {}",
                session.user.username, identity.username
            )))
        }
        (finished, _) => finished,
    };
    let mut res = match finished {
        Ok((identity, next)) => match state.accounts.directory_login(identity, None).await {
            Ok(session) => logged_in(&req, &state, session, &next),
            Err(e @ (AuthError::Internal(_) | AuthError::Db(_))) => return Err(e.into()),
            Err(e) => login_refused(&req, &state, "/".into(), "", e)?,
        },
        Err(e) => {
            tracing::warn!(provider = %id, error = %e, "OpenID Connect sign-in refused");
            login_refused(&req, &state, "/".into(), "", signin_error(&state, &id, e))?
        }
    };
    res.add_removal_cookie(&gone)
        .map_err(crate::error::WebError::internal)?;
    Ok(res)
}

fn provider_name(state: &AppState, id: &str) -> String {
    crate::auth::directory::source_name(&state.config, &format!("oidc:{id}"))
}

/// A sign-in that went wrong, as the login page says it.
fn signin_error(state: &AppState, id: &str, e: DirectoryError) -> AuthError {
    match e {
        DirectoryError::Unreachable(why) => {
            tracing::warn!(provider = %id, error = %why, "cannot reach the sign-in provider");
            AuthError::DirectoryUnreachable(format!(
                "cannot reach {} right now; local accounts can still log in",
                provider_name(state, id)
            ))
        }
        DirectoryError::Refused(why) => AuthError::Directory(format!("Sign-in refused: {why}")),
        DirectoryError::InvalidCredentials => AuthError::InvalidCredentials,
    }
}
