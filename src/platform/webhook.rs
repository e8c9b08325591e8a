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

use crate::config::WebhookUrl;

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

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An idle notebook will be reclaimed soon unless someone keeps it running.
    IdleWarning,
    /// An idle notebook was stopped.
    Reclaimed,
    /// A notebook waiting for GPUs got them and is starting.
    QueuedStarted,
    /// A job's container started.
    JobStarted,
    /// A job ended (succeeded, failed, cancelled, timed out).
    JobFinished,
    /// A member's storage passed 90 % of their quota (once per crossing; no notebook).
    StorageQuotaWarning,
}

/// The notebook an event is about.
#[derive(Debug, Clone, Serialize)]
pub struct EventNotebook {
    pub id: String,
    pub name: String,
    /// Its page on this Notebox (a path; the receiver knows the host).
    pub url: String,
}

/// The job of a `job_started` / `job_finished` event.
#[derive(Debug, Clone, Serialize)]
pub struct EventJob {
    pub id: String,
    /// The notebook file or the command it runs.
    pub what: String,
    pub state: crate::model::JobState,
    pub detail: String,
    /// From its container's start to its end (job_finished).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    pub gpu_hours: f64,
    /// Its page on this Notebox (a path).
    pub url: String,
}

/// The member's storage, for a `storage_quota_warning` event.
#[derive(Debug, Clone, Serialize)]
pub struct EventStorage {
    pub used_bytes: u64,
    pub soft_quota_bytes: u64,
    /// The largest top-level entries ("/storage/data"), largest first.
    pub largest: Vec<EventEntry>,
}

/// A folder or file and what it takes.
#[derive(Debug, Clone, Serialize)]
pub struct EventEntry {
    pub path: String,
    pub bytes: u64,
}

/// One event, as the receiver gets it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: EventKind,
    /// RFC 3339.
    pub at: String,
    /// The notebook it is about; absent for a member's storage warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notebook: Option<EventNotebook>,
    pub member: String,
    pub reason: String,
    /// When an idle warning's notebook will be stopped (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reclaim_at: Option<String>,
    /// The job an event is about (job events only; `notebook` is the one it ran in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<EventJob>,
    /// A storage warning's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<EventStorage>,
    /// One line for a chat message (Slack, Mattermost and Rocket.Chat show `text`), made
    /// with [`chat_text`]; the fields above carry the names as they are.
    pub text: String,
}

/// A line for the chats that post an incoming webhook's `text`, with whatever a member
/// chose (notebook and member names, which reasons quote too) made inert:
///
/// - Slack (mrkdwn; also Discord's Slack-compatible hook): `&`, `<`, `>` are escaped, so
///   no `<!channel>`, `<!here>`, `<@U…>` or `<https://evil|Notebox login>` can form.
/// - Mattermost, Rocket.Chat, Discord (Markdown): `@` becomes a full-width `＠`, which
///   reads the same and mentions nobody (`@channel`, `@all`, `@here`, `@everyone`, a
///   member); `](` becomes `] (`, which no Markdown reads as a link (`[label](url)`,
///   `![x](url)`); `://` becomes `[:]//`, the usual defanged URL, which no autolinker
///   turns into a link.
/// - Every chat: C0 and C1 controls, bidi controls (U+061C, U+200E/F, U+202A–U+202E,
///   U+2066–U+2069) and other invisible format characters are dropped, line breaks become
///   spaces: what the line shows is what it says, on one line.
pub fn chat_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => out.push('＠'),
            '\n' | '\r' | '\t' | '\u{85}' | '\u{2028}' | '\u{2029}' => out.push(' '),
            c if c.is_control() || is_invisible_format(c) => {}
            c => out.push(c),
        }
    }
    // After the invisible characters are gone: "]\u{200B}(" must not rejoin into a link.
    out.replace("](", "] (").replace("://", "[:]//")
}

/// Format characters that show nothing yet change how the text around them reads: bidi
/// embeddings, overrides, isolates and marks, zero-width spaces and joiners, the BOM,
/// soft hyphens, invisible operators and tag characters.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{34F}' | '\u{61C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E007F}')
}

/// What happened to which notebook, for [`Webhook::tell`].
pub struct Happening<'a> {
    pub kind: EventKind,
    pub notebook_id: &'a str,
    pub member: &'a str,
    pub notebook_name: &'a str,
    pub reason: String,
    pub reclaim_at: Option<i64>,
}

