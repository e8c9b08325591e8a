//! Issue 2: the binary, config, database, accounts, sessions, CSRF, tokens, UI shell.

use crate::common;

use std::os::unix::fs::PermissionsExt;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_with_no_config_creates_admin_and_serves() {
    let cwd = tempfile::tempdir().expect("tmp");
    let server = ServerProcess::spawn(cwd.path(), &[], &[]).await;
    let health = reqwest::get(format!("{}/healthz", server.url))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.expect("json");
    assert_eq!(body["status"], "ok");

    // Built-in default data dir, relative to where it was started.
    let pw_file = cwd.path().join("notebox-data/initial-admin-password");
    let mode = std::fs::metadata(&pw_file)
        .expect("password file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "initial password file mode");
    let password = std::fs::read_to_string(&pw_file)
        .expect("read")
        .trim()
        .to_string();
    assert!(password.len() >= 16);

    let c = client();
    let csrf = login_ok(&c, &server.url, "admin", &password).await;
    assert!(!csrf.is_empty());
    let stderr = server.stderr();
    assert!(
        stderr.contains("initial-admin-password"),
        "path is logged:\n{stderr}"
    );
    assert!(
        !stderr.contains(&password),
        "the password itself must never be logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_logs_in_with_csrf_and_is_greeted() {
    let server = TestServer::start().await;
    add_user(&server, "alice", "alice-password", false);

    let c = client();
    let wrong = login(&c, &server.url, "alice", "not-her-password").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong
        .headers()
        .get("set-cookie")
        .is_none_or(|v| !v.to_str().unwrap_or("").contains("notebox_session")));
    assert!(wrong
        .text()
        .await
        .expect("body")
        .contains("wrong username or password"));
    assert_eq!(
        c.get(format!("{}/", server.url))
            .send()
            .await
            .expect("GET")
            .status(),
        303
    );

    let ok = login(&c, &server.url, "alice", "alice-password").await;
    assert_eq!(ok.status(), 303);
    let cookie = ok
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("notebox_session="))
        .expect("session cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let home = c
        .get(format!("{}/", server.url))
        .send()
        .await
        .expect("GET /");
    assert_eq!(home.status(), 200);
    let html = home.text().await.expect("body");
    assert!(html.contains("Hello, alice"), "dashboard greets alice");
    assert!(!html.contains(">Admin<"), "members see no Admin link");

    // A login POST without the CSRF token is refused and logs nobody in.
    let fresh = client();
    let r = fresh
        .post(format!("{}/login", server.url))
        .form(&[("username", "alice"), ("password", "alice-password")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 403);
    assert_eq!(
        fresh
            .get(format!("{}/", server.url))
            .send()
            .await
            .expect("GET")
            .status(),
        303
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixth_wrong_password_is_throttled() {
    let server = TestServer::start().await;
    add_user(&server, "bob", "bob-password", false);
    let c = client();
    for i in 1..=5 {
        let r = login(&c, &server.url, "bob", "wrong-password").await;
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = login(&c, &server.url, "bob", "wrong-password").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!(retry > 0 && retry <= 900, "{retry}");
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("too many failed logins"));
    // Even the right password waits out the window.
    assert_eq!(
        login(&c, &server.url, "bob", "bob-password").await.status(),
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_try_many_accounts() {
    let server = TestServer::start_with(|c| c.auth.max_failures_per_address = 8).await;
    let c = client();
    for i in 0..8 {
        let r = login(&c, &server.url, &format!("user{i}"), "wrong-password").await;
        assert_eq!(r.status(), 401);
    }
    let r = login(&c, &server.url, "someone-else", "wrong-password").await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.expect("body").contains("from your address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_token_works_for_the_api_and_bad_tokens_get_json_401() {
    let server = TestServer::start().await;
    add_user(&server, "alice", "alice-password", false);
    let token = token_for(&server, "alice");
    assert!(
        token.starts_with("nbx_") && !token.contains(char::is_whitespace),
        "{token:?}"
    );

    let http = reqwest::Client::new();
    let me: serde_json::Value = http
        .get(format!("{}/api/v1/me", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["username"], "alice");

    for auth in [
        Some("Bearer nbx_madeup"),
        Some("Bearer"),
        Some("Basic YWxpY2U6eA=="),
        None,
    ] {
        let mut req = http.get(format!("{}/api/v1/me", server.url));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("GET");
        assert_eq!(r.status(), 401, "{auth:?}");
        let body: serde_json::Value = r.json().await.expect("json error");
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // The token is stored hashed: it appears nowhere in the database file.
    let db = std::fs::read(server.data_dir().join("notebox.db")).expect("db");
    let wal = std::fs::read(server.data_dir().join("notebox.db-wal")).unwrap_or_default();
    let needle = token.as_bytes();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "token stored in clear"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_page_creates_and_revokes_and_needs_csrf() {
    let server = TestServer::start().await;
    add_user(&server, "carol", "carol-password", false);
    let c = client();
    let csrf = login_ok(&c, &server.url, "carol", "carol-password").await;

    let no_csrf = c
        .post(format!("{}/settings/tokens", server.url))
        .form(&[("name", "sneaky")])
        .send()
        .await
        .expect("POST");
    assert_eq!(no_csrf.status(), 403);
    let bad_csrf = c
        .post(format!("{}/settings/tokens", server.url))
        .form(&[("name", "sneaky"), ("csrf", "wrong")])
        .send()
        .await
        .expect("POST");
    assert_eq!(bad_csrf.status(), 403);
    let list = c
        .get(format!("{}/settings/tokens", server.url))
        .send()
        .await
        .expect("GET");
    assert!(
        !list.text().await.expect("body").contains("sneaky"),
        "nothing was created"
    );

    let made = c
        .post(format!("{}/settings/tokens", server.url))
        .form(&[("name", "laptop"), ("csrf", &csrf)])
        .send()
        .await
        .expect("POST")
        .text()
        .await
        .expect("body");
    let token = regex::Regex::new(r"nbx_[A-Za-z0-9_-]{40,}")
        .expect("re")
        .find(&made)
        .expect("token shown once")
        .as_str()
        .to_string();
    let http = reqwest::Client::new();
    let me = http
        .get(format!("{}/api/v1/me", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(me.status(), 200);
    // Shown once only.
    let again = c
        .get(format!("{}/settings/tokens", server.url))
        .send()
        .await
        .expect("GET");
    let again = again.text().await.expect("body");
    assert!(again.contains("laptop") && !again.contains(&token));

    let id = regex::Regex::new(r"/settings/tokens/(\d+)/revoke")
        .expect("re")
        .captures(&again)
        .expect("revoke form")[1]
        .to_string();
    let r = c
        .post(format!("{}/settings/tokens/{id}/revoke", server.url))
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 303);
    let me = http
        .get(format!("{}/api/v1/me", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(me.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_next_goes_only_to_local_paths() {
    let server = TestServer::start().await;
    add_user(&server, "dave", "dave-password", false);
    for (next, expected) in [
        ("/settings/tokens", "/settings/tokens"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ] {
        let c = client();
        let page = c
            .get(format!("{}/login", server.url))
            .query(&[("next", next)])
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        let csrf = csrf_from(&page);
        let r = c
            .post(format!("{}/login", server.url))
            .form(&[
                ("username", "dave"),
                ("password", "dave-password"),
                ("csrf", &csrf),
                ("next", next),
            ])
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], expected, "next={next}");
    }
    // A page that needs login sends the browser to /login?next=...
    let r = client()
        .get(format!("{}/settings/tokens", server.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/settings/tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_manages_users_and_members_cannot() {
    let server = TestServer::start().await;
    add_user(&server, "erin", "erin-password", false);
    let admin = client();
    let csrf = login_ok(&admin, &server.url, "admin", &server.admin_password()).await;

    // Add a user through the admin page.
    let r = admin
        .post(format!("{}/admin/users", server.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "frank"),
            ("password", "frank-password"),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 303);
    login_ok(&client(), &server.url, "frank", "frank-password").await;

    // Bad input re-renders the form with a message.
    let r = admin
        .post(format!("{}/admin/users", server.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "Bad Name"),
            ("password", "long-enough"),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("not a valid username"));

    let page = admin
        .get(format!("{}/admin/users", server.url))
        .send()
        .await
        .expect("GET");
    let page = page.text().await.expect("body");
    let frank_id = regex::Regex::new(r#"/admin/users/(\d+)/password"#)
        .expect("re")
        .captures_iter(&page)
        .map(|c| c[1].to_string())
        .max_by_key(|id| id.parse::<i64>().unwrap_or(0))
        .expect("user rows");

    // Disable frank: his session ends and he cannot log in.
    let frank = client();
    login_ok(&frank, &server.url, "frank", "frank-password").await;
    let r = admin
        .post(format!("{}/admin/users/{frank_id}/disabled", server.url))
        .form(&[("csrf", csrf.as_str()), ("value", "on")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 303);
    assert_eq!(
        frank
            .get(format!("{}/", server.url))
            .send()
            .await
            .expect("GET")
            .status(),
        303
    );
    assert_ne!(
        login(&client(), &server.url, "frank", "frank-password")
            .await
            .status(),
        303
    );

    // Reset erin's password; grant admin.
    let users = server.cli(&["user", "list"], None);
    assert!(
        users.stdout.contains("erin") && users.stdout.contains("disabled"),
        "{}",
        users.stdout
    );

    // Members get 404 on admin pages.
    let erin = client();
    let erin_csrf = login_ok(&erin, &server.url, "erin", "erin-password").await;
    assert_eq!(
        erin.get(format!("{}/admin/users", server.url))
            .send()
            .await
            .expect("GET")
            .status(),
        404
    );
    let r = erin
        .post(format!("{}/admin/users", server.url))
        .form(&[
            ("csrf", erin_csrf.as_str()),
            ("username", "mallory"),
            ("password", "mallory-pass"),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_passwd_changes_password() {
    let server = TestServer::start().await;
    add_user(&server, "gina", "gina-password", false);
    let out = server.cli(
        &["user", "passwd", "gina", "--password-stdin"],
        Some("gina-new-password\n"),
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        login(&client(), &server.url, "gina", "gina-password")
            .await
            .status(),
        401
    );
    assert_eq!(
        login(&client(), &server.url, "gina", "gina-new-password")
            .await
            .status(),
        303
    );
    let out = server.cli(
        &["user", "passwd", "nobody", "--password-stdin"],
        Some("whatever-pass\n"),
    );
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no user named 'nobody'"),
        "{}",
        out.stderr
    );
    let out = server.cli(
        &["user", "add", "gina", "--password-stdin"],
        Some("another-pass\n"),
    );
    assert!(
        !out.status.success() && out.stderr.contains("taken"),
        "{}",
        out.stderr
    );
}

#[test]
fn misspelt_config_key_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[notebooks]\nready_timout = \"60s\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ready_timout"), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(
        !dir.path().join("notebox-data").exists(),
        "nothing was started"
    );

    // A bad value names its key too; so does NOTEBOX_CONFIG.
    std::fs::write(&path, "[gpu]\nbackend = \"cuda\"\n").expect("write");
    let out = std::process::Command::new(BIN)
        .arg("serve")
        .env("NOTEBOX_CONFIG", &path)
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cuda") && stderr.contains("backend"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_database_is_reopened_and_newer_one_refused() {
    let server = TestServer::start().await;
    add_user(&server, "hana", "hana-password", false);
    let password = server.admin_password();
    let (dir, config) = server.stop().await;

    // Restart on the same data: accounts are there, no second admin is made.
    let server = TestServer::start_in(dir, config).await;
    login_ok(&client(), &server.url, "hana", "hana-password").await;
    assert_eq!(server.admin_password(), password);
    let health: serde_json::Value = reqwest::get(format!("{}/healthz", server.url))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let version = health["schema_version"].as_i64().expect("schema version");
    let db_path = server.data_dir().join("notebox.db");
    let (dir, config) = server.stop().await;

    // A database from a newer notebox is refused with a clear message.
    {
        let conn = rusqlite::Connection::open(&db_path).expect("open");
        conn.pragma_update(None, "user_version", version + 1)
            .expect("bump");
    }
    let out = std::process::Command::new(BIN)
        .arg("serve")
        .env("NOTEBOX_DATA_DIR", &config.data_dir)
        .env("NOTEBOX_LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("newer notebox"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_security_headers_and_static_files_etags() {
    let server = TestServer::start().await;
    let r = reqwest::get(format!("{}/login", server.url))
        .await
        .expect("GET");
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h.contains_key("referrer-policy"));

    let html = r.text().await.expect("body");
    let css = regex::Regex::new(r#"/static/app\.css\?h=[0-9a-f]+"#)
        .expect("re")
        .find(&html)
        .expect("stylesheet link")
        .as_str()
        .to_string();
    let first = reqwest::get(format!("{}{css}", server.url))
        .await
        .expect("GET css");
    assert_eq!(first.status(), 200);
    assert!(first.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/css"));
    assert!(first.headers()["cache-control"]
        .to_str()
        .expect("cc")
        .contains("immutable"));
    let etag = first.headers()["etag"].clone();
    let second = reqwest::Client::new()
        .get(format!("{}{css}", server.url))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("GET css");
    assert_eq!(second.status(), 304);

    let missing = reqwest::get(format!("{}/no/such/page", server.url))
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let api_missing = reqwest::get(format!("{}/api/v1/nothing", server.url))
        .await
        .expect("GET");
    assert_eq!(api_missing.status(), 404);
    let body: serde_json::Value = api_missing.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_writes_with_a_session_need_the_csrf_header() {
    let server = TestServer::start().await;
    add_user(&server, "ivan", "ivan-password", false);
    let c = client();
    let _csrf = login_ok(&c, &server.url, "ivan", "ivan-password").await;
    let me = c
        .get(format!("{}/api/v1/me", server.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(me.status(), 200, "session cookie works for API reads");
    // Logging out ends the session.
    let home = c
        .get(format!("{}/", server.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("b");
    let csrf = csrf_from(&home);
    let r = c
        .post(format!("{}/logout", server.url))
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 303);
    let me = c
        .get(format!("{}/api/v1/me", server.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(me.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_change_their_own_password() {
    let server = TestServer::start().await;
    add_user(&server, "jo", "jo-password-1", false);
    let c = client();
    let csrf = login_ok(&c, &server.url, "jo", "jo-password-1").await;
    let change = |current: &'static str| {
        let (c, url, csrf) = (c.clone(), server.url.clone(), csrf.clone());
        async move {
            c.post(format!("{url}/settings/password"))
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("current", current),
                    ("new", "jo-password-2"),
                    ("confirm", "jo-password-2"),
                ])
                .send()
                .await
                .expect("POST")
        }
    };
    let wrong = change("not-my-password").await;
    assert_eq!(wrong.status(), 400);
    assert!(wrong
        .text()
        .await
        .expect("body")
        .contains("current password is not right"));
    assert_eq!(change("jo-password-1").await.status(), 303);
    assert_eq!(
        c.get(format!("{}/", server.url))
            .send()
            .await
            .expect("GET")
            .status(),
        200,
        "this session stays"
    );
    assert_eq!(
        login(&client(), &server.url, "jo", "jo-password-1")
            .await
            .status(),
        401
    );
    assert_eq!(
        login(&client(), &server.url, "jo", "jo-password-2")
            .await
            .status(),
        303
    );
}

/// Which page forms need the session's CSRF token, and what each refusal looks like: the
/// same before and after the check moved from the handlers into one middleware.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_forms_need_the_session_token_and_nothing_else_changes() {
    let server = TestServer::start().await;
    add_user(&server, "kim", "kim-password-1", false);
    let url = &server.url;
    let c = client();
    let csrf = login_ok(&c, url, "kim", "kim-password-1").await;

    // A page form without the token: 403 with the usual page, and nothing happened.
    let r = c
        .post(format!("{url}/logout"))
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 403);
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("came from another site"));
    assert_eq!(
        c.get(format!("{url}/")).send().await.expect("GET").status(),
        200,
        "still logged in"
    );
    // A body that is not a form: the handler's 400, as before.
    let r = c
        .post(format!("{url}/settings/tokens"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("The form could not be read"));
    // With the token the handler runs and reads the rest of the same form.
    let r = c
        .post(format!("{url}/settings/tokens"))
        .form(&[("csrf", csrf.as_str()), ("name", "laptop")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("body").contains("laptop"));
    // The admin pages do not exist for a member, token or not.
    for token in [csrf.as_str(), "wrong"] {
        let r = c
            .post(format!("{url}/admin/users"))
            .form(&[
                ("csrf", token),
                ("username", "eve"),
                ("password", "eve-password-1"),
            ])
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 404, "token {token}");
    }
    // Without a session a form is sent to the login page, token or not.
    let r = client()
        .post(format!("{url}/notebooks/x/stop"))
        .form(&[("csrf", "x")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 303);
    assert!(r.headers()["location"]
        .to_str()
        .expect("location")
        .starts_with("/login"));
}

/// JSON API writes made with the session cookie need the CSRF header; those made with a
/// token do not, and reads never do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_writes_need_the_csrf_header_unless_made_with_a_token() {
    let server = TestServer::start().await;
    add_user(&server, "kim", "kim-password-1", false);
    let url = &server.url;
    let c = client();
    let csrf = login_ok(&c, url, "kim", "kim-password-1").await;
    let stop = format!("{url}/api/v1/notebooks/nosuch/stop");
    let r = c.post(&stop).send().await.expect("POST");
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "forbidden");
    let r = c
        .post(&stop)
        .header("x-csrf-token", "wrong")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 403);
    let r = c
        .post(&stop)
        .header("x-csrf-token", csrf.as_str())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 404, "past the check: no such notebook");
    assert_eq!(
        c.get(format!("{url}/api/v1/me"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );
    // A token is not something a browser sends by itself: no CSRF header needed.
    let token = token_for(&server, "kim");
    let r = c
        .post(&stop)
        .bearer_auth(&token)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 404);
    // Nor is a token that is wrong: 401, never a CSRF refusal.
    let r = c
        .post(&stop)
        .bearer_auth("nope")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 401);
    // No session, no token: 401.
    let r = client().post(&stop).send().await.expect("POST");
    assert_eq!(r.status(), 401);
}
