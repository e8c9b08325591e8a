//! A lab's year in the database, and how fast Notebox's pages stay with it
//! (docs/PERFORMANCE.md, "Pages at scale"; issue 15).
//!
//!   cargo bench --bench scale                 # fill, serve, measure; exit 1 if slow
//!   cargo bench --bench scale -- --runs 200
//!
//! It writes what a year of real use leaves behind into a throw-away data dir: 30 members
//! with 100 notebooks each, one of them (`ada`) with 1 000, most stopped, some failed,
//! 20 running on CPUs, 8 running with a GPU each (all 8 simulated GPUs held) and 8 more in
//! the GPU queue, a share link on every fifth notebook (every twentieth public), two API
//! tokens per member, and a usage interval per notebook. It then starts Notebox on it
//! (in-process, loopback; Docker pointed at a socket that does not exist, so nothing is
//! reconciled away) and times, from outside over HTTP, each page and API call with its
//! target (p95):
//!
//! - ada's dashboard (`GET /`) and `GET /api/v1/notebooks`: ≤ 10 ms
//! - the admin's running notebooks page (`GET /admin/notebooks`): ≤ 10 ms
//! - the GPU page (`GET /gpus`) and `GET /api/v1/gpus`: ≤ 5 ms
//!
//! Under `cargo test --all-targets` it only checks a tiny lab and measures nothing.

mod common;

use std::time::{Duration, Instant};

use common::{log_in, now, percentile, Rng};
use notebox::web::pages::notebooks::DASHBOARD_ROWS;

const GPUS: usize = 8;

/// The lab: members, notebooks per member, ada's notebooks.
struct Lab {
    members: usize,
    per_member: usize,
    ada: usize,
}

const YEAR: Lab = Lab {
    members: 30,
    per_member: 100,
    ada: 1_000,
};
/// Under `cargo test`: small, but ada has enough for her dashboard to be cut.
const TINY: Lab = Lab {
    members: 3,
    per_member: 5,
    ada: 120,
};

fn gpu_uuid(i: usize) -> String {
    format!("GPU-5ca1e000-0000-0000-0000-00000000000{i}")
}

/// What was written, for the report.
#[derive(Default)]
struct Written {
    notebooks: usize,
    running: usize,
    gpu_running: usize,
    queued: usize,
    shares: usize,
    tokens: usize,
}

