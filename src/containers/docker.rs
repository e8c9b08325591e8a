//! Docker, through bollard: the `Backend` Notebox runs on. Connects on first use (and
//! again after a failure), negotiating the API version with the engine. bollard's types
//! stay in this file.

use std::collections::HashMap;

use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, DeviceRequest, HostConfig, HostConfigLogConfig,
    NetworkCreateRequest, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptions, ListContainersOptions,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::RwLock;

use super::tail::TailBuffer;
use super::{
    Backend, ContainerSpec, ContainerState, ContainerStatus, EngineError as DockerError,
    EngineEvent, EventStream, LogTail, OurContainer, PullFailure, PullProgress, RegistryAuth,
    LABEL_INSTANCE, LABEL_NOTEBOOK,
};

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

fn container_state(state: Option<ContainerSummaryStateEnum>) -> ContainerState {
    use ContainerSummaryStateEnum as S;
    match state {
        Some(S::CREATED) => ContainerState::Created,
        Some(S::RUNNING) => ContainerState::Running,
        Some(S::PAUSED) => ContainerState::Paused,
        Some(S::RESTARTING) => ContainerState::Restarting,
        Some(S::REMOVING) => ContainerState::Removing,
        Some(S::EXITED) => ContainerState::Exited,
        Some(S::DEAD) => ContainerState::Dead,
        _ => ContainerState::Unknown,
    }
}

/// The notebook network's default name, and the host interface it gets.
pub const DEFAULT_NETWORK: &str = "notebox";
pub const DEFAULT_BRIDGE: &str = "notebox0";

/// A connected Docker client, scoped to one instance's containers.
#[derive(Clone)]
pub(super) struct DockerClient {
    pub(super) docker: Docker,
    instance: String,
}

impl DockerClient {
    /// Connects (socket from config, else DOCKER_HOST or the default socket) and
    /// negotiates the API version with the engine.
    async fn connect(socket: &str, instance: &str) -> Result<DockerClient, DockerError> {
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
        Ok(DockerClient {
            docker,
            instance: instance.to_string(),
        })
    }

    /// Engine version and API version, for logs and `notebox doctor`.
    async fn version(&self) -> Result<(String, String), DockerError> {
        let v = self.docker.version().await?;
        Ok((
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default(),
        ))
    }

    /// Names of the container runtimes the engine knows (runc, nvidia, ...).
    async fn info_runtimes(&self) -> Result<Vec<String>, DockerError> {
        let info = self.docker.info().await?;
        let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        names.sort();
        Ok(names)
    }

    /// Creates the private bridge network if it is missing. Notebooks on it cannot reach
    /// each other (inter-container traffic is off); notebox reaches them from the host.
    async fn ensure_network(&self, name: &str) -> Result<(), DockerError> {
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

    async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Pulls an image, calling `progress` as layers move.
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        progress: &mut (dyn FnMut(&PullProgress) + Send),
    ) -> Result<(), DockerError> {
        let (repo, tag) = split_image(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(repo)
            .tag(tag)
            .build();
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(server_address(&a.server)),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        let mut layers: HashMap<String, (i64, i64, bool)> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(e) => return Err(pull_failed(DockerError::from(e), auth)),
            };
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(pull_failed(DockerError::Other(err), auth));
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
    async fn list_ours(&self) -> Result<Vec<OurContainer>, DockerError> {
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
                    // Paused (by an admin, or an engine commit) is still alive.
                    running: matches!(
                        c.state,
                        Some(
                            ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::PAUSED
                        )
                    ),
                    state: container_state(c.state),
                })
            })
            .collect())
    }

    /// Creates a container; if one of that name exists already (a start interrupted by a
    /// crash), returns that one's id instead of making a second.
    async fn create_container(&self, spec: ContainerSpec) -> Result<String, DockerError> {
        let name = spec.name.clone();
        let name = name.as_str();
        let body = create_body(spec);
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

    async fn start_container(&self, id: &str) -> Result<(), DockerError> {
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

    async fn inspect(&self, id: &str, network: &str) -> Result<ContainerStatus, DockerError> {
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
                .and_then(crate::clock::parse_rfc3339)
                .filter(|t| *t > 0),
        })
    }

    /// The container's cumulative CPU time in nanoseconds, from one stats reading.
    async fn cpu_usage_ns(&self, id: &str) -> Result<Option<u64>, DockerError> {
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
    async fn stop_and_remove(&self, id: &str, grace_secs: i32) -> Result<(), DockerError> {
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
    async fn logs_tail(
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
    fn events(&self) -> BoxStream<'static, Result<EngineEvent, DockerError>> {
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
            .map(|e| {
                e.map(|m| EngineEvent {
                    action: m.action.unwrap_or_default(),
                })
                .map_err(DockerError::from)
            })
            .boxed()
    }
}

/// The create request for a notebook's container: the spec, plus the hardening every
/// notebook gets.
fn create_body(spec: ContainerSpec) -> ContainerCreateBody {
    let binds = spec
        .mounts
        .iter()
        .map(|m| {
            let mode = if m.read_only { "ro" } else { "rw" };
            format!("{}:{}:{mode}", m.host.display(), m.container)
        })
        .collect();
    let device_requests = (!spec.gpu_devices.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(spec.gpu_devices.clone()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    let host_config = HostConfig {
        binds: Some(binds),
        network_mode: Some(spec.network),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        pids_limit: Some(spec.pids_limit),
        memory: Some(spec.memory_bytes),
        // No swap beyond the memory limit.
        memory_swap: Some(spec.memory_bytes),
        nano_cpus: Some(spec.nano_cpus),
        shm_size: Some(spec.shm_bytes),
        init: Some(true),
        privileged: Some(false),
        publish_all_ports: Some(false),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), "10m".to_string()),
                ("max-file".to_string(), "2".to_string()),
            ])),
        }),
        device_requests,
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image),
        cmd: Some(spec.command),
        // The member's variables first: Notebox's own come last and so win (the names
        // Notebox sets are refused as variables anyway).
        env: Some(
            spec.private_env
                .0
                .into_iter()
                .map(|(name, value)| format!("{name}={value}"))
                .chain(spec.env)
                .collect(),
        ),
        user: Some(spec.user),
        working_dir: Some(spec.working_dir),
        labels: Some(spec.labels.into_iter().collect()),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Docker as Notebox's container backend. Connects on first use; a failed connection is
