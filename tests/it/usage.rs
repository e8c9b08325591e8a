//! Issue 13: the usage ledger (exact held time, busy time from simulated GPU utilization,
//! correct across `kill -9`), the usage API, page and CSV, budgets, and `/metrics` scraped
//! by a real Prometheus.

use crate::chromium;
use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use notebox::config::{GpuBackend, SimulatedGpu};
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(90);
const METRICS_TOKEN: &str = "metrics-token-for-the-test-0123456789";

fn gpu_uuid(i: usize) -> String {
    format!("GPU-05a9e000-0000-0000-0000-00000000000{i}")
}

fn set_gpu_load(file: &Path, percent: u32) {
    let tmp = file.with_extension("tmp");
    std::fs::write(
        &tmp,
        json!({"utilization_percent": percent, "memory_used_mib": 1000 + percent}).to_string(),
    )
    .expect("write GPU load");
    std::fs::rename(&tmp, file).expect("replace GPU load");
}

/// A config file for a child-process server: 2 simulated GPUs reading `loads`, a 1-GPU
/// machine type that is never reclaimed, 1 s activity sampling, /metrics with a token.
fn config_toml(data: &Path, image: &str, loads: &Path) -> String {
    let mut toml = docker_config_toml(data, image);
    toml = toml.replace(
        "[notebooks]",
        &format!(
            "[gpu]\nbackend = \"simulated\"\nsample_interval = \"500ms\"\n\n[metrics]\ntoken = \"{METRICS_TOKEN}\"\n\n[notebooks]\nactivity_interval = \"1s\""
        ),
    );
    for i in 0..2 {
        toml.push_str(&format!(
            "\n[[gpu.simulated]]\nuuid = \"{}\"\nname = \"Sim\"\nmemory_mib = 40960\nutilization_file = \"{}\"\n",
            gpu_uuid(i),
            loads.join(format!("gpu{i}.json")).display()
        ));
    }
    toml.push_str(
        "\n[[machines]]\nid = \"gpu1\"\nname = \"1 GPU\"\ncpus = 0.5\nmemory_mib = 768\ngpus = 1\nidle_timeout = \"never\"\n",
    );
    toml
}

async fn create_gpu_notebook(api: &Api, name: &str) -> (String, Instant, String) {
    let (status, nb) = api
        .post(
            "/api/v1/notebooks",
            json!({"name": name, "image": "test", "machine": "gpu1"}),
        )
        .await;
    let created = Instant::now();
    assert_eq!(status, 201, "{nb}");
    let gpu = nb["gpus"][0].as_str().expect("a GPU at once").to_string();
    (nb["id"].as_str().expect("id").to_string(), created, gpu)
}

/// Stops a notebook; returns when its GPU was released (the API shows it stopped).
async fn stop(api: &Api, id: &str) -> Instant {
    let (status, _) = api
        .post(&format!("/api/v1/notebooks/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 202);
    wait_for("the stop", READY, || async {
        let (_, nb) = api.get(&format!("/api/v1/notebooks/{id}")).await;
        (nb["state"] == "stopped").then(Instant::now)
    })
    .await
}

fn row<'a>(report: &'a Value, key: &str, value: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r[key] == value)
        .unwrap_or_else(|| panic!("no {key} {value} in {report}"))
}

