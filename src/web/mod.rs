//! The web layer: one route table (below), thin handlers, askama views.

pub mod assets;
pub mod extract;
pub mod middleware;
pub mod notebook_site;
pub mod pages;
pub mod views;

use std::sync::Arc;

use actix_web::web;

use crate::auth::Accounts;
use crate::config::Config;
use crate::db::Db;

/// What every handler can reach. Built once in `run`.
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub accounts: Accounts,
    pub notebooks: crate::notebooks::Notebooks,
    pub shares: crate::share::Shares,
    pub gpu_map: crate::notebooks::GpuMap,
    pub usage: crate::usage::UsageReports,
    /// Its pass count (health, metrics).
    pub reconciler: crate::notebooks::Reconciler,
    pub telemetry: crate::gpu::telemetry::Telemetry,
    pub metrics: crate::platform::metrics::Metrics,
    /// Seals registry passwords, Git credentials and secret variables at rest.
    pub vault: crate::vault::Vault,
    /// Members' variables and secrets, and registry credentials.
    pub secrets: crate::secrets::Secrets,
    /// Members' environments (images Notebox builds).
    pub environments: crate::environments::Environments,
    /// Members' jobs (headless runs through the GPU queue).
    pub jobs: crate::jobs::Jobs,
    /// Launch clicks waiting for their environment's build (`pages::launch`).
    pub pending_launches: pages::launch::PendingLaunches,
    /// Notebooks on origins of their own (ports, subdomains).
    pub sites: Arc<crate::proxy::Sites>,
    /// OpenID Connect providers and the sign-ins in progress.
    pub oidc: crate::directory::oidc::OidcProviders,
    /// GPU bookings.
    pub reservations: crate::sharing::reservations::Reservations,
    /// Free space on the data dir's filesystem: the admin banner, writes refused when full.
    pub disk: crate::disk::DiskWatch,
}

