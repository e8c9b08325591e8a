//! What a notebook's own origin serves, put together here because it takes parts of the web
//! layer: the proxy's `notebook_site` (the entry handshake, the notebook itself), Notebox's
//! static files, and the same middleware as Notebox's own listener.

use std::sync::Arc;

use actix_service::{boxed, map_config, ServiceFactoryExt};
use actix_web::body::BoxBody;
use actix_web::dev::{AppConfig, Response, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpResponse};

use crate::proxy::{ProxyState, SiteApp, UpstreamClient};

use super::{assets, middleware, pages};

/// Everything a notebook's origin answers: Notebox's static files, else the notebook's
/// site (`proxy::notebook_site`).
pub async fn serve_notebook_origin(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<ProxyState>,
    upstream: web::Data<UpstreamClient>,
) -> HttpResponse {
    if let Some(file) = req.path().strip_prefix("/static/") {
        let file = web::Path::from(file.to_string());
        return assets::serve_static(req.clone(), file).await;
    }
    crate::proxy::notebook_site(req, payload, proxy, upstream).await
}

/// The service every notebook port runs (built on each of the proxy's site workers).
pub fn notebook_port_app(proxy: web::Data<ProxyState>) -> SiteApp {
    Arc::new(move || {
        let app = App::new()
            .app_data(proxy.clone())
            .app_data(web::Data::new(UpstreamClient::default()))
            .app_data(pages::query_config())
            .wrap(from_fn(middleware::refuse_stray_upgrades))
            .wrap(from_fn(middleware::refuse_duplicate_cookies))
            .wrap(from_fn(middleware::security_headers))
            .wrap(from_fn(middleware::log_requests))
            .default_service(web::to(serve_notebook_origin));
        let service = map_config(app, |_| AppConfig::default()).map(
            |res: ServiceResponse<_>| -> Response<BoxBody> { res.map_into_boxed_body().into() },
        );
        boxed::factory(service)
    })
}
