//! What measuring a member's storage costs (docs/PERFORMANCE.md, "Storage walk", issue 27):
//! the walk of `src/storage/walk.rs` over a tree of 100 000 small files in folders of
//! 1 000 (each folder with a symlink to `..`), unthrottled and at the default throttle,
//! timed in wall and CPU seconds (the walking thread's user + system time), against
//! `du -sb` of the same tree, whose figure it must equal.
//!
//!   cargo bench --bench storage_walk                   # release build
//!   cargo bench --profile dev --bench storage_walk     # the debug build the tests use
//!   cargo bench --bench storage_walk -- --files 300000 --runs 5
//!
//! The page cache is warm (the tree was just written, and each run reads it again): a cold
//! disk adds its seeks to the wall time, not to the CPU time. Under
//! `cargo test --all-targets` it walks 2 000 files once and checks the figure only.

use std::path::Path;
use std::time::{Duration, Instant};

use notebox::storage::walk::{measure, Measured, WalkLimits, WalkRoot};

/// CPU time of the calling thread so far: (user, system).
fn thread_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage writes into the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

fn tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).expect("folder");
            std::os::unix::fs::symlink("..", dir.join("up")).expect("loop");
        }
        std::fs::write(dir.join(format!("f{i}")), vec![b'x'; i % 37]).expect("file");
    }
}

fn du_sb(root: &Path) -> (u64, Duration) {
    let started = Instant::now();
    let out = std::process::Command::new("du")
        .arg("-sb")
        .arg(root)
        .output()
        .expect("du runs");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let bytes = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du said {text}"));
    (bytes, took)
}

/// One walk: what it found, its wall time and its CPU time (user, system).
fn timed(root: &Path, rate: Option<u32>) -> (Measured, Duration, (Duration, Duration)) {
    let roots = [WalkRoot {
        path: root.to_path_buf(),
        label: "/storage".into(),
    }];
    let limits = WalkLimits {
        max_entries: u64::MAX,
        max_depth: 64,
        files_per_second: rate,
    };
    let (before, started) = (thread_cpu(), Instant::now());
    let m = measure(&roots, limits);
    let after = thread_cpu();
    (
        m,
        started.elapsed(),
        (after.0 - before.0, after.1 - before.1),
    )
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let files = arg(&args, "--files", if benching { 100_000 } else { 2_000 });
    let runs = arg(&args, "--runs", if benching { 3 } else { 1 });
    let dir = tempfile::tempdir().expect("tmp");
    let started = Instant::now();
    tree(dir.path(), files);
    eprintln!("wrote {files} files in {:.1?}", started.elapsed());
    let (du_bytes, du_took) = du_sb(dir.path());
    let default_rate = notebox::Config::default().storage.measure_files_per_second;
    let mut rows = Vec::new();
    for (name, rate) in [
        ("unthrottled", None),
        ("default throttle", Some(default_rate)),
    ] {
        let mut times = Vec::new();
        for _ in 0..runs {
            let (m, wall, cpu) = timed(dir.path(), rate);
            assert_eq!(m.bytes, du_bytes, "the walk's figure is du -sb's");
            assert_eq!(m.capped, None);
            times.push((wall, cpu, m.entries));
        }
        times.sort();
        let (wall, cpu, entries) = times[times.len() / 2];
        rows.push((name, rate, wall, cpu, entries));
        if !benching {
            break;
        }
    }
    println!("| walk of {files} files (median of {runs}) | entries | wall | entries/s | CPU (user + system) | CPU share |");
    println!("|---|---|---|---|---|---|");
    for (name, rate, wall, (user, system), entries) in rows {
        let rate = rate.map_or(String::new(), |r| format!(" ({r}/s)"));
        let cpu = (user + system).as_secs_f64();
        println!(
            "| {name}{rate} | {entries} | {:.2} s | {:.0} | {cpu:.2} s ({:.2} + {:.2}) | {:.0} % |",
            wall.as_secs_f64(),
            entries as f64 / wall.as_secs_f64(),
            user.as_secs_f64(),
            system.as_secs_f64(),
            cpu / wall.as_secs_f64() * 100.0
        );
    }
    println!(
        "| `du -sb` (for comparison, one run) | | {:.2} s | | | |",
        du_took.as_secs_f64()
    );
}