/// The map of the product, top to bottom.
#[rustfmt::skip]
pub fn routes(cfg: &mut web::ServiceConfig) {
    use pages::{account, admin, admin_directory, environments, gpus, health, jobs, launch, login, notebooks, oidc, open_notebook, secrets, share, usage};
    // A notebook's own subdomain (origin = "subdomains"): that notebook only.
    cfg.service(web::scope("").guard(actix_web::guard::fn_guard(crate::proxy::is_notebook_host))
                                                   .default_service(web::to(notebook_site::serve_notebook_origin)));
    // Jupyter, proxied: first, because it is the hot path (routes are tried in order).
    cfg.route("/nb/{id}/{tail:.*}",                web::route().to(crate::proxy::proxy))
        .route("/nb/{id}",                         web::route().to(crate::proxy::add_slash))
        .route("/healthz",                         web::get().to(health::healthz))
        .route("/metrics",                         web::get().to(health::metrics))
        .route("/static/{path:.*}",                web::get().to(assets::serve_static))
        // logging in and out
        .route("/login",                           web::get().to(login::login_form))
        .route("/login",                           web::post().to(login::login_submit))
        .route("/logout",                          web::post().to(login::logout))
        .route("/login/oidc/{id}",                 web::get().to(oidc::begin))
        .route("/login/oidc/{id}/callback",        web::get().to(oidc::callback))
        // notebooks
        .route("/",                                web::get().to(notebooks::dashboard))
        .route("/notebooks/new",                   web::get().to(notebooks::new_notebook_form))
        .route("/notebooks",                       web::post().to(notebooks::create_notebook))
        .route("/notebooks/{id}",                  web::get().to(notebooks::notebook_page))
        .route("/notebooks/{id}/open",             web::get().to(open_notebook::open_notebook))
        .route("/notebooks/{id}/extend",           web::post().to(notebooks::extend_notebook))
        .route("/notebooks/{id}/delete",           web::get().to(notebooks::delete_confirm))
        .route("/notebooks/{id}/delete",           web::post().to(notebooks::delete_notebook))
        .route("/notebooks/{id}/keepalive",        web::post().to(notebooks::keep_alive))
        .route("/notebooks/{id}/fork",             web::post().to(share::fork_own_form))
        .route("/notebooks/{id}/shares",           web::post().to(share::create_share_form))
        .route("/notebooks/{id}/shares/{token}/revoke", web::post().to(share::revoke_share_form))
        .route("/notebooks/{id}/save",             web::post().to(environments::save_notebook_page))
        .route("/notebooks/{id}/{action}",         web::post().to(notebooks::notebook_action))
        // shared notebooks: anyone with the link
        .route("/s/{token}",                       web::get().to(share::share_redirect))
        .route("/s/{token}/",                      web::get().to(share::share_overview))
        .route("/s/{token}/view/{path:.*}",        web::get().to(share::share_view))
        .route("/s/{token}/raw/{path:.*}",         web::get().to(share::share_raw))
        .route("/s/{token}/fork",                  web::post().to(share::fork_share_form))
        .route("/gallery",                         web::get().to(share::gallery))
        // jobs
        .route("/jobs",                            web::get().to(jobs::jobs_page))
        .route("/jobs",                            web::post().to(jobs::submit_job))
        .route("/jobs/schedules/{id}/delete",      web::post().to(jobs::delete_schedule))
        .route("/jobs/{id}",                       web::get().to(jobs::job_page))
        .route("/jobs/{id}/cancel",                web::post().to(jobs::cancel_job))
        .route("/jobs/{id}/rerun",                 web::post().to(jobs::rerun_job))
        // GPUs
        .route("/gpus",                            web::get().to(gpus::gpus_page))
        // GPU bookings
        .configure(booking_routes)
        // usage
        .route("/usage",                           web::get().to(usage::usage_page))
        .route("/usage.csv",                       web::get().to(usage::usage_csv))
        // a member's own settings
        .route("/settings",                        web::get().to(account::account_page))
        .route("/settings/password",               web::post().to(account::change_password))
        .route("/settings/tokens",                 web::get().to(account::tokens_page))
        .route("/settings/tokens",                 web::post().to(account::create_token))
        .route("/settings/tokens/{id}/revoke",     web::post().to(account::revoke_token))
        .route("/launch",                          web::get().to(launch::launch_page))
        .route("/launch",                          web::post().to(launch::launch))
        .route("/launch/wait/{id}",                web::get().to(launch::wait_page))
        .route("/badge.svg",                       web::get().to(launch::badge))
        .route("/environments",                    web::get().to(environments::environments_page))
        .route("/environments",                    web::post().to(environments::create_environment))
        .route("/environments/{id}",               web::get().to(environments::environment_page))
        .route("/environments/{id}/builds",        web::post().to(environments::build_page))
        .route("/environments/{id}/delete",        web::post().to(environments::delete_page))
        .route("/environments/{id}/builds/{version}/cancel", web::post().to(environments::cancel_page))
        .route("/environments/{id}/builds/{version}/log",    web::get().to(environments::log_page))
        .route("/environments/{id}/builds/{version}/state",  web::get().to(environments::build_state_page))
        .route("/settings/variables",              web::get().to(secrets::variables_page))
        .route("/settings/variables",              web::post().to(secrets::save_variable))
        .route("/settings/variables/delete",       web::post().to(secrets::delete_variable))
        .route("/settings/registries",             web::get().to(secrets::registries_page))
        .route("/settings/registries",             web::post().to(secrets::save_registry))
        .route("/settings/registries/remove",      web::post().to(secrets::remove_registry))
        // admins
        .route("/admin",                           web::get().to(admin::admin_home))
        .route("/admin/users",                     web::get().to(admin::users_page))
        .route("/admin/environments",              web::get().to(admin::environments_page))
        .route("/admin/users",                     web::post().to(admin::add_user))
        .route("/admin/users/{id}/password",       web::post().to(admin::reset_password))
        .route("/admin/users/{id}/admin",          web::post().to(admin::set_admin))
        .route("/admin/users/{id}/disabled",       web::post().to(admin::set_disabled))
        .route("/admin/users/{id}/gpu-limit",      web::post().to(admin::set_gpu_limit))
        .route("/admin/users/{id}/gpu-budget",     web::post().to(admin::set_gpu_budget))
        .route("/admin/directory",                 web::get().to(admin_directory::directory_page))
        .route("/admin/directory/links",           web::post().to(admin_directory::answer_link))
        .route("/admin/notebooks",                 web::get().to(admin::notebooks_page))
        .route("/admin/notebooks/{id}/idle-exempt", web::post().to(admin::set_idle_exempt))
        // JSON API v1
        .service(api_routes());
}

/// GPU bookings' pages (on the map above).
#[rustfmt::skip]
fn booking_routes(cfg: &mut web::ServiceConfig) {
    use pages::reservations;
    cfg.route("/reservations",                     web::get().to(reservations::calendar_page))
        .route("/reservations",                    web::post().to(reservations::book_form))
        .route("/reservations/{id}/cancel",        web::post().to(reservations::cancel_form));
}

