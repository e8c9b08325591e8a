//! The attack suite (issue 10): every finding of the adversarial review, reproduced against
//! the real server, must stay closed. A member's container is played by a thread that
//! flips files and folders of the notebook's directory between regular entries and
//! symlinks to host files while strangers and members read, list, render and fork.

use crate::common;
use crate::webhook_receiver;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use webhook_receiver::Receiver;

/// Appears only in files outside the notebook's directory.
const MARKER: &str = "NOTEBOX-HOST-SECRET-7f3a9c";
const SQLITE_MAGIC: &[u8] = b"SQLite format 3";

/// The tests that time requests do not share the CPU with the symlink races (which keep a
/// core busy flipping files): they take turns.
static CPU_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn leaked(body: &[u8]) -> bool {
    body.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
        || body.windows(SQLITE_MAGIC.len()).any(|w| w == SQLITE_MAGIC)
}

/// A config with the test catalog but a Docker socket that does not exist: these tests
/// need notebook rows and folders, not containers.
fn no_docker(config: &mut notebox::Config) {
    docker_config(config, "notebox-test-missing:none");
    config.docker.socket = "/nonexistent/notebox-attack-docker.sock".into();
}

fn notebook_with_markdown(text: &str) -> String {
    json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
           "cells": [{"cell_type": "markdown", "metadata": {}, "source": text}]})
    .to_string()
}