/// tried again on the next call.
pub struct DockerBackend {
    socket: String,
    instance: String,
    client: RwLock<Option<DockerClient>>,
}

impl DockerBackend {
    /// `socket`: the config's `docker.socket` (empty: DOCKER_HOST or the default socket).
    /// `instance`: this installation's id, on the label of every container it makes.
    pub fn new(socket: &str, instance: &str) -> DockerBackend {
        DockerBackend {
            socket: socket.to_string(),
            instance: instance.to_string(),
            client: RwLock::new(None),
        }
    }

    async fn client(&self) -> Result<DockerClient, DockerError> {
        if let Some(c) = self.client.read().await.as_ref() {
            return Ok(c.clone());
        }
        let mut slot = self.client.write().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = DockerClient::connect(&self.socket, &self.instance).await?;
        match client.version().await {
            Ok((version, api)) => tracing::info!(%version, %api, "connected to Docker"),
            Err(e) => tracing::warn!(error = %e, "Docker answered but not its version"),
        }
        *slot = Some(client.clone());
        Ok(client)
    }
}

impl Backend for DockerBackend {
    fn connect(&self) -> BoxFuture<'_, Result<(), DockerError>> {
        Box::pin(async move { self.client().await.map(|_| ()) })
    }

    fn version(&self) -> BoxFuture<'_, Result<(String, String), DockerError>> {
        Box::pin(async move { self.client().await?.version().await })
    }

    fn runtimes(&self) -> BoxFuture<'_, Result<Vec<String>, DockerError>> {
        Box::pin(async move { self.client().await?.info_runtimes().await })
    }

    fn ensure_network<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(async move { self.client().await?.ensure_network(name).await })
    }

    fn image_exists<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<bool, DockerError>> {
        Box::pin(async move { self.client().await?.image_exists(image).await })
    }

    fn pull_image<'a>(
        &'a self,
        image: &'a str,
        auth: Option<&'a RegistryAuth>,
        progress: &'a mut (dyn FnMut(&PullProgress) + Send),
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(async move { self.client().await?.pull_image(image, auth, progress).await })
    }

    fn list_ours(&self) -> BoxFuture<'_, Result<Vec<OurContainer>, DockerError>> {
        Box::pin(async move { self.client().await?.list_ours().await })
    }

    fn create(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<String, DockerError>> {
        Box::pin(async move { self.client().await?.create_container(spec).await })
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(async move { self.client().await?.start_container(id).await })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, Result<ContainerStatus, DockerError>> {
        Box::pin(async move { self.client().await?.inspect(id, network).await })
    }

    fn cpu_usage_ns<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<u64>, DockerError>> {
        Box::pin(async move { self.client().await?.cpu_usage_ns(id).await })
    }

    fn stop_and_remove<'a>(
        &'a self,
        id: &'a str,
        grace_secs: i32,
    ) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(async move { self.client().await?.stop_and_remove(id, grace_secs).await })
    }

    fn logs_tail<'a>(
        &'a self,
        id: &'a str,
        tail: usize,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<LogTail, DockerError>> {
        Box::pin(async move { self.client().await?.logs_tail(id, tail, max_bytes).await })
    }

    fn events(&self) -> BoxFuture<'_, Result<EventStream, DockerError>> {
        Box::pin(async move { Ok(self.client().await?.events()) })
    }

    fn build_image<'a>(
        &'a self,
        build: super::ImageBuild,
        events: &'a mut (dyn FnMut(super::BuildEvent) + Send),
    ) -> BoxFuture<'a, Result<String, DockerError>> {
        Box::pin(async move { self.client().await?.build_image(build, events).await })
    }

    fn remove_build_leftovers<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<usize, DockerError>> {
        Box::pin(async move { self.client().await?.remove_build_leftovers(key).await })
    }

    fn commit<'a>(
        &'a self,
        container: &'a str,
        tag: &'a str,
        config: &'a super::ImageDetails,
    ) -> BoxFuture<'a, Result<String, DockerError>> {
        Box::pin(async move { self.client().await?.commit(container, tag, config).await })
    }

    fn image_details<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<super::ImageDetails>, DockerError>> {
        Box::pin(async move { self.client().await?.image_details(image).await })
    }

    fn remove_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<(), DockerError>> {
        Box::pin(async move { self.client().await?.remove_image(image).await })
    }

    fn images_labelled<'a>(
        &'a self,
        label: &'a str,
    ) -> BoxFuture<'a, Result<Vec<super::ImageEntry>, DockerError>> {
        Box::pin(async move { self.client().await?.images_labelled(label).await })
    }
}