fn close_to(what: &str, got: f64, truth: f64, within: f64) {
    assert!(
        (got - truth).abs() <= within,
        "{what}: reported {got:.1} s, truth {truth:.1} s (allowed ±{within} s)"
    );
    eprintln!("{what}: reported {got:.1} s, truth {truth:.1} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_and_busy_gpu_seconds_are_exact_across_kill_9() {
    let Some(image) = test_image() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let loads = dir.path().join("loads");
    std::fs::create_dir_all(&loads).expect("loads dir");
    let _guard = ContainerGuard(data.clone());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_toml(&data, &image, &loads)).expect("config");
    let config_arg = config.to_string_lossy().to_string();
    let mut server = ServerProcess::spawn(dir.path(), &["--config", &config_arg], &[]).await;
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--config", config_arg.as_str()];
        all.extend_from_slice(args);
        run_cli(&data, &all, stdin)
    };
    for (name, password) in [("ada", "ada-password-1"), ("bob", "bob-password-1")] {
        let out = cli(
            &["user", "add", name, "--password-stdin"],
            Some(&format!("{password}\n")),
        );
        assert!(out.status.success(), "{}", out.stderr);
    }
    let token = |user: &str| {
        cli(&["token", "create", user], None)
            .stdout
            .trim()
            .to_string()
    };
    let (admin_token, ada_token, bob_token) = (token("admin"), token("ada"), token("bob"));
    let ada = Api::new(&server.url, &ada_token);
    let bob = Api::new(&server.url, &bob_token);
    let load = |gpu: &str| {
        let i = (0..2).find(|i| gpu_uuid(*i) == gpu).expect("one of ours");
        loads.join(format!("gpu{i}.json"))
    };

    // Ada: held 0 % for 5 s, 90 % for 8 s, then 0 % until her container dies while
    // Notebox is down. Bob: 90 % from the start, across the kill -9, until he stops.
    let (ada_nb, ada_taken, ada_gpu) = create_gpu_notebook(&ada, "ada's run").await;
    set_gpu_load(&load(&ada_gpu), 0);
    let (bob_nb, bob_taken, bob_gpu) = create_gpu_notebook(&bob, "bob's run").await;
    set_gpu_load(&load(&bob_gpu), 90);
    ada.wait_state(&ada_nb, "running", READY).await;
    bob.wait_state(&bob_nb, "running", READY).await;
    let since = ada_taken.elapsed();
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(since)).await;
    set_gpu_load(&load(&ada_gpu), 90);
    let ada_busy_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    set_gpu_load(&load(&ada_gpu), 0);
    let ada_busy = ada_busy_from.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // kill -9 mid-interval; while Notebox is down, Ada's container dies.
    server.kill9();
    let ada_container = container_of(&ada_nb);
    let out = std::process::Command::new("docker")
        .args(["kill", &ada_container])
        .output()
        .expect("docker kill");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ada_released = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let server = ServerProcess::spawn(dir.path(), &["--config", &config_arg], &[]).await;
    let (ada, bob) = (
        Api::new(&server.url, &ada_token),
        Api::new(&server.url, &bob_token),
    );
    let admin = Api::new(&server.url, &admin_token);
    // Ada's notebook is found dead; Bob's keeps running (adopted).
    let found_dead = try_wait_for(Duration::from_secs(30), || async {
        let (_, nb) = ada.get(&format!("/api/v1/notebooks/{ada_nb}")).await;
        (nb["state"] == "failed").then_some(())
    })
    .await;
    if found_dead.is_none() {
        let (_, nb) = ada.get(&format!("/api/v1/notebooks/{ada_nb}")).await;
        panic!(
            "ada's notebook was not found dead within 30 s of the restart: {nb}\nserver log:\n{}",
            server.stderr()
        );
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        bob.get(&format!("/api/v1/notebooks/{bob_nb}")).await.1["state"],
        "running"
    );
    let bob_released = stop(&bob, &bob_nb).await;

    let truth_ada_held = ada_released.duration_since(ada_taken).as_secs_f64();
    let truth_bob_held = bob_released.duration_since(bob_taken).as_secs_f64();
    let (status, report) = admin.get("/api/v1/usage?group_by=member").await;
    assert_eq!(status, 200, "{report}");
    let a = row(&report, "member", "ada");
    let b = row(&report, "member", "bob");
    // Held: exact to the second at both ends (allocation and release or container exit).
    close_to(
        "ada held",
        a["gpu_seconds_held"].as_f64().expect("f"),
        truth_ada_held,
        2.0,
    );
    close_to(
        "bob held",
        b["gpu_seconds_held"].as_f64().expect("f"),
        truth_bob_held,
        2.0,
    );
    // Busy: within 2 s for Ada; Bob's includes the 4 s Notebox was down (busy before and
    // after), within the sampling interval.
    close_to(
        "ada busy",
        a["gpu_seconds_busy"].as_f64().expect("f"),
        ada_busy,
        2.0,
    );
    close_to(
        "bob busy",
        b["gpu_seconds_busy"].as_f64().expect("f"),
        truth_bob_held,
        2.0,
    );
    assert_eq!(a["notebooks"], 1);
    assert!(a["peak_memory_mib"].as_i64() >= Some(1090), "{a}");

    // The same totals grouped by GPU and by day; a member sees only their own.
    let (_, by_gpu) = admin.get("/api/v1/usage?group_by=gpu").await;
    let (_, by_day) = admin.get("/api/v1/usage?group_by=day").await;
    for other in [&by_gpu, &by_day] {
        let t = other["totals"]["gpu_seconds_held"].as_f64().expect("f");
        assert!(
            (t - report["totals"]["gpu_seconds_held"].as_f64().expect("f")).abs() < 0.5,
            "{other}"
        );
    }
    let (_, mine) = ada.get("/api/v1/usage").await;
    assert_eq!(mine["rows"].as_array().map(Vec::len), Some(1), "{mine}");
    assert_eq!(mine["rows"][0]["member"], "ada");
    // Bad input is a 400 that says what to fix.
    for bad in [
        "group_by=week",
        "from=yesterday",
        "from=2026-12-02&to=2026-12-01",
    ] {
        let (status, body) = ada.get(&format!("/api/v1/usage?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() > 10),
            "{body}"
        );
    }

    // /metrics: 401 without the token, 403 with a wrong one, the ledger's counters with it.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{}/metrics", server.url))
        .bearer_auth("not-the-token-at-all-0000")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{}/metrics", server.url))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    assert!(
        text.contains("notebox_gpu_held_seconds_total{member=\"ada\"}"),
        "{text}"
    );
    assert!(
        text.contains("notebox_notebooks{state=\"failed\"} 1"),
        "{text}"
    );
}

