//! The Docker engine, through bollard. Only what notebooks need; every call is scoped to
//! containers carrying this instance's label.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EventMessage, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptions, ListContainersOptions,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};

pub const LABEL_NOTEBOOK: &str = "io.notebox.notebook";
pub const LABEL_INSTANCE: &str = "io.notebox.instance";
pub const LABEL_OWNER: &str = "io.notebox.owner";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach Docker: {0}")]
    Unreachable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Docker: {0}")]
    Other(String),
}

impl From<bollard::errors::Error> for DockerError {
    fn from(e: bollard::errors::Error) -> DockerError {
        use bollard::errors::Error as E;
        match e {
            E::DockerResponseServerError {
                status_code: 404,
                message,
            } => DockerError::NotFound(message),
            E::DockerResponseServerError {
                status_code: 409,
                message,
            } => DockerError::Conflict(message),
            E::DockerResponseServerError { message, .. } => DockerError::Other(message),
            E::DockerStreamError { error } => DockerError::Other(error),
            E::HyperResponseError { .. } | E::IOError { .. } | E::RequestTimeoutError => {
                DockerError::Unreachable(e.to_string())
            }
            other => DockerError::Other(other.to_string()),
        }
    }
}

/// One of our containers, as `docker ps -a` sees it.
#[derive(Debug, Clone)]
pub struct OurContainer {
    pub id: String,
    pub notebook_id: String,
    pub running: bool,
    pub state: Option<ContainerSummaryStateEnum>,
}

impl OurContainer {
    /// Exited or dead: it cannot be started again, only removed.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD)
        )
    }

    /// Created or running: an interrupted start can carry on with it.
    pub fn is_reusable(&self) -> bool {
        matches!(
            self.state,
            Some(ContainerSummaryStateEnum::CREATED | ContainerSummaryStateEnum::RUNNING)
        )
    }
}

/// What `docker inspect` tells about a container that matters to us.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: String,
    pub ip: Option<String>,
    /// The container's first process, as the host sees it (to find its cgroup).
    pub pid: Option<u32>,
    /// When it stopped (Unix seconds), if it has.
    pub finished_at: Option<i64>,
}

/// Progress of one image pull, summed over its layers.
#[derive(Debug, Default, Clone)]
pub struct PullProgress {
    pub layers: usize,
    pub layers_done: usize,
    pub bytes_done: i64,
    pub bytes_total: i64,
}

/// The notebook network's default name, and the host interface it gets.
pub const DEFAULT_NETWORK: &str = "notebox";
pub const DEFAULT_BRIDGE: &str = "notebox0";

#[derive(Clone)]
pub struct DockerEngine {
    docker: Docker,
    instance: String,
}

