//! The test kit: a real notebox (in-process via `notebox::run`, or the real binary as a
//! child process) on 127.0.0.1:0 with a temp data dir, and a cookie-keeping client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use notebox::Config;

pub const BIN: &str = env!("CARGO_BIN_EXE_notebox");

/// Polls `check` until it returns Some or the deadline passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config for tests: everything default but the data dir.
pub fn test_config(data_dir: &Path) -> Config {
    let mut c = Config::default();
    c.data_dir = data_dir.to_path_buf();
    c.listen = "127.0.0.1:0".into();
    c.source = "test".into();
    c
}

/// notebox running inside the test process.
pub struct TestServer {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

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
        let c = config.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = notebox::run(c, listener, async {
                let _ = stopped.await;
            })
            .await
            {
                panic!("notebox::run failed: {e}");
            }
        });
        let server = TestServer {
            url,
            dir,
            config,
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        let url = format!("{}/healthz", self.url);
        wait_for("notebox to answer /healthz", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                match reqwest::get(&url).await {
                    Ok(r) if r.status() == 200 => Some(()),
                    _ => None,
                }
            }
        })
        .await
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

    pub async fn stop(mut self) -> (tempfile::TempDir, Config) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tmp"));
        (dir, self.config.clone())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
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
    /// Starts `notebox serve` in `cwd` with extra env vars; returns once it printed its URL.
    pub fn spawn(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
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
        BufReader::new(stdout).read_line(&mut line).expect("read stdout");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| {
                let err = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                panic!("notebox printed no URL: {line:?}\nstderr:\n{err}")
            })
            .trim_end_matches('/')
            .to_string();
        ServerProcess {
            child,
            url,
            stderr_log,
        }
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
pub async fn login(client: &reqwest::Client, base: &str, username: &str, password: &str) -> reqwest::Response {
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
        .form(&[("username", username), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .expect("POST /login")
}

/// Logs in and returns the session's CSRF token (read from the dashboard).
pub async fn login_ok(client: &reqwest::Client, base: &str, username: &str, password: &str) -> String {
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
