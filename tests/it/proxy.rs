//! Issue 4: the authenticated Jupyter proxy, against real Jupyter in real containers.

use crate::common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const READY: Duration = Duration::from_secs(60);

/// A running notebook of `alice`, and her API client.
async fn running_notebook(server: &TestServer) -> (Api, String) {
    add_user(server, "alice", "alice-password", false);
    let alice = Api::new(&server.url, &token_for(server, "alice"));
    let id = alice.create_notebook("proxied").await;
    alice.wait_state(&id, "running", READY).await;
    (alice, id)
}

async fn start_kernel(http: &reqwest::Client, url: &str, auth: Option<&str>) -> String {
    let mut req = http.post(url).json(&json!({"name": "python3"}));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.expect("POST kernels");
    assert_eq!(
        r.status(),
        201,
        "kernel start: {}",
        r.text().await.unwrap_or_default()
    );
    let kernel: serde_json::Value = r.json().await.expect("kernel json");
    kernel["id"].as_str().expect("kernel id").to_string()
}

/// Runs `code` over the kernel's channels WebSocket and returns its text/plain result.
async fn execute(ws_url: &str, headers: &[(&'static str, String)], code: &str) -> String {
    let mut request = ws_url.into_client_request().expect("ws request");
    for (k, v) in headers {
        request
            .headers_mut()
            .insert(*k, v.parse().expect("header value"));
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false)
            .await
            .expect("websocket connects through the proxy");
    execute_on(&mut socket, code).await
}

/// Notebox as a child process with `toml` as its config (written to `config`), and an
/// API client with a fresh token of the admin's.
async fn spawn_as_admin(
    dir: &std::path::Path,
    data: &std::path::Path,
    config: &std::path::Path,
    toml: &str,
) -> (ServerProcess, Api) {
    std::fs::write(config, toml).expect("config");
    let config_arg = config.to_string_lossy().to_string();
    let server = ServerProcess::spawn(dir, &["--config", &config_arg], &[]).await;
    let out = run_cli(
        data,
        &["--config", &config_arg, "token", "create", "admin"],
        None,
    );
    let api = Api::new(&server.url, out.stdout.trim());
    (server, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_runs_code_with_a_session_cookie_and_with_a_token_alone() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| docker_config(c, &image)).await;
    let (alice, id) = running_notebook(&server).await;
    let host = server.url.trim_start_matches("http://").to_string();

    // As a browser: session cookie, same-origin Origin header.
    let browser = client();
    login_ok(&browser, &server.url, "alice", "alice-password").await;
    let kernel = start_kernel(
        &browser,
        &format!("{}/nb/{id}/api/kernels", server.url),
        None,
    )
    .await;
    let cookie = {
        let r = browser
            .get(format!("{}/", server.url))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
        // reqwest keeps the cookie; read it back by logging in again on a fresh client.
        let fresh = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let page = fresh
            .get(format!("{}/login", server.url))
            .send()
            .await
            .expect("GET");
        let login_cookie = page.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .split(';')
            .next()
            .expect("c")
            .to_string();
        let csrf = csrf_from(&page.text().await.expect("body"));
        let r = fresh
            .post(format!("{}/login", server.url))
            .header("cookie", &login_cookie)
            .form(&[
                ("username", "alice"),
                ("password", "alice-password"),
                ("csrf", &csrf),
            ])
            .send()
            .await
            .expect("login");
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("notebox_session="))
            .expect("session cookie")
            .split(';')
            .next()
            .expect("cookie pair")
            .to_string()
    };
    let ws_url = format!("ws://{host}/nb/{id}/api/kernels/{kernel}/channels");
    let result = execute(
        &ws_url,
        &[("cookie", cookie.clone()), ("origin", server.url.clone())],
        "1+1",
    )
    .await;
    assert_eq!(result, "2");

    // As a script or VS Code: only a personal access token, no cookie.
    let http = reqwest::Client::new();
    let kernel2 = start_kernel(
        &http,
        &format!("{}/nb/{id}/api/kernels", server.url),
        Some(&format!("token {}", alice.token)),
    )
    .await;
    let ws_url = format!("ws://{host}/nb/{id}/api/kernels/{kernel2}/channels");
    let result = execute(
        &ws_url,
        &[("authorization", format!("token {}", alice.token))],
        "6*7",
    )
    .await;
    assert_eq!(result, "42");
    let ws_url = format!(
        "ws://{host}/nb/{id}/api/kernels/{kernel2}/channels?token={}",
        alice.token
    );
    let result = execute(&ws_url, &[], "2**10").await;
    assert_eq!(result, "1024");

    // A large result comes back (4 MiB of text in one message).
    let result = execute(&ws_url, &[], "'b' * (4 << 20)").await;
    assert_eq!(result.len(), (4 << 20) + 2);

    let (_, status) = alice.get(&format!("/nb/{id}/api/status")).await;
    assert!(status["started"].is_string(), "{status}");
}

/// A notebook whose "Jupyter" is tests/upstream/echo.py: it reports the headers it got and
/// echoes WebSocket messages.
async fn echo_notebook(image: &str) -> (TestServer, Api, String) {
    let image = image.to_string();
    let server = TestServer::start_with(move |c| echo_config(c, &image)).await;
    add_user(&server, "alice", "alice-password", false);
    let alice = Api::new(&server.url, &token_for(&server, "alice"));
    let id = alice.create_notebook("echo").await;
    alice.wait_state(&id, "running", READY).await;
    (server, alice, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_its_own_token_never_notebox_credentials() {
    let Some(image) = test_image() else { return };
    let (server, alice, id) = echo_notebook(&image).await;
    let browser = client();
    login_ok(&browser, &server.url, "alice", "alice-password").await;
    let seen: serde_json::Value = browser
        .get(format!("{}/nb/{id}/api/status", server.url))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let auth = seen["authorization"]
        .as_str()
        .unwrap_or_else(|| panic!("upstream answer: {seen}"));
    assert!(
        auth.starts_with("token ") && !auth.contains("nbx_"),
        "{auth}"
    );
    let cookie = seen["cookie"].as_str().expect("cookie");
    assert!(
        !cookie.contains("notebox_"),
        "notebox cookies leaked upstream: {cookie}"
    );
    assert!(
        seen["forwarded_for"]
            .as_str()
            .is_some_and(|f| f.contains("127.0.0.1")),
        "{seen}"
    );
    let (_, seen) = alice
        .get(&format!("/nb/{id}/api/status?token={}", alice.token))
        .await;
    let auth = seen["authorization"].as_str().expect("authorization");
    assert!(
        !auth.contains(&alice.token),
        "the member's token leaked upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_relays_large_fragmented_and_control_frames() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let Some(image) = test_image() else { return };
    let (server, alice, id) = echo_notebook(&image).await;
    let host = server.url.trim_start_matches("http://");
    let mut request = format!("ws://{host}/nb/{id}/echo")
        .into_client_request()
        .expect("req");
    request.headers_mut().insert(
        "authorization",
        format!("token {}", alice.token).parse().expect("h"),
    );
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "v1.kernel.websocket.jupyter.org".parse().expect("h"),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let (mut socket, response) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false)
            .await
            .expect("connect");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v1.kernel.websocket.jupyter.org",
        "the browser is accepted with the subprotocol upstream chose"
    );

    // 64 MiB binary and text messages, both ways.
    let big: Vec<u8> = (0..(64usize << 20)).map(|i| (i % 251) as u8).collect();
    socket
        .send(Message::Binary(big.clone().into()))
        .await
        .expect("send binary");
    let back = recv_data(&mut socket).await;
    assert_eq!(
        back,
        Message::Binary(big.into()),
        "64 MiB binary echoed intact"
    );
    let text = "x".repeat(64 << 20);
    socket
        .send(Message::Text(text.clone().into()))
        .await
        .expect("send text");
    assert_eq!(recv_data(&mut socket).await, Message::Text(text.into()));

    // A fragmented message arrives whole.
    socket
        .send(Message::Frame(Frame::message(
            b"hello ".to_vec(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .expect("f1");
    socket
        .send(Message::Frame(Frame::message(
            b"fragmented ".to_vec(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .await
        .expect("f2");
    socket
        .send(Message::Frame(Frame::message(
            b"world".to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .await
        .expect("f3");
    assert_eq!(
        recv_data(&mut socket).await,
        Message::Text("hello fragmented world".into())
    );

    // 1000 ordered messages.
    for i in 0..1000 {
        socket
            .send(Message::Text(format!("m{i}").into()))
            .await
            .expect("send");
    }
    for i in 0..1000 {
        assert_eq!(
            recv_data(&mut socket).await,
            Message::Text(format!("m{i}").into())
        );
    }

    // Ping gets a pong (from upstream, through the proxy); close is answered.
    socket
        .send(Message::Ping(b"are you there".as_slice().into()))
        .await
        .expect("ping");
    let pong = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("pong in time")
        {
            Some(Ok(Message::Pong(p))) => break p,
            Some(Ok(_)) => continue,
            other => panic!("no pong: {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"are you there");
    socket.close(None).await.expect("close");
}

async fn recv_data<S>(socket: &mut S) -> Message
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("message in time")
        {
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
            Some(Ok(m)) => return m,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_404_browsers_get_login_and_foreign_origins_403() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| docker_config(c, &image)).await;
    let (alice, id) = running_notebook(&server).await;
    let status_url = format!("{}/nb/{id}/api/status", server.url);

    // Another logged-in member: 404, as if the notebook did not exist.
    add_user(&server, "mallory", "mallory-password", false);
    let mallory = client();
    login_ok(&mallory, &server.url, "mallory", "mallory-password").await;
    assert_eq!(
        mallory.get(&status_url).send().await.expect("GET").status(),
        404
    );
    let mallory_token = token_for(&server, "mallory");
    let r = reqwest::Client::new()
        .get(&status_url)
        .header("authorization", format!("token {mallory_token}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);
    // The same answer as for a notebook that does not exist.
    let r = mallory
        .get(format!("{}/nb/nosuchnotebook/api/status", server.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);

    // No session: a browser is sent to the login page, and comes back afterwards.
    let r = client()
        .get(format!("{}/nb/{id}/lab", server.url))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], format!("/login?next=/nb/{id}/lab"));
    // A script without credentials: 401; with a made-up token: 401.
    assert_eq!(reqwest::get(&status_url).await.expect("GET").status(), 401);
    let r = reqwest::Client::new()
        .get(&status_url)
        .bearer_auth("nbx_madeup")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401);

    // The owner's token works.
    assert_eq!(alice.get(&format!("/nb/{id}/api/status")).await.0, 200);

    // JupyterLab sends the notebook's own Jupyter token (from its page config) with every
    // API call: with the owner's session it passes; alone it is no credential.
    let jupyter_token = jupyter_token_of(&container_of(&id));
    let owner = client();
    login_ok(&owner, &server.url, "alice", "alice-password").await;
    let r = owner
        .get(&status_url)
        .header("authorization", format!("token {jupyter_token}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "session + Jupyter's own token");
    let r = owner
        .get(format!("{status_url}?token={jupyter_token}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "session + ?token=<Jupyter's own token>");
    let r = reqwest::Client::new()
        .get(&status_url)
        .header("authorization", format!("token {jupyter_token}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401, "the Jupyter token alone does not get in");

    // A WebSocket upgrade from another site is refused by the proxy itself.
    let http = reqwest::Client::new();
    let kernel = start_kernel(
        &http,
        &format!("{}/nb/{id}/api/kernels", server.url),
        Some(&format!("token {}", alice.token)),
    )
    .await;
    let host = server.url.trim_start_matches("http://");
    let mut request = format!("ws://{host}/nb/{id}/api/kernels/{kernel}/channels")
        .into_client_request()
        .expect("req");
    request.headers_mut().insert(
        "authorization",
        format!("token {}", alice.token).parse().expect("h"),
    );
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().expect("h"));
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!(
            "foreign origin must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
    // A WebSocket Jupyter refuses (no such kernel) gets Jupyter's own answer, not a 503.
    let mut request =
        format!("ws://{host}/nb/{id}/api/kernels/00000000-0000-0000-0000-000000000000/channels")
            .into_client_request()
            .expect("req");
    request.headers_mut().insert(
        "authorization",
        format!("token {}", alice.token).parse().expect("h"),
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 404),
        other => panic!("a missing kernel must be 404, got {:?}", other.map(|_| ())),
    }
    // A cross-site write is refused like a cross-site WebSocket.
    let r = http
        .post(format!("{}/nb/{id}/api/kernels", server.url))
        .header("authorization", format!("token {}", alice.token))
        .header("origin", "http://evil.example")
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 403);

    // A stopped notebook: a friendly page for browsers, 409 JSON for clients.
    alice
        .post(&format!("/api/v1/notebooks/{id}/stop"), json!({}))
        .await;
    alice.wait_state(&id, "stopped", READY).await;
    // The proxy's routing cache may still point at the old container for a moment.
    let body = wait_for(
        "the proxy to answer 409 for the stopped notebook",
        Duration::from_secs(10),
        || async {
            let (s, body) = alice.get(&format!("/nb/{id}/api/status")).await;
            (s == 409).then_some(body)
        },
    )
    .await;
    assert_eq!(body["error"]["code"], "notebook_not_running");
    let browser = client();
    login_ok(&browser, &server.url, "alice", "alice-password").await;
    let r = browser
        .get(format!("{}/nb/{id}/lab", server.url))
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 409);
    let page = r.text().await.expect("body");
    assert!(
        page.contains("is stopped") && page.contains("Start the notebook"),
        "{page}"
    );
}

/// A memory figure of a process from /proc/{pid}/status, in KiB (`VmHWM:` the peak
/// resident set, `VmRSS:` the current one); 0 when it cannot be read.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_round_trip_streams_in_little_memory() {
    use base64::Engine;
    use sha2::Digest;
    let Some(image) = test_image() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let _guard = ContainerGuard(data.clone());
    let config = dir.path().join("config.toml");
    let toml = docker_config_toml(&data, &image).replace("memory_mib = 1024", "memory_mib = 2048");
    let (server, api) = spawn_as_admin(dir.path(), &data, &config, &toml).await;
    let id = api.create_notebook("big files").await;
    api.wait_state(&id, "running", READY).await;

    // Upload 100 MiB the way JupyterLab does: the contents API in 4 MiB chunks.
    let total = 100usize << 20;
    let chunk_size = 4usize << 20;
    let mut hasher = sha2::Sha256::new();
    let http = reqwest::Client::new();
    let chunks = total / chunk_size;
    for i in 0..chunks {
        let chunk: Vec<u8> = (0..chunk_size)
            .map(|j| ((i * 7919 + j * 31) % 251) as u8)
            .collect();
        hasher.update(&chunk);
        let number: i64 = if i + 1 == chunks { -1 } else { i as i64 + 1 };
        let body = json!({
            "type": "file", "format": "base64", "name": "big.bin", "path": "big.bin", "chunk": number,
            "content": base64::engine::general_purpose::STANDARD.encode(&chunk),
        });
        let r = http
            .put(format!("{}/nb/{id}/api/contents/big.bin", server.url))
            .header("authorization", format!("token {}", api.token))
            .json(&body)
            .send()
            .await
            .expect("PUT chunk");
        assert!(r.status().is_success(), "chunk {i}: {}", r.status());
    }
    let uploaded = hex::encode(hasher.finalize());

    // Download it back, streamed.
    let mut r = http
        .get(format!("{}/nb/{id}/files/big.bin", server.url))
        .header("authorization", format!("token {}", api.token))
        .send()
        .await
        .expect("GET file");
    assert_eq!(r.status(), 200);
    let mut hasher = sha2::Sha256::new();
    let mut received = 0usize;
    while let Some(bytes) = r.chunk().await.expect("chunk") {
        received += bytes.len();
        hasher.update(&bytes);
    }
    assert_eq!(received, total);
    assert_eq!(hex::encode(hasher.finalize()), uploaded, "byte-identical");

    let peak = peak_rss_kib(server.child.id());
    eprintln!("notebox peak resident memory: {} MiB", peak / 1024);
    assert!(
        peak > 0 && peak < 100 * 1024,
        "notebox peak RSS {} KiB",
        peak
    );
}

/// Browsers send a host's cookies to every port of it, so the workstation's other apps'
/// cookies (Grafana's, Portainer's, code-server's session…) come with every request for a
/// notebook. None of them may reach Jupyter, where the notebook's code could read them:
/// only `_xsrf` and Jupyter's login cookie for this very host pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_gets_only_jupyters_own_cookies() {
    let Some(image) = test_image() else { return };
    let (server, alice, id) = echo_notebook(&image).await;
    let host = server.url.trim_start_matches("http://");
    // jupyter_server's login cookie: `username-{Host}`, every non-alphanumeric a `-`.
    let login = format!("username-{}", host.replace(['.', ':'], "-"));
    let sent = format!(
        "grafana_session=g1; portainer_api_key=p1; code-server-session=c1; \
         jupyterhub-session-id=h1; sessionid=d1; username-workstation-8888=other-jupyter; \
         _xsrf=x1; {login}=u1; notebox_session=s1"
    );
    let seen: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/nb/{id}/api/status", server.url))
        .header("authorization", format!("token {}", alice.token))
        .header("cookie", sent)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(
        seen["cookie"],
        format!("_xsrf=x1; {login}=u1"),
        "only Jupyter's own cookies reach it: {seen}"
    );
}

/// One WebSocket client that frames by hand: after the handshake it sends a single binary
/// frame of `len` bytes, written in 64 KiB pieces, so the test never holds the frame
/// itself. Returns the connection, still open.
async fn send_one_frame(addr: &str, path: &str, token: &str, len: u64) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: token {token}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tcp.read(&mut byte).await.expect("read the answer");
        assert_eq!(n, 1, "closed: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // FIN + binary, masked, 64-bit length; a zero mask leaves the payload as it is.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0; 4]);
    tcp.write_all(&header).await.expect("frame header");
    let piece = vec![0x5a; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        tcp.write_all(&piece[..n]).await.expect("payload");
        left -= n as u64;
    }
    tcp
}

/// Issue 22, finding 4: four 200 MiB WebSocket frames sent at once through the proxy took
/// Notebox's memory to ~2 GB (each frame was held whole). Frames are relayed as they arrive:
/// the process stays under 150 MiB while all of them pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_200_mib_websocket_frames_pass_in_little_memory() {
    const FRAME: u64 = 200 << 20;
    let Some(image) = test_image() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let _guard = ContainerGuard(data.clone());
    let config = dir.path().join("config.toml");
    // tests/upstream/echo.py as the notebook's "Jupyter" (a JSON string is a TOML string).
    let echo = serde_json::to_string(include_str!("../upstream/echo.py")).expect("quoted");
    let toml = docker_config_toml(&data, &image).replace(
        r#"launcher = "jupyter-lab""#,
        &format!(
            "launcher = \"command\"\ncommand = [\"python3\", \"-c\", {echo}, \"{{base_url}}\"]"
        ),
    );
    let (server, api) = spawn_as_admin(dir.path(), &data, &config, &toml).await;
    let id = api.create_notebook("big frames").await;
    api.wait_state(&id, "running", READY).await;
    assert_eq!(api.get(&format!("/nb/{id}/sink/received")).await.0, 200);
    let pid = server.child.id();
    let baseline = status_kib(pid, "VmRSS:");

    let addr = server.url.trim_start_matches("http://").to_string();
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (addr, path, token) = (addr.clone(), format!("/nb/{id}/sink"), api.token.clone());
            tokio::spawn(async move { send_one_frame(&addr, &path, &token, FRAME).await })
        })
        .collect();
    let limit = 150 * 1024;
    let under_limit = |peak: u64| {
        assert!(
            peak > 0 && peak < limit,
            "notebox peak RSS {} MiB with four 200 MiB frames in flight (baseline {} MiB)",
            peak / 1024,
            baseline / 1024
        );
    };
    // All four frames get through to Jupyter (with their 14-byte headers), and the peak stays
    // under the limit all along.
    wait_for(
        "the upstream to receive all four frames",
        Duration::from_secs(300),
        || async {
            under_limit(peak_rss_kib(pid));
            let (_, body) = api.get(&format!("/nb/{id}/sink/received")).await;
            (body["received"].as_u64()? >= 4 * (FRAME + 14)).then_some(())
        },
    )
    .await;
    let mut sockets = Vec::new();
    for sender in senders {
        sockets.push(sender.await.expect("sender"));
    }
    let peak = peak_rss_kib(pid);
    eprintln!(
        "notebox resident memory: {} MiB before, peak {} MiB with four 200 MiB frames",
        baseline / 1024,
        peak / 1024
    );
    under_limit(peak);
    drop(sockets);
}
