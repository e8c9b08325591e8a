//! Issue 26: jobs — a notebook or a command run headless in its own container, through the
//! same GPU queue as notebooks (simulated GPUs, real containers, the real runner and
//! kernel), checked as a member would through the API, the pages and the CLI.

use crate::chromium;
use crate::common;
use crate::webhook_receiver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use webhook_receiver::Receiver;

const READY: Duration = Duration::from_secs(90);
const GPU: &str = "GPU-7a000000-0000-0000-0000-000000000001";

/// The test image, one simulated GPU, and a one-GPU machine type beside the CPU one.
fn job_config(c: &mut notebox::Config, image: &str) {
    docker_config(c, image);
    one_simulated_gpu(c, GPU);
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

/// A submission refused with 400 and a message that says `says`.
async fn refused(api: &Api, body: Value, says: &str) {
    let (status, answer) = api.post("/api/v1/jobs", body.clone()).await;
    assert_eq!(status, 400, "{body} → {answer}");
    let message = answer["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(says), "{body} → {message}");
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

/// No container of this job is left. A job that exited by itself is recorded as ended
/// first (its container is the evidence of how it ended) and its container removed right
/// after, so a check made the moment the API says "ended" gives that removal a few seconds.
async fn no_container_left(job: &str) {
    wait_for(
        &format!("job {job}'s container to be removed"),
        Duration::from_secs(5),
        || async { job_containers(job).is_empty().then_some(()) },
    )
    .await;
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
    // Everyone sees who holds the GPU, never what the job runs (a command may carry secrets).
    let holder_name = gpu_holder(&api).await["notebook_name"].to_string();
    assert!(
        holder_name.contains(&id) && !holder_name.contains("train"),
        "{holder_name}"
    );

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
    eprintln!(
        "GPU free {:?} after the runner's last word",
        ended_at.elapsed()
    );
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
    no_container_left(&id).await;

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
    eprintln!("cancel: ended {:?} after the request", asked.elapsed());
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
        no_container_left(id).await;
    }

    // A container removed behind Notebox's back: the job says so.
    let vanishing = submit(&api, json!({"notebook": nb, "path": "slow.ipynb"})).await;
    let vid = vanishing["id"].as_str().expect("id").to_string();
    wait_job(&api, &vid, READY, |j| {
        j["progress"]["cell"].as_i64() == Some(2)
    })
    .await;
    for c in job_containers(&vid) {
        let out = std::process::Command::new("docker")
            .args(["rm", "-f", &c])
            .output()
            .expect("docker rm");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let gone = wait_job(&api, &vid, Duration::from_secs(20), finished).await;
    assert_eq!(gone["state"], "failed", "{gone}");
    // Removed outright, or (when Notebox looked between the kill and the removal) killed.
    let detail = gone["state_detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("removed outside Notebox") || detail.contains("code 137"),
        "{gone}"
    );
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
        // The finished job: its output notebook rendered; and the jobs list.
        b.goto(&format!("/jobs/{id}")).await;
        b.wait_page_text("steps 5", chromium::SHORT).await;
        b.goto("/jobs").await;
        b.wait_page_text("Run a job", chromium::SHORT).await;
        b.screenshot("jobs.png").await;
        b.close().await;
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    // The CLI: submit, follow, exit status = the job's.
    let token_file = server.dir.path().join("token");
    std::fs::write(&token_file, &api.token).expect("token file");
    let token_arg = token_file.to_string_lossy().to_string();
    let job_run = |rest: &[&str]| {
        let mut args = vec![
            "job",
            "run",
            "--url",
            &server.url,
            "--token-file",
            &token_arg,
        ];
        args.extend_from_slice(&["--notebook", &nb]);
        args.extend_from_slice(rest);
        run_cli(&data, &args, None)
    };
    let out = job_run(&["-p", "steps=7", "steps.ipynb"]);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("steps 7"),
        "the log was followed: {}",
        out.stdout
    );
    put_notebook(&data, &nb, "bad.ipynb", &["raise ValueError('bad input')"]);
    let out = job_run(&["bad.ipynb"]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("ValueError"), "{}", out.stderr);
    let out = job_run(&["--command", "--", "sh", "-c", "echo from-a-command; exit 3"]);
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

/// Acceptance 5: a schedule every minute runs twice, and skips the minute its previous run
/// was still going (overlap "skip"); the runs are listed under the schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_every_minute_runs_twice_and_skips_an_overlap() {
    let Some((server, api)) = setup(|_| {}).await else {
        return;
    };
    let nb = folder_notebook(&api, "nightly").await;
    // The first run outlasts the next minute; every later one is quick.
    put_file(
        &server.config.data_dir,
        &nb,
        "run.sh",
        b"if [ -e first-done ]; then echo quick run; else touch first-done; sleep 75; fi\n",
    );
    let (status, schedule) = api
        .post(
            "/api/v1/jobs",
            json!({"notebook": nb, "command": ["sh", "run.sh"], "schedule": "* * * * *",
                   "overlap": "skip"}),
        )
        .await;
    assert_eq!(status, 201, "{schedule}");
    let sid = schedule["id"].as_str().expect("schedule id").to_string();
    assert_eq!(schedule["schedule_text"], "every minute", "{schedule}");
    let runs = |s: &Value| -> Vec<Value> { s["runs"].as_array().cloned().unwrap_or_default() };
    let listed = wait_for("two runs and a skip", Duration::from_secs(200), || async {
        let (_, all) = api.get("/api/v1/schedules").await;
        let s = all["schedules"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == sid.as_str())?
            .clone();
        let done = runs(&s)
            .iter()
            .filter(|r| r["state"] == "succeeded")
            .count();
        (done >= 2 && s["skipped"].as_i64() >= Some(1)).then_some(s)
    })
    .await;
    let all_runs = runs(&listed);
    let mut starts: Vec<&str> = all_runs
        .iter()
        .filter_map(|r| r["created_at"].as_str())
        .collect();
    starts.sort_unstable();
    // Never two at once: each run began after the previous one ended.
    for pair in all_runs.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        assert!(
            newer["created_at"].as_str() >= older["finished_at"].as_str(),
            "runs overlapped: {newer} / {older}"
        );
    }
    assert!(
        listed["last_note"].as_str().is_some(),
        "the page says what happened last: {listed}"
    );
    let page = api_page(&api, "/jobs").await;
    assert!(
        page.contains("every minute") && page.contains("skipped"),
        "schedules listed"
    );
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/schedules/{sid}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    // A bad schedule is refused with what to fix.
    let (status, body) = api
        .post(
            "/api/v1/jobs",
            json!({"notebook": nb, "command": ["true"], "schedule": "61 * * * *"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("minute"),
        "{body}"
    );
}

fn kill9_config(data: &Path, image: &str) -> String {
    format!(
        "{}\n[gpu]\nbackend = \"simulated\"\n[[gpu.simulated]]\nuuid = \"{GPU}\"\nname = \"Sim\"\nmemory_mib = 1024\n\n\
         [[machines]]\nid = \"gpu1\"\nname = \"1 GPU\"\ncpus = 0.5\nmemory_mib = 768\ngpus = 1\n",
        docker_config_toml(data, image)
    )
}

/// Acceptance 3: Notebox killed with -9 in the middle of a job, and down when it ends:
/// restarted, the job's status, outputs, duration and ledger entry are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_kill_9_and_its_end_is_exact() {
    if !require("docker", docker_works(), "jobs run in containers") {
        return;
    }
    let Some(image) = test_image() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let _guard = ContainerGuard(data.clone());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, kill9_config(&data, &image)).expect("config");
    let config_arg = config.to_string_lossy().to_string();
    let mut server = ServerProcess::spawn(dir.path(), &["--config", &config_arg], &[]).await;
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--config", config_arg.as_str()];
        all.extend_from_slice(args);
        run_cli(&data, &all, stdin)
    };
    let out = cli(
        &["user", "add", "ada", "--password-stdin"],
        Some("ada-password-1\n"),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let token = cli(&["token", "create", "ada"], None)
        .stdout
        .trim()
        .to_string();
    let api = Api::new(&server.url, &token);
    let nb = folder_notebook(&api, "long").await;
    let tick = "import time; time.sleep(4); print('tick')";
    put_notebook(
        &data,
        &nb,
        "long.ipynb",
        &[tick, tick, tick, "print('all done')"],
    );
    let job = submit(
        &api,
        json!({"notebook": nb, "path": "long.ipynb", "machine": "gpu1"}),
    )
    .await;
    let id = job["id"].as_str().expect("id").to_string();
    wait_job(&api, &id, READY, |j| {
        j["progress"]["cell"].as_i64() == Some(2)
    })
    .await;

    server.kill9();
    // The job ends while Notebox is down.
    let status_file = data.join(format!("notebooks/{nb}/jobs/{id}/status.json"));
    wait_for(
        "the job to end while Notebox is down",
        Duration::from_secs(60),
        || async {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(&status_file).ok()?).ok()?;
            (v["state"] == "succeeded").then_some(())
        },
    )
    .await;
    let container = job_containers(&id)
        .pop()
        .expect("the exited container is still there");
    let info = wait_for("its container to exit", Duration::from_secs(30), || async {
        let info = docker_inspect(&container);
        (info["State"]["Running"] == false).then_some(info)
    })
    .await;
    let started = info["State"]["StartedAt"]
        .as_str()
        .expect("StartedAt")
        .to_string();
    let ended = info["State"]["FinishedAt"]
        .as_str()
        .expect("FinishedAt")
        .to_string();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted = now_unix();
    let server = ServerProcess::spawn(dir.path(), &["--config", &config_arg], &[]).await;
    let api = Api::new(&server.url, &token);
    let done = wait_job(&api, &id, Duration::from_secs(30), finished).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["progress"], json!({"cell": 4, "cells": 4}), "{done}");
    let finished_at = unix(done["finished_at"].as_str().expect("finished_at"));
    assert_eq!(
        finished_at,
        unix(&ended),
        "ended when its container did: {done}"
    );
    assert!(finished_at < restarted, "not when Notebox came back");
    let duration = done["duration_seconds"].as_i64().expect("duration");
    let truth = unix(&ended) - unix(&started);
    assert!(
        (duration - truth).abs() <= 1,
        "duration {duration} s, container ran {truth} s"
    );
    // The ledger: one GPU held from the placement to the container's end.
    let (_, usage) = api.get("/api/v1/usage?group_by=member").await;
    let held = usage["rows"][0]["gpu_seconds_held"].as_f64().unwrap_or(0.0);
    assert!(
        held >= truth as f64 && held <= truth as f64 + 3.0,
        "held {held} s for a {truth} s run: {usage}"
    );
    assert!(gpu_holder(&api).await.is_null(), "the GPU is free");
    no_container_left(&id).await;
    let out: Value = serde_json::from_slice(
        &std::fs::read(data.join(format!("notebooks/{nb}/jobs/{id}/output.ipynb"))).expect("out"),
    )
    .expect("json");
    assert!(
        out.to_string().contains("all done"),
        "every output is there"
    );
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds of an RFC 3339 time (the API's, or Docker's with nanoseconds).
fn unix(text: &str) -> i64 {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", text, "+%s"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a time")
}

