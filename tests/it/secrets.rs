//! Issue 24: private registries and members' secrets, with the real parts: Debian's
//! `docker-registry` (distribution) with htpasswd logins on loopback, the real engine
//! pulling from it through Notebox, real Jupyter kernels reading their environment, and
//! the real binary's log (at debug level) searched for what must never be in it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(120);
const FAIL: Duration = Duration::from_secs(60);

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Notebox as a child process (its log at debug level, kept in a file), with the test
/// image in its catalog and `extra` appended to its config.
struct Lab {
    server: ServerProcess,
    data: PathBuf,
    config: String,
    _guard: ContainerGuard,
    _dir: tempfile::TempDir,
}

impl Lab {
    async fn start(image: &str, extra: &str) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let toml = docker_config_toml(&data, image)
            .replace("[notebooks]\n", "[notebooks]\nallow_custom_images = true\n")
            + extra;
        let config = dir.path().join("notebox.toml");
        std::fs::write(&config, toml).expect("config");
        let config = config.to_string_lossy().to_string();
        let server = ServerProcess::spawn(
            dir.path(),
            &["--config", &config],
            &[("NOTEBOX_LOG", "debug")],
        )
        .await;
        Lab {
            server,
            _guard: ContainerGuard(data.clone()),
            data,
            config,
            _dir: dir,
        }
    }

    fn cli(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let mut all = vec!["--config", self.config.as_str()];
        all.extend_from_slice(args);
        run_cli(&self.data, &all, stdin)
    }

    /// A member (or an admin) with a password and an API token.
    fn member(&self, name: &str, admin: bool) -> Api {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        if admin {
            args.push("--admin");
        }
        let out = self.cli(&args, Some(&format!("{name}-password\n")));
        assert!(out.status.success(), "user add: {}", out.stderr);
        let out = self.cli(&["token", "create", name], None);
        assert!(out.status.success(), "token create: {}", out.stderr);
        Api::new(&self.server.url, out.stdout.trim())
    }

    /// A logged-in browser of `name`.
    async fn browser(&self, name: &str) -> reqwest::Client {
        let browser = client();
        login_ok(
            &browser,
            &self.server.url,
            name,
            &format!("{name}-password"),
        )
        .await;
        browser
    }
}

/// Every answer the test got, to search for what must not be in any.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn call(
        &mut self,
        api: &Api,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, v) = api.send(method.clone(), path, body).await;
        self.0.push(format!("{method} {path} → {status} {v}"));
        (status, v)
    }

    async fn page(&mut self, browser: &reqwest::Client, url: &str) -> String {
        let r = browser.get(url).send().await.expect("GET page");
        let status = r.status().as_u16();
        let text = r.text().await.expect("page body");
        assert_eq!(status, 200, "GET {url}: {text}");
        self.0.push(text.clone());
        text
    }

    fn assert_absent(&self, what: &str, needle: &str) {
        for answer in &self.0 {
            assert!(
                !answer.contains(needle),
                "{what} appears in an answer: {answer}"
            );
        }
    }
}

fn assert_bad_request(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.len() > 20,
        "{what}: a message saying what to fix: {body}"
    );
}

/// Every file under `dir` (the data dir: database, key, notebooks' folders) as bytes.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    found
}

// ---- private registry ----

