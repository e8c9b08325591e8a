//! Talking to a notebook's Jupyter server directly (not through the proxy): readiness,
//! and its kernels and terminals for the activity sampler.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::spec::JUPYTER_PORT;

#[derive(Clone)]
pub struct JupyterProbe {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for JupyterProbe {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        JupyterProbe {
            // No idle connections kept: a notebook is asked every few seconds at most, and
            // a pooled connection (with its buffers) per running notebook costs more
            // memory than a connect on the bridge costs time (docs/PERFORMANCE.md, "Memory").
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
        }
    }
}

impl JupyterProbe {
    /// True once `GET {base}api/status` answers 200 with the notebook's token (`base`:
    /// its Jupyter's base URL, `spec::base_url`).
    pub async fn is_ready(&self, ip: &str, base: &str, token: &str) -> bool {
        let uri = format!("http://{ip}:{JUPYTER_PORT}{base}api/status");
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

/// Jupyter's answers are small lists; a larger one is not read.
const MAX_ANSWER: usize = 1024 * 1024;

/// A kernel in `GET /api/kernels`.
#[derive(Debug, Deserialize)]
pub struct JupyterKernel {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub execution_state: String,
    /// RFC 3339 ("2026-12-01T03:14:11.123456Z").
    #[serde(default)]
    pub last_activity: Option<String>,
}

impl JupyterProbe {
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        ip: &str,
        base: &str,
        token: &str,
        path: &str,
    ) -> Result<T, String> {
        let uri = format!("http://{ip}:{JUPYTER_PORT}{base}{path}");
        let request = hyper::Request::get(uri)
            .header("authorization", format!("token {token}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(3), self.client.request(request))
            .await
            .map_err(|_| "no answer within 3 s".to_string())?
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("Jupyter answered {}", response.status()));
        }
        let body = tokio::time::timeout(
            Duration::from_secs(3),
            Limited::new(response.into_body(), MAX_ANSWER).collect(),
        )
        .await
        .map_err(|_| "the answer did not arrive within 3 s".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("unexpected answer: {e}"))
    }

    /// The notebook's kernels, with their execution state.
    pub async fn kernels(
        &self,
        ip: &str,
        base: &str,
        token: &str,
    ) -> Result<Vec<JupyterKernel>, String> {
        self.get_json(ip, base, token, "api/kernels").await
    }

    /// How many terminals are open (0 where terminals are disabled).
    pub async fn terminal_count(&self, ip: &str, base: &str, token: &str) -> Result<usize, String> {
        #[derive(Deserialize)]
        struct Terminal {}
        match self
            .get_json::<Vec<Terminal>>(ip, base, token, "api/terminals")
            .await
        {
            Ok(list) => Ok(list.len()),
            // Jupyter without terminals answers 404.
            Err(e) if e.contains("404") => Ok(0),
            Err(e) => Err(e),
        }
    }
}