impl Happening<'_> {
    /// The event the receiver gets, with its one-line chat text.
    fn event(self) -> Event {
        let what = match self.kind {
            EventKind::IdleWarning => "will be stopped soon",
            EventKind::Reclaimed => "was stopped",
            EventKind::QueuedStarted => "got its GPUs and is starting",
            EventKind::JobStarted | EventKind::JobFinished | EventKind::StorageQuotaWarning => {
                "changed"
            }
        };
        let (id, member, name) = (self.notebook_id, self.member, self.notebook_name);
        Event {
            event: self.kind,
            at: crate::clock::rfc3339(crate::clock::now()),
            notebook: Some(EventNotebook {
                id: id.to_string(),
                name: name.to_string(),
                url: format!("/notebooks/{id}"),
            }),
            member: member.to_string(),
            // Chat servers read `text` as markup: a notebook named "<!channel>" or
            // "[Notebox login](http://evil.example)" must not ping or phish a channel.
            text: chat_text(&format!(
                "Notebox: {member}’s notebook “{name}” {what}: {}",
                self.reason
            )),
            reason: self.reason,
            reclaim_at: self.reclaim_at.map(crate::clock::rfc3339),
            job: None,
            storage: None,
        }
    }
}

/// A job started or ended, for the webhook.
pub struct JobHappening<'a> {
    pub kind: EventKind,
    pub job_id: &'a str,
    pub member: &'a str,
    pub notebook_id: &'a str,
    pub notebook_name: &'a str,
    /// The notebook file or the command.
    pub what: &'a str,
    pub state: crate::model::JobState,
    pub detail: &'a str,
    pub duration_seconds: Option<i64>,
    pub gpu_hours: f64,
}

impl JobHappening<'_> {
    fn event(self) -> Event {
        let (member, what, id) = (self.member, self.what, self.job_id);
        let text = match self.kind {
            EventKind::JobStarted => format!("Notebox: {member}’s job “{what}” started"),
            _ => format!(
                "Notebox: {member}’s job “{what}” {}: {}",
                self.state.label().to_lowercase(),
                self.detail
            ),
        };
        Event {
            event: self.kind,
            at: crate::clock::rfc3339(crate::clock::now()),
            notebook: Some(EventNotebook {
                id: self.notebook_id.to_string(),
                name: self.notebook_name.to_string(),
                url: format!("/notebooks/{}", self.notebook_id),
            }),
            member: member.to_string(),
            reason: self.detail.to_string(),
            reclaim_at: None,
            job: Some(EventJob {
                id: id.to_string(),
                what: what.to_string(),
                state: self.state,
                detail: self.detail.to_string(),
                duration_seconds: self.duration_seconds,
                gpu_hours: self.gpu_hours,
                url: format!("/jobs/{id}"),
            }),
            storage: None,
            text: chat_text(&text),
        }
    }
}

/// A member passed 90 % of their storage quota, for the webhook.
pub struct StorageHappening<'a> {
    pub member: &'a str,
    pub used_bytes: u64,
    pub soft_quota_bytes: u64,
    /// (path, bytes) of the largest top-level entries.
    pub largest: Vec<(String, u64)>,
    /// What the dashboard says, in one line.
    pub reason: String,
}

impl StorageHappening<'_> {
    fn event(self) -> Event {
        Event {
            event: EventKind::StorageQuotaWarning,
            at: crate::clock::rfc3339(crate::clock::now()),
            notebook: None,
            member: self.member.to_string(),
            // Member-chosen folder names are in the reason: made inert like any name.
            text: chat_text(&format!(
                "Notebox: {}’s storage is near its quota: {}",
                self.member, self.reason
            )),
            reason: self.reason,
            reclaim_at: None,
            job: None,
            storage: Some(EventStorage {
                used_bytes: self.used_bytes,
                soft_quota_bytes: self.soft_quota_bytes,
                largest: self
                    .largest
                    .into_iter()
                    .map(|(path, bytes)| EventEntry { path, bytes })
                    .collect(),
            }),
        }
    }
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
    pub fn start(url: &Option<WebhookUrl>) -> Webhook {
        let Some(url) = url.clone() else {
            return Webhook::disabled();
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

    /// Tells the receiver, if there is one, what happened to a notebook.
    pub fn tell(&self, happening: Happening<'_>) {
        if self.is_enabled() {
            self.send(happening.event());
        }
    }

    /// Queues an event; never waits.
    pub fn tell_job(&self, happening: JobHappening<'_>) {
        if self.is_enabled() {
            self.send(happening.event());
        }
    }

    /// Queues a storage warning; never waits.
    pub fn tell_storage(&self, happening: StorageHappening<'_>) {
        if self.is_enabled() {
            self.send(happening.event());
        }
    }

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
                    tracing::debug!(event = ?event.event, member = %event.member, "webhook delivered");
                    break;
                }
                Err(e) => match waits.next() {
                    Some(wait) => {
                        tracing::info!(error = %e, retry_in = ?wait, "webhook delivery failed; retrying");
                        tokio::time::sleep(*wait).await;
                    }
                    None => {
                        tracing::warn!(error = %e, event = ?event.event, member = %event.member, "webhook delivery failed; giving up on this event");
                        break;
                    }
                },
            }
        }
    }
}

