//! A member's own settings: password and personal access tokens.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::auth::{self, TokenInfo};
use crate::error::{PageError, WebError};
use crate::web::extract::SessionUser;
use crate::web::views::{datetime, relative_time, Chrome};
use crate::web::AppState;

use super::{html, see_other};

#[derive(Template)]
#[template(path = "settings_account.html")]
struct AccountPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    display_name: String,
    /// Where the account comes from, in words; its password is kept there.
    source: String,
    from_directory: bool,
    groups: String,
    /// "GPU limit 2, from group phd", one line each.
    policy: Vec<String>,
}

impl AccountPage {
    fn new(
        session: &SessionUser,
        state: &AppState,
        notice: Option<String>,
        error: Option<String>,
    ) -> AccountPage {
        let user = &session.user;
        let policy = crate::groups::policy(&state.config, user);
        AccountPage {
            chrome: Chrome::new(session, "settings"),
            notice,
            error,
            display_name: user.display_name.clone(),
            source: crate::auth::directory::source_name(&state.config, &user.source),
            from_directory: user.from_directory(),
            groups: policy.groups.join(", "),
            policy: policy.explain(&state.config),
        }
    }
}

#[derive(Template)]
#[template(path = "settings_tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<TokenRow>,
    new_token: Option<String>,
    new_token_name: String,
    notice: Option<String>,
    error: Option<String>,
    api_base: String,
}

struct TokenRow {
    id: i64,
    name: String,
    prefix: String,
    created: String,
    last_used: String,
}

impl From<TokenInfo> for TokenRow {
    fn from(t: TokenInfo) -> TokenRow {
        TokenRow {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            created: datetime(t.created_at),
            last_used: t
                .last_used_at
                .map(relative_time)
                .unwrap_or_else(|| "never".into()),
        }
    }
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    done: Option<String>,
}

pub async fn account_page(
    session: SessionUser,
    state: web::Data<AppState>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, PageError> {
    let notice = match q.done.as_deref() {
        Some("password") => {
            Some("Your password was changed. Other browsers were logged out.".to_string())
        }
        _ => None,
    };
    html(
        StatusCode::OK,
        AccountPage::new(&session, &state, notice, None),
    )
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

pub async fn change_password(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, PageError> {
    let fail = |message: String| {
        html(
            StatusCode::BAD_REQUEST,
            AccountPage::new(&session, &state, None, Some(message)),
        )
    };
    if session.user.from_directory() {
        let message = format!(
            "Your password is kept by {}; change it there.",
            crate::auth::directory::source_name(&state.config, &session.user.source)
        );
        return fail(message);
    }
    if form.new != form.confirm {
        return fail("The new password and its confirmation differ; type them again.".into());
    }
    if let Err(e) = state
        .accounts
        .change_own_password(&session.user, &form.current, &form.new, &session.cookie)
        .await
    {
        let e = WebError::from(e);
        if e.status == StatusCode::BAD_REQUEST {
            return fail(e.message);
        }
        return Err(e.into());
    }
    auth::forget_initial_password(&state.config.data_dir, &session.user.username);
    Ok(see_other("/settings?done=password"))
}

async fn tokens_view(
    session: &SessionUser,
    state: &AppState,
    new_token: Option<String>,
    new_token_name: String,
    notice: Option<String>,
    error: Option<String>,
) -> Result<TokensPage, PageError> {
    let tokens = state.accounts.list_tokens(session.user.id).await?;
    Ok(TokensPage {
        chrome: Chrome::new(session, "settings"),
        tokens: tokens.into_iter().map(TokenRow::from).collect(),
        new_token,
        new_token_name,
        notice,
        error,
        api_base: "/api/v1".into(),
    })
}

pub async fn tokens_page(
    session: SessionUser,
    state: web::Data<AppState>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, PageError> {
    let notice = match q.done.as_deref() {
        Some("revoked") => {
            Some("The token was revoked. Programs using it can no longer sign in.".to_string())
        }
        _ => None,
    };
    let page = tokens_view(&session, &state, None, String::new(), notice, None).await?;
    html(StatusCode::OK, page)
}

#[derive(Deserialize)]
pub struct NewTokenForm {
    #[serde(default)]
    name: String,
}

pub async fn create_token(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<NewTokenForm>,
) -> Result<HttpResponse, PageError> {
    match state
        .accounts
        .create_token(session.user.id, &form.name)
        .await
    {
        Ok((token, info)) => {
            let page = tokens_view(&session, &state, Some(token), info.name, None, None).await?;
            html(StatusCode::OK, page)
        }
        Err(e) => {
            let e = WebError::from(e);
            if e.status != StatusCode::BAD_REQUEST {
                return Err(e.into());
            }
            let page = tokens_view(
                &session,
                &state,
                None,
                String::new(),
                None,
                Some(e.message.clone()),
            )
            .await?;
            html(StatusCode::BAD_REQUEST, page)
        }
    }
}

pub async fn revoke_token(
    session: SessionUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, PageError> {
    state
        .accounts
        .revoke_token(session.user.id, path.into_inner())
        .await?;
    Ok(see_other("/settings/tokens?done=revoked"))
}
