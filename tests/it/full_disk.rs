//! Issue 27, item 4: Notebox survives a full disk. The data dir lives on a 64 MiB ext4
//! (`mkfs.ext4 -m 0`, a loop device) that a member fills from inside a notebook: every
//! page and API read still answers, writes answer 507 with what to free, nothing
//! committed is lost (`PRAGMA integrity_check`), and once space is freed the same writes
//! work again without a restart.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

const READY: Duration = Duration::from_secs(90);

/// A small ext4 filesystem on a loop device, mounted under a temp dir; unmounted (lazily
/// if busy) and detached when dropped, also when the test fails.
struct LoopMount {
    mount_point: PathBuf,
}

impl LoopMount {
    fn make(dir: &Path, mib: u64) -> Result<LoopMount, String> {
        let image = dir.join("disk.img");
        let file = std::fs::File::create(&image).map_err(|e| format!("image file: {e}"))?;
        file.set_len(mib << 20)
            .map_err(|e| format!("image size: {e}"))?;
        run(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", &image.to_string_lossy()],
        )?;
        let mount_point = dir.join("mnt");
        std::fs::create_dir_all(&mount_point).map_err(|e| format!("mount point: {e}"))?;
        // `-o loop` attaches a loop device that is detached again at unmount.
        run(
            "mount",
            &[
                "-o",
                "loop",
                &image.to_string_lossy(),
                &mount_point.to_string_lossy(),
            ],
        )?;
        Ok(LoopMount { mount_point })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let point = self.mount_point.to_string_lossy().to_string();
        if run("umount", &[&point]).is_err() {
            if let Err(e) = run("umount", &["-l", &point]) {
                eprintln!("could not unmount {point}: {e}");
            }
        }
    }
}

fn run(tool: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Loop devices, mkfs.ext4 and root: what the test needs of the machine.
fn loop_mount_works() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("mounting a loop device needs root".into());
    }
    Command::new("mkfs.ext4")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("mkfs.ext4 (e2fsprogs) is not installed: {e}"))?;
    if !Path::new("/dev/loop-control").exists() {
        return Err("/dev/loop-control is missing: this kernel has no loop devices".into());
    }
    Ok(())
}

/// Writes /storage/filler from inside the notebook until the kernel says ENOSPC; returns
/// the bytes written and the errno.
const FILL: &str = r#"
import os
fd = os.open('/storage/filler', os.O_WRONLY | os.O_CREAT, 0o644)
chunk, n, err = b'x' * 65536, 0, None
while err is None:
    try:
        n += os.write(fd, chunk)
    except OSError as e:
        err = e.errno
try:
    os.fsync(fd)
except OSError:
    pass
os.close(fd)
(n, err)
"#;