/// Plays the member's container: flips `race.txt`, `d` and `main.ipynb` between their
/// honest versions and symlinks to files outside the notebook folder, as fast as it can.
struct Flipper {
    stop: Arc<AtomicBool>,
    flips: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flipper {
    fn start(notebook_dir: &Path, data_dir: &Path) -> Flipper {
        let (dir, data) = (notebook_dir.to_path_buf(), data_dir.to_path_buf());
        std::fs::write(data.join("secret.txt"), MARKER).expect("secret");
        std::fs::write(
            data.join("secret.ipynb"),
            notebook_with_markdown(&format!("# {MARKER}")),
        )
        .expect("secret notebook");
        let stop = Arc::new(AtomicBool::new(false));
        let flips = Arc::new(AtomicU64::new(0));
        let (s, f) = (stop.clone(), flips.clone());
        let thread = std::thread::spawn(move || {
            let honest_nb = notebook_with_markdown("# An honest notebook");
            let swap_file = |name: &str, honest: &str, target: &Path, evil: bool| {
                let tmp = dir.join(format!(".{name}.tmp"));
                let _ = std::fs::remove_file(&tmp);
                if evil {
                    let _ = std::os::unix::fs::symlink(target, &tmp);
                } else {
                    let _ = std::fs::write(&tmp, honest);
                }
                let _ = std::fs::rename(&tmp, dir.join(name));
            };
            let mut evil = false;
            while !s.load(Ordering::Relaxed) {
                evil = !evil;
                swap_file("race.txt", "inside", &data.join("secret.txt"), evil);
                swap_file("main.ipynb", &honest_nb, &data.join("secret.ipynb"), evil);
                let d = dir.join("d");
                if evil {
                    let _ = std::fs::remove_dir_all(&d);
                    let _ = std::fs::remove_file(&d);
                    let _ = std::os::unix::fs::symlink(&data, &d);
                } else {
                    let _ = std::fs::remove_file(&d);
                    let _ = std::fs::create_dir(&d);
                    let _ = std::fs::write(d.join("notebox.db"), "inside-db");
                    let _ = std::fs::write(d.join("secret.txt"), "inside");
                }
                f.fetch_add(1, Ordering::Relaxed);
            }
        });
        Flipper {
            stop,
            flips,
            thread: Some(thread),
        }
    }

    fn flips(&self) -> u64 {
        self.flips.load(Ordering::Relaxed)
    }
}

impl Drop for Flipper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every regular file under `dir` (no symlink followed); panics on a symlink.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = entry.path().symlink_metadata().expect("lstat");
            assert!(
                !meta.file_type().is_symlink(),
                "a fork contains a symlink: {}",
                entry.path().display()
            );
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_races_leak_nothing_from_outside_the_notebook() {
    let _turn = CPU_HEAVY.lock().await;
    let server = TestServer::start_with(no_docker).await;
    add_user(&server, "mallory", "mallory-password", false);
    add_user(&server, "victim", "victim-password", false);
    let mallory = Api::new(&server.url, &token_for(&server, "mallory"));
    let victim = Api::new(&server.url, &token_for(&server, "victim"));
    let id = mallory.create_notebook("racy").await;
    let dir = server.data_dir().join("notebooks").join(&id);
    std::fs::create_dir_all(&dir).expect("notebook dir");
    let token = mallory.share(&id, "public").await;

    let flipper = Flipper::start(&dir, server.data_dir());
    let anon = reqwest::Client::new();
    const ATTEMPTS: usize = 1000;
    let mut leaks = Vec::new();
    let mut served = std::collections::HashMap::<&str, usize>::new();
    for path in [
        "raw/race.txt",
        "raw/d/notebox.db",
        "raw/d/secret.txt",
        "view/race.txt",
        "view/d/secret.txt",
        "view/main.ipynb",
        "",
    ] {
        for _ in 0..ATTEMPTS {
            let r = anon
                .get(format!("{}/s/{token}/{path}", server.url))
                .send()
                .await
                .expect("share request");
            let status = r.status().as_u16();
            assert!(status == 200 || status == 404, "{path}: status {status}");
            if status == 200 {
                *served.entry(path).or_default() += 1;
            }
            let body = r.bytes().await.expect("body");
            if leaked(&body) {
                leaks.push(format!("/s/…/{path}"));
            }
        }
    }
    // The gallery's preview is computed when a share is made: race that too.
    for _ in 0..ATTEMPTS / 4 {
        let (status, _) = mallory
            .post(
                &format!("/api/v1/notebooks/{id}/shares"),
                json!({"visibility": "public"}),
            )
            .await;
        assert_eq!(status, 201);
    }
    for _ in 0..ATTEMPTS {
        let body = anon
            .get(format!("{}/gallery", server.url))
            .send()
            .await
            .expect("gallery")
            .bytes()
            .await
            .expect("body");
        if leaked(&body) {
            leaks.push("/gallery".into());
        }
    }
    // Forks of the share (by another member) and of one's own notebook.
    let mut forks = Vec::new();
    for i in 0..ATTEMPTS {
        let (who, path) = if i % 2 == 0 {
            (&victim, format!("/api/v1/shares/{token}/fork"))
        } else {
            (&mallory, format!("/api/v1/notebooks/{id}/fork"))
        };
        let (status, nb) = who.post(&path, json!({})).await;
        assert_eq!(status, 201, "fork: {nb}");
        forks.push(nb["id"].as_str().expect("fork id").to_string());
    }
    let flips = flipper.flips();
    drop(flipper);
    for fork in &forks {
        for file in files_under(&server.data_dir().join("notebooks").join(fork)) {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert!(
                !name.starts_with('.'),
                "a fork copied a hidden file: {}",
                file.display()
            );
            if leaked(&std::fs::read(&file).expect("read fork file")) {
                leaks.push(format!("fork {fork}: {}", file.display()));
            }
        }
    }
    eprintln!(
        "{} share requests, {} gallery requests, {} forks against {flips} flips; served: {served:?}",
        ATTEMPTS * 7,
        ATTEMPTS,
        forks.len()
    );
    assert!(flips > 100, "the flipper hardly ran ({flips} flips)");
    assert!(
        served.values().all(|n| *n > 0),
        "every path was served honestly at least once: {served:?}"
    );
    assert!(
        leaks.is_empty(),
        "{} leaks: {:?}",
        leaks.len(),
        &leaks[..leaks.len().min(20)]
    );
    // The database was never opened through the race: writes still work.
    let (status, body) = mallory
        .post(
            &format!("/api/v1/notebooks/{id}/shares"),
            json!({"visibility": "link"}),
        )
        .await;
    assert_eq!(status, 201, "a write after the races: {body}");
}

/// The server process's resident memory, current and peak (KiB).
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The real binary with the test catalog, no Docker, and `extra` TOML appended.
async fn spawn_server(dir: &Path, extra: &str) -> ServerProcess {
    let data = dir.join("data");
    let config = dir.join("config.toml");
    let toml = docker_config_toml(&data, "notebox-test-missing:none")
        .replacen(
            "[notebooks]",
            "[docker]\nsocket = \"/nonexistent/notebox-attack-docker.sock\"\n[notebooks]",
            1,
        )
        .replacen("[notebooks]", &format!("{extra}\n[notebooks]"), 1);
    std::fs::write(&config, toml).expect("config");
    ServerProcess::spawn(
        dir,
        &["--config", config.to_str().expect("utf-8 path")],
        &[],
    )
    .await
}

/// The member "member" of a server run as a child process, with an API client.
fn add_member(server: &ServerProcess, data: &Path) -> Api {
    let out = run_cli(
        data,
        &["user", "add", "member", "--password-stdin"],
        Some("member-password\n"),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let token = run_cli(data, &["token", "create", "member"], None)
        .stdout
        .trim()
        .to_string();
    Api::new(&server.url, &token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_hammering_is_bounded_in_checks_and_memory() {
    // Hashing passwords as fast as it can: beside the anonymous-cost test it would be that
    // test's time that is measured.
    let _turn = CPU_HEAVY.lock().await;
    let tmp = tempfile::tempdir().expect("tmp");
    // The per-address limit is raised so that the bound on concurrent password checks,
    // not the throttle, is what the 200-login burst meets.
    let server = spawn_server(
        tmp.path(),
        "[auth]\nmax_failures_per_address = 100000\nmax_failures_per_account_total = 100000",
    )
    .await;
    let data = tmp.path().join("data");
    let out = run_cli(
        &data,
        &["user", "add", "target", "--password-stdin"],
        Some("target-password\n"),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let pid = server.child.id();
    let (rss_before, _) = rss_kib(pid);

    let http = client();
    let page = http
        .get(format!("{}/login", server.url))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("body");
    let csrf = csrf_from(&page);
    let attempt = |user: String, password: String| {
        let (http, url, csrf) = (http.clone(), server.url.clone(), csrf.clone());
        async move {
            http.post(format!("{url}/login"))
                .form(&[
                    ("username", user.as_str()),
                    ("password", &password),
                    ("csrf", &csrf),
                ])
                .send()
                .await
                .expect("POST /login")
                .status()
                .as_u16()
        }
    };
    // 60 concurrent wrong passwords for one account from one address.
    let statuses = futures_util::future::join_all(
        (0..60).map(|i| attempt("target".into(), format!("wrong-password-{i}"))),
    )
    .await;
    let verified = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    eprintln!("60 concurrent wrong logins: {verified} checked (401), {refused} refused (429)");
    assert!(
        verified <= 5,
        "at most 5 checked, got {verified}: {statuses:?}"
    );
    assert_eq!(verified + refused, 60, "{statuses:?}");
    // Up to the limit of 5 checked failures (fewer may have been checked: the rest of
    // the burst was refused as busy), then even the right password is refused.
    for i in verified..5 {
        assert_eq!(
            attempt("target".into(), format!("wrong-again-{i}")).await,
            401
        );
    }
    assert_eq!(
        attempt("target".into(), "target-password".into()).await,
        429
    );

    // 200 concurrent logins for 200 accounts: the argon2 checks are bounded.
    let statuses = futures_util::future::join_all(
        (0..200).map(|i| attempt(format!("nobody{i}"), "wrong-password".into())),
    )
    .await;
    let (rss_after, peak) = rss_kib(pid);
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let busy = statuses.iter().filter(|s| **s == 429).count();
    eprintln!(
        "200 concurrent logins: {checked} checked, {busy} refused; RSS {} → {} MiB, peak {} MiB",
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024
    );
    assert_eq!(checked + busy, 200, "{statuses:?}");
    assert!(busy > 0, "some were refused at once, not queued");
    assert!(peak < 150 * 1024, "peak RSS {} MiB ≥ 150 MiB", peak / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_stay_cheap_whatever_the_notebook_holds() {
    let _turn = CPU_HEAVY.lock().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let server = spawn_server(tmp.path(), "").await;
    let data = tmp.path().join("data");
    let member = add_member(&server, &data);

    // Three shared notebooks, each hostile in its own way.
    let mut shares = Vec::new();
    for name in ["sparse", "quadratic", "many-dirs"] {
        let id = member.create_notebook(name).await;
        let dir = data.join("notebooks").join(&id);
        std::fs::create_dir_all(&dir).expect("dir");
        match name {
            "sparse" => {
                let f = std::fs::File::create(dir.join("huge.ipynb")).expect("create");
                f.set_len(3 << 30).expect("3 GiB sparse");
            }
            "quadratic" => std::fs::write(
                dir.join("math.ipynb"),
                notebook_with_markdown(&"$x$ ".repeat(40_000)),
            )
            .expect("write"),
            _ => {
                for i in 0..150_000 {
                    std::fs::create_dir(dir.join(format!("d{i:06}"))).expect("mkdir");
                }
                std::fs::write(dir.join("zz.ipynb"), notebook_with_markdown("# after"))
                    .expect("write");
            }
        }
        shares.push((name, member.share(&id, "public").await));
    }

    let pid = server.child.id();
    let anon = reqwest::Client::new();
    let mut paths = vec!["/gallery".to_string()];
    for (name, token) in &shares {
        paths.push(format!("/s/{token}/"));
        match *name {
            "sparse" => {
                paths.push(format!("/s/{token}/view/huge.ipynb"));
            }
            "quadratic" => paths.push(format!("/s/{token}/view/math.ipynb")),
            _ => {}
        }
    }
    // Warm up once (first-use allocations are not a request's cost).
    for p in &paths {
        anon.get(format!("{}{p}", server.url))
            .send()
            .await
            .expect("warm-up");
    }
    for p in &paths {
        // The best of three: what a request costs, not what other tests cost meanwhile.
        let mut best = (Duration::MAX, u64::MAX);
        for _ in 0..3 {
            let (rss_before, _) = rss_kib(pid);
            let started = Instant::now();
            let r = anon
                .get(format!("{}{p}", server.url))
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            let body = r.bytes().await.expect("body");
            let took = started.elapsed();
            let (rss_after, _) = rss_kib(pid);
            let growth = rss_after.saturating_sub(rss_before);
            assert_eq!(status, 200, "{p}");
            eprintln!(
                "{p}: {status}, {} KiB body, {took:?}, RSS +{growth} KiB",
                body.len() / 1024
            );
            best = (best.0.min(took), best.1.min(growth));
        }
        assert!(best.0 < Duration::from_millis(200), "{p} took {:?}", best.0);
        assert!(best.1 < 20 * 1024, "{p} grew RSS by {} KiB", best.1);
    }
    // The hostile notebooks are explained, not rendered.
    let page = |path: String| {
        let anon = anon.clone();
        async move {
            anon.get(path)
                .send()
                .await
                .expect("share page")
                .text()
                .await
                .expect("body")
        }
    };
    let sparse = page(format!("{}/s/{}/view/huge.ipynb", server.url, shares[0].1)).await;
    assert!(sparse.contains("too large to show here"), "{sparse}");
    let many = page(format!("{}/s/{}/", server.url, shares[2].1)).await;
    assert!(
        many.contains("were looked at"),
        "the page says the listing was cut short"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_paths_get_4xx_and_share_tokens_stay_out_of_the_log() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().expect("tmp");
    let server = spawn_server(tmp.path(), "").await;
    let data = tmp.path().join("data");
    let member = add_member(&server, &data);
    let id = member.create_notebook("logged").await;
    let share_token = member.share(&id, "link").await;

    let addr = server.url.trim_start_matches("http://").to_string();
    for path in [
        "/s/%00",
        "/s/abc%0d%0aSet-Cookie:%20x=1",
        "/s/%ff%fe",
        "/nb/%00",
        "/nb/abc%0d%0aLocation:%20http://evil",
        "/nb/%e2%80%a8",
        "/s/%00/",
        "/s/%00/view/%00",
        "/nb/%00/api/status",
        "/login?next=/%0d%0a",
    ] {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let head = String::from_utf8_lossy(&buf[..buf.len().min(200)]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!((200..500).contains(&status), "{path}: {head}");
    }

    // An upgrade request with a body to a form route is answered at once, without the
    // client having to close its side (it used to hold the connection until then).
    for path in ["/logout", "/login", "/api/v1/notebooks"] {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\nabcde"
        )
        .expect("write");
        let mut buf = [0u8; 64];
        let n = s
            .read(&mut buf)
            .expect("an answer while the connection is still open");
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 400"), "{path}: {head}");
    }

    reqwest::get(format!("{}/s/{share_token}/", server.url))
        .await
        .expect("share page");
    reqwest::get(format!("{}/s/{share_token}/raw/x.txt", server.url))
        .await
        .expect("raw");
    // The request line is logged after the response: wait for it, then look.
    let log = wait_for(
        "the share request in the log",
        Duration::from_secs(10),
        || {
            let log = server.stderr();
            async move { log.contains("/s/…/raw/x.txt").then_some(log) }
        },
    )
    .await;
    assert!(!log.contains(&share_token), "the share token is in the log");
}

// ---- with real Jupyter ----

const READY: Duration = Duration::from_secs(90);

/// A kernel channels WebSocket through the proxy, with the given credentials.
async fn open_kernel_socket(
    server: &str,
    notebook: &str,
    auth: (&'static str, String),
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{server}/nb/{notebook}/api/kernels"))
        .header(auth.0, &auth.1)
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .expect("start kernel");
    assert_eq!(r.status(), 201, "kernel start");
    let kernel: serde_json::Value = r.json().await.expect("kernel");
    let ws = format!(
        "{}/nb/{notebook}/api/kernels/{}/channels",
        server.replace("http://", "ws://"),
        kernel["id"].as_str().expect("kernel id")
    );
    let mut request = ws.into_client_request().expect("ws request");
    request
        .headers_mut()
        .insert(auth.0, auth.1.parse().expect("header"));
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket through the proxy");
    socket
}

/// Waits until the server closes the socket; returns how long that took.
async fn closed_within(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    limit: Duration,
    what: &str,
) -> Duration {
    let started = Instant::now();
    let closed = tokio::time::timeout(limit, async {
        while let Some(msg) = socket.next().await {
            match msg {
                Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => return,
                Ok(_) => continue, // kernel status messages
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: the WebSocket was still open after {limit:?}"
    );
    started.elapsed()
}

fn session_cookie(cookie: &str) -> (&'static str, String) {
    ("cookie", cookie.to_string())
}

/// A client that neither keeps cookies nor follows redirects: each request says which
/// session it carries.
fn bare_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Logs in through the form by hand; returns the `notebox_session=…` cookie and that
/// session's CSRF token.
async fn browser_login(base: &str, user: &str, password: &str) -> (String, String) {
    let raw = bare_client();
    let login_page = raw
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("GET /login");
    let pre = login_page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let login_csrf = csrf_from(&login_page.text().await.expect("body"));
    let r = raw
        .post(format!("{base}/login"))
        .header("cookie", &pre)
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf", &login_csrf),
        ])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(r.status(), 303, "login as {user}");
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("notebox_session="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string();
    let home = raw
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .await
        .expect("home")
        .text()
        .await
        .expect("body");
    (session, csrf_from(&home))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_user_tokens_are_refused_and_revocation_closes_live_websockets() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| docker_config(c, &image)).await;
    add_user(&server, "alice", "alice-password", false);
    add_user(&server, "bob", "bob-password", false);
    add_user(&server, "carol", "carol-password", false);
    let alice_token = token_for(&server, "alice");
    let carol_token = token_for(&server, "carol");
    let alice = Api::new(&server.url, &alice_token);
    let carol = Api::new(&server.url, &carol_token);
    let alice_nb = alice.create_notebook("alice's").await;
    let carol_nb = carol.create_notebook("carol's").await;
    alice.wait_state(&alice_nb, "running", READY).await;
    carol.wait_state(&carol_nb, "running", READY).await;

    // 1. Bob's browser with Alice's token in a link: refused, nothing from Jupyter.
    let (bob_session, _) = browser_login(&server.url, "bob", "bob-password").await;
    let bob = bare_client();
    for path in ["api/status", "static/evil.html", "lab"] {
        let r = bob
            .get(format!(
                "{}/nb/{alice_nb}/{path}?token={alice_token}",
                server.url
            ))
            .header("cookie", &bob_session)
            .header("accept", "text/html")
            .send()
            .await
            .expect("cross-user link");
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.headers().get("set-cookie").is_none());
        let body = r.text().await.expect("body");
        assert!(
            !body.contains("\"started\""),
            "Jupyter's answer reached bob: {body}"
        );
    }
    // ... and as a header next to Bob's session.
    let r = bob
        .get(format!("{}/nb/{alice_nb}/api/status", server.url))
        .header("cookie", &bob_session)
        .bearer_auth(&alice_token)
        .send()
        .await
        .expect("cross-user header");
    assert_eq!(r.status(), 403);
    // Scripts without cookies still use tokens in the URL.
    let r = reqwest::get(format!(
        "{}/nb/{alice_nb}/api/status?token={alice_token}",
        server.url
    ))
    .await
    .expect("script");
    assert_eq!(r.status(), 200);

    // 2. Logout closes the WebSockets of that session within a second.
    let (alice_session, csrf) = browser_login(&server.url, "alice", "alice-password").await;
    let mut socket =
        open_kernel_socket(&server.url, &alice_nb, session_cookie(&alice_session)).await;
    let r = bare_client()
        .post(format!("{}/logout", server.url))
        .header("cookie", &alice_session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 303);
    let took = closed_within(&mut socket, Duration::from_secs(1), "after logout").await;
    eprintln!("logout closed the WebSocket in {took:?}");

    // 3. A password changed with the CLI (another process) closes that member's sessions'
    //    sockets too (the server polls the credentials epoch every second).
    let (alice_session, _) = browser_login(&server.url, "alice", "alice-password").await;
    let mut socket =
        open_kernel_socket(&server.url, &alice_nb, session_cookie(&alice_session)).await;
    let out = server.cli(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("alice-new-password\n"),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let took = closed_within(
        &mut socket,
        Duration::from_secs(3),
        "after a CLI password change",
    )
    .await;
    eprintln!("a CLI password change closed the WebSocket in {took:?}");

    // 4. Disabling Carol: her sockets close within a second, her token stops at once on
    //    /api/ and /nb/, her link share is gone, her notebooks stop.
    let share_token = carol.share(&carol_nb, "link").await;
    let (_, me) = carol.get("/api/v1/me").await;
    let carol_id = me["id"].as_i64().expect("carol's id");
    let (carol_session, _) = browser_login(&server.url, "carol", "carol-password").await;
    let mut by_session =
        open_kernel_socket(&server.url, &carol_nb, session_cookie(&carol_session)).await;
    let mut by_token = open_kernel_socket(
        &server.url,
        &carol_nb,
        ("authorization", format!("Bearer {carol_token}")),
    )
    .await;
    // Warm the proxy's credential cache with her token.
    let r = reqwest::Client::new()
        .get(format!("{}/nb/{carol_nb}/api/status", server.url))
        .bearer_auth(&carol_token)
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), 200);

    let admin = client();
    let admin_csrf = login_ok(&admin, &server.url, "admin", &server.admin_password()).await;
    let r = admin
        .post(format!("{}/admin/users/{carol_id}/disabled", server.url))
        .form(&[("csrf", admin_csrf.as_str()), ("value", "on")])
        .send()
        .await
        .expect("disable");
    assert_eq!(r.status(), 303);
    let took = closed_within(
        &mut by_session,
        Duration::from_secs(1),
        "session socket after disable",
    )
    .await;
    eprintln!("disable closed the session's WebSocket in {took:?}");
    closed_within(
        &mut by_token,
        Duration::from_secs(1),
        "token socket after disable",
    )
    .await;
    assert_eq!(carol.get("/api/v1/me").await.0, 401);
    let r = reqwest::Client::new()
        .get(format!("{}/nb/{carol_nb}/api/status", server.url))
        .bearer_auth(&carol_token)
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), 401);
    let r = reqwest::get(format!("{}/s/{share_token}/", server.url))
        .await
        .expect("share");
    assert_eq!(r.status(), 404);
    wait_for("carol's notebook to stop", Duration::from_secs(60), || {
        let id = carol_nb.clone();
        async move { containers_of_notebook(&id).is_empty().then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_fork_apply_the_catalog_rules_of_the_moment() {
    let server = TestServer::start_with(|c| {
        no_docker(c);
        c.notebooks.allow_custom_images = true;
    })
    .await;
    add_user(&server, "member", "member-password", false);
    let token = token_for(&server, "member");
    let member = Api::new(&server.url, &token);
    let (status, nb) = member
        .post(
            "/api/v1/notebooks",
            json!({"name": "custom", "image": "example.org/custom/image:1", "machine": "cpu"}),
        )
        .await;
    assert_eq!(status, 201, "{nb}");
    let id = nb["id"].as_str().expect("id").to_string();
    let share_token = member.share(&id, "link").await;
    member
        .post(&format!("/api/v1/notebooks/{id}/stop"), json!({}))
        .await;

    // The admin turns custom images off and restarts Notebox.
    let (dir, mut config) = server.stop().await;
    config.notebooks.allow_custom_images = false;
    let server = TestServer::start_in(dir, config).await;
    let member = Api::new(&server.url, &token);
    for (what, path) in [
        ("start", format!("/api/v1/notebooks/{id}/start")),
        ("restart", format!("/api/v1/notebooks/{id}/restart")),
        ("fork", format!("/api/v1/notebooks/{id}/fork")),
        (
            "fork of the share",
            format!("/api/v1/shares/{share_token}/fork"),
        ),
    ] {
        let (status, body) = member.post(&path, json!({})).await;
        assert_eq!(status, 400, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("custom images"), "{what}: {message}");
    }
}

/// Samples a process's resident memory until stopped; the highest value seen (KiB).
struct RssPeak {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).0);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_kib(pid).0)
        });
        RssPeak {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("sampler"))
            .unwrap_or(0)
    }
}

/// Finding 6 of issue 22: `logs?tail=5000` on a container that logged 11 MiB in long lines
/// read the whole answer into memory, once per call, with no bound on calls at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_reads_stay_bounded_whatever_the_container_logged() {
    let Some(image) = test_image() else { return };
    let _turn = CPU_HEAVY.lock().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    // Dropped last: the server is gone before its containers are removed.
    let _containers = ContainerGuard(data.clone());
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, docker_config_toml(&data, &image)).expect("config");
    let server = ServerProcess::spawn(
        tmp.path(),
        &["--config", config.to_str().expect("utf-8 path")],
        &[],
    )
    .await;
    let member = add_member(&server, &data);
    let id = member.create_notebook("chatty").await;
    member
        .wait_state(&id, "running", Duration::from_secs(120))
        .await;

    // The container writes 5000 lines of 2.3 KB (11.5 MB) to its own log.
    let (ok, out) = docker_exec(
        &container_of(&id),
        "python3 -c \"import sys; x = 'x' * 2300; \
         sys.stdout.write(''.join('%05d %s\\n' % (i, x) for i in range(5000))); \
         print('END-OF-CHATTER')\" > /proc/1/fd/1",
    );
    assert!(ok, "writing the log: {out}");
    let logs = format!("/api/v1/notebooks/{id}/logs");
    wait_for(
        "the log to hold the chatter",
        Duration::from_secs(30),
        || {
            let (member, path) = (member.clone(), format!("{logs}?tail=1"));
            async move {
                let (_, body) = member.get(&path).await;
                body["logs"]
                    .as_str()
                    .is_some_and(|l| l.contains("END-OF-CHATTER"))
                    .then_some(())
            }
        },
    )
    .await;

    // 64 calls at once, each asking for the last 5000 lines.
    let pid = server.child.id();
    let (rss_before, _) = rss_kib(pid);
    let sampler = RssPeak::start(pid);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client");
    let call = || {
        let req = http
            .get(format!("{}{logs}?tail=5000", server.url))
            .bearer_auth(&member.token);
        async move {
            let r = req.send().await.expect("logs call");
            let status = r.status().as_u16();
            let retry_after = r.headers().contains_key("retry-after");
            let body: serde_json::Value = r.json().await.expect("JSON answer");
            (status, retry_after, body)
        }
    };
    let answers = futures_util::future::join_all((0..64).map(|_| call())).await;
    let peak = sampler.finish();
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    let served: Vec<&serde_json::Value> = answers
        .iter()
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, _, b)| b)
        .collect();
    let largest = served
        .iter()
        .map(|b| b["logs"].as_str().map_or(0, str::len))
        .max()
        .unwrap_or(0);
    eprintln!(
        "64 concurrent logs?tail=5000 on an 11.5 MB log: {} served (largest {} KiB), {} refused; \
         RSS {} MiB before, peak +{growth_mib} MiB",
        served.len(),
        largest / 1024,
        answers.len() - served.len(),
        rss_before / 1024,
    );
    // At most 4 reads at once Notebox-wide (2 per member), each streaming through a
    // buffer of 2 MiB and answering with at most 1 MiB (text and JSON body): about 16 MiB
    // at worst, plus the allocator's slack. Before the bound: hundreds of MiB.
    assert!(growth_mib < 40, "64 log reads grew RSS by {growth_mib} MiB");
    assert!(!served.is_empty(), "some calls were served");
    for body in &served {
        let text = body["logs"].as_str().expect("logs");
        assert!(text.len() <= 1 << 20, "{} bytes in one answer", text.len());
        assert_eq!(body["truncated"], true, "the answer says it was cut");
        // The end of the log, from the start of a line.
        assert!(
            text.ends_with("END-OF-CHATTER\n"),
            "{:?}",
            &text[text.len().saturating_sub(80)..]
        );
        assert!(
            text.split_once(' ')
                .is_some_and(|(n, _)| n.len() == 5 && n.parse::<u32>().is_ok()),
            "{:?}",
            &text[..80.min(text.len())]
        );
    }
    for (status, retry_after, body) in &answers {
        if *status != 200 {
            assert!(
                [429, 503].contains(status) && *retry_after,
                "{status} {body}"
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("try again")),
                "{body}"
            );
        }
    }

    // The number of lines is capped, with a message saying so.
    let (status, body) = member.get(&format!("{logs}?tail=10001")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("10000")),
        "{body}"
    );
    let (status, body) = member.get(&format!("{logs}?tail=10000")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["logs"].as_str().is_some_and(|l| l.len() <= 1 << 20));
}

