//! Issue 5: exclusive GPU allocation, the queue, quotas and the GPU map, with the
//! simulated inventory (4 GPUs) and real containers.

use crate::chromium;
use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use notebox::config::{GpuBackend, MachineType, SimulatedGpu};
use serde_json::json;

const READY: Duration = Duration::from_secs(90);

fn sim_uuid(i: usize) -> String {
    format!("GPU-5e000000-0000-0000-0000-00000000000{i}")
}

fn gpu_config(c: &mut notebox::Config, image: &str) {
    docker_config(c, image);
    c.gpu.backend = GpuBackend::Simulated;
    c.gpu.simulated = (0..4)
        .map(|i| SimulatedGpu {
            uuid: sim_uuid(i),
            name: "Simulated RTX A6000".into(),
            memory_mib: 49152,
            utilization_file: None,
        })
        .collect();
    for (id, gpus) in [("gpu1", 1), ("gpu2", 2), ("gpu8", 8)] {
        c.machines.push(MachineType {
            id: id.into(),
            name: format!("{gpus} GPU"),
            cpus: 0.5,
            memory_mib: 768,
            gpus,
            idle_timeout: None,
            reclaim: None,
        });
    }
}

async fn create(api: &Api, name: &str, machine: &str) -> (u16, serde_json::Value) {
    api.post(
        "/api/v1/notebooks",
        json!({"name": name, "image": "test", "machine": machine}),
    )
    .await
}

