//! Issue 7 (the parts in the binary): `notebox doctor` and systemd notification.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn doctor_reports_docker_and_gpus_and_exits_0_when_docker_works() {
    if !require(
        "docker",
        docker_works(),
        "the Docker engine does not answer `docker info`",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(BIN)
        .arg("doctor")
        .env("NOTEBOX_DATA_DIR", dir.path().join("data"))
        .env("NOTEBOX_GPU_BACKEND", "auto")
        .env_remove("NOTEBOX_CONFIG")
        .output()
        .expect("run doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("API version"), "{stdout}");
    assert!(stdout.contains("is writable"), "{stdout}");
    // This machine has no NVIDIA driver: said plainly, and it is not a failure.
    let no_nvml = !std::path::Path::new("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1").exists();
    if no_nvml {
        assert!(stdout.contains("no GPUs: NVML did not load"), "{stdout}");
    }
}

#[test]
fn doctor_fails_with_a_fix_when_docker_is_unreachable() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(BIN)
        .arg("doctor")
        .env("NOTEBOX_DATA_DIR", dir.path().join("data"))
        .env("NOTEBOX_DOCKER_SOCKET", dir.path().join("no-docker.sock"))
        .env_remove("NOTEBOX_CONFIG")
        .output()
        .expect("run doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("cannot reach Docker") && stdout.contains("fix:"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_tells_systemd_it_is_ready() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let notify = socket_path.to_string_lossy().to_string();
    let server = ServerProcess::spawn(dir.path(), &[], &[("NOTIFY_SOCKET", &notify)]).await;
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification from notebox");
    let message = String::from_utf8_lossy(&buf[..n]);
    assert!(message.contains("READY=1"), "{message}");
    drop(server);
}
