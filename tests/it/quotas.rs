//! Issue 27, storage quotas: members' usage measured in the background by a bounded walk
//! that follows nothing (within 1 % of `du -sb`, a hostile tree of 100 000 files with
//! symlink loops and a hard link), a capped walk that says so, and a member past their
//! soft quota refused new notebooks and jobs (with what to delete) while another member
//! is not, their running notebook left running, and the webhook told once.

use crate::chromium;
use crate::common;
use crate::webhook_receiver;

use std::path::Path;
use std::time::Duration;

use chromium::{Browser, SHORT};
use common::*;
use serde_json::{json, Value};
use webhook_receiver::Receiver;

const READY: Duration = Duration::from_secs(90);
const MEASURED: Duration = Duration::from_secs(60);

/// `du -sb`'s total for these folders (apparent sizes, hard links once, nothing followed).
fn du_sb(paths: &[&Path]) -> u64 {
    let out = std::process::Command::new("du")
        .arg("-sbc")
        .args(paths)
        .output()
        .expect("du runs");
    assert!(
        out.status.success(),
        "du: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total in du's output: {text}"))
}

/// The caller's `storage` once a measurement satisfies `ok`.
async fn storage_when(api: &Api, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, MEASURED, || async {
        let (status, me) = api.get("/api/v1/me").await;
        assert_eq!(status, 200, "{me}");
        let s = me["storage"].clone();
        (!s["measured_at"].is_null() && ok(&s)).then_some(s)
    })
    .await
}

/// A member's /storage as Notebox lays it out.
fn storage_dir(data: &Path, member: &str) -> std::path::PathBuf {
    data.join("storage").join(member)
}

/// `files` small files of varied sizes in folders of 1 000, and what a hostile member
/// plants: a symlink to `..` in every folder, one to `/`, one to another member's folder,
/// a dangling one, and a hard link.
fn hostile_tree(root: &Path, files: usize, other_member: &Path) {
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).expect("folder");
            std::os::unix::fs::symlink("..", dir.join("up")).expect("loop");
        }
        // Every tenth file has bytes (0–36), the others are empty: on tmpfs each file with
        // data takes a page of memory.
        let len = if i % 10 == 0 { i % 37 } else { 0 };
        std::fs::write(dir.join(format!("f{i}")), vec![b'x'; len]).expect("file");
    }
    std::fs::write(root.join("model.bin"), vec![0u8; 300_000]).expect("model");
    std::fs::hard_link(root.join("model.bin"), root.join("d000/model-link")).expect("hard link");
    std::os::unix::fs::symlink("/", root.join("slash")).expect("to /");
    std::os::unix::fs::symlink(other_member, root.join("theirs")).expect("to another member");
    std::os::unix::fs::symlink("missing", root.join("dangling")).expect("dangling");
}

#[tokio::test]
async fn usage_is_du_sb_of_a_hostile_tree_and_a_capped_walk_says_at_least() {
    // On tmpfs where there is one: writing 100 000 files to a disk takes 20–40 s here.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tmp");
    let data = dir.path().join("data");
    // Dave's 64 MiB (sparse: apparent size, no disk) would show if Carol's walk followed
    // her symlink into his folder.
    let dave = storage_dir(&data, "dave");
    std::fs::create_dir_all(&dave).expect("dave");
    std::fs::File::create(dave.join("huge"))
        .and_then(|f| f.set_len(64 << 20))
        .expect("sparse file");
    let carol = storage_dir(&data, "carol");
    hostile_tree(&carol, 100_000, &dave);
    let erin = storage_dir(&data, "erin");
    hostile_tree(&erin, 3_000, &dave);
    let mut config = test_config(&data);
    config.storage.measure_interval = Duration::from_secs(1);
    config.storage.measure_max_entries = 200_000;
    let server = TestServer::start_in(dir, config).await;
    for name in ["carol", "dave"] {
        add_user(&server, name, &format!("{name}-password-1"), false);
    }
    let api = Api::new(&server.url, &token_for(&server, "carol"));
    let du = du_sb(&[&carol]);
    let s = storage_when(&api, "Carol's storage to be measured", |_| true).await;
    let used = s["used_bytes"].as_u64().expect("used_bytes");
    let off = used.abs_diff(du) as f64 / du as f64;
    assert!(
        off <= 0.01,
        "measured {used}, du -sb {du}: {:.3} % off",
        off * 100.0
    );
    assert!(used < 64 << 20, "Dave's file was not counted: {used}");
    assert_eq!(s["capped"], false, "{s}");
    assert!(s["soft_quota_bytes"].is_null(), "no quota: {s}");
    eprintln!("carol: measured {used} bytes, du -sb {du}");

    // A second server over Erin's folder with a cap of 1 000 entries.
    let (dir, mut config) = server.stop().await;
    config.storage.measure_max_entries = 1_000;
    let server = TestServer::start_in(dir, config).await;
    add_user(&server, "erin", "erin-password-1", false);
    let erin_api = Api::new(&server.url, &token_for(&server, "erin"));
    let s = storage_when(&erin_api, "Erin's capped measurement", |_| true).await;
    assert_eq!(s["capped"], true, "{s}");
    let (used, du) = (s["used_bytes"].as_u64().expect("used"), du_sb(&[&erin]));
    assert!(used < du, "a capped walk counts less: {used} < {du}");
    let client = client();
    login_ok(&client, &server.url, "erin", "erin-password-1").await;
    let page = client
        .get(format!("{}/", server.url))
        .send()
        .await
        .expect("dashboard")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains("at least"),
        "the dashboard says the figure is a lower bound"
    );
}