/// Nothing a chat acts on: no mention, no link syntax, no URL, nothing invisible.
fn live_in_chat(text: &str) -> Vec<String> {
    let mut found: Vec<String> = ["@", "<", ">", "](", "://"]
        .iter()
        .filter(|p| text.contains(**p))
        .map(|p| p.to_string())
        .collect();
    found.extend(
        text.chars()
            .filter(|c| {
                c.is_control()
                    || matches!(c, '\u{61C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
            })
            .map(|c| format!("U+{:04X}", c as u32)),
    );
    found
}

/// Finding 7 of issue 22: a notebook's name reached the webhook's chat `text` with only
/// `& < >` escaped, so a member could ping or phish the lab's channel by letting it idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_text_carries_no_mentions_links_or_hidden_characters() {
    let Some(image) = test_image() else { return };
    let hook = Receiver::start(0).await;
    let server = TestServer::start_with(|c| {
        docker_config(c, &image);
        c.notebooks.activity_interval = Duration::from_secs(1);
        c.notebooks.idle_warning = Duration::from_secs(4);
        c.machines[0].idle_timeout = Some(Some(Duration::from_secs(16)));
        c.machines[0].reclaim = Some(notebox::config::Reclaim::Always);
        c.webhook.url = Some(hook.url.parse().expect("webhook url"));
    })
    .await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    add_user(&server, "ada", "ada-password-1", false);
    let ada = Api::new(&server.url, &token_for(&server, "ada"));
    // Mattermost, Rocket.Chat and Discord mentions, Slack's; Markdown and Slack links,
    // a bare URL; bidi overrides and isolates, a zero-width space.
    let names = [
        "@channel @all @here @everyone <!channel> <!here> <@U024BE7LH> look",
        "[Notebox login](http://evil.example/login) <https://evil.example|Notebox> \
         \u{202E}gpj.exe\u{202C} \u{2066}x\u{2069}\u{200B}",
    ];
    let mut ids = Vec::new();
    for name in names {
        ids.push(ada.create_notebook(name).await);
    }
    for id in &ids {
        ada.wait_state(id, "running", Duration::from_secs(120))
            .await;
    }
    let warned = hook
        .wait_event("idle_warning", 2, Duration::from_secs(60))
        .await;
    let reclaimed = hook
        .wait_event("reclaimed", 2, Duration::from_secs(60))
        .await;
    for event in warned.iter().chain(&reclaimed) {
        let name = event["notebook"]["name"].as_str().expect("name");
        assert!(
            names.contains(&name),
            "the raw name stays in its field: {event}"
        );
        let text = event["text"].as_str().expect("text");
        eprintln!("{}: {text}", event["event"]);
        let live = live_in_chat(text);
        assert!(live.is_empty(), "{live:?} live in {text:?}");
        assert!(text.contains("ada"), "{text}");
    }
}
