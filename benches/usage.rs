//! A year of usage for 30 members on 8 GPUs, and how fast Notebox answers for it
//! (docs/PERFORMANCE.md, issue 13).
//!
//!   cargo bench --bench usage                 # generate, serve, measure; exit 1 if slow
//!   cargo bench --bench usage -- --runs 50
//!
//! It writes the ledger the way real use would leave it — back-to-back GPU allocations of
//! 1–12 h with gaps, each with its busy time spread over the hours it covered, plus a CPU
//! notebook per member and day — into a throw-away data dir, starts Notebox on it
//! (in-process, loopback), and times `GET /api/v1/usage` over the whole year grouped by
//! member, by day and by GPU, as an admin, from outside (HTTP, the JSON of the page's
//! table and charts). The
//! target: every p95 under 200 ms. Under `cargo test --all-targets` it only checks a tiny
//! ledger and measures nothing.

mod common;

use std::time::{Duration, Instant};

use common::{now, percentile, Rng};

const MEMBERS: usize = 30;
const GPUS: usize = 8;
const DAYS: i64 = 365;
const TARGET_MS: f64 = 200.0;

/// Writes `days` of usage ending now; returns (intervals, hourly rows).
fn generate(
    db: &rusqlite::Connection,
    members: usize,
    gpus: usize,
    days: i64,
    now: i64,
) -> (usize, usize) {
    let tx = db.unchecked_transaction().expect("transaction");
    let mut user_ids = Vec::new();
    for m in 0..members {
        tx.execute(
            "INSERT INTO users (username, password_hash, is_admin, created_at) VALUES (?1, 'x', 0, ?2)",
            rusqlite::params![format!("member{m:02}"), now - days * 86_400],
        )
        .expect("user");
        user_ids.push(tx.last_insert_rowid());
    }
    let mut interval = tx
        .prepare(
            "INSERT INTO usage_intervals (user_id, member, notebook_id, notebook_name, machine_id,
                gpu_uuid, cores, started_at, ended_at, busy_seconds, peak_memory_mib)
             VALUES (?1, ?2, ?3, 'run', ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .expect("prepare");
    let mut hour = tx
        .prepare("INSERT INTO usage_hours (interval_id, hour, busy_seconds) VALUES (?1, ?2, ?3)")
        .expect("prepare");
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut intervals, mut hours) = (0, 0);
    let start = now - days * 86_400;
    let mut write =
        |user: usize, gpu: Option<usize>, from: i64, to: i64, busy_fraction: f64, rng: &mut Rng| {
            let busy = (to - from) as f64 * busy_fraction;
            interval
                .execute(rusqlite::params![
                    user_ids[user],
                    format!("member{user:02}"),
                    format!("nb{}", rng.next() % 1_000_000),
                    if gpu.is_some() { "gpu-1" } else { "cpu" },
                    gpu.map(|g| format!("GPU-bench-{g}")),
                    if gpu.is_some() { 8.0 } else { 2.0 },
                    from,
                    to,
                    busy,
                    rng.range(1000, 80_000)
                ])
                .expect("interval");
            let id = tx.last_insert_rowid();
            let mut h = from.div_euclid(3600);
            while h * 3600 < to {
                let covered = ((h + 1) * 3600).min(to) - (h * 3600).max(from);
                hour.execute(rusqlite::params![id, h, covered as f64 * busy_fraction])
                    .expect("hour");
                h += 1;
                hours += 1;
            }
            intervals += 1;
        };
    for g in 0..gpus {
        let mut t = start + rng.range(0, 4 * 3600);
        while t < now {
            let held = rng.range(3600, 12 * 3600);
            let end = (t + held).min(now);
            let member = rng.range(0, members as i64) as usize;
            let fraction = 0.1 + 0.85 * rng.unit();
            write(member, Some(g), t, end, fraction, &mut rng);
            t = end + rng.range(0, 4 * 3600);
        }
    }
    for day in 0..days {
        for m in 0..members {
            let from = start + day * 86_400 + rng.range(6 * 3600, 12 * 3600);
            let to = from + rng.range(2 * 3600, 8 * 3600);
            let fraction = 0.05 + 0.5 * rng.unit();
            write(m, None, from, to.min(now), fraction, &mut rng);
        }
    }
    drop(interval);
    drop(hour);
    tx.commit().expect("commit");
    (intervals, hours)
}