/// The JSON API v1, on the same map (`routes` above).
#[rustfmt::skip]
fn api_routes() -> actix_web::Scope {
    use pages::{api, environments, gpus, jobs_api, reservations, secrets, share, usage};
    web::scope("/api/v1")
        .route("/me",                      web::get().to(api::me))
        .route("/images",                  web::get().to(api::images))
        .route("/machines",                web::get().to(api::machines))
        .route("/gpus",                    web::get().to(gpus::gpus_api))
        .route("/reservations",            web::get().to(reservations::list_api))
        .route("/reservations",            web::post().to(reservations::book_api))
        .route("/reservations/calendar.ics", web::get().to(reservations::ical))
        .route("/reservations/{id}",       web::get().to(reservations::get_api))
        .route("/reservations/{id}",       web::delete().to(reservations::cancel_api))
        .route("/usage",                   web::get().to(usage::usage_api))
        .route("/admin/users/{id}/gpu-budget", web::post().to(usage::set_budget_api))
        .route("/notebooks",               web::get().to(api::list_notebooks))
        .route("/notebooks",               web::post().to(api::create_notebook))
        .route("/notebooks/{id}",          web::get().to(api::get_notebook))
        .route("/notebooks/{id}",          web::delete().to(api::delete_notebook))
        .route("/notebooks/{id}/start",    web::post().to(api::start_notebook))
        .route("/notebooks/{id}/stop",     web::post().to(api::stop_notebook))
        .route("/notebooks/{id}/restart",  web::post().to(api::restart_notebook))
        .route("/notebooks/{id}/extend",   web::post().to(api::extend_notebook))
        .route("/notebooks/{id}/logs",     web::get().to(api::notebook_logs))
        .route("/notebooks/{id}/keepalive", web::post().to(api::keep_alive))
        .route("/admin/notebooks/{id}/idle-exempt", web::post().to(api::set_idle_exempt))
        .route("/notebooks/{id}/shares",   web::get().to(share::list_shares_api))
        .route("/notebooks/{id}/shares",   web::post().to(share::create_share_api))
        .route("/notebooks/{id}/fork",     web::post().to(share::fork_own_api))
        .route("/shares/{token}",          web::delete().to(share::delete_share_api))
        .route("/shares/{token}/fork",     web::post().to(share::fork_share_api))
        .route("/environments",            web::get().to(environments::list_api))
        .route("/environments",            web::post().to(environments::create_api))
        .route("/environments/{id}",       web::get().to(environments::get_api))
        .route("/environments/{id}",       web::delete().to(environments::delete_api))
        .route("/environments/{id}/builds", web::post().to(environments::build_api))
        .route("/environments/{id}/builds/{version}", web::get().to(environments::get_build_api))
        .route("/environments/{id}/builds/{version}/log", web::get().to(environments::log_api))
        .route("/environments/{id}/builds/{version}/cancel", web::post().to(environments::cancel_api))
        .route("/notebooks/{id}/save",     web::post().to(environments::save_notebook_api))
        .route("/secrets",                 web::get().to(secrets::list_variables_api))
        .route("/secrets/{name}",          web::put().to(secrets::put_variable_api))
        .route("/secrets/{name}",          web::delete().to(secrets::delete_variable_api))
        .route("/registries",              web::get().to(secrets::list_registries_api))
        .route("/registries",              web::post().to(secrets::add_registry_api))
        .route("/registries/{host}",       web::delete().to(secrets::remove_registry_api))
        .route("/jobs",                    web::get().to(jobs_api::list))
        .route("/jobs",                    web::post().to(jobs_api::submit))
        .route("/jobs/{id}",               web::get().to(jobs_api::get))
        .route("/jobs/{id}/cancel",        web::post().to(jobs_api::cancel))
        .route("/jobs/{id}/rerun",         web::post().to(jobs_api::rerun))
        .route("/jobs/{id}/logs",          web::get().to(jobs_api::logs))
        .route("/jobs/{id}/outputs",       web::get().to(jobs_api::outputs))
        .route("/jobs/{id}/outputs/{path:.*}", web::get().to(jobs_api::output_file))
        .route("/schedules",               web::get().to(jobs_api::schedules))
        .route("/schedules/{id}",          web::delete().to(jobs_api::delete_schedule))
        .default_service(web::to(api::not_found))
}

pub use crate::http::{encode_segment, location, urlencode};

/// Where to go after logging in: a local path only, never another site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control() || c == '\\')
                && n.len() <= 2000 =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_local() {
        assert_eq!(safe_next(Some("/notebooks/3")), "/notebooks/3");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/x\n")), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(urlencode("/a b?c=d"), "/a%20b%3Fc%3Dd");
        assert_eq!(encode_segment("a/\0\r\n"), "a%2F%00%0D%0A");
        assert_eq!(location("/s/\r\nx é/"), "/s/%0D%0Ax%20%C3%A9/");
    }
}
