//! Talking to a notebook's Jupyter server directly (not through the proxy): readiness,
//! and its kernels and terminals for the activity sampler. Its answers are its member's to
//! shape: read capped, parsed in one linear pass, large ones off the runtime's threads.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::activity::{KernelReading, Kernels, MAX_TRACKED_KERNELS};

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
                        execution_state: k.execution_state,
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

/// Jupyter's times: RFC 3339, as Unix seconds.
fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
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
