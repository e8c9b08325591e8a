//! Issue 3: notebooks on the real Docker engine with a real Jupyter server.

mod common;

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

    let mut server = ServerProcess::spawn(dir.path(), &["--config", &config_arg], &[]);
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

    let server = ServerProcess::spawn(dir.path(), &["--config", &config_arg], &[]);
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
    // Give the reconciler a few passes: still no duplicates.
    tokio::time::sleep(Duration::from_secs(3)).await;
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
        c.notebooks.ready_timeout = "6s".into();
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

    tokio::time::sleep(Duration::from_millis(1100)).await;
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
