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