/// NVIDIA_VISIBLE_DEVICES of a notebook's container.
fn visible_devices(notebook_id: &str) -> Vec<String> {
    let info = docker_inspect(&container_of(notebook_id));
    let env = info["Config"]["Env"].as_array().expect("env").clone();
    let value = env
        .iter()
        .filter_map(|e| e.as_str())
        .find_map(|e| e.strip_prefix("NVIDIA_VISIBLE_DEVICES="))
        .expect("NVIDIA_VISIBLE_DEVICES is set")
        .to_string();
    assert!(
        info["HostConfig"]["DeviceRequests"].is_null(),
        "the simulated backend sends no device request"
    );
    value.split(',').map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_are_exclusive_and_the_queue_starts_notebooks_by_itself() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| gpu_config(c, &image)).await;
    add_user(&server, "alice", "alice-password", false);
    add_user(&server, "bob", "bob-password", false);
    let alice = Api::new(&server.url, &token_for(&server, "alice"));
    let bob = Api::new(&server.url, &token_for(&server, "bob"));

    let (s, a) = create(&alice, "a", "gpu2").await;
    assert_eq!(s, 201, "{a}");
    let (s, b) = create(&bob, "b", "gpu2").await;
    assert_eq!(s, 201, "{b}");
    let (a, b) = (
        a["id"].as_str().expect("id").to_string(),
        b["id"].as_str().expect("id").to_string(),
    );
    let a_nb = alice.wait_state(&a, "running", READY).await;
    bob.wait_state(&b, "running", READY).await;
    let (da, db) = (visible_devices(&a), visible_devices(&b));
    assert_eq!(da.len(), 2);
    assert_eq!(db.len(), 2);
    let all: HashSet<String> = da.iter().chain(db.iter()).cloned().collect();
    assert_eq!(
        all,
        (0..4).map(sim_uuid).collect::<HashSet<_>>(),
        "disjoint, and together all four"
    );
    assert_eq!(a_nb["gpus"].as_array().map(Vec::len), Some(2));

    // The GPU map names each holder.
    let (_, map) = alice.get("/api/v1/gpus").await;
    let gpus = map["gpus"].as_array().expect("gpus");
    assert_eq!(gpus.len(), 4);
    for g in gpus {
        let holder = &g["holder"];
        let expected = if da.contains(&g["uuid"].as_str().expect("uuid").to_string()) {
            ("alice", &a)
        } else {
            ("bob", &b)
        };
        assert_eq!(holder["user"], expected.0, "{g}");
        assert_eq!(holder["notebook"], expected.1.as_str(), "{g}");
        assert!(holder["since"].is_string());
    }

    // A third GPU notebook waits in the queue, with its place.
    let (s, c) = create(&alice, "c", "gpu1").await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["state"], "queued", "{c}");
    assert_eq!(c["queue_position"], 1);
    let c = c["id"].as_str().expect("id").to_string();
    let (s, d) = create(&bob, "d", "gpu1").await;
    assert_eq!(s, 201);
    assert_eq!(d["queue_position"], 2, "{d}");
    let d = d["id"].as_str().expect("id").to_string();
    // The reconciler looks at the queue on every pass: after a few, c still waits.
    wait_reconciler_passes(&server.url, 3).await;
    assert_eq!(
        alice.get(&format!("/api/v1/notebooks/{c}")).await.1["state"],
        "queued"
    );

    // Stopping one of the first two starts both queued ones by themselves, first come first.
    alice
        .post(&format!("/api/v1/notebooks/{a}/stop"), json!({}))
        .await;
    alice.wait_state(&c, "running", READY).await;
    bob.wait_state(&d, "running", READY).await;
    let (dc, dd) = (visible_devices(&c), visible_devices(&d));
    let now: Vec<String> = db
        .iter()
        .chain(dc.iter())
        .chain(dd.iter())
        .cloned()
        .collect();
    assert_eq!(
        now.iter().collect::<HashSet<_>>().len(),
        4,
        "no GPU given twice: {now:?}"
    );

    // A queued notebook can be cancelled.
    let (_, e) = create(&alice, "e", "gpu1").await;
    let e = e["id"].as_str().expect("id").to_string();
    assert_eq!(
        alice.get(&format!("/api/v1/notebooks/{e}")).await.1["state"],
        "queued"
    );
    let (s, e_nb) = alice
        .post(&format!("/api/v1/notebooks/{e}/stop"), json!({}))
        .await;
    assert_eq!(s, 202);
    assert_eq!(e_nb["state"], "stopped", "{e_nb}");

    // The GPU page shows the map.
    let browser = client();
    login_ok(&browser, &server.url, "alice", "alice-password").await;
    let page = browser
        .get(format!("{}/gpus", server.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains(&sim_uuid(0)) && page.contains("bob"),
        "GPU page lists GPUs and holders"
    );
    let form = browser
        .get(format!("{}/notebooks/new", server.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(
        form.contains("0 of 4 GPUs free"),
        "the create form says how many GPUs are free"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_queue_busy_gpus_are_refused_clearly_and_quotas_hold() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| {
        gpu_config(c, &image);
        c.gpu.queue = false;
        c.gpu.max_gpus_per_user = 3;
    })
    .await;
    add_user(&server, "alice", "alice-password", false);
    add_user(&server, "bob", "bob-password", false);
    let alice = Api::new(&server.url, &token_for(&server, "alice"));
    let bob = Api::new(&server.url, &token_for(&server, "bob"));
    let (s, _) = create(&alice, "a1", "gpu2").await;
    assert_eq!(s, 201);
    let (s, refused) = create(&alice, "a2", "gpu2").await;
    assert_eq!(s, 403, "{refused}");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(message.contains("limit is 3"), "{message}");
    let (s, _) = create(&bob, "b1", "gpu2").await;
    assert_eq!(s, 201);
    let (s, refused) = create(&bob, "b2", "gpu1").await;
    assert_eq!(s, 409, "{refused}");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("0 of 4 are free") && message.contains("alice") && message.contains("a1"),
        "{message}"
    );
    let (_, list) = bob.get("/api/v1/notebooks").await;
    assert_eq!(
        list["notebooks"].as_array().map(Vec::len),
        Some(1),
        "the refused notebook was not created"
    );
    let (s, refused) = create(&bob, "huge", "gpu8").await;
    assert_eq!(s, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("has 4")),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_never_share_a_gpu() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| {
        gpu_config(c, &image);
        c.gpu.max_gpus_per_user = 32;
        c.notebooks.max_running_per_user = 32;
    })
    .await;
    add_user(&server, "alice", "alice-password", false);
    let alice = Api::new(&server.url, &token_for(&server, "alice"));
    let requests = (0..20).map(|i| {
        let alice = alice.clone();
        async move { create(&alice, &format!("n{i}"), "gpu1").await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut ids = Vec::new();
    for (s, nb) in &answers {
        assert_eq!(*s, 201, "{nb}");
        ids.push(nb["id"].as_str().expect("id").to_string());
    }
    let starting = answers
        .iter()
        .filter(|(_, nb)| nb["state"] != "queued")
        .count();
    assert_eq!(starting, 4, "exactly four start, the rest queue");

    // Until the four holders run, and for a few reconciler passes more: never more than 4
    // holders, never a UUID twice, never a fifth notebook running.
    let db_path = server.data_dir().join("notebox.db");
    let check = || async {
        let conn = rusqlite::Connection::open(&db_path).expect("db");
        let held: i64 = conn
            .query_row("SELECT count(*) FROM gpu_allocations", [], |r| r.get(0))
            .expect("count");
        assert!(held <= 4, "{held} GPUs held");
        let (_, list) = alice.get("/api/v1/notebooks").await;
        let running: Vec<String> = list["notebooks"]
            .as_array()
            .expect("list")
            .iter()
            .filter(|n| n["state"] == "running")
            .map(|n| n["id"].as_str().expect("id").to_string())
            .collect();
        assert!(running.len() <= 4, "more than four run: {running:?}");
        let mut devices = Vec::new();
        for id in &running {
            devices.extend(visible_devices(id));
        }
        let distinct: HashSet<&String> = devices.iter().collect();
        assert_eq!(
            distinct.len(),
            devices.len(),
            "a GPU given twice: {devices:?}"
        );
        running.len()
    };
    wait_for("the four holders to run", READY, || async {
        (check().await == 4).then_some(())
    })
    .await;
    wait_reconciler_passes(&server.url, 3).await;
    assert_eq!(check().await, 4, "still exactly the four holders run");
    let queued = ids.len() - 4;
    let (_, list) = alice.get("/api/v1/notebooks").await;
    let positions: HashSet<i64> = list["notebooks"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|n| n["queue_position"].as_i64())
        .collect();
    assert_eq!(
        positions,
        (1..=queued as i64).collect::<HashSet<_>>(),
        "queue positions 1..{queued}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_gpu_notebooks_start_leaves_no_orphaned_gpus() {
    let Some(image) = test_image() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let _guard = ContainerGuard(data.clone());
    let config = dir.path().join("config.toml");
    let mut toml = docker_config_toml(&data, &image);
    toml = toml.replace(
        "[notebooks]",
        "[gpu]\nbackend = \"simulated\"\n\n[notebooks]",
    );
    for i in 0..4 {
        toml.push_str(&format!(
            "\n[[gpu.simulated]]\nuuid = \"{}\"\nname = \"Sim\"\nmemory_mib = 1024\n",
            sim_uuid(i)
        ));
    }
    toml.push_str(
        "\n[[machines]]\nid = \"gpu2\"\nname = \"2 GPU\"\ncpus = 0.5\nmemory_mib = 768\ngpus = 2\n",
    );
    std::fs::write(&config, toml).expect("config");
    let config_arg = config.to_string_lossy().to_string();

    let mut server = ServerProcess::spawn(dir.path(), &["--config", &config_arg], &[]).await;
    let out = run_cli(
        &data,
        &["--config", &config_arg, "token", "create", "admin"],
        None,
    );
    let api = Api::new(&server.url, out.stdout.trim());
    let mut ids = Vec::new();
    for name in ["x", "y"] {
        let (s, nb) = create(&api, name, "gpu2").await;
        assert_eq!(s, 201, "{nb}");
        ids.push(nb["id"].as_str().expect("id").to_string());
    }
    // Kill it while they start: once the first has its container, before it runs.
    wait_for("a container for the first notebook", READY, || async {
        (!containers_of_notebook(&ids[0]).is_empty()).then_some(())
    })
    .await;
    server.kill9();

    let server = ServerProcess::spawn(dir.path(), &["--config", &config_arg], &[]).await;
    let api = Api::new(&server.url, &api.token);
    for id in &ids {
        api.wait_state(id, "running", READY).await;
    }
    let (_, map) = api.get("/api/v1/gpus").await;
    for g in map["gpus"].as_array().expect("gpus") {
        let holder = g["holder"]["notebook"]
            .as_str()
            .expect("every GPU is held by x or y");
        assert_eq!(
            containers_of_notebook(holder).len(),
            1,
            "the holder {holder} has its container"
        );
    }
    for id in &ids {
        api.post(&format!("/api/v1/notebooks/{id}/stop"), json!({}))
            .await;
    }
    for id in &ids {
        api.wait_state(id, "stopped", READY).await;
    }
    let (_, map) = api.get("/api/v1/gpus").await;
    let free = map["gpus"]
        .as_array()
        .expect("gpus")
        .iter()
        .filter(|g| g["holder"].is_null())
        .count();
    assert_eq!(free, 4, "all four are free again: {map}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_page_shows_holders_live_in_chromium() {
    let Some(image) = test_image() else { return };
    if !require(
        "chromium",
        chromium::available(),
        "chromium and chromedriver are needed",
    ) {
        return;
    }
    let server = TestServer::start_with(|c| gpu_config(c, &image)).await;
    add_user(&server, "alice", "alice-password", false);
    let alice = Api::new(&server.url, &token_for(&server, "alice"));
    let browser = chromium::Browser::start(&server.url).await;
    browser.login("alice", "alice-password").await;
    browser.goto("/gpus").await;
    browser
        .wait_page_text("4 of 4 free", Duration::from_secs(15))
        .await;
    let (s, nb) = create(&alice, "training run", "gpu2").await;
    assert_eq!(s, 201, "{nb}");
    let id = nb["id"].as_str().expect("id").to_string();
    alice.wait_state(&id, "running", READY).await;
    // The page notices by itself (it polls the API) and shows who holds the GPUs.
    browser
        .wait_page_text("training run", Duration::from_secs(20))
        .await;
    let text = browser.page_text().await;
    assert!(
        text.contains("2 of 4 free") && text.contains("alice"),
        "{text}"
    );
    browser.screenshot("gpus.png").await;
    browser.goto("/notebooks/new").await;
    browser
        .wait_page_text("2 of 4 GPUs free", Duration::from_secs(10))
        .await;
    browser.close().await;
}
