//! Talking to a notebook's Jupyter server directly (not through the proxy): readiness.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::spec::{base_url, JUPYTER_PORT};

#[derive(Clone)]
pub struct JupyterProbe {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for JupyterProbe {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        JupyterProbe {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl JupyterProbe {
    /// True once `GET /nb/{id}/api/status` answers 200 with the notebook's token.
    pub async fn is_ready(&self, ip: &str, notebook_id: &str, token: &str) -> bool {
        let uri = format!(
            "http://{ip}:{JUPYTER_PORT}{}api/status",
            base_url(notebook_id)
        );
        let Ok(request) = hyper::Request::get(uri)
            .header("authorization", format!("token {token}"))
            .body(Empty::<Bytes>::new())
        else {
            return false;
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(3), self.client.request(request)).await,
            Ok(Ok(response)) if response.status() == 200
        )
    }
}