/// A data dir with `days` of usage, and Notebox serving it.
/// Notebox serving the ledger, and an admin's token.
struct Served {
    served: common::Served,
    token: String,
}

fn serve(members: usize, gpus: usize, days: i64) -> Served {
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = notebox::Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().expect("address"),
        source: "usage bench".into(),
        ..notebox::Config::default()
    };
    config.gpu.backend = notebox::config::GpuBackend::None;
    let db = notebox::open_database(&config).expect("database");
    let t0 = Instant::now();
    let (intervals, hours) = db
        .with_conn(|c| Ok(generate(c, members, gpus, days, now())))
        .expect("generate");
    let size = std::fs::metadata(config.data_dir.join("notebox.db")).map_or(0, |m| m.len());
    eprintln!(
        "ledger: {members} members, {gpus} GPUs, {days} days: {intervals} intervals, {hours} hourly rows, \
         {:.1} MiB database, written in {:.1} s",
        size as f64 / 1_048_576.0,
        t0.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let token = runtime.block_on(async {
        let accounts = notebox::auth::Accounts::new(db.clone(), &config);
        let admin = accounts
            .add_user("bench-admin", "bench-admin-password", true)
            .await
            .expect("admin");
        accounts
            .create_token(admin.id, "usage bench")
            .await
            .expect("token")
            .0
    });
    drop(runtime);
    Served {
        served: common::serve(config, dir),
        token,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (members, gpus, days) = if benching {
        (MEMBERS, GPUS, DAYS)
    } else {
        (3, 2, 3)
    };
    let served = serve(members, gpus, days);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let from = notebox::usage::day_key(now() - (days - 1) * 86_400);
    let to = notebox::usage::day_key(now());
    let queries = [
        (
            "GET /api/v1/usage group_by=member",
            format!("/api/v1/usage?from={from}&to={to}&group_by=member"),
        ),
        (
            "GET /api/v1/usage group_by=day",
            format!("/api/v1/usage?from={from}&to={to}&group_by=day"),
        ),
        (
            "GET /api/v1/usage group_by=gpu",
            format!("/api/v1/usage?from={from}&to={to}&group_by=gpu"),
        ),
    ];
    rt.block_on(async {
        let mut worst = 0.0f64;
        for (label, path) in &queries {
            let mut times = Vec::new();
            let mut rows = 0;
            for i in 0..runs.max(1) + 1 {
                let t = Instant::now();
                let r = client
                    .get(format!("{}{path}", served.served.url))
                    .bearer_auth(&served.token)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200, "{label}");
                let body: serde_json::Value = r.json().await.expect("json");
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                rows = body["rows"].as_array().map_or(0, Vec::len);
                assert!(
                    body["totals"]["gpu_seconds_held"].as_f64() > Some(0.0),
                    "{body}"
                );
                if i > 0 {
                    times.push(ms); // the first one warms the caches
                }
            }
            times.sort_by(f64::total_cmp);
            let (p50, p95) = (percentile(&times, 0.5), percentile(&times, 0.95));
            worst = worst.max(p95);
            println!(
                "{label:<38} {rows:>4} rows   p50 {p50:7.1} ms   p95 {p95:7.1} ms   max {:7.1} ms",
                times.last().copied().unwrap_or(0.0)
            );
        }
        // The usage page for the whole year, as an admin's browser gets it.
        let browser =
            common::log_in(&served.served.url, "bench-admin", "bench-admin-password").await;
        let mut times = Vec::new();
        let mut size = 0;
        for i in 0..runs.max(1) + 1 {
            let t = Instant::now();
            let r = browser
                .get(format!("{}/usage?from={from}&to={to}", served.served.url))
                .send()
                .await
                .expect("page");
            assert_eq!(r.status(), 200);
            size = r.bytes().await.expect("body").len();
            if i > 0 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        let p95 = percentile(&times, 0.95);
        worst = worst.max(p95);
        println!(
            "{:<38} {:>4} KiB  p50 {:7.1} ms   p95 {p95:7.1} ms   max {:7.1} ms",
            "GET /usage (the page, whole year)",
            size / 1024,
            percentile(&times, 0.5),
            times.last().copied().unwrap_or(0.0)
        );
        if !benching {
            return;
        }
        println!(
            "\nverdict: p95 {worst:.1} ms {} the {TARGET_MS} ms target",
            if worst < TARGET_MS { "meets" } else { "MISSES" }
        );
        if worst >= TARGET_MS {
            std::process::exit(1);
        }
    });
}
