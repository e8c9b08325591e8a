//! The test kit: a real notebox (in-process via `notebox::run`, or the real binary as a
//! child process) on 127.0.0.1:0 with a temp data dir, and a cookie-keeping client.
#![allow(dead_code)]

pub mod oidc;
pub mod slapd;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use notebox::Config;

pub const BIN: &str = env!("CARGO_BIN_EXE_notebox");

/// How often `wait_for` looks again.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// The test kit's one polling loop: runs `check` until it returns Some, or returns None
/// once `timeout` has passed without it (for callers that report a timeout themselves).
pub async fn try_wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Polls `check` until it returns Some; panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match try_wait_for(timeout, check).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// How many reconciler passes the notebox at `base_url` has completed (from /healthz).
pub async fn reconciler_passes(base_url: &str) -> u64 {
    let health: serde_json::Value = reqwest::get(format!("{base_url}/healthz"))
        .await
        .expect("GET /healthz")
        .json()
        .await
        .expect("healthz JSON");
    health["reconciler_passes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no reconciler_passes in /healthz: {health}"))
}

/// Waits until the reconciler has completed `n` more passes. The first of them may have
/// begun before this call, so `n` passes guarantee `n - 1` whole passes after it: to check
/// that something did NOT happen after an action, wait for a few (3) passes, then look.
pub async fn wait_reconciler_passes(base_url: &str, n: u64) {
    let target = reconciler_passes(base_url).await + n;
    wait_for(
        &format!("{n} reconciler passes"),
        Duration::from_secs(30),
        || async { (reconciler_passes(base_url).await >= target).then_some(()) },
    )
    .await
}

/// A config for tests: everything default but the data dir, and notebooks on Notebox's
/// own origin (`origin = "same"`): most suites exercise the proxy itself at
/// `{server}/nb/{id}/`. The isolated modes (`ports`, the default, and `subdomains`) are
/// tested in tests/it/origins.rs and by the JupyterLab browser tests, which set `ports`.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("address"),
        source: "test".into(),
        ..Config::default()
    };
    config.notebooks.origin = notebox::config::OriginMode::Same;
    config
}

/// notebox running inside the test process, on a thread and Tokio runtime of its own: when
/// that runtime is shut down, every task of the server (its reconciler and the Docker
/// operations the reconciler started) has ended, whatever the test's runtime is doing.
pub struct TestServer {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub config: Config,
    /// Asks `notebox::run` to shut down gracefully.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Tears the server's runtime down at once (dropped test: no graceful shutdown needed).
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    /// Closed once the server's runtime is shut down (or its thread panicked).
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Containers are removed when the server is dropped, unless it was stopped to be
    /// started again on the same data.
    cleanup: bool,
}

/// How long a server's runtime may take to end its tasks when shut down.
const SERVER_SHUTDOWN: Duration = Duration::from_secs(10);

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(&dir.path().join("data"));
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let c = config.clone();
        let thread = std::thread::Builder::new()
            .name("notebox-test-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(async move {
                    let run = notebox::run(c, listener, async {
                        let _ = stopped.await;
                    });
                    tokio::select! {
                        r = run => {
                            if let Err(e) = r {
                                panic!("notebox::run failed: {e}");
                            }
                        }
                        _ = killed => {}
                    }
                });
                // Ends every task still running (operations the reconciler started).
                rt.shutdown_timeout(SERVER_SHUTDOWN);
                drop(done_tx);
            })
            .expect("server thread");
        let server = TestServer {
            url,
            dir,
            config,
            stop: Some(stop),
            kill: Some(kill),
            done,
            thread: Some(thread),
            cleanup: true,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        wait_healthy(&self.url).await
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("initial-admin-password"))
            .expect("initial admin password file")
            .trim()
            .to_string()
    }

    /// Runs the real `notebox` binary against this server's data dir.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        run_cli(self.data_dir(), args, stdin)
    }

    /// Blocks until the server's thread has ended: its runtime, and with it every task of
    /// the server, is gone. Bounded; says so when the server did not end in time.
    fn join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let limit = SERVER_SHUTDOWN + Duration::from_secs(20);
        match self.done.recv_timeout(limit) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "notebox test server at {} did not end within {limit:?}",
                    self.url
                );
            }
            _ => {
                let _ = thread.join();
            }
        }
    }

    /// Stops the server gracefully, keeping its data and containers (to start it again).
    pub async fn stop(mut self) -> (tempfile::TempDir, Config) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.cleanup = false;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tmp"));
        let config = self.config.clone();
        // Joins on a blocking thread; `self`'s drop then has nothing left to wait for.
        tokio::task::spawn_blocking(move || self.join())
            .await
            .expect("join the server");
        (dir, config)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        // Once the server's runtime is gone nothing of it can ask Docker for a container
        // any more: a sweep then finds everything it made, but for a create Docker had
        // already received. Those notebooks are marked in the database (creating, no
        // container yet): wait (bounded) for their containers to land, then sweep again.
        self.join();
        if self.cleanup {
            let data_dir = self.config.data_dir.clone();
            remove_containers_of(&data_dir);
            let pending = creates_maybe_in_flight(&data_dir);
            if !pending.is_empty() {
                // Drop may run inside the test's runtime: wait on a runtime of its own.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(try_wait_for(Duration::from_secs(3), || async {
                        pending
                            .iter()
                            .all(|name| container_exists(name))
                            .then_some(())
                    }));
                    remove_containers_of(&data_dir);
                })
                .join();
            }
        }
    }
}