/// Writes a few days of ledger rows for `members` straight into the database (the page
/// test needs data, not the time it takes to make it).
fn seed_ledger(data: &Path, members: &[&str], days: i64) {
    let conn = rusqlite::Connection::open(data.join("notebox.db")).expect("open db");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    for (m, member) in members.iter().enumerate() {
        let user_id: i64 = conn
            .query_row("SELECT id FROM users WHERE username = ?1", [member], |r| {
                r.get(0)
            })
            .expect("user");
        for d in 0..days {
            let start = now - d * 86_400 - 3 * 3600 - m as i64 * 600;
            let held = 3600 + 1800 * m as i64;
            conn.execute(
                "INSERT INTO usage_intervals (user_id, member, notebook_id, notebook_name, machine_id,
                    gpu_uuid, cores, started_at, ended_at, busy_seconds, peak_memory_mib)
                 VALUES (?1, ?2, ?3, 'seeded', 'gpu1', ?4, 0.5, ?5, ?6, ?7, ?8)",
                rusqlite::params![
                    user_id,
                    member,
                    format!("seed{m}{d}"),
                    gpu_uuid(m % 2),
                    start,
                    start + held,
                    held as f64 * 0.6,
                    2048 + m as i64
                ],
            )
            .expect("insert");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_page_charts_without_csp_violations_and_its_csv_is_the_table() {
    if !chromium::available() {
        return;
    }
    let server = TestServer::start_with(|c| {
        c.gpu.backend = GpuBackend::Simulated;
        c.gpu.simulated = vec![SimulatedGpu {
            uuid: gpu_uuid(0),
            name: "Sim".into(),
            memory_mib: 40960,
            utilization_file: None,
        }];
    })
    .await;
    add_user(&server, "root", "root-password-1", true);
    add_user(&server, "ada", "ada-password-1", false);
    add_user(&server, "bob", "bob-password-1", false);
    seed_ledger(server.data_dir(), &["ada", "bob"], 3);

    let b = chromium::Browser::start(&server.url).await;
    // Every CSP violation the page causes is recorded before any of its own code runs.
    b.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.__csp = []; document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"}),
    )
    .await;
    b.login("root", "root-password-1").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let range = format!(
        "from={}&to={}",
        notebox::usage::day_key(now - 7 * 86_400),
        notebox::usage::day_key(now)
    );
    b.goto(&format!("/usage?{range}")).await;
    let csp = b
        .client
        .execute("return window.__csp;", vec![])
        .await
        .expect("js");
    assert_eq!(csp, json!([]), "CSP violations on the usage page");
    let text = b.page_text().await;
    assert!(text.contains("GPU-hours per member"), "{text}");
    assert!(
        b.visible("#member-bars rect.busy").await.is_some(),
        "the bar chart renders"
    );
    assert!(
        b.visible("#daily-chart rect").await.is_some(),
        "the daily chart renders"
    );
    b.goto("/usage").await;
    b.screenshot("usage.png").await;
    b.goto(&format!("/usage?{range}")).await;
    assert!(
        b.visible(".alert.error").await.is_none(),
        "the range is accepted"
    );
    let csp = b
        .client
        .execute("return window.__csp;", vec![])
        .await
        .expect("js");
    assert_eq!(csp, json!([]), "CSP violations");
    // The table as shown, cell by cell.
    let cells = b
        .client
        .execute(
            "return [...document.querySelectorAll('#usage-table tbody tr, #usage-table tfoot tr')].map(r => [...r.cells].map(c => c.textContent.trim()));",
            vec![],
        )
        .await
        .expect("table");
    let shown: Vec<Vec<String>> = serde_json::from_value(cells).expect("rows of cells");
    assert_eq!(shown.len(), 3, "ada, bob, total: {shown:?}");
    assert_eq!(shown[0][0], "ada");
    assert_eq!(shown[0][1], "3.00", "3 days × 1 h");
    assert_eq!(shown[1][1], "4.50", "3 days × 1.5 h");
    assert_eq!(shown[0][3], "60 %");

    // The CSV of the same range is exactly the table.
    let http = client();
    login_ok(&http, &server.url, "root", "root-password-1").await;
    let r = http
        .get(format!("{}/usage.csv?{range}", server.url))
        .send()
        .await
        .expect("csv");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/csv"));
    let csv = r.text().await.expect("body");
    let lines: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(lines, shown, "the CSV:\n{csv}");

    // A member sees only their own row.
    let member = client();
    login_ok(&member, &server.url, "ada", "ada-password-1").await;
    let csv = member
        .get(format!("{}/usage.csv?{range}", server.url))
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("body");
    assert!(csv.contains("\nada,") && !csv.contains("bob"), "{csv}");
    // A bad range on the page explains and shows this month; in the CSV it is a 400.
    let page = member
        .get(format!("{}/usage?from=nonsense", server.url))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("body").contains("is not a date"));
    let r = member
        .get(format!("{}/usage.csv?from=nonsense", server.url))
        .send()
        .await
        .expect("csv");
    assert_eq!(r.status(), 400);
    b.close().await;
}