fn config_with_quota(c: &mut notebox::Config, image: &str, hook: &Receiver) {
    docker_config(c, image);
    c.storage.soft_quota = Some(4 << 20);
    c.storage.measure_interval = Duration::from_secs(1);
    c.webhook.url = Some(hook.url.parse().expect("webhook url"));
}

#[tokio::test]
async fn a_member_over_quota_is_refused_new_notebooks_and_jobs_and_another_is_not() {
    let Some(image) = test_image() else { return };
    let hook = Receiver::start(0).await;
    let server = TestServer::start_with(|c| config_with_quota(c, &image, &hook)).await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    add_user(&server, "ann", "ann-password-1", false);
    add_user(&server, "bob", "bob-password-1", false);
    let ann = Api::new(&server.url, &token_for(&server, "ann"));
    let bob = Api::new(&server.url, &token_for(&server, "bob"));
    let running = ann.create_notebook("mine").await;
    ann.wait_state(&running, "running", READY).await;

    // 5 MiB of outputs in her notebook's folder (where jobs write too): past 4 MiB.
    let outputs = server
        .data_dir()
        .join("notebooks")
        .join(&running)
        .join("outputs");
    std::fs::create_dir_all(&outputs).expect("outputs");
    std::fs::write(outputs.join("weights.bin"), vec![0u8; 5 << 20]).expect("weights");
    let s = storage_when(&ann, "Ann to be measured past her quota", |s| {
        s["used_bytes"].as_u64().is_some_and(|u| u > 5 << 20)
    })
    .await;
    assert_eq!(s["soft_quota_bytes"], 4 << 20, "{s}");

    let (status, answer) = ann
        .post(
            "/api/v1/notebooks",
            json!({"name": "another", "image": "test", "machine": "cpu"}),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "over_storage_quota", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    for says in [
        "You use 5",
        "of your 4 MiB storage quota",
        "notebook “mine”/outputs",
        "ask an admin",
    ] {
        assert!(message.contains(says), "{says:?} in {message}");
    }
    let (status, answer) = ann
        .post(
            "/api/v1/jobs",
            json!({"notebook": running, "command": ["true"]}),
        )
        .await;
    assert_eq!(status, 403, "a job too: {answer}");
    assert_eq!(answer["error"]["code"], "over_storage_quota", "{answer}");
    let (status, answer) = ann
        .post(&format!("/api/v1/notebooks/{running}/fork"), json!({}))
        .await;
    assert_eq!(
        status, 403,
        "a fork (a new notebook, and a copy) too: {answer}"
    );
    assert_eq!(answer["error"]["code"], "over_storage_quota", "{answer}");

    // Her dashboard says so; her running notebook's page warns.
    let browser = client();
    login_ok(&browser, &server.url, "ann", "ann-password-1").await;
    for page in [
        "/".to_string(),
        format!("/notebooks/{running}"),
        "/notebooks/new".to_string(),
    ] {
        let html = browser
            .get(format!("{}{page}", server.url))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("body");
        assert!(
            (html.contains("id=\"storage-warning\"") || html.contains("id=\"storage-refusal\""))
                && html.contains("of your 4 MiB storage quota"),
            "{page} warns"
        );
    }

    // Bob is not affected; Ann's running notebook is never stopped for it.
    let theirs = bob.create_notebook("bob's").await;
    bob.wait_state(&theirs, "running", READY).await;
    let (_, nb) = ann.get(&format!("/api/v1/notebooks/{running}")).await;
    assert_eq!(nb["state"], "running", "{nb}");

    // The webhook heard it once, however many passes went by.
    let events = hook
        .wait_event("storage_quota_warning", 1, Duration::from_secs(20))
        .await;
    assert_eq!(events[0]["member"], "ann");
    assert_eq!(events[0]["storage"]["soft_quota_bytes"], 4 << 20);
    let mut seen = s["measured_at"].clone();
    for _ in 0..2 {
        let next = storage_when(&ann, "another measurement", |s| s["measured_at"] != seen).await;
        seen = next["measured_at"].clone();
    }
    assert_eq!(
        hook.events("storage_quota_warning").len(),
        1,
        "once per crossing"
    );

    // Stopped, her notebook may not start again until she deletes something.
    let (status, _) = ann
        .post(&format!("/api/v1/notebooks/{running}/stop"), json!({}))
        .await;
    assert_eq!(status, 202);
    ann.wait_state(&running, "stopped", READY).await;
    let (status, answer) = ann
        .post(&format!("/api/v1/notebooks/{running}/start"), json!({}))
        .await;
    assert_eq!(status, 403, "a start too: {answer}");
    assert_eq!(answer["error"]["code"], "over_storage_quota", "{answer}");
}

/// Chromium: a member at 95 % of a 1 MiB quota sees the bar, the figure and the warning on
/// the dashboard (docs/screenshots/storage-warning.png); the admin sees the figure on
/// *Admin → Users*.
#[tokio::test]
async fn the_dashboard_shows_the_bar_and_the_warning_and_the_admin_sees_usage() {
    if !chromium::available() {
        return;
    }
    let server = TestServer::start_with(|c| {
        c.storage.soft_quota = Some(1 << 20);
        c.storage.measure_interval = Duration::from_secs(1);
    })
    .await;
    add_user(&server, "gus", "gus-password-1", false);
    let data = storage_dir(server.data_dir(), "gus").join("datasets");
    std::fs::create_dir_all(&data).expect("datasets");
    std::fs::write(data.join("train.csv"), vec![b'1'; 950 << 10]).expect("data");
    let api = Api::new(&server.url, &token_for(&server, "gus"));
    storage_when(&api, "Gus's 950 KiB to be measured", |s| {
        s["used_bytes"].as_u64().is_some_and(|u| u > 950 << 10)
    })
    .await;
    let b = Browser::start(&server.url).await;
    b.login("gus", "gus-password-1").await;
    b.goto("/").await;
    let card = b.wait_text("#storage", "of 1 MiB", SHORT).await;
    assert!(card.contains("measured"), "{card}");
    let warning = b
        .wait_text("#storage-warning", "/storage/datasets", SHORT)
        .await;
    assert!(
        warning.contains("(93 %)") || warning.contains("(94 %)") || warning.contains("(95 %)"),
        "{warning}"
    );
    let fill = b
        .wait_css("#storage rect.fill", SHORT)
        .await
        .attr("width")
        .await
        .expect("width");
    assert!(
        fill.as_deref().is_some_and(|w| w.starts_with("9")),
        "bar {fill:?}"
    );
    b.screenshot("storage-warning.png").await;
    b.logout().await;

    b.login("admin", &server.admin_password()).await;
    b.goto("/admin/users").await;
    // Gus's cell: the 90 % badge, his figure in KiB against the quota (the admin's own
    // row reads "0 B of 1 MiB").
    let rows = b.wait_text("table.list tbody", "gus", SHORT).await;
    assert!(
        rows.contains("90 %+") && rows.contains("KiB of 1 MiB"),
        "{rows}"
    );
    b.screenshot("storage-admin-users.png").await;
    b.close().await;
}

/// With an hour between passes, a member is measured again soon after their notebook stops
/// (what it wrote is at rest then), not an hour later.
#[tokio::test]
async fn a_member_is_measured_soon_after_their_notebook_stops() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| {
        docker_config(c, &image);
        c.storage.measure_interval = Duration::from_secs(3600);
    })
    .await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    // Added after the first pass (at start): not measured until something asks for it.
    add_user(&server, "hal", "hal-password-1", false);
    let hal = Api::new(&server.url, &token_for(&server, "hal"));
    let id = hal.create_notebook("writes").await;
    hal.wait_state(&id, "running", READY).await;
    let (_, me) = hal.get("/api/v1/me").await;
    assert!(me["storage"]["measured_at"].is_null(), "{me}");
    let folder = server.data_dir().join("notebooks").join(&id);
    std::fs::write(folder.join("results.bin"), vec![0u8; 2 << 20]).expect("results");
    let (status, _) = hal
        .post(&format!("/api/v1/notebooks/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 202);
    hal.wait_state(&id, "stopped", READY).await;
    let s = storage_when(&hal, "Hal to be measured after the stop", |_| true).await;
    assert!(
        s["used_bytes"].as_u64().is_some_and(|u| u >= 2 << 20),
        "{s}"
    );
}