/// Writes the year. `ada_id` and `admin_id` exist already (they log in); the other
/// members are written here.
fn generate(db: &rusqlite::Connection, lab: &Lab, ada_id: i64, t_now: i64) -> Written {
    let tx = db.unchecked_transaction().expect("transaction");
    let year_ago = t_now - 365 * 86_400;
    let mut owners = vec![(ada_id, "ada".to_string(), lab.ada)];
    for m in 1..lab.members {
        let name = format!("member{m:02}");
        tx.execute(
            "INSERT INTO users (username, password_hash, is_admin, created_at) VALUES (?1, 'x', 0, ?2)",
            rusqlite::params![name, year_ago],
        )
        .expect("user");
        owners.push((tx.last_insert_rowid(), name, lab.per_member));
    }
    let mut rng = Rng(0x5ca1_e000_0000_0001);
    let mut w = Written::default();
    let mut token = tx
        .prepare(
            "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at, last_used_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .expect("prepare");
    let mut notebook = tx
        .prepare(
            "INSERT INTO notebooks (id, owner_id, name, image_id, image, launcher, machine_id, cpus,
                memory_mib, gpu_count, desired_state, state, state_detail, jupyter_token,
                container_id, created_at, started_at, stopped_at, updated_at, queued_at)
             VALUES (?1, ?2, ?3, 'scipy', 'quay.io/jupyter/scipy-notebook:2024-10-07',
                'docker-stacks', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )
        .expect("prepare");
    let mut allocation = tx
        .prepare("INSERT INTO gpu_allocations (gpu_uuid, notebook_id, since) VALUES (?1, ?2, ?3)")
        .expect("prepare");
    let mut share = tx
        .prepare(
            "INSERT INTO shares (token, notebook_id, visibility, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .expect("prepare");
    let mut usage = tx
        .prepare(
            "INSERT INTO usage_intervals (user_id, member, notebook_id, notebook_name, machine_id,
                gpu_uuid, cores, started_at, ended_at, busy_seconds, peak_memory_mib)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .expect("prepare");
    // Who runs what right now: the first notebooks of the first members (ada included).
    let (mut cpu_running, mut gpu_running, mut queued) = (0, 0, 0);
    for (owner, member, count) in &owners {
        for t in 0..2 {
            let hash = rng.hex();
            token
                .execute(rusqlite::params![
                    owner,
                    format!("laptop {t}"),
                    hash,
                    &hash[..8],
                    year_ago,
                    t_now - rng.range(0, 86_400)
                ])
                .expect("token");
            w.tokens += 1;
        }
        for i in 0..*count {
            let id = rng.hex()[..12].to_string();
            let created = year_ago + (i as i64 * 365 * 86_400) / *count as i64;
            let kind = if queued < 8 && gpu_running == GPUS && i == 1 {
                queued += 1;
                "queued"
            } else if gpu_running < GPUS && i == 0 {
                gpu_running += 1;
                "gpu"
            } else if cpu_running < 20 && i == 2 {
                cpu_running += 1;
                "running"
            } else if i % 37 == 5 {
                "failed"
            } else {
                "stopped"
            };
            let (machine, cpus, memory, gpus) = match kind {
                "gpu" | "queued" => ("gpu-1", 8.0, 65_536, 1),
                _ => ("cpu", 2.0, 8_192, 0),
            };
            let (desired, state, detail) = match kind {
                "gpu" | "running" => ("running", "running", ""),
                "queued" => ("running", "queued", "waiting for 1 GPU"),
                "failed" => ("stopped", "failed", "Jupyter did not answer within 120 s"),
                _ => ("stopped", "stopped", ""),
            };
            let running = desired == "running" && state == "running";
            let started = created + rng.range(10, 3_600);
            let stopped = (!running).then(|| started + rng.range(600, 8 * 3_600));
            notebook
                .execute(rusqlite::params![
                    id,
                    owner,
                    format!("{member}'s experiment {i}"),
                    machine,
                    cpus,
                    memory,
                    gpus,
                    desired,
                    state,
                    detail,
                    rng.hex(),
                    running.then(|| rng.hex()),
                    created,
                    started,
                    stopped,
                    stopped.unwrap_or(started),
                    (kind == "queued").then_some(t_now - 600 + queued as i64),
                ])
                .expect("notebook");
            w.notebooks += 1;
            if running {
                w.running += 1;
            }
            if kind == "gpu" {
                allocation
                    .execute(rusqlite::params![gpu_uuid(gpu_running - 1), id, started])
                    .expect("allocation");
                w.gpu_running += 1;
            }
            if kind == "queued" {
                w.queued += 1;
            }
            if i % 5 == 0 {
                let visibility = if i % 20 == 0 { "public" } else { "link" };
                share
                    .execute(rusqlite::params![rng.hex(), id, visibility, started])
                    .expect("share");
                w.shares += 1;
            }
            if let Some(end) = stopped {
                usage
                    .execute(rusqlite::params![
                        owner,
                        member,
                        id,
                        format!("{member}'s experiment {i}"),
                        machine,
                        (gpus > 0).then(|| gpu_uuid(i % GPUS)),
                        cpus,
                        started,
                        end,
                        (end - started) / 3,
                        rng.range(1_000, 60_000)
                    ])
                    .expect("usage");
            }
        }
    }
    drop((token, notebook, allocation, share, usage));
    tx.commit().expect("commit");
    w
}

fn config(dir: &std::path::Path) -> notebox::Config {
    let mut config = notebox::Config {
        data_dir: dir.join("data"),
        listen: "127.0.0.1:0".parse().expect("address"),
        source: "scale bench".into(),
        ..notebox::Config::default()
    };
    // Nothing answers there: the reconciler leaves the written states alone.
    config.docker.socket = dir.join("no-docker.sock").display().to_string();
    config.gpu.backend = notebox::config::GpuBackend::Simulated;
    config.gpu.simulated = (0..GPUS)
        .map(|i| notebox::config::SimulatedGpu {
            uuid: gpu_uuid(i),
            name: "Simulated A100 80GB".into(),
            memory_mib: 81_920,
            utilization_file: None,
        })
        .collect();
    config
}

/// Notebox serving the lab's year, and a token of ada's.
struct Served {
    served: common::Served,
    ada_token: String,
}

/// A data dir with the lab's year in it, and Notebox serving it.
fn serve(lab: &Lab) -> Served {
    let dir = tempfile::tempdir().expect("tmp");
    let config = config(dir.path());
    let db = notebox::open_database(&config).expect("database");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (ada_id, ada_token) = runtime.block_on(async {
        let accounts = notebox::auth::Accounts::new(db.clone(), &config);
        accounts
            .add_user("bench-admin", "bench-admin-password", true)
            .await
            .expect("admin");
        let ada = accounts
            .add_user("ada", "ada-password-1", false)
            .await
            .expect("ada");
        let token = accounts
            .create_token(ada.id, "scale bench")
            .await
            .expect("token")
            .0;
        (ada.id, token)
    });
    drop(runtime);
    let t0 = Instant::now();
    let w = db
        .with_conn(|c| Ok(generate(c, lab, ada_id, now())))
        .expect("generate");
    let size = std::fs::metadata(config.data_dir.join("notebox.db")).map_or(0, |m| m.len());
    eprintln!(
        "lab: {} members, {} notebooks (ada {}), {} running ({} with a GPU each, of {GPUS}), {} queued, \
         {} shares, {} tokens; {:.1} MiB database, written in {:.1} s",
        lab.members,
        w.notebooks,
        lab.ada,
        w.running,
        w.gpu_running,
        w.queued,
        w.shares,
        w.tokens,
        size as f64 / 1_048_576.0,
        t0.elapsed().as_secs_f64()
    );
    Served {
        served: common::serve(config, dir),
        ada_token,
    }
}

/// One measured call: what it is, its target, and a check of the answer's contents.
struct Call<'a> {
    label: &'a str,
    client: &'a reqwest::Client,
    path: &'a str,
    bearer: Option<&'a str>,
    target_ms: f64,
    check: &'a dyn Fn(&str) -> Result<(), String>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let lab = if benching { YEAR } else { TINY };
    let served = serve(&lab);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let plain = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let ada = log_in(&served.served.url, "ada", "ada-password-1").await;
        let admin = log_in(&served.served.url, "bench-admin", "bench-admin-password").await;
        let ada_count = lab.ada;
        let all_gpus_held = |body: &str| {
            let held = body.matches("GPU-5ca1e000").count();
            (held >= GPUS)
                .then_some(())
                .ok_or(format!("{held} GPU uuids in the answer"))
        };
        let calls = [
            Call {
                label: "GET / (ada's dashboard)",
                client: &ada,
                path: "/",
                bearer: None,
                target_ms: 10.0,
                check: &|body| {
                    // Her running ones and the newest, and the way to the rest.
                    let rows = body.matches("<tr data-notebook=").count();
                    let more = format!("Show all {ada_count}</a>");
                    (rows == DASHBOARD_ROWS.min(ada_count)
                        && body.matches(r#"data-state="running""#).count() >= 2
                        && body.contains(&more) == (ada_count > DASHBOARD_ROWS))
                        .then_some(())
                        .ok_or(format!("{rows} notebooks listed"))
                },
            },
            Call {
                label: "GET /?all=1 (all of them)",
                client: &ada,
                path: "/?all=1",
                bearer: None,
                target_ms: 10.0,
                check: &|body| {
                    let rows = body.matches("<tr data-notebook=").count();
                    (rows == ada_count)
                        .then_some(())
                        .ok_or(format!("{rows} notebooks listed"))
                },
            },
            Call {
                label: "GET /api/v1/notebooks (ada)",
                client: &plain,
                path: "/api/v1/notebooks",
                bearer: Some(&served.ada_token),
                target_ms: 10.0,
                check: &|body| {
                    let v: serde_json::Value =
                        serde_json::from_str(body).map_err(|e| e.to_string())?;
                    let n = v
                        .as_array()
                        .or_else(|| v["notebooks"].as_array())
                        .map_or(0, Vec::len);
                    (n == ada_count)
                        .then_some(())
                        .ok_or(format!("{n} notebooks listed"))
                },
            },
            Call {
                label: "GET /admin/notebooks (running)",
                client: &admin,
                path: "/admin/notebooks",
                bearer: None,
                target_ms: 10.0,
                check: &|body| {
                    body.contains("experiment 0")
                        .then_some(())
                        .ok_or("no running notebook listed".into())
                },
            },
            Call {
                label: "GET /gpus (the GPU page)",
                client: &ada,
                path: "/gpus",
                bearer: None,
                target_ms: 5.0,
                check: &|body| {
                    body.contains("experiment 0")
                        .then_some(())
                        .ok_or("no holder shown".into())
                },
            },
            Call {
                label: "GET /api/v1/gpus",
                client: &plain,
                path: "/api/v1/gpus",
                bearer: Some(&served.ada_token),
                target_ms: 5.0,
                check: &all_gpus_held,
            },
        ];
        let mut missed = Vec::new();
        for call in &calls {
            let mut times = Vec::new();
            let mut size = 0;
            for i in 0..runs.max(1) + 1 {
                let mut request = call.client.get(format!("{}{}", served.served.url, call.path));
                if let Some(token) = call.bearer {
                    request = request.bearer_auth(token);
                }
                // Timed to the answer's last byte (decoding it is the client's own work).
                let t = Instant::now();
                let r = request.send().await.expect("request");
                let status = r.status();
                let bytes = r.bytes().await.expect("body");
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let body = String::from_utf8_lossy(&bytes);
                assert_eq!(status, 200, "{}: {body}", call.label);
                if i == 0 {
                    // The first answer warms the caches and is checked, not timed.
                    if let Err(e) = (call.check)(&body) {
                        panic!("{}: wrong answer: {e}", call.label);
                    }
                    size = body.len();
                } else {
                    times.push(ms);
                }
            }
            times.sort_by(f64::total_cmp);
            let (p50, p95) = (percentile(&times, 0.5), percentile(&times, 0.95));
            let met = p95 <= call.target_ms;
            println!(
                "{:<32} {:>5} KiB  p50 {p50:6.2} ms  p95 {p95:6.2} ms  max {:6.2} ms  target ≤ {} ms  {}",
                call.label,
                size / 1024,
                times.last().copied().unwrap_or(0.0),
                call.target_ms,
                match (benching, met) {
                    // A debug build under `cargo test`: the answers are checked, not the times.
                    (false, _) => "(not judged)",
                    (true, true) => "PASS",
                    (true, false) => "FAIL",
                }
            );
            if !met {
                missed.push(call.label);
            }
        }
        if !benching {
            return;
        }
        if missed.is_empty() {
            println!("\nverdict: every p95 within its target");
        } else {
            println!("\nverdict: MISSED {}", missed.join(", "));
            std::process::exit(1);
        }
    });
}