/// Acceptance 7: the outputs folder is the member's (their container can plant symlinks,
/// FIFOs and huge files there at any moment): Notebox reads it with the hostile-tree rules
/// and within stated limits, answering with a message, never a 500. Also: the webhook
/// hears job_started and job_finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outputs_folder_is_hostile_and_limits_hold() {
    let hook = Receiver::start(0).await;
    let hook_url = hook.url.clone();
    let Some((server, api)) = setup(move |c| {
        c.webhook.url = Some(hook_url.parse().expect("webhook url"));
        c.jobs.max_notebook_mib = 3;
        c.jobs.max_cells = 12_000;
        c.jobs.max_output_mib = 2;
    })
    .await
    else {
        return;
    };
    let data = server.config.data_dir.clone();
    let nb = folder_notebook(&api, "outputs").await;
    put_notebook(
        &data,
        &nb,
        "loud.ipynb",
        &["print('x' * 20_000_000)", "print('after')"],
    );
    let job = submit(&api, json!({"notebook": nb, "path": "loud.ipynb"})).await;
    let id = job["id"].as_str().expect("id").to_string();
    let done = wait_job(&api, &id, READY, finished).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let folder = data.join(format!("notebooks/{nb}/jobs/{id}"));
    let output = std::fs::read(folder.join("output.ipynb")).expect("output.ipynb");
    assert!(
        output.len() < 2 * 1024 * 1024,
        "output notebook within its limit: {}",
        output.len()
    );
    assert!(
        String::from_utf8_lossy(&output).contains("truncated"),
        "the cut is said"
    );
    let page = api_page(&api, &format!("/jobs/{id}")).await;
    assert!(
        page.contains("after"),
        "the page renders the capped notebook"
    );

    // The webhook heard the start and the end.
    let events = wait_for("job events", Duration::from_secs(20), || async {
        let events = hook.events.lock().expect("lock").clone();
        let kinds: Vec<String> = events
            .iter()
            .filter(|e| e["job"]["id"] == id.as_str())
            .filter_map(|e| e["event"].as_str().map(str::to_string))
            .collect();
        (kinds.contains(&"job_started".to_string()) && kinds.contains(&"job_finished".to_string()))
            .then_some(events)
    })
    .await;
    let end = events
        .iter()
        .find(|e| e["event"] == "job_finished")
        .expect("job_finished");
    assert_eq!(end["job"]["state"], "succeeded", "{end}");
    assert_eq!(end["job"]["url"], format!("/jobs/{id}"));
    assert!(end["job"]["duration_seconds"].as_i64().is_some(), "{end}");
    assert!(end["job"]["gpu_hours"].as_f64().is_some(), "{end}");

    // Now the member's container turns the folder against Notebox.
    let secret = data.join("notebooks/secret.txt");
    std::fs::write(&secret, "other member's data").expect("secret");
    std::fs::remove_file(folder.join("log.txt")).expect("rm log");
    std::os::unix::fs::symlink(&secret, folder.join("log.txt")).expect("symlink log");
    std::fs::remove_file(folder.join("output.ipynb")).expect("rm out");
    std::os::unix::fs::symlink(&secret, folder.join("output.ipynb")).expect("symlink out");
    let big = std::fs::File::create(folder.join("big.bin")).expect("big");
    big.set_len(1 << 30).expect("a sparse 1 GiB file");
    std::process::Command::new("mkfifo")
        .arg(folder.join("pipe"))
        .status()
        .expect("mkfifo");
    let (status, log) = api.get(&format!("/api/v1/jobs/{id}/logs")).await;
    assert_eq!(status, 200, "{log}");
    assert!(
        !log.to_string().contains("other member"),
        "a symlinked log is not followed"
    );
    let page = api_page(&api, &format!("/jobs/{id}")).await;
    assert!(
        !page.contains("other member"),
        "a symlinked output is not followed"
    );
    let (status, files) = api.get(&format!("/api/v1/jobs/{id}/outputs")).await;
    assert_eq!(status, 200, "{files}");
    let names: Vec<&str> = files["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(
        names.contains(&"big.bin") && !names.contains(&"output.ipynb"),
        "{files}"
    );
    assert!(!names.contains(&"pipe"), "{files}");
    let started = Instant::now();
    let (status, body) = api.get(&format!("/api/v1/jobs/{id}/outputs/big.bin")).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("JupyterLab"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused without reading it"
    );
    for path in ["output.ipynb", "pipe", "../../secret.txt", "%2e%2e/x"] {
        let (status, body) = api.get(&format!("/api/v1/jobs/{id}/outputs/{path}")).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // A huge output notebook: the page says so (200), never a 500.
    std::fs::remove_file(folder.join("output.ipynb")).expect("rm");
    std::fs::File::create(folder.join("output.ipynb"))
        .expect("big out")
        .set_len(64 << 20)
        .expect("sparse");
    let page = api_page(&api, &format!("/jobs/{id}")).await;
    assert!(
        page.contains("over the 2 MiB"),
        "the page explains the limit"
    );
    // The whole jobs folder swapped for a symlink: nothing is read through it.
    let jobs_dir = data.join(format!("notebooks/{nb}/jobs"));
    std::fs::rename(&jobs_dir, data.join(format!("notebooks/{nb}/moved"))).expect("mv");
    std::os::unix::fs::symlink(data.join(format!("notebooks/{nb}/moved")), &jobs_dir)
        .expect("symlink jobs");
    let (status, files) = api.get(&format!("/api/v1/jobs/{id}/outputs")).await;
    assert_eq!(
        (status, files["files"].clone()),
        (200, json!([])),
        "{files}"
    );

    std::fs::remove_file(&jobs_dir).expect("rm symlink");
    std::fs::rename(data.join(format!("notebooks/{nb}/moved")), &jobs_dir).expect("mv back");

    // Notebooks over the limits are refused at submission, saying which limit.
    let many: Vec<String> = (0..12_001).map(|i| format!("{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    put_notebook(&data, &nb, "many.ipynb", &many);
    refused(&api, json!({"notebook": nb, "path": "many.ipynb"}), "12000").await;
    let padding = "#".repeat(4 << 20);
    put_notebook(&data, &nb, "huge.ipynb", &[&padding]);
    refused(&api, json!({"notebook": nb, "path": "huge.ipynb"}), "MiB").await;
    // 10 000 cells are within the limits: it runs, its progress counts them.
    let cells: Vec<String> = (0..10_000).map(|i| format!("x = {i}")).collect();
    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
    put_notebook(&data, &nb, "ten-thousand.ipynb", &cells);
    let job = submit(&api, json!({"notebook": nb, "path": "ten-thousand.ipynb"})).await;
    let id = job["id"].as_str().expect("id").to_string();
    let running = wait_job(&api, &id, READY, |j| {
        j["progress"]["cells"].is_number() || finished(j)
    })
    .await;
    assert_eq!(running["progress"]["cells"], 10_000, "{running}");
    let (status, _) = api
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let ended = wait_job(&api, &id, Duration::from_secs(10), finished).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
}

/// A member against another member, and what revocation does to jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_cannot_reach_each_others_jobs_and_revocation_ends_them() {
    let Some((server, ada)) = setup(|_| {}).await else {
        return;
    };
    add_user(&server, "bob", "bob-password-1", false);
    let bob = Api::new(&server.url, &token_for(&server, "bob"));
    let admin = Api::new(&server.url, &token_for(&server, "admin"));
    let data = server.config.data_dir.clone();
    let nb = folder_notebook(&ada, "private").await;
    put_notebook(
        &data,
        &nb,
        "slow.ipynb",
        &["import time", "time.sleep(300)"],
    );
    let job = submit(&ada, json!({"notebook": nb, "path": "slow.ipynb"})).await;
    let id = job["id"].as_str().expect("id").to_string();
    wait_job(&ada, &id, READY, |j| j["state"] == "running").await;

    for path in [
        format!("/api/v1/jobs/{id}"),
        format!("/api/v1/jobs/{id}/logs"),
        format!("/api/v1/jobs/{id}/outputs"),
        format!("/api/v1/jobs/{id}/outputs/status.json"),
    ] {
        let (status, body) = bob.get(&path).await;
        assert_eq!(status, 404, "bob GET {path}: {body}");
    }
    for path in [
        format!("/api/v1/jobs/{id}/cancel"),
        format!("/api/v1/jobs/{id}/rerun"),
    ] {
        let (status, body) = bob.post(&path, json!({})).await;
        assert_eq!(status, 404, "bob POST {path}: {body}");
    }
    let (_, list) = bob.get("/api/v1/jobs").await;
    assert_eq!(list["jobs"], json!([]), "bob lists only his own");
    let (status, body) = bob
        .post(
            "/api/v1/jobs",
            json!({"notebook": nb, "path": "slow.ipynb"}),
        )
        .await;
    assert_eq!(status, 404, "bob cannot run in ada's folder: {body}");
    // A share of the notebook shows its files, never its jobs' logs and outputs.
    let token = ada.share(&nb, "link").await;
    let anonymous = reqwest::Client::new();
    for path in [
        format!("raw/jobs/{id}/log.txt"),
        format!("view/jobs/{id}/status.json"),
    ] {
        let r = anonymous
            .get(format!("{}/s/{token}/{path}", server.url))
            .send()
            .await
            .expect("share");
        assert_eq!(r.status(), 404, "{path} through a share");
    }
    let overview = anonymous
        .get(format!("{}/s/{token}/", server.url))
        .send()
        .await
        .expect("share")
        .text()
        .await
        .expect("body");
    assert!(!overview.contains("jobs/"), "the share lists no job files");
    // A job is not a notebook: not listed, not reachable as one, not proxied.
    let (_, notebooks) = ada.get("/api/v1/notebooks").await;
    assert_eq!(
        notebooks["notebooks"].as_array().map(Vec::len),
        Some(1),
        "{notebooks}"
    );
    let (status, _) = ada.get(&format!("/api/v1/notebooks/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = ada
        .post(&format!("/api/v1/notebooks/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 404);
    let r = reqwest::Client::new()
        .get(format!("{}/nb/{id}/api/status", server.url))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("proxy");
    assert_eq!(r.status(), 404, "a job's container is never proxied");

    // Bad requests: a clear 400 naming what to fix.
    for (body, says) in [
        (
            json!({"notebook": nb, "path": "../x.ipynb"}),
            "inside the notebook",
        ),
        (
            json!({"notebook": nb, "path": "a.ipynb", "command": ["x"]}),
            "not both",
        ),
        (json!({"notebook": nb}), "what to run"),
        (json!({"notebook": nb, "path": "a.py"}), "not a notebook"),
        (json!({"notebook": nb, "command": []}), "empty"),
        (
            json!({"notebook": nb, "path": "slow.ipynb", "parameters": {"a; import os": 1}}),
            "cannot be a parameter",
        ),
        (
            json!({"notebook": nb, "path": "slow.ipynb", "time_limit": "30d"}),
            "time_limit",
        ),
        (
            json!({"notebook": nb, "path": "slow.ipynb", "machine": "nope"}),
            "machine type",
        ),
        (
            json!({"notebook": nb, "path": "missing.ipynb"}),
            "no notebook",
        ),
        (
            json!({"notebook": nb, "path": "slow.ipynb", "overlap": "x", "schedule": "* * * * *"}),
            "overlap",
        ),
    ] {
        refused(&ada, body, says).await;
    }

    // Deleting the notebook ends its jobs; disabling the member ends theirs.
    let nb2 = folder_notebook(&ada, "second").await;
    put_notebook(
        &data,
        &nb2,
        "slow.ipynb",
        &["import time", "time.sleep(300)"],
    );
    let second = submit(&ada, json!({"notebook": nb2, "path": "slow.ipynb"})).await;
    let second = second["id"].as_str().expect("id").to_string();
    wait_job(&ada, &second, READY, |j| j["state"] == "running").await;
    let (status, _) = ada
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/notebooks/{nb2}"),
            None,
        )
        .await;
    assert!(status == 202 || status == 204, "delete: {status}");
    let ended = wait_job(&ada, &second, Duration::from_secs(20), finished).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    assert!(
        ended["state_detail"]
            .as_str()
            .unwrap_or("")
            .contains("notebook was deleted"),
        "{ended}"
    );

    let out = server.cli(&["user", "disable", "ada"], None);
    assert!(out.status.success(), "{}", out.stderr);
    wait_for("ada's job to end", Duration::from_secs(20), || async {
        job_containers(&id).is_empty().then_some(())
    })
    .await;
    let out = server.cli(&["user", "enable", "ada"], None);
    assert!(out.status.success(), "{}", out.stderr);
    let ended = wait_job(&ada, &id, Duration::from_secs(10), finished).await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    let _ = admin;
}