/// The address Docker's engine expects in a login: Docker Hub's historical one for
/// "docker.io", the host itself for any other registry.
fn server_address(host: &str) -> String {
    if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

/// A failed pull, with its cause told from the engine's words (the engine itself out of
/// reach stays `Unreachable`). The password is cut out of the text, should the engine
/// or a registry ever echo it.
fn pull_failed(e: DockerError, auth: Option<&RegistryAuth>) -> DockerError {
    let message = match e {
        DockerError::NotFound(m) | DockerError::Conflict(m) | DockerError::Other(m) => m,
        other => return other,
    };
    let message = match auth {
        Some(a) if !a.password.is_empty() => message.replace(&a.password, "(hidden)"),
        _ => message,
    };
    DockerError::Pull {
        cause: classify_pull_failure(&message, auth.is_some()),
        message,
    }
}

/// What Docker's (and the registries') words for a failed pull mean. Checked against
/// the engine's answers from a real `docker-registry` with htpasswd (tests/it/secrets.rs):
/// no login → "no basic auth credentials"; a wrong one → "unauthorized: authentication
/// required"; a missing repository or tag → "manifest unknown"; a closed port →
/// "connection refused". Docker Hub says "pull access denied ... may require 'docker
/// login'" both for a private and for a missing repository.
pub fn classify_pull_failure(message: &str, sent_credential: bool) -> PullFailure {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if has(&["no basic auth credentials"]) {
        return PullFailure::NeedsLogin;
    }
    if has(&[
        "unauthorized",
        "authentication required",
        "incorrect username or password",
        "invalid username/password",
    ]) {
        return match sent_credential {
            true => PullFailure::CredentialRefused,
            false => PullFailure::NeedsLogin,
        };
    }
    if has(&[
        "pull access denied",
        "requested access to the resource is denied",
        "denied:",
        "forbidden",
    ]) {
        return PullFailure::AccessDenied;
    }
    if has(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "timeout exceeded",
        "deadline exceeded",
        "network is unreachable",
        "no route to host",
        "connection reset",
        "server gave http response to https client",
        "tls:",
        "x509",
        "certificate",
        "dial tcp",
    ]) {
        return PullFailure::Unreachable;
    }
    if has(&[
        "manifest unknown",
        "not found",
        "name unknown",
        "repository name not known",
        "no such image",
    ]) {
        return PullFailure::NotFound;
    }
    PullFailure::Other
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
    use super::*;
    use crate::containers::{Mount, PrivateEnv};

    fn spec(gpu_devices: Vec<String>) -> ContainerSpec {
        ContainerSpec {
            name: "notebox-i-abc123".into(),
            image: "img:1".into(),
            command: vec!["jupyter-lab".into()],
            env: vec!["NOTEBOX=1".into()],
            private_env: PrivateEnv(vec![("OPENAI_API_KEY".into(), "sk-hidden".into())]),
            labels: [("io.notebox.notebook".to_string(), "abc123".to_string())].into(),
            user: "1000:100".into(),
            working_dir: "/notebooks".into(),
            mounts: vec![
                Mount {
                    host: "/d/storage/alice".into(),
                    container: "/storage".into(),
                    read_only: false,
                },
                Mount {
                    host: "/d/datasets".into(),
                    container: "/datasets".into(),
                    read_only: true,
                },
            ],
            network: "notebox".into(),
            memory_bytes: 4096 * 1024 * 1024,
            nano_cpus: 2_000_000_000,
            pids_limit: 1024,
            shm_bytes: 64 * 1024 * 1024,
            gpu_devices,
        }
    }

    #[test]
    fn containers_are_hardened() {
        let body = create_body(spec(Vec::new()));
        let hc = body.host_config.expect("host config");
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert!(hc.security_opt.expect("secopt")[0].starts_with("no-new-privileges"));
        assert_eq!(hc.privileged, Some(false));
        assert!(hc.pids_limit.is_some() && hc.memory == Some(4096 * 1024 * 1024));
        assert_eq!(hc.memory_swap, hc.memory);
        assert!(hc.port_bindings.is_none());
        assert!(hc.device_requests.is_none());
        let binds = hc.binds.expect("binds");
        assert!(binds.iter().all(|b| !b.contains("docker.sock")));
        assert!(binds.contains(&"/d/datasets:/datasets:ro".to_string()));
        assert!(binds.contains(&"/d/storage/alice:/storage:rw".to_string()));
        assert_eq!(body.user.as_deref(), Some("1000:100"));
        // The member's variables come first (Notebox's own win), and stay out of Debug.
        assert_eq!(
            body.env,
            Some(vec![
                "OPENAI_API_KEY=sk-hidden".to_string(),
                "NOTEBOX=1".to_string()
            ])
        );
        let shown = format!("{:?}", spec(Vec::new()));
        assert!(shown.contains("OPENAI_API_KEY=(hidden)") && !shown.contains("sk-hidden"));
    }

    #[test]
    fn gpus_go_through_the_nvidia_device_request() {
        let gpus = vec!["GPU-a".to_string(), "GPU-b".to_string()];
        let dr = create_body(spec(gpus.clone()))
            .host_config
            .expect("hc")
            .device_requests
            .expect("device request");
        assert_eq!(dr[0].device_ids.as_deref(), Some(&gpus[..]));
        assert_eq!(dr[0].driver.as_deref(), Some("nvidia"));
    }

    #[test]
    fn pull_failures_are_told_apart_by_the_engines_words() {
        use PullFailure as F;
        let cases = [
            (r#"Head "http://127.0.0.1:5931/v2/tiny/manifests/1": no basic auth credentials"#, false, F::NeedsLogin),
            ("unauthorized: authentication required", true, F::CredentialRefused),
            ("unauthorized: authentication required", false, F::NeedsLogin),
            ("manifest for 127.0.0.1:5931/nope:1 not found: manifest unknown: manifest unknown", true, F::NotFound),
            (r#"Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused"#, true, F::Unreachable),
            (r#"Get "https://nosuch.invalid/v2/": dial tcp: lookup nosuch.invalid on 10.0.0.53:53: no such host"#, false, F::Unreachable),
            ("pull access denied for private/x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied", false, F::AccessDenied),
            (r#"Get "https://r.example/v2/": http: server gave HTTP response to HTTPS client"#, false, F::Unreachable),
            ("something else entirely", false, F::Other),
        ];
        for (message, sent, cause) in cases {
            assert_eq!(classify_pull_failure(message, sent), cause, "{message}");
        }
        let auth = RegistryAuth {
            server: "r.example".into(),
            username: "u".into(),
            password: "hunter2-pw".into(),
        };
        let e = pull_failed(
            DockerError::Other("echo hunter2-pw unauthorized".into()),
            Some(&auth),
        );
        assert!(!e.to_string().contains("hunter2-pw"), "{e}");
        assert!(!format!("{auth:?}").contains("hunter2-pw"));
        assert_eq!(server_address("docker.io"), "https://index.docker.io/v1/");
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
