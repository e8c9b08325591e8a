//! Variables & secrets, and private registries: the API (`/api/v1/secrets`,
//! `/api/v1/registries`) and the settings pages. Values of secrets and registry passwords
//! go in, never out.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::model::{wire, Scope};
use crate::secrets::{NewRegistry, NewVariable, RegistryInfo, VariableInfo};
use crate::web::extract::ApiUser;
use crate::web::AppState;

fn variable_wire(v: VariableInfo) -> wire::Variable {
    wire::Variable {
        name: v.name,
        secret: v.secret,
        scope: v.scope,
        value: v.value,
        updated_at: rfc3339(v.updated_at),
    }
}

fn registry_wire(r: RegistryInfo) -> wire::Registry {
    wire::Registry {
        host: r.host,
        username: r.username,
        configured: true,
        scope: r.scope,
        updated_at: rfc3339(r.updated_at),
    }
}

/// No cache may keep an answer about secrets.
fn no_store(status: StatusCode) -> actix_web::HttpResponseBuilder {
    let mut r = HttpResponse::build(status);
    r.insert_header(("cache-control", "no-store"));
    r
}

// ---- variables ----

pub async fn list_variables_api(
    caller: ApiUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let secrets = state.secrets.list_variables(&caller.user).await?;
    Ok(no_store(StatusCode::OK).json(wire::VariableList {
        secrets: secrets.into_iter().map(variable_wire).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutVariableBody {
    value: String,
    /// Absent: secret (write-only), the safer guess.
    secret: Option<bool>,
    scope: Option<Scope>,
}

pub async fn put_variable_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Json<PutVariableBody>,
) -> Result<HttpResponse, ApiError> {
    let saved = state
        .secrets
        .put_variable(
            &caller.user,
            NewVariable {
                name: &name,
                value: &body.value,
                secret: body.secret.unwrap_or(true),
                scope: body.scope.unwrap_or(Scope::Member),
            },
        )
        .await?;
    Ok(no_store(StatusCode::OK).json(variable_wire(saved)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    scope: Option<Scope>,
}

pub async fn delete_variable_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    name: web::Path<String>,
    q: web::Query<ScopeQuery>,
) -> Result<HttpResponse, ApiError> {
    state
        .secrets
        .delete_variable(&caller.user, &name, q.scope.unwrap_or(Scope::Member))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- registries ----

pub async fn list_registries_api(
    caller: ApiUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let registries = state.secrets.list_registries(&caller.user).await?;
    Ok(no_store(StatusCode::OK).json(
        registries
            .into_iter()
            .map(registry_wire)
            .collect::<Vec<_>>(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRegistryBody {
    host: String,
    username: String,
    password: String,
    scope: Option<Scope>,
}

pub async fn add_registry_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    body: web::Json<AddRegistryBody>,
) -> Result<HttpResponse, ApiError> {
    let saved = state
        .secrets
        .add_registry(
            &caller.user,
            NewRegistry {
                host: &body.host,
                username: &body.username,
                password: &body.password,
                scope: body.scope.unwrap_or(Scope::Member),
            },
        )
        .await?;
    Ok(no_store(StatusCode::CREATED).json(registry_wire(saved)))
}

pub async fn remove_registry_api(
    caller: ApiUser,
    state: web::Data<AppState>,
    host: web::Path<String>,
    q: web::Query<ScopeQuery>,
) -> Result<HttpResponse, ApiError> {
    state
        .secrets
        .remove_registry(&caller.user, &host, q.scope.unwrap_or(Scope::Member))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- pages ----

use askama::Template;

use crate::error::{PageError, WebError};
use crate::web::extract::SessionUser;
use crate::web::views::{relative_time, Chrome};

use super::{html, see_other};

/// A variable as a row of the settings page: a secret's value is only "set".
struct VariableView {
    name: String,
    secret: bool,
    value: String,
    scope: &'static str,
    updated: String,
}

impl From<VariableInfo> for VariableView {
    fn from(v: VariableInfo) -> VariableView {
        VariableView {
            name: v.name,
            secret: v.secret,
            value: v.value.unwrap_or_default(),
            scope: v.scope.as_str(),
            updated: relative_time(v.updated_at),
        }
    }
}

#[derive(Template)]
#[template(path = "settings_variables.html")]
struct VariablesPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    own: Vec<VariableView>,
    lab: Vec<VariableView>,
    /// Running notebooks started before the last change: (id, name).
    older: Vec<(String, String)>,
    /// The name typed in the form that was refused (its value is never sent back).
    form_name: String,
    max_value_bytes: usize,
}

async fn variables_view(
    session: &SessionUser,
    state: &AppState,
    notice: Option<String>,
    error: Option<String>,
    form_name: String,
) -> Result<VariablesPage, PageError> {
    let all = state.secrets.list_variables(&session.user).await?;
    let older = state
        .secrets
        .notebooks_with_older_variables(&session.user)
        .await?;
    let (own, lab): (Vec<_>, Vec<_>) = all.into_iter().partition(|v| v.scope == Scope::Member);
    Ok(VariablesPage {
        chrome: Chrome::new(session, "settings"),
        notice,
        error,
        own: own.into_iter().map(VariableView::from).collect(),
        lab: lab.into_iter().map(VariableView::from).collect(),
        older,
        form_name,
        max_value_bytes: crate::secrets::MAX_VALUE_BYTES,
    })
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

pub async fn variables_page(
    session: SessionUser,
    state: web::Data<AppState>,
    q: web::Query<DoneQuery>,
) -> Result<HttpResponse, PageError> {
    let notice = match q.done.as_deref() {
        Some("saved") => Some(
            "Saved. Notebooks get it when they next start; running ones keep what they have."
                .to_string(),
        ),
        Some("deleted") => {
            Some("Deleted. Running notebooks keep it until they are restarted.".to_string())
        }
        _ => None,
    };
    let page = variables_view(&session, &state, notice, None, String::new()).await?;
    html(StatusCode::OK, page)
}

fn scope_from_form(scope: Option<&str>) -> Result<Scope, WebError> {
    match scope.filter(|s| !s.is_empty()) {
        None => Ok(Scope::Member),
        Some(s) => Scope::parse(s).ok_or_else(|| {
            WebError::bad_request(format!("Unknown scope {s:?}: choose member or lab."))
        }),
    }
}

#[derive(Deserialize)]
pub struct VariableForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
    secret: Option<String>,
    scope: Option<String>,
}

/// A refusal the page shows next to the form (bad input, lab-wide for a member, a
/// limit); anything else is an error page.
fn form_refusal(e: WebError) -> Result<WebError, PageError> {
    match e.status {
        StatusCode::BAD_REQUEST
        | StatusCode::FORBIDDEN
        | StatusCode::CONFLICT
        | StatusCode::NOT_FOUND => Ok(e),
        _ => Err(e.into()),
    }
}

pub async fn save_variable(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<VariableForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    // Text areas send CRLF line ends; an environment variable wants what was meant.
    let value = form.value.replace("\r\n", "\n");
    let result = match scope_from_form(form.scope.as_deref()) {
        Ok(scope) => state
            .secrets
            .put_variable(
                &session.user,
                NewVariable {
                    name: form.name.trim(),
                    value: &value,
                    secret: form.secret.is_some(),
                    scope,
                },
            )
            .await
            .map_err(WebError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(see_other("/settings/variables?done=saved")),
        Err(e) => {
            let e = form_refusal(e)?;
            let page = variables_view(
                &session,
                &state,
                None,
                Some(e.message.clone()),
                form.name.chars().take(128).collect(),
            )
            .await?;
            html(e.status, page)
        }
    }
}

#[derive(Deserialize)]
pub struct DeleteVariableForm {
    #[serde(default)]
    name: String,
    scope: Option<String>,
}

pub async fn delete_variable(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<DeleteVariableForm>,
) -> Result<HttpResponse, PageError> {
    let scope = scope_from_form(form.scope.as_deref())?;
    state
        .secrets
        .delete_variable(&session.user, &form.name, scope)
        .await?;
    Ok(see_other("/settings/variables?done=deleted"))
}

struct RegistryView {
    host: String,
    username: String,
    scope: &'static str,
    updated: String,
}

#[derive(Template)]
#[template(path = "settings_registries.html")]
struct RegistriesPage {
    chrome: Chrome,
    notice: Option<String>,
    error: Option<String>,
    own: Vec<RegistryView>,
    lab: Vec<RegistryView>,
    form_host: String,
    form_username: String,
}

async fn registries_view(
    session: &SessionUser,
    state: &AppState,
    notice: Option<String>,
    error: Option<String>,
    form: (String, String),
) -> Result<RegistriesPage, PageError> {
    let all = state.secrets.list_registries(&session.user).await?;
    let view = |r: RegistryInfo| RegistryView {
        host: r.host,
        username: r.username,
        scope: r.scope.as_str(),
        updated: relative_time(r.updated_at),
    };
    let (own, lab): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r.scope == Scope::Member);
    Ok(RegistriesPage {
        chrome: Chrome::new(session, "settings"),
        notice,
        error,
        own: own.into_iter().map(view).collect(),
        lab: lab.into_iter().map(view).collect(),
        form_host: form.0,
        form_username: form.1,
    })
}

pub async fn registries_page(
    session: SessionUser,
    state: web::Data<AppState>,
    q: web::Query<DoneQuery>,
) -> Result<HttpResponse, PageError> {
    let notice = match q.done.as_deref() {
        Some("saved") => {
            Some("Saved. The next pull from that registry logs in with it.".to_string())
        }
        Some("removed") => Some("Removed.".to_string()),
        _ => None,
    };
    let page = registries_view(&session, &state, notice, None, Default::default()).await?;
    html(StatusCode::OK, page)
}

#[derive(Deserialize)]
pub struct RegistryForm {
    #[serde(default)]
    host: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    scope: Option<String>,
}

pub async fn save_registry(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<RegistryForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let result = match scope_from_form(form.scope.as_deref()) {
        Ok(scope) => state
            .secrets
            .add_registry(
                &session.user,
                NewRegistry {
                    host: &form.host,
                    username: &form.username,
                    password: &form.password,
                    scope,
                },
            )
            .await
            .map_err(WebError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(see_other("/settings/registries?done=saved")),
        Err(e) => {
            let e = form_refusal(e)?;
            let typed = (
                form.host.chars().take(256).collect(),
                form.username.chars().take(256).collect(),
            );
            let page =
                registries_view(&session, &state, None, Some(e.message.clone()), typed).await?;
            html(e.status, page)
        }
    }
}

#[derive(Deserialize)]
pub struct RemoveRegistryForm {
    #[serde(default)]
    host: String,
    scope: Option<String>,
}

pub async fn remove_registry(
    session: SessionUser,
    state: web::Data<AppState>,
    form: web::Form<RemoveRegistryForm>,
) -> Result<HttpResponse, PageError> {
    let scope = scope_from_form(form.scope.as_deref())?;
    state
        .secrets
        .remove_registry(&session.user, &form.host, scope)
        .await?;
    Ok(see_other("/settings/registries?done=removed"))
}