async fn deliver(client: &HttpsClient, url: &WebhookUrl, body: Bytes) -> Result<(), String> {
    let request = hyper::Request::post(url.uri().clone())
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

    /// Nothing in `text` that a chat would act on: no mention, no link, nothing hidden.
    fn inert(text: &str) -> bool {
        !text.contains(['@', '<', '>'])
            && !text.contains("](")
            && !text.contains("://")
            && !text
                .chars()
                .any(|c| c.is_control() || is_invisible_format(c))
    }

    #[test]
    fn slack_markup_is_escaped() {
        for name in [
            "<!channel>",
            "<!here|here>",
            "<!everyone>",
            "<@U024BE7LH>",
            "<!subteam^SAZ94GDB8>",
            "<#C024BE7LR>",
            "<https://evil.example/login|Notebox login>",
        ] {
            let text = chat_text(name);
            assert!(inert(&text), "{name} → {text}");
        }
        assert_eq!(
            chat_text("“<!channel>” & co"),
            "“&lt;!channel&gt;” &amp; co"
        );
    }

    #[test]
    fn markdown_mentions_and_links_are_defused() {
        // Mattermost, Rocket.Chat and Discord.
        for name in [
            "@channel",
            "@all",
            "@here",
            "@everyone",
            "hi @ada",
            "[Notebox login](http://evil.example/login)",
            "![x](https://evil.example/pixel.png)",
            "[Notebox login]\u{200B}(http://evil.example/login)",
            "[Notebox login]\n(http://evil.example/login)",
            "see http://evil.example/login now",
        ] {
            let text = chat_text(name);
            assert!(inert(&text), "{name} → {text}");
        }
        assert_eq!(chat_text("@channel"), "＠channel");
        assert_eq!(
            chat_text("[Notebox login](http://evil.example/login)"),
            "[Notebox login] (http[:]//evil.example/login)"
        );
    }

    #[test]
    fn bidi_and_control_characters_are_dropped() {
        let name = "\u{202E}gpj.exe\u{202C} \u{2066}a\u{2069}\u{200E}\u{200F}\u{61C}\u{200B}b\u{FEFF}\u{1b}[31m\u{9b}x\u{7f}\u{0}";
        let text = chat_text(name);
        assert!(inert(&text), "{text:?}");
        assert_eq!(text, "gpj.exe ab[31mx");
        assert_eq!(chat_text("one\ntwo\u{2028}three"), "one two three");
    }

    #[test]
    fn a_storage_warning_has_no_notebook_and_its_names_are_defused() {
        let storage = serde_json::to_value(
            StorageHappening {
                member: "ann",
                used_bytes: 95,
                soft_quota_bytes: 100,
                largest: vec![("/storage/@channel".into(), 90)],
                reason: "delete /storage/@channel".into(),
            }
            .event(),
        )
        .expect("json");
        assert_eq!(storage["event"], "storage_quota_warning");
        assert!(storage.get("notebook").is_none(), "{storage}");
        assert_eq!(
            storage["storage"]["largest"][0]["path"],
            "/storage/@channel"
        );
        assert!(inert(storage["text"].as_str().unwrap_or("@")), "{storage}");
        let notebook = serde_json::to_value(
            Happening {
                kind: EventKind::Reclaimed,
                notebook_id: "n1",
                member: "ann",
                notebook_name: "x",
                reason: "idle".into(),
                reclaim_at: None,
            }
            .event(),
        )
        .expect("json");
        assert_eq!(
            notebook["notebook"]["id"], "n1",
            "notebook events keep theirs"
        );
        assert!(notebook.get("storage").is_none());
    }

    #[test]
    fn ordinary_names_read_as_they_are() {
        for name in [
            "ResNet-50 (v2) – Ada’s run",
            "a*b_c ~d~ `e` #1",
            "Übersicht: 北京 データ",
        ] {
            assert_eq!(chat_text(name), name);
        }
    }
}