/// Sets a member's monthly GPU-hour budget through the API as `caller`.
async fn set_budget(caller: &Api, user_id: i64, hours: Value) -> (u16, Value) {
    caller
        .post(
            &format!("/api/v1/admin/users/{user_id}/gpu-budget"),
            json!({ "gpu_hours": hours }),
        )
        .await
}

/// The dashboard's HTML for a logged-in browser.
async fn dashboard(browser: &reqwest::Client, base: &str) -> String {
    browser
        .get(format!("{base}/"))
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .expect("page")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_warn_and_can_block_new_gpu_notebooks() {
    let server = TestServer::start_with(|c| {
        one_simulated_gpu(c, &gpu_uuid(0));
        c.usage.over_budget = notebox::config::OverBudget::Block;
    })
    .await;
    add_user(&server, "root", "root-password-1", true);
    add_user(&server, "ada", "ada-password-1", false);
    // Without [metrics] token or allow, /metrics does not exist, even for an admin.
    let r = reqwest::get(format!("{}/metrics", server.url))
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);
    let root = Api::new(&server.url, &token_for(&server, "root"));
    let ada = Api::new(&server.url, &token_for(&server, "ada"));
    let (_, me) = ada.get("/api/v1/me").await;
    let ada_id = me["id"].as_i64().expect("id");
    // Only admins set budgets; bad values are 400s.
    let (status, _) = set_budget(&ada, ada_id, json!(100)).await;
    assert_eq!(status, 403);
    let (status, body) = set_budget(&root, ada_id, json!(-1)).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = set_budget(&root, 999_999, json!(1)).await;
    assert_eq!(status, 404);
    let (status, _) = set_budget(&root, ada_id, json!(2.5)).await;
    assert_eq!(status, 200);
    // The admin page's form: not a number, or out of range, is a 400 that says so.
    let admin_browser = client();
    let csrf = login_ok(&admin_browser, &server.url, "root", "root-password-1").await;
    for (hours, says) in [
        ("lots", "must be a number of GPU-hours"),
        ("-3", "from 0 to 1000000"),
    ] {
        let r = admin_browser
            .post(format!("{}/admin/users/{ada_id}/gpu-budget", server.url))
            .form(&[("csrf", csrf.as_str()), ("hours", hours)])
            .send()
            .await
            .expect("POST budget form");
        assert_eq!(r.status(), 400, "{hours}");
        assert!(r.text().await.expect("page").contains(says), "{hours}");
    }
    // 10 minutes used this month.
    {
        let conn = rusqlite::Connection::open(server.data_dir().join("notebox.db")).expect("db");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        conn.execute(
            "INSERT INTO usage_intervals (user_id, member, notebook_id, notebook_name, machine_id,
                gpu_uuid, cores, started_at, ended_at) VALUES (?1, 'ada', 'x', 'x', 'gpu1', ?2, 0.5, ?3, ?4)",
            rusqlite::params![ada_id, gpu_uuid(0), now - 1200, now - 600],
        )
        .expect("insert");
    }
    let browser = client();
    login_ok(&browser, &server.url, "ada", "ada-password-1").await;
    let home = dashboard(&browser, &server.url).await;
    assert!(home.contains("GPU-hours this month"), "{home}");
    // Over budget: a warning on the dashboard; with "block", GPU notebooks are refused
    // with a message that says what to do, CPU notebooks still start.
    let (status, _) = set_budget(&root, ada_id, json!(0.1)).await;
    assert_eq!(status, 200);
    let home = dashboard(&browser, &server.url).await;
    assert!(home.contains("id=\"budget-over\""), "{home}");
    let (status, body) = ada
        .post(
            "/api/v1/notebooks",
            json!({"name": "big", "image": "scipy", "machine": "gpu1"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "gpu_budget_exceeded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("GPU-hours this month")),
        "{body}"
    );
    // Removing the budget lifts it (no container is started by this test: the catalog
    // image is not on this machine, so only the refusal is checked).
    let (status, _) = set_budget(&root, ada_id, json!(null)).await;
    assert_eq!(status, 200);
    let (status, body) = ada
        .post(
            "/api/v1/notebooks",
            json!({"name": "big", "image": "scipy", "machine": "gpu1"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// A free loopback port (bound, then released, for a program that needs a number).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_gpu_holders_and_notebook_states() {
    let available = std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(
        "prometheus",
        available,
        "Debian's prometheus package scrapes /metrics",
    ) {
        return;
    }
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| {
        docker_config(c, &image);
        c.metrics.token = METRICS_TOKEN.into();
        one_simulated_gpu(c, &gpu_uuid(0));
    })
    .await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    add_user(&server, "ada", "ada-password-1", false);
    let ada = Api::new(&server.url, &token_for(&server, "ada"));
    let (status, nb) = ada
        .post(
            "/api/v1/notebooks",
            json!({"name": "scraped", "image": "test", "machine": "gpu1"}),
        )
        .await;
    assert_eq!(status, 201, "{nb}");
    let id = nb["id"].as_str().expect("id").to_string();
    ada.wait_state(&id, "running", READY).await;

    // Prometheus on loopback, its own config and data dir, scraping every second.
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let target = server.url.trim_start_matches("http://");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: notebox\n    metrics_path: /metrics\n    authorization:\n      type: Bearer\n      credentials: {METRICS_TOKEN}\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("prometheus.yml");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(
        std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let query = |q: &'static str| {
        let url = format!("http://127.0.0.1:{port}/api/v1/query");
        async move {
            let r = reqwest::Client::new()
                .get(&url)
                .query(&[("query", q)])
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            let result = v["data"]["result"].as_array()?.clone();
            (!result.is_empty()).then_some(result)
        }
    };
    let gpu = try_wait_for(Duration::from_secs(45), || {
        query("notebox_gpu_utilization_percent")
    })
    .await;
    let Some(gpu) = gpu else {
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        panic!("Prometheus never stored notebox_gpu_utilization_percent; its log:\n{log}");
    };
    assert_eq!(gpu[0]["metric"]["holder"], "ada", "{gpu:?}");
    assert_eq!(gpu[0]["metric"]["notebook"], id.as_str(), "{gpu:?}");
    let running = wait_for(
        "notebooks{state=running} in Prometheus",
        Duration::from_secs(20),
        || query("notebox_notebooks{state=\"running\"}"),
    )
    .await;
    assert_eq!(running[0]["value"][1], "1", "{running:?}");
    let up = wait_for("up{job=notebox}", Duration::from_secs(10), || {
        query("up{job=\"notebox\"}")
    })
    .await;
    assert_eq!(up[0]["value"][1], "1", "the scrape succeeds: {up:?}");
}
