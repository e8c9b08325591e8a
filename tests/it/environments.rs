//! Issue 24, environments: members' own images, built by Notebox on the real Docker engine
//! from files in the repo2docker convention, a Git repository (served on loopback by
//! tests/git_server) or a Dockerfile, or saved from a running notebook; then real Jupyter
//! kernels, reached through Notebox's proxy, import what the build installed. Python
//! packages come from a wheel the test writes by hand (tests/environments_fixtures): no
//! container here can reach a package index.
//!
//! What they hold the code to: the API under /api/v1/environments (the README's API
//! section), with builds, their live log, cancel, the limits of `[environments]`, and the
//! pages /environments/{id}.

use crate::common;
use crate::git_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use git_server::{git, rev_parse, GitServer};
use serde_json::{json, Value};

/// A build on top of the test image: a few small steps (a minute is generous).
const BUILD: Duration = Duration::from_secs(180);
const READY: Duration = Duration::from_secs(120);
const WHEEL: &str = "notebox_demo-1.0-py3-none-any.whl";
const WHEEL_VALUE: &str = "from the wheel";

// ---- the lab: notebox as a child process, and what it built ----

/// Notebox as a child process (its log at debug level, kept in a file, to quote when a
/// test fails), with the test image as catalog image `test`, notebooks on Notebox's own
/// origin, and `extra` appended to its config (an `[environments]` table). When dropped:
/// its containers, and the images its environments built, are removed.
struct Lab {
    server: ServerProcess,
    data: PathBuf,
    config: String,
    /// Images to remove at the end (the builds' `image` fields, as the test saw them).
    images: Mutex<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl Lab {
    async fn start(image: &str, extra: &str) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let toml = docker_config_toml(&data, image)
            .replace("[notebooks]\n", "[notebooks]\norigin = \"same\"\n")
            + extra;
        let config = dir.path().join("notebox.toml");
        std::fs::write(&config, toml).expect("config");
        let config = config.to_string_lossy().to_string();
        let server = ServerProcess::spawn(
            dir.path(),
            &["--config", &config],
            &[("NOTEBOX_LOG", "debug")],
        )
        .await;
        Lab {
            server,
            data,
            config,
            images: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    fn url(&self) -> &str {
        &self.server.url
    }

    fn cli(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let mut all = vec!["--config", self.config.as_str()];
        all.extend_from_slice(args);
        run_cli(&self.data, &all, stdin)
    }

    /// A member (or an admin) with a password `{name}-password` and an API token.
    fn member(&self, name: &str, admin: bool) -> Api {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        if admin {
            args.push("--admin");
        }
        let out = self.cli(&args, Some(&format!("{name}-password\n")));
        assert!(out.status.success(), "user add: {}", out.stderr);
        let out = self.cli(&["token", "create", name], None);
        assert!(out.status.success(), "token create: {}", out.stderr);
        Api::new(self.url(), out.stdout.trim())
    }

    /// A logged-in browser of `name`.
    async fn browser(&self, name: &str) -> reqwest::Client {
        let browser = client();
        login_ok(&browser, self.url(), name, &format!("{name}-password")).await;
        browser
    }

    /// The ids of every environment made here (from the database).
    fn environment_ids(&self) -> Vec<String> {
        let Ok(conn) = rusqlite::Connection::open(self.data.join("notebox.db")) else {
            return Vec::new();
        };
        let Ok(mut stmt) = conn.prepare("SELECT id FROM environments") else {
            return Vec::new();
        };
        stmt.query_map([], |r| r.get::<_, String>(0))
            .map(|rows| rows.filter_map(Result::ok).collect())
            .unwrap_or_default()
    }

    /// Remembers a build's image, to remove when the test ends.
    fn track(&self, build: &Value) {
        if let Some(image) = build["image"].as_str().filter(|i| !i.is_empty()) {
            let mut images = self.images.lock().unwrap_or_else(|e| e.into_inner());
            if !images.iter().any(|i| i == image) {
                images.push(image.to_string());
            }
        }
    }

    /// The server's log so far, its last lines (for failure messages).
    fn log_tail(&self) -> String {
        let log = self.server.stderr();
        // Not the access log: each poll is a line of it.
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                !l.contains(" request ") || !l.contains("status=") && !l.contains("status\u{1b}")
            })
            .collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.server.kill9();
        remove_containers_of(&self.data);
        let mut images = self
            .images
            .lock()
            .map(|i| i.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        // Every image a build of this lab's environments made, dangling layers included.
        for env in self.environment_ids() {
            images.extend(docker_lines(&[
                "images",
                "-aq",
                "--filter",
                &format!("label=io.notebox.environment={env}"),
            ]));
        }
        images.sort();
        images.dedup();
        if !images.is_empty() {
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .args(&images)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `docker` with `args`: its output's words (ids), empty when it fails.
fn docker_lines(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Containers and dangling images the builds of environment `env` left behind: those
/// with its label `io.notebox.environment` (every layer and step container of a build
/// carries it, see the generated Dockerfile's LABEL).
fn build_leftovers(env: &str) -> (Vec<String>, Vec<String>) {
    let label = format!("label=io.notebox.environment={env}");
    let containers = docker_lines(&["ps", "-aq", "--filter", &label]);
    let images = docker_lines(&[
        "images",
        "-aq",
        "--filter",
        "dangling=true",
        "--filter",
        &label,
    ]);
    (containers, images)
}

// ---- the API's answers ----

/// The message of an error answer: `{"error": {"message": …}}` (or `{"error": "…"}`).
fn error_message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .or_else(|| body["error"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A refusal with `status` and a message that says what to fix (never a 500).
fn assert_refused(status: u16, body: &Value, expected: &[u16], what: &str) {
    assert!(
        expected.contains(&status),
        "{what}: expected {expected:?}, got {status}: {body}"
    );
    let message = error_message(body);
    assert!(
        message.len() >= 10,
        "{what}: a message saying what to fix: {status} {body}"
    );
}

/// Like `assert_refused`, but notes a miss (to report them all at the end).
fn note_refused(misses: &mut Vec<String>, status: u16, body: &Value, expected: &[u16], what: &str) {
    if !expected.contains(&status) || error_message(body).len() < 10 {
        misses.push(format!(
            "{what}: expected {expected:?} with a message, got {status}: {body}"
        ));
    }
}

/// A build's version as a path segment (a number on the wire).
fn version_of(build: &Value) -> String {
    match &build["version"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("a build without a version: {other} in {build}"),
    }
}

/// Creates an environment; returns it (201, one version queued).
async fn create_environment(api: &Api, body: Value) -> Value {
    let (status, env) = api.post("/api/v1/environments", body.clone()).await;
    assert_eq!(status, 201, "create environment {body}: {env}");
    assert!(env["id"].is_string(), "{env}");
    let versions = env["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "the first build is queued: {env}");
    env
}

fn env_id(env: &Value) -> String {
    env["id"].as_str().expect("environment id").to_string()
}

fn first_version(env: &Value) -> String {
    version_of(&env["versions"][0])
}

/// Polls the build until its state is one of `states`; panics with its detail and log
/// when it ends in another.
async fn wait_build(
    lab: &Lab,
    api: &Api,
    env: &str,
    version: &str,
    states: &[&str],
    timeout: Duration,
) -> Value {
    let path = format!("/api/v1/environments/{env}/builds/{version}");
    let started = Instant::now();
    let build = try_wait_for(timeout, || {
        let path = path.clone();
        async move {
            let (status, build) = lab_get(lab, api, &path).await;
            assert_eq!(status, 200, "GET {path}: {build}");
            let state = build["state"].as_str().unwrap_or_default().to_string();
            if states.contains(&state.as_str()) {
                return Some(Ok(build));
            }
            if ["ready", "failed", "cancelled"].contains(&state.as_str()) {
                return Some(Err(build));
            }
            None
        }
    })
    .await;
    match build {
        Some(Ok(build)) => {
            lab.track(&build);
            eprintln!(
                "build {env}/{version} {} after {:.1}s",
                build["state"],
                started.elapsed().as_secs_f64()
            );
            build
        }
        Some(Err(build)) => {
            lab.track(&build);
            let log = build_log(api, env, version).await;
            panic!(
                "build {env}/{version} ended {} (wanted {states:?}): {build}\n--- build log\n{log}\n--- server log\n{}",
                build["state"],
                lab.log_tail()
            )
        }
        None => {
            let (_, build) = api.get(&path).await;
            panic!(
                "build {env}/{version} is still {} after {timeout:?}: {build}\n--- server log\n{}",
                build["state"],
                lab.log_tail()
            )
        }
    }
}

/// GET of the API, quoting the server's log when the server does not answer (it died).
async fn lab_get(lab: &Lab, api: &Api, path: &str) -> (u16, Value) {
    let sent = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .send()
        .await;
    let r = match sent {
        Ok(r) => r,
        Err(e) => panic!(
            "GET {path}: {e}\n--- the server's log (did it die?)\n{}",
            lab.log_tail()
        ),
    };
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A finished build's whole log (the endpoint ends when the build has ended).
async fn build_log(api: &Api, env: &str, version: &str) -> String {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        api.http
            .get(format!(
                "{}/api/v1/environments/{env}/builds/{version}/log",
                api.base
            ))
            .bearer_auth(&api.token)
            .send(),
    )
    .await;
    let Ok(Ok(r)) = r else {
        return "(the log did not answer)".into();
    };
    tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| "(the log did not end within 10 s)".into())
}

/// The live log of a build, read as it streams.
struct LogFollower {
    response: reqwest::Response,
    text: String,
    ended: bool,
}

impl LogFollower {
    async fn open(api: &Api, env: &str, version: &str) -> LogFollower {
        let response = api
            .http
            .get(format!(
                "{}/api/v1/environments/{env}/builds/{version}/log",
                api.base
            ))
            .bearer_auth(&api.token)
            .send()
            .await
            .expect("GET the build log");
        assert_eq!(response.status(), 200, "the build log");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        LogFollower {
            response,
            text: String::new(),
            ended: false,
        }
    }

    /// Reads until the log holds `needle`; panics with what it got after `timeout`.
    async fn until(&mut self, lab: &Lab, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.text.contains(needle) {
            assert!(
                !self.ended,
                "the log ended without {needle:?}:\n{}",
                self.text
            );
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => panic!(
                    "no {needle:?} in the live log within {timeout:?}:\n{}",
                    self.text
                ),
                Ok(Err(e)) => panic!(
                    "reading the log: {e}\n{}\n--- server log\n{}",
                    self.text,
                    lab.log_tail()
                ),
                Ok(Ok(None)) => self.ended = true,
                Ok(Ok(Some(bytes))) => self.text.push_str(&String::from_utf8_lossy(&bytes)),
            }
        }
    }

    /// Reads to the end of the log (the build has ended); panics after `timeout`.
    async fn until_end(&mut self, lab: &Lab, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.ended {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => panic!(
                    "the live log did not end within {timeout:?}:\n{}",
                    self.text
                ),
                Ok(Err(e)) => panic!(
                    "reading the log: {e}\n{}\n--- server log\n{}",
                    self.text,
                    lab.log_tail()
                ),
                Ok(Ok(None)) => self.ended = true,
                Ok(Ok(Some(bytes))) => self.text.push_str(&String::from_utf8_lossy(&bytes)),
            }
        }
        self.text.clone()
    }
}

/// Starts a notebook from an environment; returns its JSON once running.
async fn notebook_from(api: &Api, name: &str, env: &str) -> Value {
    let (status, nb) = api
        .post(
            "/api/v1/notebooks",
            json!({"name": name, "environment": env, "machine": "cpu"}),
        )
        .await;
    assert_eq!(status, 201, "a notebook from environment {env}: {nb}");
    let id = nb["id"].as_str().expect("notebook id").to_string();
    api.wait_state(&id, "running", READY).await
}

/// The image a container was created from, as a name and as an id.
fn image_of(container: &str) -> (String, String) {
    let info = docker_inspect(container);
    (
        info["Config"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        info["Image"].as_str().unwrap_or_default().to_string(),
    )
}

/// The id of an image (`docker image inspect`).
fn image_id(image: &str) -> String {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .expect("docker image inspect");
    assert!(out.status.success(), "no image {image}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the container runs `build`'s image.
fn runs_image_of(container: &str, build: &Value) -> bool {
    let image = build["image"].as_str().expect("the build's image");
    let (name, id) = image_of(container);
    name == image || id == image_id(image)
}

// ---- kernels through the proxy ----

// ---- fixtures ----

/// The wheel `notebox_demo-1.0-py3-none-any.whl` whose `notebox_demo.VALUE` is `value`,
/// written by tests/environments_fixtures/make_wheel.py (zipfile only).
fn demo_wheel(value: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/environments_fixtures/make_wheel.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .arg(value)
        .output()
        .expect("python3 make_wheel.py");
    assert!(
        out.status.success(),
        "make_wheel.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.path().join(WHEEL)).expect("the wheel")
}

/// A repository on the Git server with these files (path, content, executable), one
/// commit on `main`; returns the commit. (GitServer::repo writes no executable bits.)
fn repo_with_modes(server: &GitServer, name: &str, files: &[(&str, &[u8], bool)]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().expect("work tree");
    git(work.path(), &["init", "-q", "-b", "main"]);
    for (path, content, executable) in files {
        let p = work.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
        let mode = if *executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "-m", "first"]);
    let bare = server.bare(name);
    git(
        work.path(),
        &["clone", "-q", "--bare", ".", &bare.to_string_lossy()],
    );
    rev_parse(&bare, "main")
}

fn files_env(name: &str, files: Value) -> Value {
    json!({"name": name, "source": {"kind": "files", "base": "test", "files": files}})
}

/// A page's text with HTML's character references undone (askama writes `&` as `&#38;`).
fn unescape_html(page: &str) -> String {
    [
        ("&#38;", "&"),
        ("&amp;", "&"),
        ("&#60;", "<"),
        ("&lt;", "<"),
        ("&#62;", ">"),
        ("&gt;", ">"),
        ("&#34;", "\""),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&#x27;", "'"),
    ]
    .iter()
    .fold(page.to_string(), |t, (from, to)| t.replace(from, to))
}

fn page_contains(page: &str, text: &str) -> bool {
    unescape_html(page).contains(text)
}

// ---- 1. a Git repository: build, cache, versions ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_environment_builds_caches_and_versions() {
    let Some(image) = test_image() else { return };
    let lab = Lab::start(&image, "").await;
    let alice = lab.member("alice", false);

    // Bob's storage on this machine, with a file in it: a build must not see it.
    let bob_storage = lab.data.join("storage").join("bob");
    std::fs::create_dir_all(&bob_storage).expect("bob's storage");
    std::fs::write(bob_storage.join("private.txt"), "bob's").expect("bob's file");

    // The repository: a wheel, requirements.txt naming it, and a postBuild that writes a
    // file and looks for what a build must not reach.
    let data_dir = lab.data.display().to_string();
    let bob_dir = bob_storage.display().to_string();
    let post_build = format!(
        r#"#!/bin/sh
set -e
echo "postBuild starts"
# Long enough for the test to see the build still running while its log streams.
sleep 2
echo "built by postBuild" > "$HOME/postbuild-ran.txt"
found=""
for p in /var/run/docker.sock /run/docker.sock "{data_dir}" "{bob_dir}" "{bob_dir}/private.txt" /storage/private.txt; do
    if [ -e "$p" ]; then found="$found $p"; fi
done
echo "reachable:$found" > "$HOME/isolation.txt"
echo "postBuild done"
"#
    );
    let wheel = demo_wheel(WHEEL_VALUE);
    let git = GitServer::start(None);
    let first = repo_with_modes(
        &git,
        "demo",
        &[
            ("requirements.txt", format!("./{WHEEL}\n").as_bytes(), false),
            (WHEEL, &wheel, false),
            ("postBuild", post_build.as_bytes(), true),
            ("README.md", b"# demo\n", false),
        ],
    );

    let started = Instant::now();
    let env = create_environment(
        &alice,
        json!({"name": "demo", "source": {"kind": "repo", "url": git.url("demo"), "ref": "main"}}),
    )
    .await;
    let id = env_id(&env);
    let v1 = first_version(&env);
    assert_eq!(env["owner"], "alice", "{env}");
    assert_eq!(env["source"]["kind"], "repo", "{env}");
    assert_eq!(env["source"]["url"], git.url("demo"), "{env}");

    // The log streams while the build runs: the postBuild's first line arrives while the
    // build is still building, then the log ends with the build.
    let mut log = LogFollower::open(&alice, &id, &v1).await;
    log.until(&lab, "postBuild starts", BUILD).await;
    let (_, during) = alice
        .get(&format!("/api/v1/environments/{id}/builds/{v1}"))
        .await;
    assert_eq!(
        during["state"], "building",
        "the log streams while the build runs: {during}"
    );
    assert!(
        during["step"].as_str().is_some_and(|s| s.contains("Step")),
        "the step running: {during}"
    );
    let text = log.until_end(&lab, BUILD).await;
    let built = wait_build(&lab, &alice, &id, &v1, &["ready"], BUILD).await;
    eprintln!(
        "repo environment ready after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(text.contains("Step "), "{text}");
    assert!(text.contains("postBuild done"), "{text}");
    assert!(
        text.contains("notebox_demo") || text.contains("notebox-demo"),
        "pip's output: {text}"
    );
    assert_eq!(built["commit"], first.as_str(), "{built}");
    assert_eq!(built["cache_hit"], false, "{built}");
    assert!(built["size_bytes"].as_u64().unwrap_or(0) > 0, "{built}");
    assert!(
        built["image"].as_str().is_some_and(|i| !i.is_empty()),
        "{built}"
    );
    assert!(built["finished_at"].is_string(), "{built}");

    // A notebook from it: the package imports in a kernel reached through the proxy.
    let nb = notebook_from(&alice, "from-repo", &id).await;
    let nb_id = nb["id"].as_str().expect("id").to_string();
    assert_eq!(nb["environment"]["id"], id.as_str(), "{nb}");
    assert_eq!(nb["environment"]["name"], "demo", "{nb}");
    assert_eq!(version_of(&nb["environment"]), v1, "{nb}");
    let container = container_of(&nb_id);
    assert!(runs_image_of(&container, &built), "{built}");
    let value = run_in_kernel(&alice, &nb_id, "import notebox_demo; notebox_demo.VALUE").await;
    assert_eq!(value, format!("'{WHEEL_VALUE}'"));
    let ran = run_in_kernel(
        &alice,
        &nb_id,
        "import os; open(os.path.expanduser('~/postbuild-ran.txt')).read() + open(os.path.expanduser('~/isolation.txt')).read()",
    )
    .await;
    assert_eq!(
        ran, "'built by postBuild\\nreachable:\\n'",
        "postBuild ran, and reached neither the Docker socket, the data dir nor Bob's storage"
    );

    // The same commit again: the existing version, at once.
    let asked = Instant::now();
    let (status, again) = alice
        .post(
            &format!("/api/v1/environments/{id}/builds"),
            json!({"ref": "main"}),
        )
        .await;
    let took = asked.elapsed();
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["cache_hit"], true, "{again}");
    assert_eq!(version_of(&again), v1, "{again}");
    assert_eq!(again["state"], "ready", "{again}");
    assert!(took < Duration::from_secs(2), "a cache hit took {took:?}");
    let (_, listed) = alice.get(&format!("/api/v1/environments/{id}")).await;
    assert_eq!(
        listed["versions"].as_array().map(Vec::len),
        Some(1),
        "no new version: {listed}"
    );

    // A new commit: a new version; the running notebook keeps its own.
    let second = git.commit("demo", "main", &[("README.md", b"# demo, v2\n")], None);
    let (status, queued) = alice
        .post(
            &format!("/api/v1/environments/{id}/builds"),
            json!({"ref": "main"}),
        )
        .await;
    assert_eq!(status, 201, "{queued}");
    let v2 = version_of(&queued);
    assert_ne!(v2, v1, "{queued}");
    if let (Ok(a), Ok(b)) = (v1.parse::<u64>(), v2.parse::<u64>()) {
        assert!(b > a, "versions count up: {v1} then {v2}");
    }
    let newer = wait_build(&lab, &alice, &id, &v2, &["ready"], BUILD).await;
    assert_eq!(newer["commit"], second.as_str(), "{newer}");
    assert_eq!(newer["cache_hit"], false, "{newer}");
    let (_, listed) = alice.get(&format!("/api/v1/environments/{id}")).await;
    let versions: Vec<String> = listed["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(version_of)
        .collect();
    assert_eq!(
        versions,
        vec![v1.clone(), v2.clone()],
        "oldest first: {listed}"
    );
    let (_, nb) = alice.get(&format!("/api/v1/notebooks/{nb_id}")).await;
    assert_eq!(version_of(&nb["environment"]), v1, "{nb}");

    // Restarted, it still runs the version it was made with.
    let (status, body) = alice
        .post(&format!("/api/v1/notebooks/{nb_id}/restart"), json!({}))
        .await;
    assert!(status < 300, "restart: {status} {body}");
    let container = wait_for("the restarted notebook's new container", READY, || {
        let api = alice.clone();
        let nb_id = nb_id.clone();
        let old = container.clone();
        async move {
            let (_, nb) = api.get(&format!("/api/v1/notebooks/{nb_id}")).await;
            if nb["state"] != "running" {
                return None;
            }
            let now = containers_of_notebook(&nb_id);
            (now.len() == 1 && now[0] != old).then(|| now[0].clone())
        }
    })
    .await;
    assert!(
        runs_image_of(&container, &built),
        "the restarted notebook keeps version {v1}: {built}"
    );
    let (_, nb) = alice.get(&format!("/api/v1/notebooks/{nb_id}")).await;
    assert_eq!(version_of(&nb["environment"]), v1, "{nb}");

    // The new-notebook form offers it beside the catalog's images.
    let browser = lab.browser("alice").await;
    let form = browser
        .get(format!("{}/notebooks/new", lab.url()))
        .send()
        .await
        .expect("GET /notebooks/new")
        .text()
        .await
        .expect("form");
    assert!(form.contains(&format!("value=\"env:{id}\"")), "{form}");

    // Not deleted while a notebook runs one of its versions.
    let (status, answer) = alice
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/environments/{id}"),
            None,
        )
        .await;
    assert_refused(status, &answer, &[409], "deleting an environment in use");

    // A new notebook gets the newest ready version.
    let (status, fresh) = alice
        .post(
            "/api/v1/notebooks",
            json!({"name": "newest", "environment": id, "machine": "cpu"}),
        )
        .await;
    assert_eq!(status, 201, "{fresh}");
    assert_eq!(version_of(&fresh["environment"]), v2, "{fresh}");
    let fresh_id = fresh["id"].as_str().expect("id");
    alice.wait_state(fresh_id, "running", READY).await;
    assert!(runs_image_of(&container_of(fresh_id), &newer), "{newer}");
}

// ---- 2. failures: a failing step, cancel, memory and time limits ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_postbuild_and_cancel_and_limits() {
    let Some(image) = test_image() else { return };
    // Two labs, so that each limit is the only one a build can meet: memory (and the
    // failing step and cancel, which need none), and time.
    let lab = Lab::start(&image, "[environments]\nbuild_memory_mib = 128\n").await;
    let timed = Lab::start(&image, "[environments]\nbuild_timeout = \"20s\"\n").await;
    let alice = lab.member("alice", false);
    let carol = timed.member("carol", false);

    // The time limit's build runs beside the others (another lab, its own queue).
    let slow = create_environment(
        &carol,
        files_env(
            "slow",
            json!({"postBuild": "#!/bin/sh\necho waiting for the time limit\nsleep 60\n"}),
        ),
    )
    .await;

    // A postBuild that fails: the step, its output and its exit code are reported.
    let failing = create_environment(
        &alice,
        files_env(
            "failing",
            json!({"postBuild": "#!/bin/sh\necho about to fail\nexit 3\n"}),
        ),
    )
    .await;
    let hungry = create_environment(
        &alice,
        files_env(
            "hungry",
            json!({"postBuild": "#!/bin/sh\necho allocating\npython3 -c \"x = bytearray(512*1024*1024)\"\n"}),
        ),
    )
    .await;
    let (fid, fv) = (env_id(&failing), first_version(&failing));
    // One build at a time (concurrent_builds = 1): the second waits its turn.
    let (_, waiting) = alice
        .get(&format!(
            "/api/v1/environments/{}/builds/{}",
            env_id(&hungry),
            first_version(&hungry)
        ))
        .await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    let failed = wait_build(&lab, &alice, &fid, &fv, &["failed"], BUILD).await;
    let failed_step = failed["failed_step"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(failed_step.contains("postBuild"), "{failed}");
    assert!(failed_step.contains("Step"), "{failed}");
    let detail = failed["state_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("exited with code 3"), "{failed}");
    let log = build_log(&alice, &fid, &fv).await;
    assert!(log.contains("about to fail"), "{log}");
    assert!(log.contains("Step"), "{log}");
    let browser = lab.browser("alice").await;
    let r = browser
        .get(format!("{}/environments/{fid}", lab.url()))
        .send()
        .await
        .expect("GET the environment's page");
    assert_eq!(r.status(), 200);
    let page = r.text().await.expect("page");
    assert!(page.contains("id=\"build-state\""), "{page}");
    assert!(page.contains("id=\"build-log\""), "{page}");
    assert!(
        page_contains(&page, &failed_step),
        "the failing step: {page}"
    );
    assert!(page_contains(&page, "exited with code 3"), "{page}");
    // The log is shown by the page's script, from the address the page names.
    let log_url = regex::Regex::new(r#"data-build-log="([^"]+)""#)
        .expect("regex")
        .captures(&page)
        .map(|c| c[1].to_string())
        .unwrap_or_else(|| panic!("the page names its log: {page}"));
    let r = browser
        .get(format!("{}{log_url}", lab.url()))
        .send()
        .await
        .expect("GET the page's log");
    assert_eq!(r.status(), 200, "{log_url}");
    let shown = r.text().await.expect("log");
    assert!(
        shown.contains("about to fail"),
        "the step's output: {shown}"
    );

    // Over the memory limit: stopped, and said so.
    let (hid, hv) = (env_id(&hungry), first_version(&hungry));
    let over = wait_build(&lab, &alice, &hid, &hv, &["failed"], BUILD).await;
    let detail = over["state_detail"].as_str().unwrap_or_default();
    assert!(detail.to_lowercase().contains("memory limit"), "{over}");
    assert!(detail.contains("128 MiB"), "{over}");

    // What the failed builds left (reported, not held to: the contract speaks of cancel).
    for (what, env) in [("failing postBuild", &fid), ("over memory", &hid)] {
        let (containers, images) = build_leftovers(env);
        if !containers.is_empty() || !images.is_empty() {
            eprintln!(
                "NOTE: the {what} build left containers {containers:?}, dangling images {images:?}"
            );
        }
    }

    // Cancel a running build: cancelled within 2 s, and nothing of it left.
    let sleeper = create_environment(
        &alice,
        files_env(
            "sleeper",
            json!({"postBuild": "#!/bin/sh\necho going to sleep\nsleep 600\n"}),
        ),
    )
    .await;
    let (sid, sv) = (env_id(&sleeper), first_version(&sleeper));
    let mut live = LogFollower::open(&alice, &sid, &sv).await;
    live.until(&lab, "going to sleep", BUILD).await;
    let (_, running) = alice
        .get(&format!("/api/v1/environments/{sid}/builds/{sv}"))
        .await;
    assert_eq!(running["state"], "building", "{running}");
    assert!(
        running["step"]
            .as_str()
            .is_some_and(|s| s.contains("postBuild")),
        "the step running: {running}"
    );
    let page = browser
        .get(format!("{}/environments/{sid}", lab.url()))
        .send()
        .await
        .expect("GET the building environment's page")
        .text()
        .await
        .expect("page");
    assert!(
        page.contains("id=\"cancel-build\"") && page_contains(&page, "building"),
        "a running build's page has its state and a Cancel button: {page}"
    );
    let asked = Instant::now();
    let (status, answer) = alice
        .post(
            &format!("/api/v1/environments/{sid}/builds/{sv}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let cancelled = wait_build(
        &lab,
        &alice,
        &sid,
        &sv,
        &["cancelled"],
        Duration::from_secs(2),
    )
    .await;
    let took = asked.elapsed();
    assert!(took <= Duration::from_secs(2), "cancelled after {took:?}");
    assert!(
        cancelled["state_detail"]
            .as_str()
            .is_some_and(|d| d.to_lowercase().contains("cancelled")),
        "{cancelled}"
    );
    live.until_end(&lab, Duration::from_secs(5)).await;
    let left = try_wait_for(Duration::from_secs(2), || async {
        let (containers, images) = build_leftovers(&sid);
        (containers.is_empty() && images.is_empty()).then_some(())
    })
    .await;
    assert!(
        left.is_some(),
        "the cancelled build left (containers, dangling images) {:?}",
        build_leftovers(&sid)
    );
    let (status, again) = alice
        .post(
            &format!("/api/v1/environments/{sid}/builds/{sv}/cancel"),
            json!({}),
        )
        .await;
    assert!(
        (200..500).contains(&status) && status != 404,
        "cancelling an ended build: {status} {again}"
    );

    // Over the time limit: stopped, and said so.
    let (tid, tv) = (env_id(&slow), first_version(&slow));
    let late = wait_build(
        &timed,
        &carol,
        &tid,
        &tv,
        &["failed", "cancelled"],
        Duration::from_secs(60),
    )
    .await;
    let detail = late["state_detail"].as_str().unwrap_or_default();
    assert!(detail.to_lowercase().contains("time limit"), "{late}");
    let log = build_log(&carol, &tid, &tv).await;
    // The log ends with the reason (how far the build got before 20 s depends on the
    // machine's load: under the whole suite it may still be in an earlier step).
    assert!(log.contains("over the build time limit"), "{log}");
    let left = try_wait_for(Duration::from_secs(5), || async {
        let (containers, images) = build_leftovers(&tid);
        (containers.is_empty() && images.is_empty()).then_some(())
    })
    .await;
    assert!(
        left.is_some(),
        "the timed-out build left {:?}",
        build_leftovers(&tid)
    );
}

// ---- 3. Dockerfiles: the admin's choice ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerfile_policy() {
    let Some(image) = test_image() else { return };
    let lab = Lab::start(&image, "").await;
    let admin = lab.member("boss", true);
    let alice = lab.member("alice", false);
    let dockerfile = format!("FROM {image}\nUSER root\nRUN echo hi > /hi.txt\nUSER 1000:100\n");
    let source = json!({"kind": "dockerfile", "dockerfile": dockerfile});

    // A member, under the default `dockerfile = "admins"`: refused, in words.
    let (status, body) = alice
        .post(
            "/api/v1/environments",
            json!({"name": "mine", "source": source}),
        )
        .await;
    assert_refused(status, &body, &[403], "a member's Dockerfile");
    let message = error_message(&body).to_lowercase();
    assert!(
        message.contains("dockerfile") && message.contains("admin"),
        "the message says who may: {body}"
    );
    let (_, list) = alice.get("/api/v1/environments").await;
    assert_eq!(list["environments"], json!([]), "nothing was made: {list}");

    // The admin's builds, and every member sees it.
    let env = create_environment(&admin, json!({"name": "with-hi", "source": source})).await;
    let (id, v) = (env_id(&env), first_version(&env));
    assert_eq!(env["source"]["kind"], "dockerfile", "{env}");
    let built = wait_build(&lab, &admin, &id, &v, &["ready"], BUILD).await;
    let image = built["image"].as_str().expect("image").to_string();
    let out = Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "cat", &image, "/hi.txt"])
        .output()
        .expect("docker run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{built}");
    let log = build_log(&admin, &id, &v).await;
    assert!(log.contains("RUN echo hi"), "{log}");
    let (_, list) = alice.get("/api/v1/environments").await;
    let names: Vec<&str> = list["environments"]
        .as_array()
        .expect("environments")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["with-hi"],
        "an admin's environment is in everyone's catalog: {list}"
    );
}

// ---- 4. save a running notebook ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_notebook_as_environment() {
    let Some(image) = test_image() else { return };
    const SECRET: &str = "sk-save-7c1e9a3f5b";
    let lab = Lab::start(&image, "").await;
    let alice = lab.member("alice", false);
    let (status, body) = alice
        .send(
            reqwest::Method::PUT,
            "/api/v1/secrets/OPENAI_API_KEY",
            Some(json!({"value": SECRET})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A notebook from the catalog, and a package installed in it by hand.
    let id = alice.create_notebook("workbench").await;
    alice.wait_state(&id, "running", READY).await;
    let container = container_of(&id);
    let token = jupyter_token_of(&container);
    let wheel = demo_wheel(WHEEL_VALUE);
    let mut child = Command::new("docker")
        .args([
            "exec",
            "-i",
            &container,
            "sh",
            "-c",
            &format!("cat > /tmp/{WHEEL}"),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("docker exec");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&wheel)
            .expect("the wheel into the container");
    }
    assert!(child.wait().expect("docker exec").success());
    let (ok, out) = docker_exec(
        &container,
        &format!("PIP_BREAK_SYSTEM_PACKAGES=1 pip install --user --no-index /tmp/{WHEEL}"),
    );
    assert!(ok, "pip install in the notebook: {out}");

    // A name it needs.
    for (body, what) in [
        (json!({"environment": ""}), "an empty name"),
        (json!({"environment": "a/b"}), "a slash"),
        (json!({"environment": "x".repeat(65)}), "65 characters"),
        (json!({}), "no name"),
    ] {
        let (status, answer) = alice
            .post(&format!("/api/v1/notebooks/{id}/save"), body)
            .await;
        assert_refused(status, &answer, &[400], what);
    }

    // Saved: the container's layer becomes an environment.
    let (status, saved) = alice
        .post(
            &format!("/api/v1/notebooks/{id}/save"),
            json!({"environment": "mine"}),
        )
        .await;
    assert_eq!(status, 202, "{saved}");
    assert_eq!(saved["environment"]["name"], "mine", "{saved}");
    let env = env_id(&saved["environment"]);
    let v = version_of(&saved["build"]);
    let built = wait_build(&lab, &alice, &env, &v, &["ready"], BUILD).await;
    assert!(built["size_bytes"].as_u64().unwrap_or(0) > 0, "{built}");
    let saved_image = built["image"].as_str().expect("image").to_string();

    // Nothing of the old notebook's credentials is in the image.
    let inspect = Command::new("docker")
        .args(["image", "inspect", &saved_image])
        .output()
        .expect("docker image inspect");
    let inspected = String::from_utf8_lossy(&inspect.stdout).to_string();
    let config: Value = serde_json::from_str(&inspected).expect("inspect json");
    let env_vars = config[0]["Config"]["Env"].to_string();
    // Checked at the end, so that a leak does not hide whether the rest works.
    let mut leaks = Vec::new();
    if env_vars.contains(&token) {
        leaks.push(format!(
            "the old notebook's Jupyter token is in the image's Config.Env: {env_vars}"
        ));
    }
    if env_vars.contains(SECRET) {
        leaks.push(format!(
            "the member's secret is in the image's Config.Env: {env_vars}"
        ));
    }
    if let Some(labels) = config[0]["Config"]["Labels"].as_object() {
        let labels = Value::Object(labels.clone()).to_string();
        if labels.contains(SECRET) || labels.contains(&token) {
            leaks.push(format!("a credential is in the image's labels: {labels}"));
        }
    }
    if leaks.is_empty() && (inspected.contains(SECRET) || inspected.contains(&token)) {
        leaks.push(format!(
            "a credential is in `docker image inspect`: {inspected}"
        ));
    }

    // A new notebook from it imports the package, with its own token and the secret's
    // value of now (from its start, not from the image).
    const NEWER: &str = "sk-save-newer-2d8b6e";
    let (status, body) = alice
        .send(
            reqwest::Method::PUT,
            "/api/v1/secrets/OPENAI_API_KEY",
            Some(json!({"value": NEWER})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let nb = notebook_from(&alice, "from-saved", &env).await;
    let nb_id = nb["id"].as_str().expect("id").to_string();
    assert_eq!(nb["environment"]["name"], "mine", "{nb}");
    assert_eq!(nb["environment"]["id"], env.as_str(), "{nb}");
    let new_container = container_of(&nb_id);
    assert!(runs_image_of(&new_container, &built), "{built}");
    let value = run_in_kernel(&alice, &nb_id, "import notebox_demo; notebox_demo.VALUE").await;
    assert_eq!(value, format!("'{WHEEL_VALUE}'"));
    let seen = run_in_kernel(
        &alice,
        &nb_id,
        "import os; os.environ.get('OPENAI_API_KEY')",
    )
    .await;
    assert_eq!(seen, format!("'{NEWER}'"));
    assert_ne!(jupyter_token_of(&new_container), token);
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

// ---- 5. bad input ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs() {
    let Some(image) = test_image() else { return };
    let lab = Lab::start(&image, "").await;
    let alice = lab.member("alice", false);
    let bob = lab.member("bob", false);
    let git = GitServer::start(None);
    git.repo("ok", &[("README.md", b"ok\n")], &[]);
    let good_url = git.url("ok");

    // One good environment: for the duplicate name, and as someone else's.
    let fine = || json!({"postBuild": "#!/bin/sh\necho fine\n"});
    let env = create_environment(&alice, files_env("good", fine())).await;
    let (id, v) = (env_id(&env), first_version(&env));

    let repo = |url: &str, reference: Option<&str>| {
        let mut source = json!({"kind": "repo", "url": url});
        if let Some(r) = reference {
            source["ref"] = json!(r);
        }
        json!({"name": "from-git", "source": source})
    };
    let with_file = |name: &str, content: &str| {
        let mut files = serde_json::Map::new();
        files.insert(name.to_string(), json!(content));
        files_env("with-file", Value::Object(files))
    };
    let long_url = format!("http://127.0.0.1/{}.git", "a".repeat(5000));
    let big = "x".repeat(11 * 1024 * 1024);
    let cases: Vec<(Value, &[u16], &str)> = vec![
        // names
        (files_env("", fine()), &[400], "an empty name"),
        (files_env(&"n".repeat(65), fine()), &[400], "65 characters"),
        (files_env("bad\nname", fine()), &[400], "a newline"),
        (files_env("bad\u{0}name", fine()), &[400], "a NUL"),
        (files_env("a/b", fine()), &[400], "a slash"),
        (files_env("<script>", fine()), &[400], "markup"),
        (
            json!({"name": 5, "source": {"kind": "files", "files": fine()}}),
            &[400],
            "a number as name",
        ),
        (files_env("good", fine()), &[409], "a duplicate name"),
        // sources
        (json!({"name": "x"}), &[400], "no source"),
        (
            json!({"name": "x", "source": {"kind": "conda"}}),
            &[400],
            "an unknown kind",
        ),
        (
            json!({"name": "x", "source": "files"}),
            &[400],
            "a source that is a string",
        ),
        (
            json!({"name": "x", "source": {"kind": "files", "base": "nope", "files": {}}}),
            &[400],
            "an unknown base",
        ),
        // URLs
        (repo("ftp://127.0.0.1/x.git", None), &[400], "ftp://"),
        (repo("file:///etc", None), &[400], "file://"),
        (repo("", None), &[400], "an empty URL"),
        (
            repo("--upload-pack=touch /tmp/x", None),
            &[400],
            "an option as URL",
        ),
        (
            repo(
                &format!("http://user:secret@127.0.0.1:{}/ok.git", git.port),
                None,
            ),
            &[400],
            "credentials in the URL",
        ),
        (repo(&long_url, None), &[400], "a 5000-character URL"),
        // refs
        (
            repo(&good_url, Some("--upload-pack=x")),
            &[400],
            "an option as ref",
        ),
        (repo(&good_url, Some("a..b")), &[400], "a..b"),
        (repo(&good_url, Some("a b")), &[400], "a space in the ref"),
        (
            repo(&good_url, Some(&"r".repeat(300))),
            &[400],
            "a 300-character ref",
        ),
        (
            json!({"name": "x", "source": {"kind": "repo", "url": good_url, "subdir": "../up"}}),
            &[400],
            "a subdir out of the tree",
        ),
        // files
        (
            with_file("../postBuild", "x"),
            &[400],
            "a file name with ..",
        ),
        // (a folder is allowed: binder/postBuild, as repo2docker has it; not a path to clean up)
        (
            with_file("binder/../../x", "x"),
            &[400],
            "a file name with .. inside",
        ),
        (with_file("./postBuild", "x"), &[400], "a file name with ./"),
        (
            with_file("binder//postBuild", "x"),
            &[400],
            "a file name with //",
        ),
        (with_file("binder/", "x"), &[400], "a folder as file name"),
        (
            with_file("/etc/passwd", "x"),
            &[400],
            "an absolute file name",
        ),
        (with_file("..", "x"), &[400], "the name .."),
        (with_file("", "x"), &[400], "an empty file name"),
        (
            with_file("bad\u{1}name", "x"),
            &[400],
            "a control character in a file name",
        ),
        (with_file("postBuild", &big), &[400, 413], "an 11 MiB file"),
        (
            json!({"name": "x", "source": {"kind": "files", "files": {"postBuild": 5}}}),
            &[400],
            "a file that is a number",
        ),
        // Dockerfiles (a member: not theirs to send, and so refused before anything else)
        (
            json!({"name": "x", "source": {"kind": "dockerfile", "dockerfile": ""}}),
            &[400, 403],
            "an empty Dockerfile",
        ),
    ];
    // Every case is tried (and what was wrongly made, removed) before the verdict, so
    // that one run names every miss.
    let mut misses = Vec::new();
    for (body, expected, what) in cases {
        let (status, answer) = alice.post("/api/v1/environments", body).await;
        let message = error_message(&answer);
        if !expected.contains(&status) || message.len() < 10 {
            misses.push(format!(
                "{what}: expected {expected:?} with a message, got {status}: {answer}"
            ));
        }
        if status == 201 {
            if let Some(made) = answer["id"].as_str() {
                alice
                    .send(
                        reqwest::Method::DELETE,
                        &format!("/api/v1/environments/{made}"),
                        None,
                    )
                    .await;
            }
        }
    }
    // An absolute subdir: refused, or taken as a folder of the repository.
    let (status, answer) = alice
        .post(
            "/api/v1/environments",
            json!({"name": "abs", "source": {"kind": "repo", "url": good_url, "subdir": "/etc"}}),
        )
        .await;
    match status {
        400 => note_refused(&mut misses, status, &answer, &[400], "an absolute subdir"),
        201 => {
            assert_eq!(
                answer["source"]["subdir"], "etc",
                "inside the tree: {answer}"
            );
            let made = env_id(&answer);
            alice
                .send(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/environments/{made}"),
                    None,
                )
                .await;
        }
        _ => misses.push(format!("an absolute subdir: {status} {answer}")),
    }
    let r = alice
        .http
        .post(format!("{}/api/v1/environments", lab.url()))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    let answer: Value = r.json().await.unwrap_or(Value::Null);
    note_refused(
        &mut misses,
        status,
        &answer,
        &[400],
        "a body that is not JSON",
    );

    // Not there, not hers, not a version.
    for path in [
        "/api/v1/environments/nope".to_string(),
        "/api/v1/environments/0".to_string(),
        format!("/api/v1/environments/{id}/builds/999"),
        format!("/api/v1/environments/{id}/builds/999/log"),
    ] {
        let (status, answer) = alice.get(&path).await;
        note_refused(&mut misses, status, &answer, &[404], &path);
    }
    for path in [
        format!("/api/v1/environments/{id}/builds/abc"),
        format!("/api/v1/environments/{id}/builds/-1"),
        format!("/api/v1/environments/{id}/builds/1.5"),
        format!("/api/v1/environments/{id}/builds/99999999999999999999999"),
        format!("/api/v1/environments/{id}/builds/abc/log"),
    ] {
        let (status, answer) = alice.get(&path).await;
        note_refused(&mut misses, status, &answer, &[400, 404], &path);
    }
    let (status, answer) = alice
        .post(
            &format!("/api/v1/environments/{id}/builds/abc/cancel"),
            json!({}),
        )
        .await;
    note_refused(
        &mut misses,
        status,
        &answer,
        &[400, 404],
        "cancel of version abc",
    );
    for (method, path) in [
        (reqwest::Method::GET, format!("/api/v1/environments/{id}")),
        (
            reqwest::Method::GET,
            format!("/api/v1/environments/{id}/builds/{v}"),
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/environments/{id}/builds/{v}/log"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/environments/{id}/builds"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/environments/{id}/builds/{v}/cancel"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/v1/environments/{id}"),
        ),
    ] {
        let body = (method == reqwest::Method::POST).then(|| json!({}));
        let (status, answer) = bob.send(method.clone(), &path, body).await;
        note_refused(
            &mut misses,
            status,
            &answer,
            &[404],
            &format!("Bob: {method} {path}"),
        );
    }
    let (_, list) = bob.get("/api/v1/environments").await;
    assert_eq!(
        list["environments"],
        json!([]),
        "Alice's is private: {list}"
    );
    let (status, answer) = bob
        .post(
            "/api/v1/notebooks",
            json!({"name": "x", "environment": id, "machine": "cpu"}),
        )
        .await;
    note_refused(
        &mut misses,
        status,
        &answer,
        &[400, 403, 404],
        "Bob's notebook from Alice's environment",
    );
    let (status, answer) = alice
        .post(
            "/api/v1/notebooks",
            json!({"name": "x", "environment": "nope", "machine": "cpu"}),
        )
        .await;
    note_refused(
        &mut misses,
        status,
        &answer,
        &[400, 404],
        "a notebook from no environment",
    );
    for (body, what) in [
        (json!({"ref": "--upload-pack=x"}), "an option as ref"),
        (json!({"ref": 5}), "a number as ref"),
    ] {
        let (status, answer) = alice
            .post(&format!("/api/v1/environments/{id}/builds"), body)
            .await;
        note_refused(&mut misses, status, &answer, &[400], what);
    }
    let browser = lab.browser("bob").await;
    let r = browser
        .get(format!("{}/environments/{id}", lab.url()))
        .send()
        .await
        .expect("GET page");
    assert_eq!(r.status(), 404, "Alice's environment's page, for Bob");

    // Still whole: the good environment builds, and nothing else was made.
    wait_build(&lab, &alice, &id, &v, &["ready"], BUILD).await;
    let (_, list) = alice.get("/api/v1/environments").await;
    let names: Vec<&str> = list["environments"]
        .as_array()
        .expect("environments")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, vec!["good"], "{list}");
    assert!(
        !lab.server.stderr().contains("panicked"),
        "the server panicked:\n{}",
        lab.log_tail()
    );
    assert!(
        misses.is_empty(),
        "{} bad inputs were not refused as they should be:\n{}",
        misses.len(),
        misses.join("\n")
    );
}

// ---- 6. hostile repositories ----

/// A repository's links that point out of its tree are never followed on this machine
/// (their targets are files of the host, here the test's own), and a repository past
/// the fetch's limits fails its build with the limit in words. (The 2 GiB file is
/// tested at the fetch itself, in tests/it/launch.rs: the same code, 16 s to make.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_repositories() {
    let Some(image) = test_image() else { return };
    let lab = Lab::start(&image, "").await;
    let alice = lab.member("alice", false);
    let host = tempfile::tempdir().expect("host dir");
    const SECRET: &str = "host-only-3f9a61c2";
    std::fs::write(host.path().join("secret.txt"), SECRET).expect("host secret");
    std::fs::write(host.path().join(format!("{SECRET}.name")), "").expect("host name");
    let secret_file = host.path().join("secret.txt").display().to_string();
    let host_dir = host.path().display().to_string();
    let git = GitServer::start(None);
    git.repo(
        "links",
        &[(
            "postBuild",
            b"#!/bin/sh\n{ cat leak; echo; ls up/ 2>&1; cat up/secret.txt 2>&1; } > \"$HOME/links.txt\" 2>&1 || true\necho links read\n",
        )],
        &[("leak", secret_file.as_str()), ("up", host_dir.as_str())],
    );
    git.repo_with_many_files("many", 100_000);

    let links = create_environment(
        &alice,
        json!({"name": "links", "source": {"kind": "repo", "url": git.url("links")}}),
    )
    .await;
    let many = create_environment(
        &alice,
        json!({"name": "many", "source": {"kind": "repo", "url": git.url("many")}}),
    )
    .await;

    let (lid, lv) = (env_id(&links), first_version(&links));
    let built = wait_build(&lab, &alice, &lid, &lv, &["ready"], BUILD).await;
    let image = built["image"].as_str().expect("image");
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            image,
            "/home/jovyan/links.txt",
        ])
        .output()
        .expect("docker run");
    let seen = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("what postBuild read through the links:\n{seen}");
    assert!(out.status.success(), "postBuild wrote its file: {seen}");
    assert!(
        !seen.contains(SECRET),
        "a link out of the tree was followed on the host: {seen}"
    );
    let log = build_log(&alice, &lid, &lv).await;
    assert!(log.contains("links read"), "{log}");
    assert!(!log.contains(SECRET), "{log}");

    let (mid, mv) = (env_id(&many), first_version(&many));
    let refused = wait_build(&lab, &alice, &mid, &mv, &["failed"], BUILD).await;
    let detail = refused["state_detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("100 000 files") && detail.contains("20 000"),
        "the limit in words: {refused}"
    );
}

// ---- what a review found (regression tests) ----

/// A step that prints lines looking like the engine's "Step N/M" (millions of them,
/// fast) neither becomes the build's step nor piles up in Notebox's memory: lines go
/// straight to the log (cut at 8 MiB), and only the engine's next step counts.
/// A member's private environment is not pinned by someone else's fork: the fork of a
/// notebook that runs it runs the catalog image, names nothing of it, and the owner can
/// still delete it. A save cannot be cancelled half-way; an environment deleted while it
/// builds takes its build with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fake_steps_a_fork_and_a_delete_mid_build() {
    let Some(image) = test_image() else { return };
    let lab = Lab::start(&image, "").await;
    let alice = lab.member("alice", false);
    let bob = lab.member("bob", false);

    let flood = create_environment(
        &alice,
        files_env(
            "flood",
            json!({"postBuild": "#!/bin/sh\nyes 'Step 1/1 : RUN fake' | head -n 3000000\necho flood done\n"}),
        ),
    )
    .await;
    let (fid, fv) = (env_id(&flood), first_version(&flood));
    // An environment deleted while its build waits (or runs) takes the build with it:
    // cancelled first, nothing left behind.
    let doomed = create_environment(
        &alice,
        files_env("doomed", json!({"postBuild": "#!/bin/sh\nsleep 600\n"})),
    )
    .await;
    let did = env_id(&doomed);
    let (status, body) = alice
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/environments/{did}"),
            None,
        )
        .await;
    assert_eq!(status, 204, "delete during a build: {body}");
    let (status, _) = alice.get(&format!("/api/v1/environments/{did}")).await;
    assert_eq!(status, 404);
    let (containers, images) = build_leftovers(&did);
    assert!(
        containers.is_empty() && images.is_empty(),
        "{containers:?} {images:?}"
    );
    let built = wait_build(&lab, &alice, &fid, &fv, &["ready"], BUILD).await;
    let step = built["step"].as_str().unwrap_or_default();
    assert!(
        step.contains("postBuild") && !step.contains("fake"),
        "the engine's step, not the step's output: {built}"
    );
    let log = build_log(&alice, &fid, &fv).await;
    assert!(
        log.len() < 9 * 1024 * 1024,
        "the log is cut: {} bytes",
        log.len()
    );
    assert!(log.contains("the log is cut here"), "the cut is said");
    assert!(log.contains("Built "), "the end is still written");

    // Alice's notebook from her private environment, shared by link; Bob forks it.
    let nb = notebook_from(&alice, "private setup", &fid).await;
    let nid = nb["id"].as_str().expect("id").to_string();
    let (status, share) = alice
        .post(
            &format!("/api/v1/notebooks/{nid}/shares"),
            json!({"visibility": "link"}),
        )
        .await;
    assert!(status == 200 || status == 201, "share: {share}");
    let token = share["token"].as_str().expect("token").to_string();
    let (status, fork) = bob
        .post(&format!("/api/v1/shares/{token}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "fork: {fork}");
    assert!(
        fork["environment"].is_null(),
        "the fork names nothing of it: {fork}"
    );
    assert_eq!(
        fork["image_id"], "test",
        "the fork runs the catalog image: {fork}"
    );
    assert!(!fork.to_string().contains(&fid), "{fork}");

    // A save cannot be cancelled half-way.
    let (status, saved) = alice
        .post(
            &format!("/api/v1/notebooks/{nid}/save"),
            json!({"environment": "snapshot"}),
        )
        .await;
    assert_eq!(status, 202, "save: {saved}");
    let (sid, sv) = (
        saved["environment"]["id"].as_str().expect("id").to_string(),
        version_of(&saved["build"]),
    );
    let (status, body) = alice
        .post(
            &format!("/api/v1/environments/{sid}/builds/{sv}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "cancel a save: {body}");
    wait_build(&lab, &alice, &sid, &sv, &["ready"], BUILD).await;

    // Alice deletes her notebook, then her environment: Bob's fork does not hold it.
    let (status, _) = alice
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/notebooks/{nid}"),
            None,
        )
        .await;
    assert!(status < 300, "delete the notebook: {status}");
    let deleted = try_wait_for(Duration::from_secs(60), || async {
        let (status, _) = alice
            .send(
                reqwest::Method::DELETE,
                &format!("/api/v1/environments/{fid}"),
                None,
            )
            .await;
        (status == 204).then_some(())
    })
    .await;
    assert!(
        deleted.is_some(),
        "the owner deletes her environment despite Bob's fork"
    );
}
