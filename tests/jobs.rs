//! Issue 26: jobs — a notebook or a command run headless in its own container, through the
//! same GPU queue as notebooks (simulated GPUs, real containers, the real runner and
//! kernel), checked as a member would through the API, the pages and the CLI.

mod chromium;
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use notebox::config::{GpuBackend, MachineType, SimulatedGpu};
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(90);
const GPU: &str = "GPU-7a000000-0000-0000-0000-000000000001";

/// The test image, one simulated GPU, and a one-GPU machine type beside the CPU one.
fn job_config(c: &mut notebox::Config, image: &str) {
    docker_config(c, image);
    c.gpu.backend = GpuBackend::Simulated;
    c.gpu.simulated = vec![SimulatedGpu {
        uuid: GPU.into(),
        name: "Simulated A100".into(),
        memory_mib: 40960,
        utilization_file: None,
    }];
    c.machines.push(MachineType {
        id: "gpu1".into(),
        name: "1 GPU".into(),
        cpus: 0.5,
        memory_mib: 768,
        gpus: 1,
        idle_timeout: None,
        reclaim: None,
    });
}

/// A notebook file: code cells from sources; a source starting with "#parameters" is the
/// cell tagged `parameters`.
fn notebook_json(cells: &[&str]) -> Value {
    let cells: Vec<Value> = cells
        .iter()
        .map(|src| {
            let tags: Vec<&str> = if src.starts_with("#parameters") {
                vec!["parameters"]
            } else {
                vec![]
            };
            json!({"cell_type": "code", "source": src, "metadata": {"tags": tags},
                   "outputs": [], "execution_count": null})
        })
        .collect();
    json!({"nbformat": 4, "nbformat_minor": 5, "cells": cells,
           "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}})
}

/// Writes a file into a notebook's folder as its container user would.
fn put_file(data_dir: &Path, notebook: &str, name: &str, bytes: &[u8]) -> PathBuf {
    let path = data_dir.join("notebooks").join(notebook).join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, bytes).expect("write file");
    std::os::unix::fs::chown(&path, Some(1000), Some(100)).expect("chown");
    path
}

fn put_notebook(data_dir: &Path, notebook: &str, name: &str, cells: &[&str]) {
    let body = serde_json::to_vec(&notebook_json(cells)).expect("json");
    put_file(data_dir, notebook, name, &body);
}

/// A stopped CPU notebook whose folder jobs run in (jobs run whether it runs or not).
async fn folder_notebook(api: &Api, name: &str) -> String {
    let id = api.create_notebook(name).await;
    api.wait_state(&id, "running", READY).await;
    let (status, _) = api
        .post(&format!("/api/v1/notebooks/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 202);
    api.wait_state(&id, "stopped", READY).await;
    id
}

async fn submit(api: &Api, body: Value) -> Value {
    let (status, job) = api.post("/api/v1/jobs", body.clone()).await;
    assert_eq!(status, 201, "submit {body}: {job}");
    job
}

/// Polls a job until `done(job)`; panics with the job after `timeout`.
async fn wait_job(api: &Api, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/v1/jobs/{id}");
    let deadline = Instant::now() + timeout;
    loop {
        let (status, job) = api.get(&path).await;
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        if Instant::now() > deadline {
            panic!("job {id} did not get there in {timeout:?}: {job:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn finished(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled" | "timed_out")
    )
}

/// Containers (any state) labelled as this job's.
fn job_containers(job: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.notebox.job={job}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

async fn gpu_holder(api: &Api) -> Value {
    let (_, gpus) = api.get("/api/v1/gpus").await;
    gpus["gpus"][0]["holder"].clone()
}

async fn setup(tweak: impl FnOnce(&mut notebox::Config)) -> Option<(TestServer, Api)> {
    if !require("docker", docker_works(), "jobs run in containers") {
        return None;
    }
    let image = test_image()?;
    let server = TestServer::start_with(|c| {
        job_config(c, &image);
        tweak(c);
    })
    .await;
    add_user(&server, "ada", "ada-password-1", false);
    let api = Api::new(&server.url, &token_for(&server, "ada"));
    Some((server, api))
}

/// Acceptance 1 and 2: with the GPU held, a notebook job queues, starts when the GPU
/// frees, runs every cell with its parameters injected, shows its output notebook, frees
/// its GPU within 2 s of its last cell, and is in the usage ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_job_queues_for_the_gpu_runs_every_cell_and_frees_it() {
    let Some((server, api)) = setup(|_| {}).await else {
        return;
    };
    let data = server.config.data_dir.clone();
    // Another notebook holds the only GPU.
    let (status, holder) = api
        .post(
            "/api/v1/notebooks",
            json!({"name": "holder", "image": "test", "machine": "gpu1"}),
        )
        .await;
    assert_eq!(status, 201, "{holder}");
    let holder = holder["id"].as_str().expect("id").to_string();
    api.wait_state(&holder, "running", READY).await;
    put_notebook(
        &data,
        &holder,
        "train.ipynb",
        &[
            "#parameters\nlr = 1.0\nepochs = 1",
            "print(f'lr={lr} epochs={epochs}')",
            "import os; print('visible', os.environ.get('NVIDIA_VISIBLE_DEVICES'))",
            "sum(range(epochs * 10))",
        ],
    );
    let job = submit(
        &api,
        json!({"notebook": holder, "path": "train.ipynb", "machine": "gpu1",
               "parameters": {"lr": 0.1, "epochs": 2}}),
    )
    .await;
    let id = job["id"].as_str().expect("job id").to_string();
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["queue_position"], 1, "{job}");
    assert_eq!(job["output"], format!("jobs/{id}/"));
    assert_eq!(job["parameters"], json!({"lr": 0.1, "epochs": 2}));
    // Later edits of the notebook do not change the submitted job.
    put_notebook(
        &data,
        &holder,
        "train.ipynb",
        &["raise SystemExit('edited')"],
    );

    let (status, _) = api
        .post(&format!("/api/v1/notebooks/{holder}/stop"), json!({}))
        .await;
    assert_eq!(status, 202);
    let running = wait_job(&api, &id, READY, |j| j["state"] == "running" || finished(j)).await;
    assert_eq!(running["gpus"], json!([GPU]), "{running}");

    // The GPU is free within 2 s of the runner's last word.
    let status_file = data.join(format!("notebooks/{holder}/jobs/{id}/status.json"));
    let ended_at = wait_for("the runner to finish", READY, || async {
        let text = std::fs::read_to_string(&status_file).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        (v["state"] == "succeeded").then(Instant::now)
    })
    .await;
    wait_for("the GPU to be free", Duration::from_secs(10), || async {
        gpu_holder(&api).await.is_null().then_some(())
    })
    .await;
    assert!(
        ended_at.elapsed() <= Duration::from_secs(2),
        "the GPU was freed {:?} after the last cell",
        ended_at.elapsed()
    );
    let done = wait_job(&api, &id, Duration::from_secs(10), finished).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["progress"], json!({"cell": 5, "cells": 5}), "{done}");
    assert_eq!(done["exit_code"], 0);
    assert!(done["duration_seconds"].as_i64().is_some(), "{done}");
    assert!(job_containers(&id).is_empty(), "no container is left");

    // The output notebook: the injected cell right after the tagged one, outputs in place.
    let out: Value = serde_json::from_slice(
        &std::fs::read(data.join(format!("notebooks/{holder}/jobs/{id}/output.ipynb")))
            .expect("output.ipynb"),
    )
    .expect("output json");
    let injected = &out["cells"][1];
    assert_eq!(injected["metadata"]["tags"], json!(["injected-parameters"]));
    let source = injected["source"].to_string();
    assert!(
        source.contains("lr = 0.1") && source.contains("epochs = 2"),
        "{source}"
    );
    let page = api_page(&api, &format!("/jobs/{id}")).await;
    assert!(
        page.contains("lr=0.1 epochs=2"),
        "the page shows the outputs"
    );
    assert!(
        page.contains(&format!("visible {GPU}")),
        "the job saw its GPU"
    );
    assert!(page.contains("Succeeded"));
    let (_, log) = api.get(&format!("/api/v1/jobs/{id}/logs")).await;
    assert!(
        log["text"]
            .as_str()
            .unwrap_or("")
            .contains("lr=0.1 epochs=2"),
        "{log}"
    );

    // The usage ledger counts it like a notebook.
    let (_, usage) = api.get("/api/v1/usage?group_by=member").await;
    let held = usage["rows"][0]["gpu_seconds_held"].as_f64().unwrap_or(0.0);
    assert!(held > 0.0, "{usage}");
    // The dashboard lists it.
    let dashboard = api_page(&api, "/").await;
    assert!(
        dashboard.contains(&format!("/jobs/{id}")),
        "the dashboard lists the job"
    );
}

/// A page fetched with the API token's session-less bearer (pages take sessions): logs
/// in as ada instead.
async fn api_page(api: &Api, path: &str) -> String {
    let client = client();
    login_ok(&client, &api.base, "ada", "ada-password-1").await;
    let r = client
        .get(format!("{}{path}", api.base))
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.expect("body")
}

/// Acceptance 4: a failing cell says which and shows its traceback; the time limit stops a
/// job with that reason; cancel stops one within 2 s; none leaves a container or a GPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_time_limits_and_cancels_end_cleanly() {
    let Some((server, api)) = setup(|_| {}).await else {
        return;
    };
    let data = server.config.data_dir.clone();
    let nb = folder_notebook(&api, "work").await;
    put_notebook(
        &data,
        &nb,
        "fails.ipynb",
        &["x = 1", "print('before'); 1 / 0", "print('nev' + 'er')"],
    );
    put_notebook(
        &data,
        &nb,
        "slow.ipynb",
        &["import time", "time.sleep(120)"],
    );

    let failing = submit(&api, json!({"notebook": nb, "path": "fails.ipynb"})).await;
    let limited = submit(
        &api,
        json!({"notebook": nb, "path": "slow.ipynb", "time_limit": "4s"}),
    )
    .await;
    let cancelled = submit(
        &api,
        json!({"notebook": nb, "path": "slow.ipynb", "machine": "gpu1"}),
    )
    .await;
    let ids: Vec<String> = [&failing, &limited, &cancelled]
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect();

    let failed = wait_job(&api, &ids[0], READY, finished).await;
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert_eq!(failed["failed_cell"], 2, "{failed}");
    assert_eq!(failed["error"]["ename"], "ZeroDivisionError", "{failed}");
    assert_eq!(failed["exit_code"], 1);
    assert!(
        failed["state_detail"]
            .as_str()
            .unwrap_or("")
            .contains("Cell 2 of 3"),
        "{failed}"
    );
    let page = api_page(&api, &format!("/jobs/{}", ids[0])).await;
    assert!(
        page.contains("ZeroDivisionError") && page.contains("before"),
        "traceback in place"
    );
    assert!(
        !page.contains("never"),
        "cells after the failure did not run"
    );

    // Cancel while running on the GPU: within 2 s, GPU free, no container.
    wait_job(&api, &ids[2], READY, |j| {
        j["progress"]["cell"].as_i64() == Some(2)
    })
    .await;
    assert_eq!(gpu_holder(&api).await["notebook"], ids[2].as_str());
    let asked = Instant::now();
    let (status, body) = api
        .post(&format!("/api/v1/jobs/{}/cancel", ids[2]), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let done = wait_job(&api, &ids[2], Duration::from_secs(10), finished).await;
    assert!(
        asked.elapsed() <= Duration::from_secs(2),
        "cancel took {:?}",
        asked.elapsed()
    );
    assert_eq!(done["state"], "cancelled", "{done}");
    assert!(
        done["state_detail"]
            .as_str()
            .unwrap_or("")
            .contains("cancelled by ada"),
        "{done}"
    );
    assert!(gpu_holder(&api).await.is_null(), "the GPU is free");
    let (status, _) = api
        .post(&format!("/api/v1/jobs/{}/cancel", ids[2]), json!({}))
        .await;
    assert_eq!(status, 409, "an ended job cannot be cancelled again");

    let timed = wait_job(&api, &ids[1], READY, finished).await;
    assert_eq!(timed["state"], "timed_out", "{timed:#}");
    assert!(
        timed["state_detail"]
            .as_str()
            .unwrap_or("")
            .contains("time limit of 4s"),
        "{timed}"
    );
    let ran = timed["duration_seconds"].as_i64().unwrap_or(0);
    assert!(
        (4..=8).contains(&ran),
        "stopped at its limit, after {ran} s"
    );
    for id in &ids {
        assert!(job_containers(id).is_empty(), "job {id} left a container");
    }
}

/// Acceptance 6 and 8: the API reports the cell advancing while a 5-cell notebook runs;
/// the page shows it (a screenshot for docs/); the CLI submits a job, follows its log and
/// exits with the job's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_live_and_the_cli_follows_a_job() {
    let Some((server, api)) = setup(|_| {}).await else {
        return;
    };
    let data = server.config.data_dir.clone();
    let nb = folder_notebook(&api, "experiments").await;
    let sleepy = "import time; time.sleep(2.5); print('step done')";
    put_notebook(
        &data,
        &nb,
        "steps.ipynb",
        &[
            "#parameters\nsteps = 1",
            sleepy,
            sleepy,
            sleepy,
            "print('steps', steps)",
        ],
    );
    let job = submit(
        &api,
        json!({"notebook": nb, "path": "steps.ipynb", "parameters": {"steps": 5}}),
    )
    .await;
    let id = job["id"].as_str().expect("id").to_string();
    // The browser starts while the job runs, and looks once the third cell is under way.
    let browser = if chromium::available() {
        let b = chromium::Browser::start(&api.base).await;
        b.login("ada", "ada-password-1").await;
        Some(b)
    } else {
        None
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + READY;
    let mut shot = false;
    loop {
        let (_, j) = api.get(&format!("/api/v1/jobs/{id}")).await;
        if let Some(cell) = j["progress"]["cell"].as_i64() {
            assert_eq!(j["progress"]["cells"], 6, "{j}");
            if seen.last() != Some(&cell) {
                seen.push(cell);
            }
            if cell >= 3 && !shot {
                shot = true;
                if let Some(b) = &browser {
                    screenshot_job(b, &id).await;
                }
            }
        }
        if finished(&j) {
            assert_eq!(j["state"], "succeeded", "{j:#}");
            break;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen.len() >= 3, "the cell advanced: {seen:?}");
    if let Some(b) = browser {
        b.close().await;
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    // The CLI: submit, follow, exit status = the job's.
    let token_file = server.dir.path().join("token");
    std::fs::write(&token_file, &api.token).expect("token file");
    let token_arg = token_file.to_string_lossy().to_string();
    let out = run_cli(
        &data,
        &[
            "job",
            "run",
            "--url",
            &server.url,
            "--token-file",
            &token_arg,
            "--notebook",
            &nb,
            "-p",
            "steps=7",
            "steps.ipynb",
        ],
        None,
    );
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("steps 7"),
        "the log was followed: {}",
        out.stdout
    );
    put_notebook(&data, &nb, "bad.ipynb", &["raise ValueError('bad input')"]);
    let out = run_cli(
        &data,
        &[
            "job",
            "run",
            "--url",
            &server.url,
            "--token-file",
            &token_arg,
            "--notebook",
            &nb,
            "bad.ipynb",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("ValueError"), "{}", out.stderr);
    let out = run_cli(
        &data,
        &[
            "job",
            "run",
            "--url",
            &server.url,
            "--token-file",
            &token_arg,
            "--notebook",
            &nb,
            "--command",
            "--",
            "sh",
            "-c",
            "echo from-a-command; exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("from-a-command"), "{}", out.stdout);
}

/// The job's page while it runs, in Chromium (target/ui-screenshots/job.png, or
/// docs/screenshots with UPDATE_SCREENSHOTS=1).
async fn screenshot_job(browser: &chromium::Browser, id: &str) {
    browser.goto(&format!("/jobs/{id}")).await;
    let text = browser
        .wait_text("#job-cell", "Cell ", chromium::SHORT)
        .await;
    assert!(text.contains(" of 6"), "the page shows the cell: {text}");
    let live = browser.page_text().await;
    assert!(live.contains("Running"), "{live}");
    browser.screenshot("job.png").await;
}