impl DockerEngine {
    /// Connects (socket from config, else DOCKER_HOST or the default socket) and
    /// negotiates the API version with the engine.
    pub async fn connect(socket: &str, instance: &str) -> Result<DockerEngine, DockerError> {
        let docker = if socket.is_empty() {
            Docker::connect_with_defaults()
        } else {
            Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        Ok(DockerEngine {
            docker,
            instance: instance.to_string(),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Engine version and API version, for logs and `notebox doctor`.
    pub async fn version(&self) -> Result<(String, String), DockerError> {
        let v = self.docker.version().await?;
        Ok((
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default(),
        ))
    }

    /// Names of the container runtimes the engine knows (runc, nvidia, ...).
    pub async fn info_runtimes(&self) -> Result<Vec<String>, DockerError> {
        let info = self.docker.info().await?;
        let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        names.sort();
        Ok(names)
    }

    /// Creates the private bridge network if it is missing. Notebooks on it cannot reach
    /// each other (inter-container traffic is off); notebox reaches them from the host.
    pub async fn ensure_network(&self, name: &str) -> Result<(), DockerError> {
        match self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound(_) => {}
                other => return Err(other),
            },
        }
        let mut options = HashMap::from([(
            "com.docker.network.bridge.enable_icc".to_string(),
            "false".to_string(),
        )]);
        // The default network gets a fixed interface name, so the firewall rule shipped in
        // the package (/usr/share/notebox/notebox-firewall.nft) matches it unedited.
        if name == DEFAULT_NETWORK {
            options.insert(
                "com.docker.network.bridge.name".to_string(),
                DEFAULT_BRIDGE.to_string(),
            );
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            options: Some(options),
            labels: Some(HashMap::from([(
                "io.notebox.network".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Another notebox made it at the same moment (Docker answers 409, or an
                // error about the bridge name): fine if it is there now.
                let error = DockerError::from(e);
                let exists = self
                    .docker
                    .inspect_network(
                        name,
                        None::<bollard::query_parameters::InspectNetworkOptions>,
                    )
                    .await
                    .is_ok();
                match error {
                    _ if exists => Ok(()),
                    DockerError::Conflict(_) => Ok(()),
                    other => Err(other),
                }
            }
        }
    }

    pub async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Pulls an image, calling `progress` as layers move.
    pub async fn pull_image(
        &self,
        image: &str,
        mut progress: impl FnMut(&PullProgress),
    ) -> Result<(), DockerError> {
        let (repo, tag) = split_image(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(repo)
            .tag(tag)
            .build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        let mut layers: HashMap<String, (i64, i64, bool)> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item?;
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(DockerError::Other(err));
            }
            let Some(id) = info.id else { continue };
            let status = info.status.unwrap_or_default();
            let entry = layers.entry(id).or_insert((0, 0, false));
            if let Some(d) = info.progress_detail {
                if let (Some(cur), Some(total)) = (d.current, d.total) {
                    if status.starts_with("Downloading") {
                        entry.0 = cur;
                        entry.1 = total;
                    }
                }
            }
            if status.starts_with("Download complete")
                || status.starts_with("Pull complete")
                || status.starts_with("Already exists")
            {
                entry.0 = entry.1;
                entry.2 = true;
            }
            let p = PullProgress {
                layers: layers.len(),
                layers_done: layers.values().filter(|l| l.2).count(),
                bytes_done: layers.values().map(|l| l.0).sum(),
                bytes_total: layers.values().map(|l| l.1).sum(),
            };
            progress(&p);
        }
        Ok(())
    }

    /// All containers of this instance, running or not.
    pub async fn list_ours(&self) -> Result<Vec<OurContainer>, DockerError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_INSTANCE}={}", self.instance)],
            )])),
            ..Default::default()
        };
        let list = self.docker.list_containers(Some(options)).await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let notebook_id = c.labels.as_ref()?.get(LABEL_NOTEBOOK)?.clone();
                Some(OurContainer {
                    id: c.id?,
                    notebook_id,
                    running: matches!(c.state, Some(ContainerSummaryStateEnum::RUNNING)),
                    state: c.state,
                })
            })
            .collect())
    }

    /// Creates a container; if one of that name exists already (a start interrupted by a
    /// crash), returns that one's id instead of making a second.
    pub async fn create_container(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, DockerError> {
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        match self.docker.create_container(Some(options), body).await {
            Ok(r) => Ok(r.id),
            Err(e) => match DockerError::from(e) {
                DockerError::Conflict(_) => {
                    let existing = self
                        .docker
                        .inspect_container(
                            name,
                            None::<bollard::query_parameters::InspectContainerOptions>,
                        )
                        .await?;
                    existing
                        .id
                        .ok_or_else(|| DockerError::Other(format!("container {name} has no id")))
                }
                other => Err(other),
            },
        }
    }

    pub async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        match self
            .docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            // 304: already running.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn inspect(&self, id: &str, network: &str) -> Result<ContainerStatus, DockerError> {
        let c = self
            .docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await?;
        let state = c.state.unwrap_or_default();
        let ip = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut nets| nets.remove(network))
            .and_then(|n| n.ip_address)
            .filter(|ip| !ip.is_empty());
        Ok(ContainerStatus {
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.unwrap_or_default(),
            ip,
            pid: state
                .pid
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p > 0),
            // Docker says "0001-01-01T00:00:00Z" for a container that never stopped.
            finished_at: state
                .finished_at
                .as_deref()
                .and_then(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map(|t| t.unix_timestamp())
                .filter(|t| *t > 0),
        })
    }

    /// The container's cumulative CPU time in nanoseconds, from one stats reading.
    pub async fn cpu_usage_ns(&self, id: &str) -> Result<Option<u64>, DockerError> {
        let options = bollard::query_parameters::StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stats = self.docker.stats(id, Some(options));
        match stats.next().await {
            Some(Ok(s)) => Ok(s
                .cpu_stats
                .and_then(|c| c.cpu_usage)
                .and_then(|u| u.total_usage)),
            Some(Err(e)) => Err(e.into()),
            None => Ok(None),
        }
    }

    /// Stops (SIGTERM, then SIGKILL after `grace_secs`) and removes a container. A container
    /// that is already gone is not an error.
    pub async fn stop_and_remove(&self, id: &str, grace_secs: i32) -> Result<(), DockerError> {
        let stop = StopContainerOptionsBuilder::new().t(grace_secs).build();
        match self.docker.stop_container(id, Some(stop)).await {
            Ok(()) => {}
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound(_) => return Ok(()),
                DockerError::Unreachable(m) => return Err(DockerError::Unreachable(m)),
                // 304 (already stopped) and friends: removal below settles it.
                _ => {}
            },
        }
        let remove = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(remove)).await {
            Ok(()) => Ok(()),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound(_) => Ok(()),
                // "removal already in progress"
                DockerError::Conflict(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// The last `tail` lines of a container's output (stdout and stderr), at most
    /// `max_bytes` of them. The engine reads the tail from the end of its log file; what it
    /// sends is streamed through a buffer that keeps only the last `max_bytes`, so a
    /// container that logs long lines costs at most twice that much memory per read.
    pub async fn logs_tail(
        &self,
        id: &str,
        tail: usize,
        max_bytes: usize,
    ) -> Result<LogTail, DockerError> {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut out = TailBuffer::new(max_bytes);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => out.push(&c.into_bytes()),
                Err(e) => match DockerError::from(e) {
                    DockerError::NotFound(_) => break,
                    other => return Err(other),
                },
            }
        }
        Ok(out.finish())
    }

    /// Container events of this instance that need the reconciler: exits and removals.
    pub fn events(&self) -> impl Stream<Item = Result<EventMessage, DockerError>> {
        let options = EventsOptions {
            filters: Some(HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "label".to_string(),
                    vec![format!("{LABEL_INSTANCE}={}", self.instance)],
                ),
                // What Notebox did not do itself: a container exiting (a crash, an OOM
                // kill) or removed. Its own creates and starts wake nobody: a pass per
                // event would list every container while Jupyter is starting.
                (
                    "event".to_string(),
                    vec!["die".to_string(), "destroy".to_string(), "oom".to_string()],
                ),
            ])),
            ..Default::default()
        };
        self.docker
            .events(Some(options))
            .map(|e| e.map_err(DockerError::from))
    }
}