/// Every read a member and an admin make: pages, the API, the proxy to the notebook.
fn reads(nb: &str, share: &str) -> Vec<(&'static str, String)> {
    let member_pages = [
        "/",
        "/notebooks/new",
        "/jobs",
        "/gpus",
        "/usage",
        "/usage.csv",
        "/settings",
        "/settings/tokens",
        "/environments",
        "/settings/variables",
        "/settings/registries",
        "/gallery",
        "/launch",
        "/login",
        "/healthz",
    ];
    let api = [
        "/api/v1/me",
        "/api/v1/images",
        "/api/v1/machines",
        "/api/v1/gpus",
        "/api/v1/usage",
        "/api/v1/notebooks",
        "/api/v1/environments",
        "/api/v1/secrets",
        "/api/v1/registries",
        "/api/v1/jobs",
        "/api/v1/schedules",
    ];
    let admin_pages = [
        "/admin/users",
        "/admin/notebooks",
        "/admin/environments",
        "/admin/directory",
    ];
    let mut out: Vec<(&'static str, String)> = Vec::new();
    out.extend(member_pages.iter().map(|p| ("ada", p.to_string())));
    out.extend(api.iter().map(|p| ("ada-api", p.to_string())));
    out.extend(admin_pages.iter().map(|p| ("admin", p.to_string())));
    for p in [
        format!("/notebooks/{nb}"),
        format!("/notebooks/{nb}/open"),
        format!("/notebooks/{nb}/delete"),
        format!("/s/{share}/"),
        format!("/api/v1/notebooks/{nb}"),
        format!("/api/v1/notebooks/{nb}/shares"),
        format!("/api/v1/notebooks/{nb}/logs"),
        format!("/nb/{nb}/api/status"),
        format!("/nb/{nb}/api/contents"),
    ] {
        let who = if p.starts_with("/api/") || p.starts_with("/nb/") {
            "ada-api"
        } else {
            "ada"
        };
        out.push((who, p));
    }
    out
}

/// The members' clients: a browser session each for ada and the admin, ada's token.
struct Clients {
    base: String,
    ada: reqwest::Client,
    ada_csrf: String,
    admin: reqwest::Client,
    api: Api,
}

impl Clients {
    async fn get(&self, who: &str, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let request = match who {
            "ada" => self.ada.get(url),
            "admin" => self.admin.get(url),
            _ => self
                .api
                .http
                .get(url)
                .header("authorization", format!("token {}", self.api.token)),
        };
        let r = request.send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// What every read answers (path, status), and the admin users page.
    async fn read_all(&self, nb: &str, share: &str) -> (Vec<(String, u16)>, String) {
        let mut answers = Vec::new();
        let mut admin_page = String::new();
        for (who, path) in reads(nb, share) {
            let (status, body) = self.get(who, &path).await;
            assert!(
                status < 500,
                "GET {path} ({who}) answered {status}: {body:.300}"
            );
            if path == "/admin/users" {
                admin_page = body;
            }
            answers.push((format!("GET {path} ({who})"), status));
        }
        (answers, admin_page)
    }

    /// The writes the test tries: a notebook, a share, a setting, a token (the form).
    async fn writes(&self, nb: &str, round: &str) -> Vec<(String, u16, String)> {
        let mut out = Vec::new();
        let tries = [
            (
                "create a notebook",
                reqwest::Method::POST,
                "/api/v1/notebooks".to_string(),
                json!({"name": format!("after {round}"), "image": "test", "machine": "cpu"}),
            ),
            (
                "create a share",
                reqwest::Method::POST,
                format!("/api/v1/notebooks/{nb}/shares"),
                json!({"visibility": "link"}),
            ),
            (
                "change a setting",
                reqwest::Method::PUT,
                format!("/api/v1/secrets/SETTING_{}", round.to_uppercase()),
                json!({"value": "on", "secret": false}),
            ),
        ];
        for (what, method, path, body) in tries {
            let (status, answer) = self.api.send(method, &path, Some(body)).await;
            out.push((what.to_string(), status, answer.to_string()));
        }
        let r = self
            .ada
            .post(format!("{}/settings/tokens", self.base))
            .form(&[
                ("name", format!("laptop-{round}")),
                ("csrf", self.ada_csrf.clone()),
            ])
            .send()
            .await
            .expect("POST /settings/tokens");
        let status = r.status().as_u16();
        out.push((
            "create a token".into(),
            status,
            r.text().await.unwrap_or_default(),
        ));
        out
    }
}

fn integrity_check(db: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database read-only");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .expect("integrity_check")
}

/// Writes into a scratch database beside Notebox's until SQLite gives up: the error must
/// be classified as a full disk and become 507 (the path every layer's `Db` error takes).
fn sqlite_full_is_507(scratch: &notebox::db::Db) {
    let result = scratch.with_conn(|c| {
        c.execute_batch("CREATE TABLE IF NOT EXISTS filler (b BLOB)")?;
        for _ in 0..64 {
            c.execute("INSERT INTO filler VALUES (zeroblob(1048576))", [])?;
        }
        Ok(())
    });
    let e = result.expect_err("64 MiB more fit on a full 64 MiB filesystem");
    assert!(e.is_disk_full(), "SQLite's error on a full disk: {e:?}");
    let web = notebox::error::WebError::from(e);
    assert_eq!(web.status.as_u16(), 507, "{}", web.message);
    assert!(web.message.contains("is full"), "{}", web.message);
}

/// `notebox doctor` on the full disk: it says so, and that ext4 without prjquota cannot
/// enforce hard limits per member.
fn doctor_says_full_and_no_quotas(server: &TestServer) {
    let out = server.cli(&["doctor"], None);
    eprintln!("{}", out.stdout);
    let line = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.contains(&format!("] {name}")))
            .unwrap_or_else(|| panic!("no {name} line in:\n{}", out.stdout))
            .to_string()
    };
    let space = line("disk space");
    assert!(
        space.contains("[FAIL]") && space.contains("the disk is full"),
        "{space}"
    );
    assert!(line("data dir").contains("its filesystem is full"));
    let quotas = line("project quotas");
    assert!(
        quotas.contains("[warn]")
            && quotas.contains("on ext4")
            && quotas.contains("without prjquota"),
        "{quotas}"
    );
    assert!(!out.status.success(), "doctor fails on a full disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_disk_refuses_writes_serves_reads_and_recovers_without_a_restart() {
    if let Err(why) = loop_mount_works() {
        if !require("a loop-mounted ext4", false, &why) {
            return;
        }
    }
    let Some(image) = test_image() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let disk = LoopMount::make(dir.path(), 64).expect("a 64 MiB ext4 on a loop device");
    let data = disk.mount_point.join("data");
    let mut config = test_config(&data);
    docker_config(&mut config, &image);
    let server = TestServer::start_in(tempfile::tempdir().expect("tmp"), config).await;

    add_user(&server, "ada", "ada-password-1", false);
    let api = Api::new(&server.url, &token_for(&server, "ada"));
    let nb = api.create_notebook("filler").await;
    api.wait_state(&nb, "running", READY).await;
    let share = api.share(&nb, "link").await;
    let (ada, admin) = (client(), client());
    let ada_csrf = login_ok(&ada, &server.url, "ada", "ada-password-1").await;
    let admin_csrf = login_ok(&admin, &server.url, "admin", &server.admin_password()).await;
    let clients = Clients {
        base: server.url.clone(),
        ada,
        ada_csrf,
        admin,
        api: api.clone(),
    };
    let (with_space, admin_page) = clients.read_all(&nb, &share).await;
    assert!(
        !admin_page.contains("id=\"disk-warning\""),
        "no warning yet"
    );
    let scratch = notebox::db::Db::open(&disk.mount_point.join("scratch.db")).expect("scratch db");

    let filled = run_in_kernel(&api, &nb, FILL).await;
    eprintln!("the notebook wrote (bytes, errno) = {filled}");
    assert!(
        filled.ends_with(", 28)"),
        "the filler stopped without ENOSPC: {filled}"
    );
    sqlite_full_is_507(&scratch);

    // The free-space reading is reused for 2 s: the banner shows within that.
    wait_for(
        "the admin page's disk warning",
        Duration::from_secs(10),
        || async {
            let (_, page) = clients.get("admin", "/admin/users").await;
            (page.contains("id=\"disk-warning\"") && page.contains("free on the filesystem of"))
                .then_some(())
        },
    )
    .await;
    let (on_full, admin_page) = clients.read_all(&nb, &share).await;
    assert!(admin_page.contains("id=\"disk-warning\""), "{admin_page}");
    for ((read, before), (_, full)) in with_space.iter().zip(&on_full) {
        eprintln!("{read}: {before} with space, {full} on a full disk");
        assert_eq!(before, full, "{read} answers as it did with space");
    }
    for (what, status, body) in clients.writes(&nb, "full").await {
        eprintln!("{what} on a full disk: {status}");
        assert!(
            status == 507 && body.contains("data is full ("),
            "{what} on a full disk answered {status}: {body:.400}"
        );
    }
    let fresh = client();
    let r = login(&fresh, &server.url, "ada", "ada-password-1").await;
    assert_eq!(r.status().as_u16(), 507, "a login that needs a new session");
    assert!(r.text().await.unwrap_or_default().contains("Free space"));
    // What ends something goes through (or is refused for space): never a 500.
    let (stop, body) = api
        .post(&format!("/api/v1/notebooks/{nb}/stop"), json!({}))
        .await;
    assert!(
        matches!(stop, 202 | 507),
        "stop on a full disk: {stop} {body}"
    );
    let r = clients
        .admin
        .post(format!("{}/logout", server.url))
        .form(&[("csrf", admin_csrf.as_str())])
        .send()
        .await
        .expect("POST /logout");
    let logout = r.status().as_u16();
    assert!(
        matches!(logout, 303 | 507),
        "logout on a full disk: {logout}"
    );
    eprintln!("on a full disk: stop {stop}, logout {logout}");
    let db = data.join("notebox.db");
    assert_eq!(integrity_check(&db), "ok");
    doctor_says_full_and_no_quotas(&server);

    std::fs::remove_file(data.join("storage/ada/filler")).expect("delete the filler");
    drop(scratch);
    // The free-space reading is reused for 2 s: the first writes may still be refused.
    let again = wait_for("writes to work again", Duration::from_secs(20), || async {
        let answers = clients.writes(&nb, "freed").await;
        answers.iter().all(|(_, s, _)| *s != 507).then_some(answers)
    })
    .await;
    for (what, status, body) in &again {
        assert!(
            matches!(status, 200 | 201 | 303),
            "{what} after space returned answered {status}: {body:.400}"
        );
    }
    login_ok(&fresh, &server.url, "ada", "ada-password-1").await;
    if stop == 507 {
        let (status, body) = api
            .post(&format!("/api/v1/notebooks/{nb}/stop"), json!({}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    api.wait_state(&nb, "stopped", READY).await;
    assert_eq!(integrity_check(&db), "ok");
    let conn = rusqlite::Connection::open(&db).expect("open");
    let (busy, log, done): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("a checkpoint runs once space is back");
    eprintln!(
        "checkpoint after the full disk: busy {busy}, {log} frames in the log, {done} checkpointed"
    );
    assert_eq!(busy, 0);
    drop(conn);
    drop(server);
    drop(disk);
}
