//! The admin's directory page: the configured directories, the groups and the policy they
//! carry, "test a login" (what would this user get), and link requests.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::auth::AuthError;
use crate::error::{PageError, WebError};
use crate::web::extract::AdminUser;
use crate::web::views::{datetime, Chrome};
use crate::web::AppState;

use super::{html, see_other};

#[derive(Template)]
#[template(path = "admin_directory.html")]
struct DirectoryPage {
    chrome: Chrome,
    /// "ldaps://… (search under …)" or None.
    ldap: Option<String>,
    /// Why the directory could not be reached lately, if it could not.
    ldap_failure: Option<String>,
    /// (id, name, issuer) of each OIDC provider.
    providers: Vec<(String, String, String)>,
    refresh: String,
    groups: Vec<GroupRow>,
    links: Vec<LinkRow>,
    test_username: String,
    test: Option<TestResult>,
    notice: Option<String>,
    error: Option<String>,
}

struct GroupRow {
    id: String,
    directory: String,
    members: String,
    machines: String,
    max_gpus: String,
    budget: String,
    folder: String,
}

struct LinkRow {
    username: String,
    /// What the account of that name is now ("local", "LDAP", a provider's name).
    account_source: String,
    source: String,
    source_name: String,
    display_name: String,
    external_id: String,
    /// The LDAP DN or OIDC subject.
    entry: String,
    when: String,
}

/// What a login of the tested user would give them.
struct TestResult {
    found: bool,
    username: String,
    dn: String,
    display_name: String,
    email: String,
    directory_groups: Vec<String>,
    allowed: Result<(), String>,
    admin: String,
    groups: String,
    policy: Vec<String>,
    account: String,
}

#[derive(Deserialize)]
pub struct DirectoryQuery {
    #[serde(default)]
    test: String,
    done: Option<String>,
    user: Option<String>,
}

fn group_rows(config: &crate::config::Config) -> Vec<GroupRow> {
    let or_dash = |s: String| if s.is_empty() { "—".to_string() } else { s };
    config
        .groups
        .iter()
        .map(|g| GroupRow {
            id: g.id.clone(),
            directory: or_dash(g.directory.join(", ")),
            members: or_dash(g.members.join(", ")),
            machines: if g.machines.is_empty() {
                "all".into()
            } else {
                g.machines.join(", ")
            },
            max_gpus: g.max_gpus.map_or("lab default".into(), |n| n.to_string()),
            budget: g.gpu_hours_budget.map_or("—".into(), |b| b.to_string()),
            folder: match (g.folder, g.folder_others) {
                (false, _) => "—".into(),
                (true, crate::config::FolderOthers::None) => {
                    format!("/shared/{} (members only)", g.id)
                }
                (true, crate::config::FolderOthers::Read) => {
                    format!("/shared/{} (others read it)", g.id)
                }
            },
        })
        .collect()
}

async fn test_login(state: &AppState, username: &str) -> Result<Option<TestResult>, AuthError> {
    if username.trim().is_empty() {
        return Ok(None);
    }
    let config = &state.config;
    let Some(preview) = state.accounts.preview_login(username).await? else {
        return Ok(Some(TestResult {
            found: false,
            username: username.trim().to_lowercase(),
            dn: String::new(),
            display_name: String::new(),
            email: String::new(),
            directory_groups: Vec::new(),
            allowed: Err("the directory has no such member".into()),
            admin: String::new(),
            groups: String::new(),
            policy: Vec::new(),
            account: String::new(),
        }));
    };
    let policy = &preview.policy;
    let account = match &preview.account {
        None => "none yet: made at their first login".to_string(),
        Some(u) if u.source != preview.identity.source => format!(
            "'{}' is a {} account: their login is refused until you link it",
            u.username, u.source
        ),
        Some(u) if u.disabled => format!("{} (disabled)", u.username),
        Some(u) => u.username.clone(),
    };
    Ok(Some(TestResult {
        found: true,
        username: preview.identity.username.clone(),
        dn: preview.identity.entry.clone(),
        display_name: preview.identity.display_name.clone(),
        email: preview.identity.email.clone(),
        directory_groups: preview.identity.groups.clone(),
        allowed: preview.decision.allowed.clone(),
        admin: match preview.decision.admin {
            Some(true) => "yes (an admin group)".into(),
            Some(false) => "no".into(),
            None => "as set here (no admin groups configured)".into(),
        },
        groups: if policy.groups.is_empty() {
            "none".into()
        } else {
            policy.groups.join(", ")
        },
        policy: policy.explain(config),
        account,
    }))
}