/// Debian's `docker-registry` on a free loopback port, with one htpasswd (bcrypt) user.
struct LocalRegistry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    async fn start(user: &str, password: &str) -> LocalRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd");
        assert!(out.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &out.stdout).expect("htpasswd file");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {host}\nauth:\n  htpasswd:\n    realm: notebox-test\n    path: {}\n",
            dir.path().join("data").display(),
            dir.path().join("htpasswd").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = LocalRegistry {
            child,
            host,
            _dir: dir,
        };
        let url = format!("http://{}/v2/", registry.host);
        wait_for("the registry to answer", Duration::from_secs(20), || {
            let url = url.clone();
            async move {
                let r = reqwest::get(&url).await.ok()?;
                (r.status() == 401).then_some(())
            }
        })
        .await;
        registry
    }

    /// The test image with a `start-notebook.sh` (custom images start like Jupyter Docker
    /// Stacks) and a label of its own, pushed here under a login kept in a temporary
    /// DOCKER_CONFIG (the machine's docker config is left alone); the local tag is
    /// removed, so only a pull through the registry can bring it back.
    fn push_jupyter(&self, base: &str, user: &str, password: &str) -> String {
        let build = tempfile::tempdir().expect("build dir");
        std::fs::write(
            build.path().join("start-notebook.sh"),
            "#!/bin/sh\nexec jupyter-lab --ip=0.0.0.0 --port=8888 --no-browser \"$@\"\n",
        )
        .expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            build.path().join("start-notebook.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::fs::write(
            build.path().join("Dockerfile"),
            format!(
                "FROM {base}\nCOPY start-notebook.sh /usr/local/bin/start-notebook.sh\n\
                 LABEL io.notebox.test=private-registry\n"
            ),
        )
        .expect("Dockerfile");
        let tag = format!("{}/nbtest/jupyter:t{}", self.host, std::process::id());
        let docker_config = tempfile::tempdir().expect("docker config dir");
        let docker = |args: &[&str], stdin: Option<&str>| {
            let mut child = Command::new("docker")
                .args(args)
                .env("DOCKER_CONFIG", docker_config.path())
                .env("DOCKER_BUILDKIT", "0")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("docker");
            if let Some(input) = stdin {
                use std::io::Write;
                child
                    .stdin
                    .as_mut()
                    .expect("stdin")
                    .write_all(input.as_bytes())
                    .expect("write stdin");
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().expect("docker ran");
            assert!(
                out.status.success(),
                "docker {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let dir = build.path().to_string_lossy().to_string();
        docker(&["build", "-q", "-t", &tag, &dir], None);
        docker(
            &["login", "-u", user, "--password-stdin", &self.host],
            Some(password),
        );
        docker(&["push", "-q", &tag], None);
        docker(&["logout", &self.host], None);
        docker(&["rmi", &tag], None);
        tag
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn remove_image(tag: &str) {
    let _ = Command::new("docker")
        .args(["rmi", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Removes the pushed image's local tag when the test ends, pass or fail.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        remove_image(&self.0);
    }
}

async fn failed_detail(api: &Api, seen: &mut Seen, id: &str) -> String {
    let nb = api.wait_state(id, "failed", FAIL).await;
    seen.0.push(nb.to_string());
    nb["state_detail"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_registry_pulls_with_the_right_credential_and_never_shows_it() {
    let Some(image) = test_image() else { return };
    if !require(
        "docker-registry and htpasswd",
        have("docker-registry") && have("htpasswd"),
        "apt-get install docker-registry apache2-utils",
    ) {
        return;
    }
    const USER: &str = "lab-robot";
    const PASSWORD: &str = "reg-Pa55word-9f3c1e";
    const WRONG: &str = "wrong-Pa55word-77aa";
    let registry = LocalRegistry::start(USER, PASSWORD).await;
    let private = registry.push_jupyter(&image, USER, PASSWORD);
    let _image = ImageGuard(private.clone());
    let host = registry.host.clone();
    let lab = Lab::start(&image, "").await;
    let admin = lab.member("boss", true);
    let alice = lab.member("alice", false);
    let bob = lab.member("bob", false);
    let mut seen = Seen::default();
    let new_notebook =
        |name: &str, image: &str| json!({"name": name, "image": image, "machine": "cpu"});

    // No credential: the registry wants a login, and the page says so.
    let (status, nb) = seen
        .call(
            &alice,
            Method::POST,
            "/api/v1/notebooks",
            Some(new_notebook("private", &private)),
        )
        .await;
    assert_eq!(status, 201, "{nb}");
    let id = nb["id"].as_str().expect("id").to_string();
    let detail = failed_detail(&alice, &mut seen, &id).await;
    assert!(
        detail.contains(&format!("the registry {host} needs a login")),
        "{detail}"
    );

    // A wrong password: refused, in words.
    let (status, saved) = seen
        .call(
            &alice,
            Method::POST,
            "/api/v1/registries",
            Some(json!({"host": host, "username": USER, "password": WRONG})),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["configured"], true);
    assert_eq!(saved["scope"], "member");
    let (status, _) = seen
        .call(
            &alice,
            Method::POST,
            &format!("/api/v1/notebooks/{id}/start"),
            None,
        )
        .await;
    assert!(status < 300, "start: {status}");
    let detail = failed_detail(&alice, &mut seen, &id).await;
    assert!(
        detail.contains(&format!(
            "the registry refused the credential for {host} — check the username and password \
             under Settings → Registries"
        )),
        "{detail}"
    );

    // The right one (replacing the wrong): pulled, and Jupyter runs from it.
    let (status, _) = seen
        .call(
            &alice,
            Method::POST,
            "/api/v1/registries",
            Some(json!({"host": host, "username": USER, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 201);
    let (_, list) = seen
        .call(&alice, Method::GET, "/api/v1/registries", None)
        .await;
    assert_eq!(
        list,
        json!([{"host": host, "username": USER, "configured": true, "scope": "member",
                "updated_at": list[0]["updated_at"]}])
    );
    seen.call(
        &alice,
        Method::POST,
        &format!("/api/v1/notebooks/{id}/start"),
        None,
    )
    .await;
    alice.wait_state(&id, "running", READY).await;
    let container = container_of(&id);
    let inspect = docker_inspect(&container);
    assert_eq!(
        inspect["Config"]["Labels"]["io.notebox.test"], "private-registry",
        "the container runs the image from the registry"
    );
    let inspected = inspect.to_string();
    assert!(!inspected.contains(PASSWORD) && !inspected.contains(WRONG));

    // Bob has no credential: the image is on this machine now, but it is not his to use.
    let (_, nb) = seen
        .call(
            &bob,
            Method::POST,
            "/api/v1/notebooks",
            Some(new_notebook("bobs", &private)),
        )
        .await;
    let bobs = nb["id"].as_str().expect("id").to_string();
    let detail = failed_detail(&bob, &mut seen, &bobs).await;
    assert!(detail.contains("needs a login"), "{detail}");

    // A lab-wide credential: admins only; then Bob's notebook pulls with it.
    let lab_credential =
        json!({"host": host, "username": USER, "password": PASSWORD, "scope": "lab"});
    let (status, body) = seen
        .call(
            &bob,
            Method::POST,
            "/api/v1/registries",
            Some(lab_credential.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = seen
        .call(
            &admin,
            Method::POST,
            "/api/v1/registries",
            Some(lab_credential),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, list) = seen
        .call(&bob, Method::GET, "/api/v1/registries", None)
        .await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["scope"], "lab");
    // Alice's notebook stops, and the image's tag goes, so Bob's start really pulls.
    seen.call(
        &alice,
        Method::POST,
        &format!("/api/v1/notebooks/{id}/stop"),
        None,
    )
    .await;
    alice.wait_state(&id, "stopped", FAIL).await;
    remove_image(&private);
    seen.call(
        &bob,
        Method::POST,
        &format!("/api/v1/notebooks/{bobs}/start"),
        None,
    )
    .await;
    bob.wait_state(&bobs, "running", READY).await;
    let inspected = docker_inspect(&container_of(&bobs)).to_string();
    assert!(!inspected.contains(PASSWORD));

    // Not found and unreachable say so.
    let missing = private
        .rsplit_once(':')
        .map(|(repo, _)| format!("{repo}:no-such-tag"));
    let (_, nb) = seen
        .call(
            &alice,
            Method::POST,
            "/api/v1/notebooks",
            Some(new_notebook("missing", &missing.expect("tagged"))),
        )
        .await;
    let detail = failed_detail(&alice, &mut seen, nb["id"].as_str().expect("id")).await;
    assert!(detail.contains("has no such repository or tag"), "{detail}");
    let (_, nb) = seen
        .call(
            &alice,
            Method::POST,
            "/api/v1/notebooks",
            Some(new_notebook(
                "nowhere",
                &format!("127.0.0.1:{}/x/y:1", free_port()),
            )),
        )
        .await;
    let detail = failed_detail(&alice, &mut seen, nb["id"].as_str().expect("id")).await;
    assert!(
        detail.contains("cannot reach the registry 127.0.0.1:"),
        "{detail}"
    );

    // Bad input: each refused with what to fix.
    for (body, what) in [
        (
            json!({"host": "https://ghcr.io", "username": "u", "password": "p"}),
            "a URL",
        ),
        (
            json!({"host": "ghcr.io/org", "username": "u", "password": "p"}),
            "a path",
        ),
        (
            json!({"host": "reg.example:99999", "username": "u", "password": "p"}),
            "a port",
        ),
        (
            json!({"host": "", "username": "u", "password": "p"}),
            "no host",
        ),
        (
            json!({"host": "bad host", "username": "u", "password": "p"}),
            "a space",
        ),
        (
            json!({"host": "ghcr.io", "username": "a:b", "password": "p"}),
            "a colon",
        ),
        (
            json!({"host": "ghcr.io", "username": "", "password": "p"}),
            "no username",
        ),
        (
            json!({"host": "ghcr.io", "username": "u", "password": ""}),
            "no password",
        ),
        (
            json!({"host": "ghcr.io", "username": "u", "password": "x".repeat(20_000)}),
            "a long password",
        ),
        (
            json!({"host": "ghcr.io", "username": "u", "password": "p", "scope": "world"}),
            "a scope",
        ),
        (
            json!({"host": "ghcr.io", "username": "u", "password": "p", "extra": 1}),
            "a field",
        ),
    ] {
        let (status, body) = seen
            .call(&alice, Method::POST, "/api/v1/registries", Some(body))
            .await;
        assert_bad_request(status, &body, what);
    }
    let (status, _) = seen
        .call(
            &alice,
            Method::DELETE,
            &format!("/api/v1/registries/{host}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = seen
        .call(
            &alice,
            Method::DELETE,
            &format!("/api/v1/registries/{host}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = seen
        .call(
            &bob,
            Method::DELETE,
            &format!("/api/v1/registries/{host}?scope=lab"),
            None,
        )
        .await;
    assert_eq!(status, 403);

    // The password is nowhere: API answers, pages, the log, the containers, the data dir.
    let notebook_page = format!("/notebooks/{id}");
    for (who, api, pages) in [
        (
            "alice",
            &alice,
            vec!["/", "/settings/registries", &notebook_page],
        ),
        (
            "boss",
            &admin,
            vec!["/", "/settings/registries", "/admin/notebooks"],
        ),
    ] {
        let browser = lab.browser(who).await;
        for page in pages {
            let html = seen
                .page(&browser, &format!("{}{page}", lab.server.url))
                .await;
            if page == "/settings/registries" {
                assert!(
                    html.contains(&host) && html.contains("configured"),
                    "{html}"
                );
            }
        }
        seen.call(api, Method::GET, "/api/v1/notebooks", None).await;
    }
    seen.call(
        &alice,
        Method::GET,
        &format!("/api/v1/notebooks/{id}"),
        None,
    )
    .await;
    seen.assert_absent("the registry password", PASSWORD);
    seen.assert_absent("the wrong registry password", WRONG);
    let log = lab.server.stderr();
    assert!(log.contains("registry credential saved"), "the log is read");
    assert!(
        !log.contains(PASSWORD) && !log.contains(WRONG),
        "the password is in the log"
    );
    assert_eq!(files_containing(&lab.data, PASSWORD), Vec::<PathBuf>::new());
}

// ---- variables and secrets ----

fn env_of(container: &str, name: &str) -> Option<String> {
    docker_inspect(container)["Config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e.as_str())
        .find_map(|e| e.strip_prefix(&format!("{name}=")).map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_members_notebooks_and_nothing_else() {
    let Some(image) = test_image() else { return };
    const LAB_VALUE: &str = "sk-lab-4f9d2c7e1a";
    const ALICE_VALUE: &str = "sk-alice-8b3e6f0d2c";
    const ALICE_NEWER: &str = "sk-alice-newer-5a1c9e";
    let lab = Lab::start(&image, "[metrics]\nallow = [\"127.0.0.1\"]\n").await;
    let admin = lab.member("boss", true);
    let alice = lab.member("alice", false);
    let bob = lab.member("bob", false);
    let mut seen = Seen::default();
    let put = |value: &str, extra: Value| {
        let mut body = json!({ "value": value });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        Some(body)
    };
    const KEY: &str = "/api/v1/secrets/OPENAI_API_KEY";

    // The lab's value (admins only), and Alice's own over it.
    let (status, body) = seen
        .call(
            &admin,
            Method::PUT,
            KEY,
            put(LAB_VALUE, json!({"scope": "lab"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "lab");
    assert!(
        body.get("value").is_none(),
        "a secret's value is not sent back: {body}"
    );
    let (status, body) = seen
        .call(
            &alice,
            Method::PUT,
            KEY,
            put(LAB_VALUE, json!({"scope": "lab"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = seen
        .call(&alice, Method::PUT, KEY, put(ALICE_VALUE, json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["secret"].clone(), body["scope"].clone()),
        (json!(true), json!("member"))
    );
    let (status, body) = seen
        .call(
            &alice,
            Method::PUT,
            "/api/v1/secrets/PLAIN_SETTING",
            put("shown-back", json!({"secret": false})),
        )
        .await;
    assert_eq!(
        (status, body["value"].clone()),
        (200, json!("shown-back")),
        "{body}"
    );
    let (_, list) = seen
        .call(&alice, Method::GET, "/api/v1/secrets", None)
        .await;
    let names: Vec<(String, String, Option<String>)> = list["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["scope"].as_str().unwrap_or_default().to_string(),
                s["value"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("OPENAI_API_KEY".into(), "member".into(), None),
            (
                "PLAIN_SETTING".into(),
                "member".into(),
                Some("shown-back".into())
            ),
            ("OPENAI_API_KEY".into(), "lab".into(), None),
        ],
        "{list}"
    );

    // Bad names and values: each a 400 that says what to fix.
    let long_name = format!("/api/v1/secrets/{}", "A".repeat(129));
    for (path, body, what) in [
        (
            "/api/v1/secrets/1BAD",
            put("v", json!({})),
            "a leading digit",
        ),
        ("/api/v1/secrets/BAD-NAME", put("v", json!({})), "a hyphen"),
        ("/api/v1/secrets/B%20AD", put("v", json!({})), "a space"),
        (long_name.as_str(), put("v", json!({})), "129 characters"),
        (
            "/api/v1/secrets/JUPYTER_TOKEN",
            put("v", json!({})),
            "Jupyter's token",
        ),
        (
            "/api/v1/secrets/NOTEBOX_NOTEBOOK_ID",
            put("v", json!({})),
            "Notebox's own",
        ),
        (
            "/api/v1/secrets/CUDA_VISIBLE_DEVICES",
            put("0,1", json!({})),
            "the GPUs",
        ),
        (
            "/api/v1/secrets/NVIDIA_VISIBLE_DEVICES",
            put("all", json!({})),
            "the GPUs",
        ),
        (
            "/api/v1/secrets/LD_PRELOAD",
            put("/x.so", json!({})),
            "LD_PRELOAD",
        ),
        ("/api/v1/secrets/PATH", put("/x", json!({})), "PATH"),
        ("/api/v1/secrets/GOOD", put("a\u{0}b", json!({})), "a NUL"),
        (
            "/api/v1/secrets/GOOD",
            put(&"x".repeat(33 * 1024), json!({})),
            "33 KiB",
        ),
        (
            "/api/v1/secrets/GOOD",
            put("v", json!({"scope": "world"})),
            "a scope",
        ),
        (
            "/api/v1/secrets/GOOD",
            put("v", json!({"other": 1})),
            "a field",
        ),
        (
            "/api/v1/secrets/GOOD",
            Some(json!({"value": 5})),
            "a number",
        ),
        ("/api/v1/secrets/GOOD", Some(json!({})), "no value"),
    ] {
        let (status, body) = seen.call(&alice, Method::PUT, path, body).await;
        assert_bad_request(status, &body, what);
    }
    let (status, body) = seen
        .call(&alice, Method::DELETE, "/api/v1/secrets/NEVER_SET", None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = seen
        .call(
            &alice,
            Method::DELETE,
            "/api/v1/secrets/OPENAI_API_KEY?scope=lab",
            None,
        )
        .await;
    assert_eq!(status, 403);

    // Alice's notebook sees her value, in its kernel and its environment.
    let id = alice.create_notebook("with-secrets").await;
    alice.wait_state(&id, "running", READY).await;
    let seen_by_kernel =
        run_in_kernel(&alice, &id, "import os; os.environ.get('OPENAI_API_KEY')").await;
    assert_eq!(seen_by_kernel, format!("'{ALICE_VALUE}'"));
    let container = container_of(&id);
    assert_eq!(
        env_of(&container, "OPENAI_API_KEY").as_deref(),
        Some(ALICE_VALUE)
    );
    assert_eq!(
        env_of(&container, "PLAIN_SETTING").as_deref(),
        Some("shown-back")
    );

    // Shared and forked by Bob: his fork gets his (the lab's) value, never Alice's.
    let token = alice.share(&id, "link").await;
    let anonymous = reqwest::Client::new();
    seen.page(&anonymous, &format!("{}/s/{token}/", lab.server.url))
        .await;
    let (status, fork) = seen
        .call(
            &bob,
            Method::POST,
            &format!("/api/v1/shares/{token}/fork"),
            None,
        )
        .await;
    assert_eq!(status, 201, "{fork}");
    let fork_id = fork["id"].as_str().expect("fork id").to_string();
    seen.call(
        &bob,
        Method::POST,
        &format!("/api/v1/notebooks/{fork_id}/start"),
        None,
    )
    .await;
    bob.wait_state(&fork_id, "running", READY).await;
    let forked = container_of(&fork_id);
    assert_eq!(
        env_of(&forked, "OPENAI_API_KEY").as_deref(),
        Some(LAB_VALUE)
    );
    assert_eq!(env_of(&forked, "PLAIN_SETTING"), None);

    // A change applies at the next start; the page names the notebook still on the old one.
    let (status, _) = seen
        .call(&alice, Method::PUT, KEY, put(ALICE_NEWER, json!({})))
        .await;
    assert_eq!(status, 200);
    let browser = lab.browser("alice").await;
    let settings = seen
        .page(&browser, &format!("{}/settings/variables", lab.server.url))
        .await;
    assert!(settings.contains("applies at the next start"), "{settings}");
    assert!(settings.contains("set (secret)") && settings.contains("shown-back"));
    let older = settings
        .split("id=\"older\"")
        .nth(1)
        .expect("the notebooks with earlier values are listed");
    assert!(older.contains(&format!("/notebooks/{id}")), "{older}");
    assert_eq!(
        env_of(&container, "OPENAI_API_KEY").as_deref(),
        Some(ALICE_VALUE)
    );

    // A bad name on the page: the same page, with the reason next to the form.
    let csrf = csrf_from(&settings);
    let r = browser
        .post(format!("{}/settings/variables", lab.server.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "LD_PRELOAD"),
            ("value", ALICE_NEWER),
            ("secret", "on"),
        ])
        .send()
        .await
        .expect("POST form");
    assert_eq!(r.status(), 400);
    let refused = r.text().await.expect("page");
    assert!(refused.contains("LD_PRELOAD cannot be set"), "{refused}");
    seen.0.push(refused);

    // The values are nowhere else: API answers, pages, share page, fork, metrics, log, files.
    for page in [
        "/",
        &format!("/notebooks/{id}"),
        "/settings/variables",
        "/settings",
    ] {
        seen.page(&browser, &format!("{}{page}", lab.server.url))
            .await;
    }
    let admin_browser = lab.browser("boss").await;
    for page in ["/", "/settings/variables", "/admin/notebooks"] {
        seen.page(&admin_browser, &format!("{}{page}", lab.server.url))
            .await;
    }
    seen.page(&anonymous, &format!("{}/s/{token}/", lab.server.url))
        .await;
    seen.page(&anonymous, &format!("{}/metrics", lab.server.url))
        .await;
    for (api, nb) in [(&alice, &id), (&bob, &fork_id)] {
        seen.call(api, Method::GET, "/api/v1/notebooks", None).await;
        seen.call(api, Method::GET, &format!("/api/v1/notebooks/{nb}"), None)
            .await;
        seen.call(api, Method::GET, "/api/v1/secrets", None).await;
    }
    seen.call(&admin, Method::GET, "/api/v1/secrets", None)
        .await;
    let log = lab.server.stderr();
    assert!(log.contains("variable saved"), "the log is read");
    for value in [LAB_VALUE, ALICE_VALUE, ALICE_NEWER] {
        seen.assert_absent("a secret's value", value);
        let line = log.lines().find(|l| l.contains(value));
        assert_eq!(line, None, "{value} is in the server's log");
        assert_eq!(files_containing(&lab.data, value), Vec::<PathBuf>::new());
    }
}