/// Containers whose create may have been in flight when a server stopped: notebooks that
/// were creating their container and have none recorded (by container name).
fn creates_maybe_in_flight(data_dir: &Path) -> Vec<String> {
    let Ok(conn) = rusqlite::Connection::open(data_dir.join("notebox.db")) else {
        return Vec::new();
    };
    let Ok(instance) = conn.query_row(
        "SELECT value FROM meta WHERE key = 'instance_id'",
        [],
        |r| r.get::<_, String>(0),
    ) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT id FROM notebooks WHERE state = 'starting'
           AND state_detail = 'Creating the container' AND container_id IS NULL",
    ) else {
        return Vec::new();
    };
    let prefix = &instance[..instance.len().min(8)];
    stmt.query_map([], |r| r.get::<_, String>(0))
        .map(|rows| {
            rows.filter_map(Result::ok)
                .map(|id| format!("notebox-{prefix}-{id}"))
                .collect()
        })
        .unwrap_or_default()
}

fn container_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["container", "inspect", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until /healthz at `base_url` answers 200 (the database is open and migrated).
pub async fn wait_healthy(base_url: &str) {
    let url = format!("{base_url}/healthz");
    wait_for(
        &format!("notebox at {base_url} to answer /healthz"),
        Duration::from_secs(30),
        || async {
            match reqwest::get(&url).await {
                Ok(r) if r.status() == 200 => Some(()),
                _ => None,
            }
        },
    )
    .await
}

pub struct CliOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_cli(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> CliOutput {
    let mut child = Command::new(BIN)
        .args(args)
        .env("NOTEBOX_DATA_DIR", data_dir)
        .env_remove("NOTEBOX_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn notebox");
    if let Some(input) = stdin {
        child
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The real binary as a child process (for kill -9 and first-start tests).
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub stderr_log: PathBuf,
}

impl ServerProcess {
    /// Starts `notebox serve` in `cwd` with extra env vars; returns once it printed its URL
    /// and answers /healthz.
    pub async fn spawn(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let stderr_log = cwd.join(format!("notebox-stderr-{}.log", std::process::id()));
        let log = std::fs::File::create(&stderr_log).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(args)
            .current_dir(cwd)
            .env_remove("NOTEBOX_CONFIG")
            .env("NOTEBOX_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn notebox serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| {
                let err = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                panic!("notebox printed no URL: {line:?}\nstderr:\n{err}")
            })
            .trim_end_matches('/')
            .to_string();
        let server = ServerProcess {
            child,
            url,
            stderr_log,
        };
        let healthy = try_wait_for(Duration::from_secs(30), || async {
            match reqwest::get(format!("{}/healthz", server.url)).await {
                Ok(r) if r.status() == 200 => Some(()),
                _ => None,
            }
        })
        .await;
        if healthy.is_none() {
            panic!(
                "notebox at {} never became healthy:\n{}",
                server.url,
                server.stderr()
            );
        }
        server
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A browser-like client: keeps cookies, does not follow redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The value of a hidden `csrf` input on a page.
pub fn csrf_from(html: &str) -> String {
    let re = regex::Regex::new(r#"name="csrf" value="([^"]+)""#).expect("regex");
    re.captures(html)
        .map(|c| c[1].to_string())
        .unwrap_or_else(|| panic!("no csrf field in page:\n{html}"))
}

/// Logs in through the form; returns the response to the POST.
pub async fn login(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    let page = client
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("GET /login")
        .text()
        .await
        .expect("login page");
    let csrf = csrf_from(&page);
    client
        .post(format!("{base}/login"))
        .form(&[
            ("username", username),
            ("password", password),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .expect("POST /login")
}

/// Logs in and returns the session's CSRF token (read from the dashboard).
pub async fn login_ok(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> String {
    let r = login(client, base, username, password).await;
    assert_eq!(r.status(), 303, "login as {username} should redirect");
    let home = client.get(format!("{base}/")).send().await.expect("GET /");
    assert_eq!(home.status(), 200);
    csrf_from(&home.text().await.expect("body"))
}

/// Adds a user with the CLI.
pub fn add_user(server: &TestServer, name: &str, password: &str, admin: bool) {
    let mut args = vec!["user", "add", name, "--password-stdin"];
    if admin {
        args.push("--admin");
    }
    let out = server.cli(&args, Some(&format!("{password}\n")));
    assert!(out.status.success(), "user add failed: {}", out.stderr);
}

/// A personal access token for a user, made with the CLI.
pub fn token_for(server: &TestServer, user: &str) -> String {
    let out = server.cli(&["token", "create", user], None);
    assert!(out.status.success(), "token create failed: {}", out.stderr);
    out.stdout.trim().to_string()
}

/// Under CI a missing tool fails the test; elsewhere it skips with a visible message.
pub fn require(tool: &str, available: bool, why: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{tool} is required under CI=true but is not available: {why}");
    }
    eprintln!("SKIPPED: {tool} is not available ({why}); set it up with tests/run-all.sh");
    false
}

// ---- Docker ----

/// Whether `docker info` works here.
pub fn docker_works() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Jupyter test image (tests/image/build.sh); None (after `require`) when missing.
pub fn test_image() -> Option<String> {
    if !require(
        "docker",
        docker_works(),
        "the Docker engine does not answer `docker info`",
    ) {
        return None;
    }
    let image = std::env::var("TEST_JUPYTER_IMAGE")
        .unwrap_or_else(|_| "notebox-test-jupyter:latest".into());
    let found = Command::new("docker")
        .args(["image", "inspect", &image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !require(
        "the Jupyter test image",
        found,
        &format!("{image} is not built; run tests/image/build.sh"),
    ) {
        return None;
    }
    Some(image)
}

/// A config whose catalog holds the test image and a small CPU machine type. The image
/// runs Jupyter Server without JupyterLab's server extensions: the same REST, kernel and
/// terminal API for a fraction of the CPU (a start 0.7 instead of 1.1 CPU-seconds here,
/// docs/PERFORMANCE.md, "Suite time"). Tests that drive JupyterLab's front end or its own
/// API use `jupyterlab_config`.
pub fn docker_config(config: &mut Config, image: &str) {
    use notebox::config::{ImageSpec, Launcher, MachineType};
    config.images = vec![ImageSpec {
        id: "test".into(),
        name: "Test Jupyter".into(),
        image: image.into(),
        description: "Jupyter Server from Debian packages".into(),
        gpu: false,
        launcher: Launcher::Command,
        command: jupyter_server_only(),
    }];
    config.machines = vec![MachineType {
        id: "cpu".into(),
        name: "CPU · 1 core · 1 GB".into(),
        cpus: 1.0,
        memory_mib: 1024,
        gpus: 0,
        idle_timeout: None,
        reclaim: None,
    }];
    config.notebooks.ready_timeout = Duration::from_secs(90);
    config.notebooks.reconcile_interval = Duration::from_secs(1);
}

/// `docker_config` with JupyterLab, as the catalog's `jupyter-lab` launcher starts it.
pub fn jupyterlab_config(config: &mut Config, image: &str) {
    docker_config(config, image);
    config.images[0].description = "JupyterLab from Debian packages".into();
    config.images[0].launcher = notebox::config::Launcher::JupyterLab;
    config.images[0].command = vec![];
}

/// Jupyter Server as Notebox starts the `jupyter-server` launcher (same arguments), with
/// JupyterLab's server extensions left out (the test image enables them for every server).
fn jupyter_server_only() -> Vec<String> {
    [
        "jupyter-server",
        "--ip=0.0.0.0",
        "--port={port}",
        "--no-browser",
        "--ServerApp.base_url={base_url}",
        "--ServerApp.root_dir={root_dir}",
        r#"--ServerApp.tornado_settings={"websocket_max_message_size": 268435456}"#,
        "--ServerApp.jpserver_extensions=jupyterlab=False",
        "--ServerApp.jpserver_extensions=jupyter_lsp=False",
        "--ServerApp.jpserver_extensions=notebook_shim=False",
    ]
    .map(String::from)
    .to_vec()
}

/// One simulated GPU (`uuid`, 40 GiB) and a one-GPU machine type `gpu1` beside the
/// config's own.
pub fn one_simulated_gpu(config: &mut Config, uuid: &str) {
    use notebox::config::{GpuBackend, MachineType, SimulatedGpu};
    config.gpu.backend = GpuBackend::Simulated;
    config.gpu.simulated = vec![SimulatedGpu {
        uuid: uuid.into(),
        name: "Simulated A100".into(),
        memory_mib: 40960,
        utilization_file: None,
    }];
    config.machines.push(MachineType {
        id: "gpu1".into(),
        name: "1 GPU".into(),
        cpus: 0.5,
        memory_mib: 768,
        gpus: 1,
        idle_timeout: None,
        reclaim: None,
    });
}

/// `docker_config` with tests/upstream/echo.py as the catalog's only "Jupyter": it reports
/// the headers it got (`api/status`) and echoes WebSocket messages (`echo`).
pub fn echo_config(config: &mut Config, image: &str) {
    docker_config(config, image);
    config.images[0].launcher = notebox::config::Launcher::Command;
    config.images[0].command = vec![
        "python3".into(),
        "-c".into(),
        include_str!("../upstream/echo.py").into(),
        "{base_url}".into(),
    ];
}

/// The same settings as a TOML file, for servers run as a child process.
pub fn docker_config_toml(data_dir: &Path, image: &str) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{}"
[notebooks]
ready_timeout = "90s"
reconcile_interval = "1s"
[[images]]
id = "test"
name = "Test Jupyter"
image = "{image}"
launcher = "jupyter-lab"
[[machines]]
id = "cpu"
name = "CPU · 1 core · 1 GB"
cpus = 1.0
memory_mib = 1024
"#,
        data_dir.display()
    )
}

/// Removes every container of the notebox whose data dir this is (tests clean up after
/// themselves; each notebox labels its containers with its own instance id).
pub fn remove_containers_of(data_dir: &Path) {
    let db = data_dir.join("notebox.db");
    if !db.exists() {
        return;
    }
    let Ok(conn) = rusqlite::Connection::open(&db) else {
        return;
    };
    let Ok(instance) = conn.query_row(
        "SELECT value FROM meta WHERE key = 'instance_id'",
        [],
        |r| r.get::<_, String>(0),
    ) else {
        return;
    };
    let ids = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.notebox.instance={instance}"),
        ])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .status();
    }
}

/// Cleans up containers when a test ends, pass or fail.
pub struct ContainerGuard(pub PathBuf);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        remove_containers_of(&self.0);
    }
}

/// `docker inspect` of a container, as JSON.
pub fn docker_inspect(container: &str) -> serde_json::Value {
    let out = Command::new("docker")
        .args(["inspect", container])
        .output()
        .expect("docker inspect");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect json");
    v[0].clone()
}

/// Containers carrying a notebook's label.
pub fn containers_of_notebook(notebook_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=io.notebox.notebook={notebook_id}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

pub fn docker_exec(container: &str, script: &str) -> (bool, String) {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A Jupyter `execute_request` for a kernel's channels WebSocket (JSON protocol).
pub fn execute_request(msg_id: &str, code: &str) -> serde_json::Value {
    serde_json::json!({
        "header": {"msg_id": msg_id, "username": "test", "session": "s-1", "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": code, "silent": false, "store_history": false, "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}
    })
}

/// A JSON API client for one user.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api {
            base: base.to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("API request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn create_notebook(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/notebooks",
                serde_json::json!({"name": name, "image": "test", "machine": "cpu"}),
            )
            .await;
        assert_eq!(status, 201, "create notebook: {body}");
        body["id"].as_str().expect("id").to_string()
    }

    /// Shares a notebook ("link" or "public"); returns the share's token.
    pub async fn share(&self, notebook_id: &str, visibility: &str) -> String {
        let (status, share) = self
            .post(
                &format!("/api/v1/notebooks/{notebook_id}/shares"),
                serde_json::json!({ "visibility": visibility }),
            )
            .await;
        assert_eq!(status, 201, "share {notebook_id}: {share}");
        share["token"].as_str().expect("share token").to_string()
    }

    /// Polls until the notebook reaches `state`; panics with its detail on `failed`.
    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> serde_json::Value {
        let path = format!("/api/v1/notebooks/{id}");
        wait_for(&format!("notebook {id} to be {state}"), timeout, || {
            let path = path.clone();
            async move {
                let (_, nb) = self.get(&path).await;
                if nb["state"] == state {
                    return Some(nb);
                }
                if nb["state"] == "failed" && state != "failed" {
                    panic!("notebook {id} failed: {}", nb["state_detail"]);
                }
                None
            }
        })
        .await
    }
}

/// The one container of a running notebook.
pub fn container_of(notebook_id: &str) -> String {
    let ids = containers_of_notebook(notebook_id);
    assert_eq!(
        ids.len(),
        1,
        "exactly one container for {notebook_id}: {ids:?}"
    );
    ids[0].clone()
}

/// Jupyter's own answer, straight from the container (not through notebox).
pub async fn jupyter_status(container: &str, notebook_id: &str) -> u16 {
    let info = docker_inspect(container);
    let ip = info["NetworkSettings"]["Networks"]
        .as_object()
        .and_then(|nets| {
            nets.values()
                .find_map(|n| n["IPAddress"].as_str().filter(|s| !s.is_empty()))
        })
        .expect("container IP")
        .to_string();
    let token = info["Config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e.as_str())
        .find_map(|e| e.strip_prefix("JUPYTER_TOKEN="))
        .expect("JUPYTER_TOKEN")
        .to_string();
    // Jupyter's base URL as its container was told it: `/nb/{id}/`, or `/nb/{id}/k-…/`
    // with a path key (origin = "ports").
    let base = info["Config"]["Cmd"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .find_map(|a| a.strip_prefix("--ServerApp.base_url="))
        .map_or_else(|| format!("/nb/{notebook_id}/"), str::to_string);
    assert!(base.starts_with(&format!("/nb/{notebook_id}/")), "{base}");
    reqwest::Client::new()
        .get(format!("http://{ip}:8888{base}api/status"))
        .header("authorization", format!("token {token}"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The notebook's own Jupyter token, from its container's environment.
pub fn jupyter_token_of(container: &str) -> String {
    docker_inspect(container)["Config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e.as_str())
        .find_map(|e| e.strip_prefix("JUPYTER_TOKEN="))
        .expect("JUPYTER_TOKEN")
        .to_string()
}

/// A kernel channels WebSocket of a new kernel of the notebook, through Notebox's proxy
/// (with the member's token).
pub async fn open_kernel_socket(
    api: &Api,
    notebook: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let base = &api.base;
    let r = api
        .http
        .post(format!("{base}/nb/{notebook}/api/kernels"))
        .header("authorization", format!("token {}", api.token))
        .json(&serde_json::json!({"name": "python3"}))
        .send()
        .await
        .expect("POST kernels");
    assert_eq!(r.status(), 201, "kernel start");
    let kernel: serde_json::Value = r.json().await.expect("kernel json");
    let kernel = kernel["id"].as_str().expect("kernel id");
    let ws = format!(
        "ws://{}/nb/{notebook}/api/kernels/{kernel}/channels",
        base.trim_start_matches("http://"),
    );
    let mut request = ws.into_client_request().expect("ws request");
    request.headers_mut().insert(
        "authorization",
        format!("token {}", api.token).parse().expect("header"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket through the proxy");
    socket
}

/// Runs `code` in a new kernel of the notebook, through Notebox's proxy (the kernel's
/// channels WebSocket, with the member's token); returns its text/plain result.
pub async fn run_in_kernel(api: &Api, notebook: &str, code: &str) -> String {
    let mut socket = open_kernel_socket(api, notebook).await;
    execute_on(&mut socket, code).await
}

/// Sends `code` as an execute request on a kernel's channels WebSocket and returns its
/// text/plain result (60 s at most); closes the socket.
pub async fn execute_on(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    code: &str,
) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let msg_id = format!("exec-{}", std::process::id());
    socket
        .send(Message::Text(
            execute_request(&msg_id, code).to_string().into(),
        ))
        .await
        .expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a result in time")
            .expect("socket open")
            .expect("frame");
        let Message::Text(text) = msg else { continue };
        let v: serde_json::Value = serde_json::from_str(&text).expect("json message");
        if v["parent_header"]["msg_id"] != msg_id.as_str() {
            continue;
        }
        match v["header"]["msg_type"].as_str() {
            Some("execute_result") => {
                let _ = socket.close(None).await;
                return v["content"]["data"]["text/plain"]
                    .as_str()
                    .expect("text/plain")
                    .to_string();
            }
            Some("error") => panic!("kernel error running {code:?}: {}", v["content"]),
            _ => {}
        }
    }
}