/// The end of a container's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    pub text: String,
    /// Older lines were left out to stay within the byte budget.
    pub truncated: bool,
}

/// Keeps the last `max` bytes of what goes through it, in at most twice that much memory;
/// when it had to leave something out, the answer starts at a whole line.
struct TailBuffer {
    bytes: Vec<u8>,
    max: usize,
    dropped: bool,
}

impl TailBuffer {
    fn new(max: usize) -> TailBuffer {
        TailBuffer {
            bytes: Vec::new(),
            max,
            dropped: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * self.max {
            self.keep_last();
        }
    }

    fn keep_last(&mut self) {
        let cut = self.bytes.len().saturating_sub(self.max);
        if cut > 0 {
            self.bytes.drain(..cut);
            self.dropped = true;
        }
    }

    fn finish(mut self) -> LogTail {
        self.keep_last();
        if self.dropped {
            // The cut fell inside a line (or a character): start after it.
            if let Some(newline) = self.bytes.iter().position(|b| *b == b'\n') {
                self.bytes.drain(..=newline);
            }
        }
        LogTail {
            text: String::from_utf8_lossy(&self.bytes).into_owned(),
            truncated: self.dropped,
        }
    }
}

/// "repo:tag" → ("repo", "tag"); no tag means "latest"; digests stay whole.
pub fn split_image(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        // A colon before the last slash is a registry port, not a tag.
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::{split_image, LogTail, TailBuffer};

    fn tail_of(chunks: &[&str], max: usize) -> LogTail {
        let mut buffer = TailBuffer::new(max);
        for c in chunks {
            buffer.push(c.as_bytes());
            assert!(buffer.bytes.len() <= 2 * max + c.len());
        }
        buffer.finish()
    }

    #[test]
    fn log_tails_keep_the_last_whole_lines_within_the_budget() {
        let whole = tail_of(&["a\n", "b\n"], 10);
        assert_eq!(whole.text, "a\nb\n");
        assert!(!whole.truncated);
        let exact = tail_of(&["0123456\n", "89\n"], 11);
        assert_eq!(
            (exact.text.as_str(), exact.truncated),
            ("0123456\n89\n", false)
        );
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let cut = tail_of(&refs, 35);
        assert!(cut.truncated);
        assert_eq!(cut.text, "line 0997\nline 0998\nline 0999\n");
        // One line longer than the budget: its end, lossily decoded.
        let long = tail_of(&["ééééé"], 5);
        assert!(long.truncated);
        assert!(long.text.ends_with("éé"), "{:?}", long.text);
        assert!(long.text.len() <= 5 + 2, "{:?}", long.text);
    }

    #[test]
    fn image_references_split_into_repo_and_tag() {
        assert_eq!(
            split_image("quay.io/jupyter/scipy-notebook:latest"),
            ("quay.io/jupyter/scipy-notebook", "latest")
        );
        assert_eq!(split_image("ubuntu"), ("ubuntu", "latest"));
        assert_eq!(
            split_image("localhost:5000/x"),
            ("localhost:5000/x", "latest")
        );
        assert_eq!(split_image("localhost:5000/x:1"), ("localhost:5000/x", "1"));
        assert_eq!(split_image("x@sha256:abc"), ("x@sha256:abc", ""));
    }
}
