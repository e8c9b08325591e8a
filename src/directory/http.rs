//! The HTTP client OpenID Connect uses (discovery, keys, the code exchange): hyper over
//! rustls, redirects never followed (a provider cannot send our client secret elsewhere),
//! every answer capped in size and time.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use openidconnect::{HttpRequest, HttpResponse};

/// Answers larger than this are refused (a discovery document or key set is a few KiB).
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Failed(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A client for one provider, cheap to clone.
#[derive(Clone)]
pub struct OidcHttp {
    client: Client<Https, Full<bytes::Bytes>>,
    timeout: Duration,
}

impl OidcHttp {
    pub fn new(tls: std::sync::Arc<rustls::ClientConfig>, timeout: Duration) -> OidcHttp {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        OidcHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// Sends one request; the answer's status is the caller's to judge (redirects too).
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        tokio::time::timeout(self.timeout, self.send_now(request))
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
    }

    async fn send_now(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let request = hyper::Request::from_parts(parts, Full::new(bytes::Bytes::from(body)));
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| HttpError::Failed(describe(&e)))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| HttpError::Failed(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(HttpResponse::from_parts(parts, body.to_vec()))
    }
}

/// An error with its causes (hyper's, openidconnect's).
pub(super) fn describe(e: &dyn std::error::Error) -> String {
    crate::http::error_chain(e)
}
