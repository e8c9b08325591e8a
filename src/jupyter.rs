//! A notebook's Jupyter server: where it serves (its base URL), and talking to it
//! directly, not through the proxy: readiness, and its kernels and terminals for the
//! activity sampler. Its answers are its member's to shape: read capped, parsed in one
//! linear pass at this edge (kernel states become `ExecutionState`), large ones off the
//! runtime's threads.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::clock::parse_rfc3339;

/// Jupyter's port inside every container.
pub const JUPYTER_PORT: u16 = 8888;

/// Where Jupyter serves a notebook: `/nb/{id}/`, or `/nb/{id}/{path_key}/` when its
/// container got a secret segment (`origin = "ports"`).
pub fn base_url(notebook_id: &str, path_key: Option<&str>) -> String {
    match path_key {
        Some(key) => format!("/nb/{notebook_id}/{key}/"),
        None => format!("/nb/{notebook_id}/"),
    }
}

/// A fresh secret segment for a notebook's base URL: 128 random bits, in a shape no
/// JupyterLab route has (so a stale one in a bookmarked URL is recognised and dropped).
pub fn new_path_key() -> String {
    format!("k-{}", crate::auth::secrets::random_hex(16))
}

/// Whether a path segment has the shape of a path key.
pub fn is_path_key(segment: &str) -> bool {
    segment.len() == 34
        && segment.starts_with("k-")
        && segment[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A running notebook's address on the private network, asked of the engine (and
/// remembered in the database) when the database does not have it: notebooks adopted from
/// before Notebox recorded addresses.
pub async fn locate(
    engine: &dyn crate::containers::Backend,
    db: &crate::db::Db,
    network: &str,
    notebook_id: &str,
) -> Option<String> {
    let ip = crate::containers::address_of(engine, notebook_id, network).await?;
    let (id, addr) = (notebook_id.to_string(), ip.clone());
    if let Err(e) = db
        .call(move |c| crate::db::notebooks::set_container_ip(c, &id, &addr))
        .await
    {
        // The address works now; it is asked of the engine again next time.
        tracing::warn!(notebook = %notebook_id, error = %e, "cannot remember the container's address");
    }
    Some(ip)
}

/// A kernel's execution state, as Jupyter reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionState {
    Busy,
    Idle,
    Starting,
    /// Anything else Jupyter says ("restarting", "dead", ...), kept to be shown.
    Other(String),
}

impl ExecutionState {
    pub fn parse(text: &str) -> ExecutionState {
        match text {
            "busy" => ExecutionState::Busy,
            "idle" => ExecutionState::Idle,
            "starting" => ExecutionState::Starting,
            other => ExecutionState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ExecutionState::Busy => "busy",
            ExecutionState::Idle => "idle",
            ExecutionState::Starting => "starting",
            ExecutionState::Other(s) => s,
        }
    }

    pub fn is_busy(&self) -> bool {
        *self == ExecutionState::Busy
    }
}

/// A kernel as Jupyter's `/api/kernels` reports it.
#[derive(Debug, Clone)]
pub struct KernelReading {
    pub id: String,
    pub name: String,
    pub execution_state: ExecutionState,
    /// Jupyter's last message time (Unix seconds), when it parses.
    pub last_activity: Option<i64>,
}

/// Kernels kept one by one per notebook (in Jupyter's order). Past these, kernels are only
/// counted, and the notebook is busy while any of them is: a member never loses a busy
/// notebook to the cap, and a Jupyter listing 65 000 kernels costs a sample no more than
/// one listing a thousand.
pub const MAX_TRACKED_KERNELS: usize = 1000;

/// The kernels of one answer from Jupyter.
#[derive(Debug, Clone, Default)]
pub struct Kernels {
    /// The first `MAX_TRACKED_KERNELS` (any more are only counted, like the untracked).
    pub tracked: Vec<KernelReading>,
    /// How many Jupyter listed, those tracked included.
    pub total: usize,
    /// A kernel past the cap was busy.
    pub untracked_busy: bool,
}

impl Kernels {
    /// A whole list, as Jupyter answered it.
    pub fn from_list(list: Vec<KernelReading>) -> Kernels {
        let total = list.len();
        let untracked_busy = list
            .iter()
            .skip(MAX_TRACKED_KERNELS)
            .any(|k| k.execution_state.is_busy());
        let mut tracked = list;
        tracked.truncate(MAX_TRACKED_KERNELS);
        Kernels {
            tracked,
            total,
            untracked_busy,
        }
    }
}

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
    /// its Jupyter's base URL, `base_url`).
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

/// Answers larger than this are parsed on a blocking thread: a notebook's Jupyter is its
/// member's program, and a megabyte of JSON would hold a runtime thread (the one serving
/// other members too) for milliseconds — tens of them in a debug build.
const PARSE_INLINE: usize = 64 * 1024;

/// A kernel in `GET /api/kernels`, one of the first `MAX_TRACKED_KERNELS`.
#[derive(Debug, Deserialize)]
struct JupyterKernel {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    execution_state: String,
    /// RFC 3339 ("2026-12-01T03:14:11.123456Z").
    #[serde(default)]
    last_activity: Option<String>,
}

/// A kernel past the first `MAX_TRACKED_KERNELS`: only whether it is busy is read.
#[derive(Deserialize)]
struct UntrackedKernel<'a> {
    #[serde(default, borrow)]
    execution_state: Option<Cow<'a, str>>,
}