pub async fn directory_page(
    admin: AdminUser,
    state: web::Data<AppState>,
    q: web::Query<DirectoryQuery>,
) -> Result<HttpResponse, PageError> {
    let config = &state.config;
    let (test, error) = match test_login(&state, &q.test).await {
        Ok(t) => (t, None),
        Err(e @ (AuthError::Internal(_) | AuthError::Db(_))) => return Err(e.into()),
        Err(e) => (None, Some(WebError::from(e).message)),
    };
    let sources: std::collections::HashMap<String, String> = state
        .accounts
        .list_users()
        .await?
        .into_iter()
        .map(|u| (u.username, u.source))
        .collect();
    let links = state
        .accounts
        .link_requests()
        .await?
        .into_iter()
        .map(|l| LinkRow {
            account_source: sources.get(&l.username).map_or_else(
                || "gone".to_string(),
                |s| crate::auth::directory::source_name(config, s),
            ),
            source_name: crate::auth::directory::source_name(config, &l.source),
            username: l.username,
            source: l.source,
            display_name: l.display_name,
            external_id: l.external_id,
            entry: l.entry,
            when: datetime(l.requested_at),
        })
        .collect();
    let who = q.user.clone().unwrap_or_default();
    let notice = q.done.as_deref().and_then(|d| match d {
        "linked" => Some(format!(
            "Linked {who}: they sign in through the directory from now on."
        )),
        "dismissed" => Some(format!(
            "Refused the directory login of {who}; the account stays as it was."
        )),
        _ => None,
    });
    let page = DirectoryPage {
        chrome: Chrome::for_admin(&admin.0, &state.disk),
        ldap: config.auth.ldap.as_ref().map(|l| {
            let how = if l.bind_dn_template.is_empty() {
                format!("members searched under {}", l.user_base)
            } else {
                format!("members bound as {}", l.bind_dn_template)
            };
            format!("{} ({how})", l.url)
        }),
        ldap_failure: state.accounts.ldap().and_then(|l| l.recent_failure()),
        providers: config
            .auth
            .oidc
            .iter()
            .map(|p| (p.id.clone(), p.name.clone(), p.issuer.clone()))
            .collect(),
        refresh: humantime::format_duration(config.auth.directory_refresh).to_string(),
        groups: group_rows(config),
        links,
        test_username: q.test.trim().chars().take(64).collect(),
        test,
        notice,
        error,
    };
    html(StatusCode::OK, page)
}

#[derive(Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    source: String,
    /// The directory entry the admin saw in the request.
    #[serde(default)]
    external_id: String,
    /// "link" or "dismiss".
    #[serde(default)]
    action: String,
}

pub async fn answer_link(
    admin: AdminUser,
    state: web::Data<AppState>,
    form: web::Form<LinkForm>,
) -> Result<HttpResponse, PageError> {
    let link = match form.action.as_str() {
        "link" => true,
        "dismiss" => false,
        other => {
            return Err(WebError::bad_request(format!(
                "action must be 'link' or 'dismiss', not '{other}'"
            ))
            .into())
        }
    };
    state
        .accounts
        .answer_link(&form.username, &form.source, &form.external_id, link)
        .await?;
    tracing::info!(by = %admin.0.user.username, user = %form.username, source = %form.source, link,
        "directory link request answered");
    let done = if link { "linked" } else { "dismissed" };
    Ok(see_other(&format!(
        "/admin/directory?done={done}&user={}",
        percent_encoding::utf8_percent_encode(&form.username, percent_encoding::NON_ALPHANUMERIC)
    )))
}
