//! Issue 3: notebooks on the real Docker engine with a real Jupyter server.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

const READY: Duration = Duration::from_secs(60);

async fn docker_server() -> Option<(TestServer, String)> {
    let image = test_image()?;
    let server = TestServer::start_with(|c| docker_config(c, &image)).await;
    Some((server, image))
}

fn user_api(server: &TestServer, name: &str) -> Api {
    add_user(server, name, &format!("{name}-password"), false);
    Api::new(&server.url, &token_for(server, name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebook_runs_hardened_and_jupyter_answers() {
    let Some((server, _)) = docker_server().await else {
        return;
    };
    let alice = user_api(&server, "alice");
    let started = std::time::Instant::now();
    let id = alice.create_notebook("first").await;
    let nb = alice.wait_state(&id, "running", READY).await;
    eprintln!(
        "notebook running after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(nb["url"], format!("/nb/{id}/"));
    assert_eq!(nb["owner"], "alice");
    assert!(nb["started_at"].is_string());

    let container = container_of(&id);
    assert_eq!(
        jupyter_status(&container, &id).await,
        200,
        "Jupyter answers with its token"
    );

    let info = docker_inspect(&container);
    let hc = &info["HostConfig"];
    assert!(
        hc["SecurityOpt"].to_string().contains("no-new-privileges"),
        "{}",
        hc["SecurityOpt"]
    );
    assert_eq!(hc["CapDrop"], json!(["ALL"]));
    assert!(hc["PidsLimit"].as_i64().unwrap_or(0) > 0);
    assert_eq!(hc["Memory"].as_i64(), Some(1024 * 1024 * 1024));
    assert_eq!(hc["Privileged"], json!(false));
    assert!(
        hc["PortBindings"].as_object().is_none_or(|p| p.is_empty()),
        "no published port: {}",
        hc["PortBindings"]
    );
    let mounts = info["Mounts"].to_string();
    assert!(!mounts.contains("docker.sock"), "{mounts}");
    assert!(
        mounts.contains("/storage")
            && mounts.contains("/notebooks")
            && mounts.contains("/datasets")
    );
    let env = info["Config"]["Env"].to_string();
    assert!(env.contains("NVIDIA_VISIBLE_DEVICES=void"), "{env}");
    assert_eq!(info["Config"]["User"], "1000:100");
    assert_eq!(info["Config"]["Labels"]["io.notebox.notebook"], id.as_str());

    // Logs through the API.
    let (status, logs) = alice.get(&format!("/api/v1/notebooks/{id}/logs")).await;
    assert_eq!(status, 200);
    assert!(
        logs["logs"].as_str().is_some_and(|l| l.contains("Jupyter")),
        "{logs}"
    );

    // Another user sees nothing of it.
    let bob = user_api(&server, "bob");
    for path in [
        format!("/api/v1/notebooks/{id}"),
        format!("/api/v1/notebooks/{id}/logs"),
    ] {
        assert_eq!(bob.get(&path).await.0, 404);
    }
    assert_eq!(
        bob.post(&format!("/api/v1/notebooks/{id}/stop"), json!({}))
            .await
            .0,
        404
    );
    let (_, list) = bob.get("/api/v1/notebooks").await;
    assert_eq!(list["notebooks"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_persists_across_stops_notebooks_and_restarts_but_not_users() {
    let Some((server, _)) = docker_server().await else {
        return;
    };
    let alice = user_api(&server, "alice");
    let bob = user_api(&server, "bob");
    let first = alice.create_notebook("one").await;
    let bobs = bob.create_notebook("bob's").await;
    alice.wait_state(&first, "running", READY).await;
    let (ok, out) = docker_exec(
        &container_of(&first),
        "echo keep-me > /storage/kept.txt && echo nb > /notebooks/local.txt",
    );
    assert!(ok, "{out}");

    // Stop and start: a new container, the same files.
    let (status, _) = alice
        .post(&format!("/api/v1/notebooks/{first}/stop"), json!({}))
        .await;
    assert_eq!(status, 202);
    alice.wait_state(&first, "stopped", READY).await;
    assert!(
        containers_of_notebook(&first).is_empty(),
        "stopped notebooks have no container"
    );
    alice
        .post(&format!("/api/v1/notebooks/{first}/start"), json!({}))
        .await;
    alice.wait_state(&first, "running", READY).await;
    let (_, out) = docker_exec(
        &container_of(&first),
        "cat /storage/kept.txt /notebooks/local.txt",
    );
    assert_eq!(out, "keep-me\nnb\n");

    // A second notebook of alice sees /storage but not the first one's /notebooks.
    let second = alice.create_notebook("two").await;
    alice.wait_state(&second, "running", READY).await;
    let (_, out) = docker_exec(
        &container_of(&second),
        "cat /storage/kept.txt; ls /notebooks",
    );
    assert_eq!(out.trim(), "keep-me");

    // Bob's storage is his own.
    bob.wait_state(&bobs, "running", READY).await;
    let (ok, out) = docker_exec(&container_of(&bobs), "ls -A /storage");
    assert!(ok && out.trim().is_empty(), "bob sees alice's files: {out}");

    // Notebox restarts: the notebooks keep running and the file is still there.
    let (dir, config) = server.stop().await;
    let server = TestServer::start_in(dir, config).await;
    let alice = Api::new(&server.url, &alice.token);
    let nb = alice.wait_state(&first, "running", READY).await;
    assert_eq!(nb["state"], "running");
    let (_, out) = docker_exec(&container_of(&first), "cat /storage/kept.txt");
    assert_eq!(out, "keep-me\n");
    // And on disk, owned by the container user.
    let host = server.data_dir().join("storage/alice/kept.txt");
    assert_eq!(
        std::fs::read_to_string(&host).expect("host file"),
        "keep-me\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_notebooks_running_without_duplicates() {
    let Some(image) = test_image() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let _guard = ContainerGuard(data.clone());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, docker_config_toml(&data, &image)).expect("config");
    let config_arg = config.to_string_lossy().to_string();

    let mut server = ServerProcess::spawn(dir.path(), &["--config", &config_arg], &[]).await;
    let out = run_cli(
        &data,
        &["--config", &config_arg, "token", "create", "admin"],
        None,
    );
    let api = Api::new(&server.url, out.stdout.trim());
    let running = api.create_notebook("survivor").await;
    api.wait_state(&running, "running", READY).await;
    let before = container_of(&running);

    // A second notebook is killed mid-start: it must be finished after the restart.
    let half = api.create_notebook("half-started").await;
    wait_for("the second notebook's container to exist", READY, || {
        let half = half.clone();
        async move { (!containers_of_notebook(&half).is_empty()).then_some(()) }
    })
    .await;
    server.kill9();

    let server = ServerProcess::spawn(dir.path(), &["--config", &config_arg], &[]).await;
    let api = Api::new(&server.url, &api.token);
    let (_, nb) = api.get(&format!("/api/v1/notebooks/{running}")).await;
    assert_eq!(nb["state"], "running", "{nb}");
    api.wait_state(&half, "running", READY).await;
    assert_eq!(
        container_of(&running),
        before,
        "the same container was adopted"
    );
    container_of(&half); // exactly one
    assert_eq!(jupyter_status(&before, &running).await, 200);
    // After a few reconciler passes: still no duplicates.
    wait_reconciler_passes(&server.url, 3).await;
    assert_eq!(containers_of_notebook(&running).len(), 1);
    assert_eq!(containers_of_notebook(&half).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_fails_with_its_name_and_delete_keeps_storage() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| {
        docker_config(c, &image);
        let mut missing = c.images[0].clone();
        missing.id = "missing".into();
        missing.image = "notebox-missing/no-such-image:1".into();
        c.images.push(missing);
    })
    .await;
    let alice = user_api(&server, "alice");
    let (status, nb) = alice
        .post(
            "/api/v1/notebooks",
            json!({"name": "broken", "image": "missing", "machine": "cpu"}),
        )
        .await;
    assert_eq!(status, 201);
    let id = nb["id"].as_str().expect("id").to_string();
    let nb = alice.wait_state(&id, "failed", READY).await;
    let detail = nb["state_detail"].as_str().expect("detail");
    assert!(
        detail.contains("notebox-missing/no-such-image:1"),
        "{detail}"
    );

    // A working one: stop, then delete removes /notebooks but not /storage.
    let good = alice.create_notebook("good").await;
    alice.wait_state(&good, "running", READY).await;
    let (ok, out) = docker_exec(
        &container_of(&good),
        "echo s > /storage/s.txt && echo n > /notebooks/n.txt",
    );
    assert!(ok, "{out}");
    let nb_dir = server.data_dir().join("notebooks").join(&good);
    assert!(nb_dir.join("n.txt").exists());
    let (status, _) = alice
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/notebooks/{good}"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    wait_for("the notebook to be gone", READY, || {
        let alice = alice.clone();
        let good = good.clone();
        async move { (alice.get(&format!("/api/v1/notebooks/{good}")).await.0 == 404).then_some(()) }
    })
    .await;
    wait_for("its container and files to be gone", READY, || {
        let good = good.clone();
        let nb_dir = nb_dir.clone();
        async move { (containers_of_notebook(&good).is_empty() && !nb_dir.exists()).then_some(()) }
    })
    .await;
    assert!(
        server.data_dir().join("storage/alice/s.txt").exists(),
        "/storage is kept"
    );
    // The failed one can be deleted too.
    assert_eq!(
        alice
            .send(
                reqwest::Method::DELETE,
                &format!("/api/v1/notebooks/{id}"),
                None
            )
            .await
            .0,
        202
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_that_says_what_to_fix() {
    let server = TestServer::start_with(|c| docker_config(c, "unused:1")).await;
    let alice = user_api(&server, "alice");
    let long = "x".repeat(101);
    let cases = [
        (
            json!({"name": "", "image": "test", "machine": "cpu"}),
            "name",
        ),
        (
            json!({"name": long, "image": "test", "machine": "cpu"}),
            "too long",
        ),
        (
            json!({"name": "n", "image": "nope", "machine": "cpu"}),
            "catalog",
        ),
        (
            json!({"name": "n", "image": "docker.io/evil/miner:1", "machine": "cpu"}),
            "custom images are not allowed",
        ),
        (
            json!({"name": "n", "image": "test", "machine": "huge"}),
            "machine type",
        ),
        (
            json!({"name": "n", "image": "test", "machine": "cpu", "auto_shutdown_minutes": -5}),
            "auto_shutdown_minutes",
        ),
        (
            json!({"name": "n", "image": "test", "machine": "cpu", "colour": "red"}),
            "colour",
        ),
    ];
    for (body, hint) in cases {
        let (status, answer) = alice.post("/api/v1/notebooks", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(hint),
            "{body}: message {message:?} should mention {hint:?}"
        );
    }
    let r = alice
        .http
        .post(format!("{}/api/v1/notebooks", server.url))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
    let (_, list) = alice.get("/api/v1/notebooks").await;
    assert_eq!(list["notebooks"], json!([]), "nothing was created");
    assert_eq!(alice.get("/api/v1/notebooks/doesnotexist").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_that_never_answers_fails_with_its_log_and_removed_container_shows_stopped() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| {
        docker_config(c, &image);
        // Long enough for JupyterLab to start while the restart test beside it keeps
        // Docker busy (6 s was not, on 2 cores); the silent one fails after it.
        c.notebooks.ready_timeout = std::time::Duration::from_secs(20);
        let mut silent = c.images[0].clone();
        silent.id = "silent".into();
        silent.launcher = notebox::config::Launcher::Command;
        silent.command = vec![
            "sh".into(),
            "-c".into(),
            "echo booting-marker-42; sleep 600".into(),
        ];
        c.images.push(silent);
        let mut crashing = c.images[0].clone();
        crashing.id = "crashing".into();
        crashing.launcher = notebox::config::Launcher::Command;
        crashing.command = vec![
            "sh".into(),
            "-c".into(),
            "echo fatal-marker-7 >&2; exit 3".into(),
        ];
        c.images.push(crashing);
    })
    .await;
    let alice = user_api(&server, "alice");
    let create = |image: &'static str| {
        let alice = alice.clone();
        async move {
            let (s, nb) = alice
                .post(
                    "/api/v1/notebooks",
                    json!({"name": image, "image": image, "machine": "cpu"}),
                )
                .await;
            assert_eq!(s, 201);
            nb["id"].as_str().expect("id").to_string()
        }
    };
    let silent = create("silent").await;
    let crashing = create("crashing").await;
    let nb = alice.wait_state(&silent, "failed", READY).await;
    let detail = nb["state_detail"].as_str().expect("detail");
    assert!(
        detail.contains("did not answer") && detail.contains("booting-marker-42"),
        "{detail}"
    );
    let nb = alice.wait_state(&crashing, "failed", READY).await;
    let detail = nb["state_detail"].as_str().expect("detail");
    assert!(
        detail.contains("exit code 3") && detail.contains("fatal-marker-7"),
        "{detail}"
    );
    assert!(
        containers_of_notebook(&silent).is_empty() && containers_of_notebook(&crashing).is_empty()
    );

    // A container removed behind notebox's back: the notebook shows stopped, with why.
    let id = alice.create_notebook("victim").await;
    alice.wait_state(&id, "running", READY).await;
    let c = container_of(&id);
    assert!(std::process::Command::new("docker")
        .args(["rm", "-f", &c])
        .output()
        .expect("rm")
        .status
        .success());
    let nb = alice
        .wait_state(&id, "stopped", Duration::from_secs(20))
        .await;
    assert!(
        nb["state_detail"]
            .as_str()
            .is_some_and(|d| d.contains("removed outside Notebox")),
        "{nb}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_shutdown_stops_and_extend_restarts_the_countdown() {
    let Some((server, _)) = docker_server().await else {
        return;
    };
    let alice = user_api(&server, "alice");
    let (s, nb) = alice
        .post("/api/v1/notebooks", json!({"name": "short", "image": "test", "machine": "cpu", "auto_shutdown_minutes": 60}))
        .await;
    assert_eq!(s, 201, "{nb}");
    let id = nb["id"].as_str().expect("id").to_string();
    let nb = alice.wait_state(&id, "running", READY).await;
    assert_eq!(nb["auto_shutdown"], "1h");
    let first_deadline = nb["auto_shutdown_at"]
        .as_str()
        .expect("deadline")
        .to_string();

    // Extending to 12 h moves the deadline later than the first 1 h one, whatever the
    // clock reads (no need to let a second pass first).
    let (s, nb) = alice
        .post(
            &format!("/api/v1/notebooks/{id}/extend"),
            json!({"auto_shutdown": "12h"}),
        )
        .await;
    assert_eq!(s, 200, "{nb}");
    assert_eq!(nb["auto_shutdown"], "12h");
    assert!(nb["auto_shutdown_at"].as_str().expect("deadline") > first_deadline.as_str());
    let (s, e) = alice
        .post(
            &format!("/api/v1/notebooks/{id}/extend"),
            json!({"auto_shutdown": "3h"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");

    // Make the deadline pass (as if 12 hours went by).
    let conn = rusqlite::Connection::open(server.data_dir().join("notebox.db")).expect("db");
    conn.execute(
        "UPDATE notebooks SET auto_shutdown_at = strftime('%s','now') - 1 WHERE id = ?1",
        [&id],
    )
    .expect("update");
    let nb = alice
        .wait_state(&id, "stopped", Duration::from_secs(30))
        .await;
    assert!(
        nb["state_detail"]
            .as_str()
            .is_some_and(|d| d.contains("automatically")),
        "{nb}"
    );
    assert!(containers_of_notebook(&id).is_empty());
}

/// A stand-in for Jupyter that is ready at once: it answers every GET with `[]` (no
/// kernels, no terminals), which is all Notebox asks of it here.
const INSTANT_JUPYTER: &str = r#"import http.server, sys
class Jupyter(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"[]")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("", int(sys.argv[1])), Jupyter).serve_forever()
"#;

/// A child-process server's config for the restart test: `INSTANT_JUPYTER` as the
/// catalog's Jupyter, notebooks on Notebox's own origin, the activity sampler every second,
/// and no periodic reconciler pass within the test (1 h): only the pass at start-up, and
/// what wakes it, can settle what changed while Notebox was down.
fn restart_config_toml(data: &std::path::Path, image: &str) -> String {
    // A JSON string is a TOML basic string.
    let script = serde_json::to_string(INSTANT_JUPYTER).expect("JSON string");
    docker_config_toml(data, image)
        .replace(
            "reconcile_interval = \"1s\"",
            "reconcile_interval = \"1h\"\nactivity_interval = \"1s\"\norigin = \"same\"",
        )
        .replace(
            "launcher = \"jupyter-lab\"",
            &format!(
                "launcher = \"command\"\ncommand = [\"python3\", \"-c\", {script}, \"{{port}}\"]"
            ),
        )
}

/// Runs `docker` with `args`; its output, or a panic with its error.
fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every container of the installation `instance`: (notebook id, container id, state).
fn containers_of_instance(instance: &str) -> Vec<(String, String, String)> {
    let mut all: Vec<(String, String, String)> = docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label=io.notebox.instance={instance}"),
        "--format",
        "{{.Label \"io.notebox.notebook\"}} {{.ID}} {{.State}}",
    ])
    .lines()
    .filter_map(|l| {
        let mut parts = l.split_whitespace().map(str::to_string);
        Some((parts.next()?, parts.next()?, parts.next()?))
    })
    .collect();
    all.sort();
    all
}

/// The one container of each notebook in `ids`, in that order.
fn one_container_each(instance: &str, ids: &[&String]) -> Vec<String> {
    let all = containers_of_instance(instance);
    ids.iter()
        .map(|id| {
            let theirs: Vec<&String> = all
                .iter()
                .filter(|(nb, _, _)| nb == *id)
                .map(|(_, c, _)| c)
                .collect();
            assert_eq!(theirs.len(), 1, "one container for {id}: {all:?}");
            theirs[0].clone()
        })
        .collect()
}

/// The ledger's intervals that are still open, by notebook.
fn open_intervals(db: &rusqlite::Connection) -> Vec<String> {
    db.prepare("SELECT notebook_id FROM usage_intervals WHERE ended_at IS NULL ORDER BY id")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// A notebook's last interval in the ledger: (started_at, ended_at).
fn last_interval(db: &rusqlite::Connection, notebook_id: &str) -> (i64, Option<i64>) {
    db.query_row(
        "SELECT started_at, ended_at FROM usage_intervals WHERE notebook_id = ?1
         ORDER BY id DESC LIMIT 1",
        [notebook_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("an interval")
}

/// When a running notebook was last seen running, as the ledger has it: its open
/// interval's last sample, else its start (Unix seconds).
fn last_seen_running(db: &rusqlite::Connection, notebook_id: &str) -> i64 {
    db.query_row(
        "SELECT COALESCE(sampled_at_ms / 1000, started_at) FROM usage_intervals
         WHERE notebook_id = ?1 AND ended_at IS NULL",
        [notebook_id],
        |r| r.get(0),
    )
    .expect("one open interval")
}

/// Issue 23: Notebox is killed (`kill -9`) 20 times in a row while Docker changes behind
/// its back, and each time the pass at start-up settles every notebook within seconds,
/// with no periodic pass to fall back on: a running notebook whose container was removed
/// is stopped and one whose container exited is failed (each one's usage ending when it
/// was last seen running, or when its container stopped, not at the restart), one still
/// running is adopted, and a stopped notebook's leftover container is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_restart_settles_every_notebook_at_start_up() {
    const ROUNDS: usize = 20;
    /// How long after a restart everything must be settled.
    const SETTLE: Duration = Duration::from_secs(5);
    let Some(image) = test_image() else { return };
    let began = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let _guard = ContainerGuard(data.clone());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, restart_config_toml(&data, &image)).expect("config");
    let config_arg = config.to_string_lossy().to_string();
    let args = ["--config", config_arg.as_str()];
    let mut server = ServerProcess::spawn(dir.path(), &args, &[]).await;
    let out = run_cli(
        &data,
        &["--config", &config_arg, "token", "create", "admin"],
        None,
    );
    assert!(out.status.success(), "{}", out.stderr);
    let token = out.stdout.trim().to_string();
    let db = rusqlite::Connection::open(data.join("notebox.db")).expect("db");
    let instance: String = db
        .query_row(
            "SELECT value FROM meta WHERE key = 'instance_id'",
            [],
            |r| r.get(0),
        )
        .expect("instance id");

    let mut api = Api::new(&server.url, &token);
    let alive = api.create_notebook("alive").await;
    let gone = api.create_notebook("gone").await;
    let crashed = api.create_notebook("crashed").await;
    let leftover = api.create_notebook("leftover").await;
    for id in [&alive, &gone, &crashed, &leftover] {
        api.wait_state(id, "running", READY).await;
    }
    let (status, _) = api
        .post(&format!("/api/v1/notebooks/{leftover}/stop"), json!({}))
        .await;
    assert_eq!(status, 202);
    api.wait_state(&leftover, "stopped", READY).await;
    let alive_container = container_of(&alive);
    let only_alive = vec![(
        alive.clone(),
        alive_container.clone(),
        "running".to_string(),
    )];
    let expected = [
        (&alive, "running"),
        (&gone, "stopped"),
        (&crashed, "failed"),
        (&leftover, "stopped"),
    ];
    let mut slowest = Duration::ZERO;

    for round in 1..=ROUNDS {
        // Notebox dies. Meanwhile one container is removed, one is killed, and the stopped
        // notebook gets a running container again (as if a stop was cut short).
        let containers = one_container_each(&instance, &[&gone, &crashed]);
        let (gone_container, crashed_container) = (&containers[0], &containers[1]);
        server.kill9();
        let leftover_labels = [
            format!("io.notebox.instance={instance}"),
            format!("io.notebox.notebook={leftover}"),
        ];
        std::thread::scope(|s| {
            s.spawn(|| docker(&["rm", "-f", gone_container]));
            s.spawn(|| docker(&["kill", crashed_container]));
            s.spawn(|| {
                docker(&[
                    "run",
                    "-d",
                    "--init",
                    "--network",
                    "none",
                    "--label",
                    &leftover_labels[0],
                    "--label",
                    &leftover_labels[1],
                    &image,
                    "sleep",
                    "600",
                ])
            });
        });
        let crashed_stopped = time::OffsetDateTime::parse(
            &docker(&["inspect", "-f", "{{.State.FinishedAt}}", crashed_container]),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("FinishedAt")
        .unix_timestamp();
        let gone_seen = last_seen_running(&db, &gone);

        let restarted = std::time::Instant::now();
        server = ServerProcess::spawn(dir.path(), &args, &[]).await;
        api = Api::new(&server.url, &token);
        let settled = try_wait_for(SETTLE, || async {
            let (_, list) = api.get("/api/v1/notebooks").await;
            let notebooks = list["notebooks"].as_array()?;
            let states = expected.iter().all(|(id, state)| {
                notebooks
                    .iter()
                    .any(|n| n["id"] == id.as_str() && n["state"] == *state)
            });
            (states && containers_of_instance(&instance) == only_alive).then_some(list)
        })
        .await;
        let Some(list) = settled else {
            let (_, list) = api.get("/api/v1/notebooks").await;
            panic!(
                "round {round}: not settled {SETTLE:?} after the restart: {list:#}\ncontainers: {:?}\nserver log:\n{}",
                containers_of_instance(&instance),
                server.stderr()
            );
        };
        slowest = slowest.max(restarted.elapsed());
        let detail = |id: &str| {
            list["notebooks"]
                .as_array()
                .and_then(|l| l.iter().find(|n| n["id"] == id))
                .and_then(|n| n["state_detail"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            detail(&gone).contains("removed outside Notebox"),
            "{}",
            detail(&gone)
        );
        assert!(
            detail(&crashed).contains("exit code 137"),
            "{}",
            detail(&crashed)
        );
        // The ledger: only the running notebook's interval is open; the others ended when
        // last seen running, or when the container stopped (Docker says when).
        assert_eq!(open_intervals(&db), vec![alive.clone()], "round {round}");
        let (started, ended) = last_interval(&db, &gone);
        assert_eq!(ended, Some(gone_seen.max(started)), "round {round}: gone");
        let (started, ended) = last_interval(&db, &crashed);
        assert_eq!(
            ended,
            Some(crashed_stopped.max(started)),
            "round {round}: crashed"
        );

        // Both running again for the next round.
        if round < ROUNDS {
            for id in [&gone, &crashed] {
                let (status, body) = api
                    .post(&format!("/api/v1/notebooks/{id}/start"), json!({}))
                    .await;
                assert_eq!(status, 202, "{body}");
            }
            for id in [&gone, &crashed] {
                api.wait_state(id, "running", READY).await;
            }
        }
    }
    eprintln!(
        "{ROUNDS} restarts, each settled within {:.2} s; {:.1} s in all",
        slowest.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
}
