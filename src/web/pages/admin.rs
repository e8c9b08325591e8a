//! Admin pages: add users, reset passwords, grant admin, disable accounts.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::auth::{self, User};
use crate::error::{PageError, WebError};
use crate::web::extract::AdminUser;
use crate::web::views::{datetime, Chrome};
use crate::web::AppState;

use super::{html, see_other};

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    notice: Option<String>,
    error: Option<String>,
    form_username: String,
    me: i64,
    /// Notebook isolation: (weaker mode?, what it means).
    isolation: (bool, String),
    /// The notebook port range is too small for the members and their limit.
    port_warning: Option<String>,
    /// Directory members waiting for an admin to link their name.
    link_requests: usize,
}

struct UserRow {
    id: i64,
    /// Monthly GPU-hour budget, empty for none.
    budget: String,
    max_gpus: String,
    username: String,
    is_admin: bool,
    disabled: bool,
    created: String,
    /// "local", "LDAP" or the provider's name.
    source: String,
    from_directory: bool,
    display_name: String,
    /// Their groups' ids, comma-separated.
    groups: String,
    /// Why the directory disabled them, if it did.
    disabled_reason: String,
    /// What an empty GPU limit or budget means for them (their groups', or the lab's).
    default_gpus: i64,
    default_budget: String,
    /// Their storage as last measured, against their quota.
    storage: crate::web::views::storage::StorageView,
}