/// `GET /api/kernels` read in one pass, in linear time whatever it lists: the first
/// `MAX_TRACKED_KERNELS` kernels kept, the others counted and looked at for a busy one.
struct KernelList(Kernels);

impl<'de> Deserialize<'de> for KernelList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Kept;
        impl<'de> Visitor<'de> for Kept {
            type Value = Kernels;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of kernels")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kernels, A::Error> {
                let mut kernels = Kernels::default();
                while kernels.tracked.len() < MAX_TRACKED_KERNELS {
                    let Some(k) = seq.next_element::<JupyterKernel>()? else {
                        break;
                    };
                    kernels.tracked.push(KernelReading {
                        last_activity: k.last_activity.as_deref().and_then(parse_rfc3339),
                        id: k.id,
                        name: k.name,
                        execution_state: ExecutionState::parse(&k.execution_state),
                    });
                }
                kernels.total = kernels.tracked.len();
                while let Some(k) = seq.next_element::<UntrackedKernel>()? {
                    kernels.total += 1;
                    kernels.untracked_busy |= k.execution_state.as_deref() == Some("busy");
                }
                Ok(kernels)
            }
        }
        d.deserialize_seq(Kept).map(KernelList)
    }
}

/// The length of a JSON list, its elements skipped unread.
struct ListLength(usize);

impl<'de> Deserialize<'de> for ListLength {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = usize;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(n)
            }
        }
        d.deserialize_seq(Count).map(ListLength)
    }
}

impl JupyterProbe {
    async fn get_json<T: serde::de::DeserializeOwned + Send + 'static>(
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
        let inline = body.len() <= PARSE_INLINE;
        let parse =
            move || serde_json::from_slice(&body).map_err(|e| format!("unexpected answer: {e}"));
        if inline {
            return parse();
        }
        tokio::task::spawn_blocking(parse)
            .await
            .map_err(|e| format!("parsing the answer failed: {e}"))?
    }

    /// The notebook's kernels, with their execution state (the first
    /// `MAX_TRACKED_KERNELS`; the others counted).
    pub async fn kernels(&self, ip: &str, base: &str, token: &str) -> Result<Kernels, String> {
        self.get_json::<KernelList>(ip, base, token, "api/kernels")
            .await
            .map(|list| list.0)
    }

    /// How many terminals are open (0 where terminals are disabled).
    pub async fn terminal_count(&self, ip: &str, base: &str, token: &str) -> Result<usize, String> {
        match self
            .get_json::<ListLength>(ip, base, token, "api/terminals")
            .await
        {
            Ok(list) => Ok(list.0),
            // Jupyter without terminals answers 404.
            Err(e) if e.contains("404") => Ok(0),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jupyter_times_parse() {
        assert_eq!(
            parse_rfc3339("2026-12-01T03:14:11.123456Z"),
            Some(1_796_094_851)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn kernel_lists_keep_the_first_thousand_and_count_the_rest() {
        let mut list: Vec<String> = (0..65_000)
            .map(|i| format!(r#"{{"id":"{i:06}"}}"#))
            .collect();
        list[64_999] = r#"{"id":"064999","execution_state":"busy","extra":[1,{"a":2}]}"#.into();
        list[3] = r#"{"id":"k3","name":"python3","execution_state":"idle","last_activity":"2026-12-01T03:14:11.123456Z"}"#.into();
        let json = format!("[{}]", list.join(","));
        assert!(json.len() < MAX_ANSWER);
        let KernelList(k) = serde_json::from_str(&json).expect("parses");
        assert_eq!((k.tracked.len(), k.total), (MAX_TRACKED_KERNELS, 65_000));
        assert!(k.untracked_busy);
        assert_eq!(k.tracked[3].name, "python3");
        assert_eq!(k.tracked[3].last_activity, Some(1_796_094_851));
        let KernelList(k) = serde_json::from_str("[]").expect("parses");
        assert_eq!((k.tracked.len(), k.total, k.untracked_busy), (0, 0, false));
        assert!(serde_json::from_str::<KernelList>(r#"{"id":"x"}"#).is_err());
        assert!(serde_json::from_str::<KernelList>(r#"[{"name":"no id"}]"#).is_err());
        let ListLength(n) = serde_json::from_str(r#"[{}, {"name": "1"}, 3, [4]]"#).expect("parses");
        assert_eq!(n, 4);
    }
}
