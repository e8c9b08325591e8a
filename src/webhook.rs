//! The outgoing webhook: events (an idle warning, a reclaim, a queued notebook that
//! started) POSTed as JSON to the URL in `[webhook] url`, so a lab can route them to its
//! chat. Delivered in order by a task of its own, with retries; whoever emits an event
//! never waits for the receiver, and a receiver that is down loses only what overflows a
//! bounded queue. Knows nothing of Notebox's own HTTP server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// Events waiting for delivery; more are dropped (and logged) until the receiver catches up.
const QUEUE: usize = 256;
/// Waits before each retry; an event is given up after the last one.
const RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(15),
];
/// How long one delivery may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A checked webhook URL: http or https, with a host.
#[derive(Debug, Clone)]
pub struct WebhookUrl(hyper::Uri);

impl WebhookUrl {
    pub fn parse(text: &str) -> Result<WebhookUrl, String> {
        let uri: hyper::Uri = text.trim().parse().map_err(|e| {
            format!(
                "'{text}' is not a URL ({e}); write it like https://chat.lab.example/hooks/notebox"
            )
        })?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(format!("'{text}' must start with http:// or https://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("'{text}' names no host"));
        }
        Ok(WebhookUrl(uri))
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An idle notebook will be reclaimed soon unless someone keeps it running.
    IdleWarning,
    /// An idle notebook was stopped.
    Reclaimed,
    /// A notebook waiting for GPUs got them and is starting.
    QueuedStarted,
}

/// The notebook an event is about.
#[derive(Debug, Clone, Serialize)]
pub struct EventNotebook {
    pub id: String,
    pub name: String,
    /// Its page on this Notebox (a path; the receiver knows the host).
    pub url: String,
}

/// One event, as the receiver gets it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: EventKind,
    /// RFC 3339.
    pub at: String,
    pub notebook: EventNotebook,
    pub member: String,
    pub reason: String,
    /// When an idle warning's notebook will be stopped (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reclaim_at: Option<String>,
    /// One line for a chat message (Slack, Mattermost and Rocket.Chat show `text`).
    pub text: String,
}

/// Hands events to the delivery task.
#[derive(Clone)]
pub struct Webhook {
    queue: Option<tokio::sync::mpsc::Sender<Event>>,
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

impl Webhook {
    /// No webhook: events go nowhere.
    pub fn disabled() -> Webhook {
        Webhook { queue: None }
    }

    /// Starts the delivery task (on the current tokio runtime) when `url` is set.
    pub fn start(url: &str) -> Webhook {
        if url.trim().is_empty() {
            return Webhook::disabled();
        }
        let url = match WebhookUrl::parse(url) {
            Ok(u) => u,
            Err(e) => {
                // The config is validated before this; say so if it ever was not.
                tracing::error!(error = %e, "webhook.url is not usable; no events will be sent");
                return Webhook::disabled();
            }
        };
        let client = match https_client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up TLS for the webhook; no events will be sent");
                return Webhook::disabled();
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        tokio::spawn(deliver_all(client, url, rx));
        Webhook { queue: Some(tx) }
    }

    pub fn is_enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues an event; never waits.
    pub fn send(&self, event: Event) {
        let Some(queue) = &self.queue else { return };
        if let Err(e) = queue.try_send(event) {
            tracing::warn!(error = %e, "webhook queue full or closed; an event was dropped");
        }
    }
}

fn https_client() -> Result<HttpsClient, std::io::Error> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn deliver_all(
    client: HttpsClient,
    url: WebhookUrl,
    mut queue: tokio::sync::mpsc::Receiver<Event>,
) {
    while let Some(event) = queue.recv().await {
        let body = match serde_json::to_vec(&event) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a webhook event");
                continue;
            }
        };
        let mut waits = RETRIES.iter();
        loop {
            match deliver(&client, &url, body.clone()).await {
                Ok(()) => {
                    tracing::debug!(event = ?event.event, notebook = %event.notebook.id, "webhook delivered");
                    break;
                }
                Err(e) => match waits.next() {
                    Some(wait) => {
                        tracing::info!(error = %e, retry_in = ?wait, "webhook delivery failed; retrying");
                        tokio::time::sleep(*wait).await;
                    }
                    None => {
                        tracing::warn!(error = %e, event = ?event.event, notebook = %event.notebook.id, "webhook delivery failed; giving up on this event");
                        break;
                    }
                },
            }
        }
    }
}

async fn deliver(client: &HttpsClient, url: &WebhookUrl, body: Bytes) -> Result<(), String> {
    let request = hyper::Request::post(url.0.clone())
        .header("content-type", "application/json")
        .header("user-agent", concat!("notebox/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!("the receiver answered {}", response.status())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(WebhookUrl::parse("https://chat.lab.example/hooks/x").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:9000/").is_ok());
        assert!(WebhookUrl::parse("ftp://x/")
            .unwrap_err()
            .contains("http://"));
        assert!(WebhookUrl::parse("not a url").is_err());
        assert!(WebhookUrl::parse("/relative").is_err());
    }
}