impl UserRow {
    fn new(
        u: User,
        config: &crate::config::Config,
        storage: Option<&crate::db::storage::StorageUsageRow>,
    ) -> UserRow {
        let storage = crate::web::views::storage::StorageView::new(
            &crate::storage::StorageStatus::of(config, &u, storage),
            crate::clock::now(),
        );
        let groups = crate::groups::groups_of(config, &u)
            .iter()
            .map(|g| g.id.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let defaults = crate::groups::policy(
            config,
            &User {
                max_gpus: None,
                ..u.clone()
            },
        );
        let source = match u.source.as_str() {
            "local" => "local".to_string(),
            "ldap" => "LDAP".to_string(),
            other => auth::directory::source_name(config, other),
        };
        UserRow {
            id: u.id,
            budget: String::new(),
            max_gpus: u.max_gpus.map(|m| m.to_string()).unwrap_or_default(),
            from_directory: u.from_directory(),
            display_name: u.display_name,
            username: u.username,
            is_admin: u.is_admin,
            disabled: u.disabled,
            created: datetime(u.created_at),
            source,
            groups,
            disabled_reason: String::new(),
            default_gpus: defaults.max_gpus,
            default_budget: defaults
                .gpu_hours_budget
                .map_or_else(|| "none".to_string(), |b| b.to_string()),
            storage,
        }
    }
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    done: Option<String>,
    user: Option<String>,
}

/// The users page again with 400 and what to fix (a form's value was refused).
async fn form_error(
    admin: &AdminUser,
    state: &AppState,
    message: String,
) -> Result<HttpResponse, PageError> {
    render_users(
        admin,
        state,
        StatusCode::BAD_REQUEST,
        None,
        Some(message),
        String::new(),
    )
    .await
}

async fn render_users(
    admin: &AdminUser,
    state: &AppState,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
    form_username: String,
) -> Result<HttpResponse, PageError> {
    let users = state.accounts.list_users().await?;
    let budgets = state.usage.budgets().await?;
    let storage = crate::storage::measurements(&state.db).await?;
    let mut reasons = state.accounts.directory_disabled().await?;
    let link_requests = state.accounts.link_requests().await?.len();
    let page = UsersPage {
        chrome: Chrome::for_admin(&admin.0, &state.disk),
        users: users
            .into_iter()
            .map(|u| {
                let budget = budgets
                    .get(&u.id)
                    .map(|b| b.to_string())
                    .unwrap_or_default();
                let disabled_reason = reasons.remove(&u.id).unwrap_or_default();
                let id = u.id;
                UserRow {
                    budget,
                    disabled_reason,
                    ..UserRow::new(u, &state.config, storage.get(&id))
                }
            })
            .collect(),
        notice,
        error,
        form_username,
        me: admin.0.user.id,
        isolation: isolation(state),
        port_warning: state.sites.port_capacity_warning().await,
        link_requests,
    };
    html(status, page)
}

pub async fn admin_home(_admin: AdminUser) -> HttpResponse {
    see_other("/admin/users")
}

pub async fn users_page(
    admin: AdminUser,
    state: web::Data<AppState>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, PageError> {
    let who = q.user.clone().unwrap_or_default();
    let notice = q.done.as_deref().and_then(|done| match done {
        "added" => Some(format!("Added {who}. Give them their password in person.")),
        "password" => Some(format!(
            "Set a new password for {who}; their sessions were ended."
        )),
        "admin-on" => Some(format!("{who} is now an admin.")),
        "admin-off" => Some(format!("{who} is no longer an admin.")),
        "disabled" => Some(format!("Disabled {who}; they were logged out everywhere.")),
        "enabled" => Some(format!("Enabled {who}.")),
        "gpu-limit" => Some(format!("Changed the GPU limit of {who}.")),
        "gpu-budget" => Some(format!("Changed the monthly GPU-hour budget of {who}.")),
        _ => None,
    });
    render_users(&admin, &state, StatusCode::OK, notice, None, String::new()).await
}

#[derive(Deserialize)]
pub struct AddUserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    admin: Option<String>,
}

/// Domain refusals (bad name, weak password, last admin) re-render the page with the
/// message; anything else is an error page.
async fn refused_or_error(
    admin: &AdminUser,
    state: &AppState,
    e: auth::AuthError,
    form_username: String,
) -> Result<HttpResponse, PageError> {
    let e = WebError::from(e);
    if e.status.is_client_error() {
        render_users(admin, state, e.status, None, Some(e.message), form_username).await
    } else {
        Err(e.into())
    }
}

pub async fn add_user(
    admin: AdminUser,
    state: web::Data<AppState>,
    form: web::Form<AddUserForm>,
) -> Result<HttpResponse, PageError> {
    let is_admin = form.admin.is_some();
    match state
        .accounts
        .add_user(&form.username, &form.password, is_admin)
        .await
    {
        Ok(user) => {
            tracing::info!(by = %admin.0.user.username, user = %user.username, is_admin, "user added");
            Ok(see_other(&format!(
                "/admin/users?done=added&user={}",
                user.username
            )))
        }
        Err(e) => refused_or_error(&admin, &state, e, form.username.trim().to_string()).await,
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    password: String,
}

pub async fn reset_password(
    admin: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, PageError> {
    let user = state.accounts.user_by_id(path.into_inner()).await?;
    if user.from_directory() {
        let message = format!(
            "{}'s password is kept by {}; change it there.",
            user.username,
            auth::directory::source_name(&state.config, &user.source)
        );
        return form_error(&admin, &state, message).await;
    }
    let keep = (user.id == admin.0.user.id).then_some(admin.0.cookie.as_str());
    match state
        .accounts
        .set_password(user.id, &form.password, keep)
        .await
    {
        Ok(()) => {
            auth::forget_initial_password(&state.config.data_dir, &user.username);
            tracing::info!(by = %admin.0.user.username, user = %user.username, "password reset");
            Ok(see_other(&format!(
                "/admin/users?done=password&user={}",
                user.username
            )))
        }
        Err(e) => refused_or_error(&admin, &state, e, String::new()).await,
    }
}

#[derive(Deserialize)]
pub struct FlagForm {
    /// "on" or "off"
    #[serde(default)]
    value: String,
}

fn flag(form: &FlagForm) -> Result<bool, WebError> {
    match form.value.as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(WebError::bad_request(format!(
            "value must be 'on' or 'off', not '{other}'"
        ))),
    }
}

pub async fn set_admin(
    admin: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    form: web::Form<FlagForm>,
) -> Result<HttpResponse, PageError> {
    let on = flag(&form)?;
    let user = state.accounts.user_by_id(path.into_inner()).await?;
    match state.accounts.set_admin(user.id, on).await {
        Ok(()) => {
            let done = if on { "admin-on" } else { "admin-off" };
            Ok(see_other(&format!(
                "/admin/users?done={done}&user={}",
                user.username
            )))
        }
        Err(e) => refused_or_error(&admin, &state, e, String::new()).await,
    }
}

pub async fn set_disabled(
    admin: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    form: web::Form<FlagForm>,
) -> Result<HttpResponse, PageError> {
    let on = flag(&form)?;
    let user = state.accounts.user_by_id(path.into_inner()).await?;
    match state.accounts.set_disabled(user.id, on).await {
        Ok(()) => {
            if on {
                // A disabled member's notebooks stop; their shares are hidden by the
                // account flag itself.
                let stopped = state
                    .notebooks
                    .stop_all_notebooks_of(user.id, "Stopping: the account was disabled")
                    .await?;
                tracing::info!(by = %admin.0.user.username, user = %user.username, stopped, "account disabled");
            }
            let done = if on { "disabled" } else { "enabled" };
            Ok(see_other(&format!(
                "/admin/users?done={done}&user={}",
                user.username
            )))
        }
        Err(e) => refused_or_error(&admin, &state, e, String::new()).await,
    }
}

#[derive(Deserialize)]
pub struct GpuLimitForm {
    /// A number, or empty for the config's default.
    #[serde(default)]
    limit: String,
}

pub async fn set_gpu_limit(
    admin: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    form: web::Form<GpuLimitForm>,
) -> Result<HttpResponse, PageError> {
    let user = state.accounts.user_by_id(path.into_inner()).await?;
    let Ok(limit) = optional_number(&form.limit, |v: &i64| (0..=1024).contains(v)) else {
        let message = format!(
            "The GPU limit must be a number from 0 to 1024, or empty for the default; got '{}'.",
            form.limit.trim()
        );
        return form_error(&admin, &state, message).await;
    };
    state.accounts.set_max_gpus(user.id, limit).await?;
    Ok(see_other(&format!(
        "/admin/users?done=gpu-limit&user={}",
        user.username
    )))
}

/// A form's optional number: empty is None; Err when it does not parse or `ok` refuses it.
fn optional_number<T: std::str::FromStr>(
    text: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<Option<T>, ()> {
    match text.trim() {
        "" => Ok(None),
        n => n.parse::<T>().ok().filter(|v| ok(v)).map(Some).ok_or(()),
    }
}

#[derive(Deserialize)]
pub struct GpuBudgetForm {
    /// GPU-hours per month, or empty for none.
    #[serde(default)]
    hours: String,
}

pub async fn set_gpu_budget(
    admin: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    form: web::Form<GpuBudgetForm>,
) -> Result<HttpResponse, PageError> {
    let user = state.accounts.user_by_id(path.into_inner()).await?;
    // What a budget may be is the domain's rule (UsageReports::set_budget); the form only
    // has to be a number.
    let set = match optional_number(&form.hours, |_: &f64| true) {
        Ok(hours) => state.usage.set_budget(user.id, hours).await,
        Err(()) => Err(crate::usage::UsageError::Invalid(format!(
            "The budget must be a number of GPU-hours per month (like 40 or 12.5), or empty for none; got '{}'.",
            form.hours.trim()
        ))),
    };
    if let Err(crate::usage::UsageError::Invalid(message)) = set {
        return form_error(&admin, &state, message).await;
    }
    set?;
    Ok(see_other(&format!(
        "/admin/users?done=gpu-budget&user={}",
        user.username
    )))
}

#[derive(Template)]
#[template(path = "admin_notebooks.html")]
struct NotebooksPage {
    chrome: Chrome,
    notebooks: Vec<crate::notebooks::Notebook>,
    notice: Option<String>,
    /// Notebook isolation: (weaker mode?, what it means).
    isolation: (bool, String),
    /// The notebook port range is too small for the members and their limit.
    port_warning: Option<String>,
}

/// Every running notebook with what keeps it alive, and the idle-reclaim exemption.
pub async fn notebooks_page(
    admin: AdminUser,
    state: web::Data<AppState>,
    q: web::Query<NoticeQuery>,
) -> Result<HttpResponse, PageError> {
    let notebooks = state.notebooks.running_notebooks().await?;
    let notice = match q.done.as_deref() {
        Some("exempt") => Some("The notebook is exempt from idle reclaim.".to_string()),
        Some("unexempt") => {
            Some("The notebook follows its machine type's idle policy again.".to_string())
        }
        _ => None,
    };
    html(
        StatusCode::OK,
        NotebooksPage {
            chrome: Chrome::for_admin(&admin.0, &state.disk),
            notebooks,
            notice,
            isolation: isolation(&state),
            port_warning: state.sites.port_capacity_warning().await,
        },
    )
}

fn isolation(state: &AppState) -> (bool, String) {
    let n = &state.config.notebooks;
    crate::proxy::origin::isolation_note(n.origin, n.origin_ports, &n.origin_domain)
}

pub async fn set_idle_exempt(
    // Only admins get here; nothing else is needed of them.
    _admin: AdminUser,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<FlagForm>,
) -> Result<HttpResponse, PageError> {
    let exempt = flag(&form)?;
    state.notebooks.set_idle_exempt(&id, exempt).await?;
    Ok(see_other(if exempt {
        "/admin/notebooks?done=exempt"
    } else {
        "/admin/notebooks?done=unexempt"
    }))
}

#[derive(Template)]
#[template(path = "admin_environments.html")]
struct EnvironmentsDiskPage {
    chrome: Chrome,
    report: crate::environments::DiskReport,
}

/// Every member's environments with their sizes, and the disk policy in force.
pub async fn environments_page(
    admin: AdminUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let report = state.environments.disk_report().await?;
    html(
        StatusCode::OK,
        EnvironmentsDiskPage {
            chrome: Chrome::for_admin(&admin.0, &state.disk),
            report,
        },
    )
}
