//! Issue 25: logging in with the lab's directory, with the real parts: Debian's `slapd`
//! (a directory of its own per test, TLS from a test CA, over ldaps:// and StartTLS), an
//! OpenID Connect provider on loopback (PyPI's oidc-provider-mock, with a hook that forges
//! bad ID tokens from the real flow) driven through its consent page in headless
//! Chromium, real notebooks for the revocation and group-folder tests.

use crate::chromium;
use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::oidc::{oidc_available, OidcProvider};
use common::slapd::{slapd_available, Slapd};
use common::*;
use notebox::Config;
use serde_json::{json, Value};

/// How often the directory is checked again in these tests (`ldap_config`).
const REFRESH: Duration = Duration::from_secs(2);
/// A notebook's start, with room for a loaded machine.
const READY: Duration = Duration::from_secs(120);

fn have_slapd() -> bool {
    require(
        "slapd",
        slapd_available(),
        "Debian's slapd and ldap-utils (tests/run-all.sh installs them)",
    )
}

fn have_oidc() -> bool {
    require(
        "oidc-provider-mock",
        oidc_available(),
        "the OIDC test provider's venv (tests/oidc_provider/setup.sh)",
    )
}

/// A file under `dir` holding `text` (a password file).
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).expect("write secret");
    path
}

/// `[auth.ldap]` for `slapd` (search-then-bind with its service account) and `extra`
/// TOML (more keys, `[[groups]]`…), on top of the test config.
fn ldap_config(dir: &Path, slapd: &Slapd, url: &str, ldap_extra: &str, extra: &str) -> Config {
    let password = secret_file(dir, "ldap-password", &slapd.service_password());
    let text = format!(
        r#"
[auth]
directory_refresh = "2s"

[auth.ldap]
url = "{url}"
ca_file = "{ca}"
bind_dn = "{svc}"
bind_password_file = "{password}"
user_base = "{people}"
{filter}
display_name_attribute = "displayName"
timeout = "3s"
{ldap_extra}

{extra}
"#,
        ca = slapd.ca_file().display(),
        filter = if ldap_extra.contains("user_filter") {
            ""
        } else {
            "user_filter = \"(&(objectClass=inetOrgPerson)(uid={username}))\""
        },
        svc = slapd.service_dn(),
        password = password.display(),
        people = slapd.people_base(),
    );
    config_from(dir, &text)
}

/// A test config (as `test_config`) with the settings of `text` on top.
fn config_from(dir: &Path, text: &str) -> Config {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    let parsed = Config::from_toml(text, &path).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    let mut config = test_config(&dir.join("data"));
    config.auth.ldap = parsed.auth.ldap;
    config.auth.oidc = parsed.auth.oidc;
    config.auth.directory_refresh = parsed.auth.directory_refresh;
    config.groups = parsed.groups;
    config.public_url = parsed.public_url;
    if text.contains("[[machines]]") {
        config.machines = parsed.machines;
        config.gpu = parsed.gpu;
    }
    config.validate().unwrap_or_else(|e| panic!("config: {e}"));
    config
}

async fn me(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let r = client
        .get(format!("{base}/api/v1/me"))
        .send()
        .await
        .expect("GET me");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn page(client: &reqwest::Client, url: &str) -> (u16, String) {
    let r = client.get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Acceptance 1 and 6: an LDAP member logs in through the form and gets the directory's
/// name; a wrong password is refused and counted; injection attempts never widen the
/// search; the directory stopped is said on the login page while a local admin still
/// logs in; a local account's name is never taken over (the admin links it).
#[tokio::test]
async fn ldap_login_refusals_outage_and_links() {
    if !have_slapd() {
        return;
    }
    let mut slapd = Slapd::start();
    slapd.add_user("alice", "Alice Liddell", "alice-pass-1");
    slapd.add_user("carol", "Carol From LDAP", "carol-ldap-1");
    // Entries a widened search would find.
    slapd.add_user("alicia", "Alicia", "alicia-pass-1");
    let dir = tempfile::tempdir().expect("tmp");
    let config = ldap_config(dir.path(), &slapd, &slapd.ldaps_url(), "", "");
    let server = TestServer::start_in(dir, config).await;
    let base = &server.url;

    // Through the form, onto the dashboard, with the directory's display name.
    let c = client();
    let r = login(&c, base, "alice", "alice-pass-1").await;
    assert_eq!(r.status(), 303, "LDAP login");
    assert_eq!(r.headers()["location"], "/");
    let (status, body) = me(&c, base).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["username"], "alice");
    assert_eq!(body["display_name"], "Alice Liddell");
    assert_eq!(body["source"], "ldap");
    let (_, dashboard) = page(&c, &format!("{base}/")).await;
    assert!(dashboard.contains("alice"), "dashboard");

    // Injection attempts and look-alikes: refused (401), never someone else.
    for name in [
        "*",
        "a*",
        "*)(uid=*",
        "alice)(|(uid=*",
        "alice\0",
        "alic\\2a",
        "ａｌｉｃｅ",
        "alice\u{200b}",
        &"a".repeat(5000),
    ] {
        let c = client();
        let r = login(&c, base, name, "alice-pass-1").await;
        assert!(
            r.status() == 401 || r.status() == 429,
            "{name:?} must be refused, got {}",
            r.status()
        );
        assert_eq!(me(&c, base).await.0, 401, "{name:?} made no session");
    }
    // An empty password would be an unauthenticated bind, which LDAP lets "succeed".
    let r = login(&client(), base, "alicia", "").await;
    assert_eq!(r.status(), 401, "empty password refused");

    // A wrong password is refused and counts toward the throttle (the empty one above was
    // the first of five).
    let c = client();
    for i in 0..4 {
        let r = login(&c, base, "alicia", "wrong-password").await;
        assert_eq!(r.status(), 401, "wrong password #{i}");
    }
    let r = login(&c, base, "alicia", "alicia-pass-1").await;
    assert_eq!(
        r.status(),
        429,
        "the sixth attempt is throttled even with the right password"
    );

    // A name given to someone else in the directory is not the old account.
    slapd.add_user("ivy", "Ivy One", "ivy-pass-1");
    let c = client();
    assert_eq!(login(&c, base, "ivy", "ivy-pass-1").await.status(), 303);
    slapd.delete_user("ivy");
    slapd.add_user("ivy", "Ivy Two", "ivy-pass-2");
    let r = login(&client(), base, "ivy", "ivy-pass-2").await;
    assert_eq!(r.status(), 409, "a new entry with the old name");

    // A local account with a directory member's name is not taken over.
    add_user(&server, "carol", "carol-local-1", false);
    let r = login(&client(), base, "carol", "carol-ldap-1").await;
    assert_eq!(r.status(), 409, "name taken");
    let text = r.text().await.expect("page");
    assert!(text.contains("already exists"), "{text}");
    let c = client();
    login_ok(&c, base, "carol", "carol-local-1").await; // the local password still works
    let admin = client();
    let admin_csrf = login_ok(&admin, base, "admin", &server.admin_password()).await;
    let (_, users) = page(&admin, &format!("{base}/admin/users")).await;
    assert!(
        users.contains("id=\"link-requests\""),
        "the admin sees the request"
    );
    let (_, directory) = page(&admin, &format!("{base}/admin/directory")).await;
    assert!(directory.contains(&slapd.user_dn("carol")), "{directory}");
    let entry = regex::Regex::new(r#"value="carol"><input type="hidden" name="source" value="ldap"><input type="hidden" name="external_id" value="([^"]+)""#)
        .expect("regex")
        .captures(&directory)
        .map(|c| c[1].to_string())
        .expect("the request's entry id on the page");
    assert!(entry.starts_with("uuid:"), "tied to the entryUUID: {entry}");
    let r = admin
        .post(format!("{base}/admin/directory/links"))
        .form(&[
            ("csrf", admin_csrf.as_str()),
            ("username", "carol"),
            ("source", "ldap"),
            ("external_id", entry.as_str()),
            ("action", "link"),
        ])
        .send()
        .await
        .expect("link");
    assert_eq!(r.status(), 303);
    assert_eq!(
        me(&c, base).await.0,
        401,
        "linking ended carol's local session"
    );
    assert_eq!(
        login(&client(), base, "carol", "carol-local-1")
            .await
            .status(),
        401
    );
    let c = client();
    assert_eq!(login(&c, base, "carol", "carol-ldap-1").await.status(), 303);
    assert_eq!(me(&c, base).await.1["display_name"], "Carol From LDAP");

    // The admin's "test a login".
    let (status, tested) = page(&admin, &format!("{base}/admin/directory?test=alice")).await;
    assert_eq!(status, 200);
    assert!(tested.contains("id=\"test-result\""), "{tested}");
    assert!(tested.contains(&slapd.user_dn("alice")), "{tested}");

    // The directory stops: the login page says so; a local admin still logs in; the
    // failed attempts do not lock the member out.
    slapd.stop();
    let c = client();
    for _ in 0..6 {
        let r = login(&c, base, "alice", "alice-pass-1").await;
        assert_eq!(r.status(), 503, "directory down");
        let text = r.text().await.expect("page");
        assert!(text.contains("cannot reach the lab directory"), "{text}");
    }
    let (_, form) = page(&client(), &format!("{base}/login")).await;
    assert!(form.contains("cannot reach the lab directory"), "{form}");
    login_ok(&client(), base, "admin", &server.admin_password()).await;
    slapd.restart();
    let c = client();
    assert_eq!(
        login(&c, base, "alice", "alice-pass-1").await.status(),
        303,
        "back"
    );
    let (_, form) = page(&client(), &format!("{base}/login")).await;
    assert!(
        !form.contains("cannot reach"),
        "the warning goes once it answers"
    );

    // A directory that hangs (slapd frozen: connections accepted, never answered) holds
    // its logins up to the timeout, but not the local ones: 24 directory logins at once,
    // and the local admin still logs in at once.
    let conf = slapd.ca_file().with_file_name("slapd.conf");
    let signal = |sig: &str| {
        let ok = std::process::Command::new("pkill")
            .args([sig, "-f", &conf.display().to_string()])
            .status()
            .expect("pkill")
            .success();
        assert!(ok, "pkill {sig} slapd");
    };
    signal("-STOP");
    let hanging: Vec<_> = (0..24)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                login(&client(), &base, "alice", "alice-pass-1")
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let admin_login = login(&client(), base, "admin", &server.admin_password()).await;
    let took = started.elapsed();
    signal("-CONT");
    assert_eq!(admin_login.status(), 303, "the local admin logs in");
    assert!(
        took < Duration::from_secs(2),
        "the local login waited {took:?}"
    );
    let mut statuses = Vec::new();
    for h in hanging {
        statuses.push(h.await.expect("join"));
    }
    assert!(
        statuses.iter().all(|s| [303, 429, 503].contains(s)),
        "directory logins while it hung: {statuses:?}"
    );
    eprintln!(
        "local admin login while the directory hung: {took:?}; directory logins: {statuses:?}"
    );
}

/// StartTLS on ldap://, and a direct bind from a DN template: the member logs in; a
/// plain bind would have been refused by this slapd (it requires TLS for binds).
#[tokio::test]
async fn ldap_starttls_and_a_bind_dn_template() {
    if !have_slapd() {
        return;
    }
    let slapd = Slapd::start();
    slapd.add_user("dave", "Dave", "dave-pass-1");
    let dir = tempfile::tempdir().expect("tmp");
    let template = format!(
        "bind_dn_template = \"uid={{username}},{}\"\nstarttls = true\n\
         user_filter = \"(&(uid={{username}})(!(description=disabled)))\"",
        slapd.people_base()
    );
    let config = ldap_config(dir.path(), &slapd, &slapd.ldap_url(), &template, "");
    let server = TestServer::start_in(dir, config).await;
    let c = client();
    assert_eq!(
        login(&c, &server.url, "dave", "dave-pass-1").await.status(),
        303
    );
    assert_eq!(me(&c, &server.url).await.1["display_name"], "Dave");
    assert_eq!(
        login(&client(), &server.url, "dave", "nope-nope")
            .await
            .status(),
        401
    );
    assert_eq!(
        login(&client(), &server.url, "*", "dave-pass-1")
            .await
            .status(),
        401
    );
    // With a DN template the entry still has to pass user_filter (how a directory's own
    // "disabled" mark is honoured); the scheduled check then disables the account too.
    slapd.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: description\ndescription: disabled\n",
        slapd.user_dn("dave")
    ));
    assert_eq!(
        login(&client(), &server.url, "dave", "dave-pass-1")
            .await
            .status(),
        401
    );
    wait_for(
        "the check to end dave's session",
        Duration::from_secs(15),
        || async { (me(&c, &server.url).await.0 == 401).then_some(()) },
    )
    .await;
}

const GROUPS: &str = r#"
[gpu]
backend = "simulated"
[[gpu.simulated]]
uuid = "GPU-00000000-0000-0000-0000-000000000001"
name = "Sim"
memory_mib = 1024
[[gpu.simulated]]
uuid = "GPU-00000000-0000-0000-0000-000000000002"
name = "Sim"
memory_mib = 1024

[[machines]]
id = "cpu"
name = "CPU"
cpus = 1.0
memory_mib = 1024
[[machines]]
id = "gpu1"
name = "One GPU"
cpus = 1.0
memory_mib = 1024
gpus = 1

[[groups]]
id = "students"
directory = ["students"]
machines = ["cpu"]
max_gpus = 0
gpu_hours_budget = 5

[[groups]]
id = "phd"
directory = ["cn=phd,ou=groups,dc=lab,dc=example"]
machines = ["cpu", "gpu1"]
max_gpus = 2
gpu_hours_budget = 100
"#;

/// Acceptance 3: a member of `students` sees only the CPU machine types and gets 403 with
/// the reason asking for a GPU type by API; moved to `phd` in the directory, the next
/// check gives them the GPU types. Their account page explains where each limit comes
/// from.
#[tokio::test]
async fn group_policy_follows_the_directory() {
    if !have_slapd() {
        return;
    }
    let slapd = Slapd::start();
    slapd.add_user("erin", "Erin", "erin-pass-1");
    slapd.add_to_group("students", "erin");
    let dir = tempfile::tempdir().expect("tmp");
    let config = ldap_config(dir.path(), &slapd, &slapd.ldaps_url(), "", GROUPS);
    let server = TestServer::start_in(dir, config).await;
    let base = &server.url;
    let c = client();
    login_ok(&c, base, "erin", "erin-pass-1").await;
    let token = token_for(&server, "erin");
    let api = Api::new(base, &token);

    let (_, machines) = api.get("/api/v1/machines").await;
    let ids: Vec<&str> = machines["machines"]
        .as_array()
        .expect("machines")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["cpu"], "students see only the CPU type");
    let (status, body) = api
        .post(
            "/api/v1/notebooks",
            json!({"name": "big", "image": "scipy", "machine": "gpu1"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("group students") && message.contains("cpu"),
        "{message}"
    );
    let (_, me) = api.get("/api/v1/me").await;
    assert_eq!(me["groups"], json!(["students"]));
    assert_eq!(me["policy"]["max_gpus"], 0);
    let (_, account) = page(&c, &format!("{base}/settings")).await;
    assert!(
        account.contains("GPU limit 0, from group students"),
        "{account}"
    );
    let (_, new_form) = page(&c, &format!("{base}/notebooks/new")).await;
    assert!(!new_form.contains("One GPU"), "the form offers no GPU type");

    // Moved to phd in the directory: the next check changes it, no new login needed.
    slapd.remove_from_group("students", "erin");
    slapd.add_to_group("phd", "erin");
    let started = Instant::now();
    let me = wait_for("the phd policy", Duration::from_secs(15), || async {
        let (_, me) = api.get("/api/v1/me").await;
        (me["groups"] == json!(["phd"])).then_some(me)
    })
    .await;
    eprintln!(
        "policy changed {:?} after the directory did",
        started.elapsed()
    );
    assert_eq!(me["policy"]["max_gpus"], 2);
    assert_eq!(me["policy"]["from"]["max_gpus"], "group phd");
    let (_, machines) = api.get("/api/v1/machines").await;
    assert_eq!(machines["machines"].as_array().map(Vec::len), Some(2));
    let (_, account) = page(&c, &format!("{base}/settings")).await;
    assert!(account.contains("GPU limit 2, from group phd"), "{account}");

    // The admin's view: what would erin get, and the groups.
    if require(
        "chromium",
        chromium::available(),
        "Debian's chromium and chromium-driver",
    ) {
        let browser = chromium::Browser::start(base).await;
        browser.login("admin", &server.admin_password()).await;
        browser.goto("/admin/directory?test=erin").await;
        browser
            .wait_page_text("GPU limit 2, from group phd", Duration::from_secs(10))
            .await;
        browser.screenshot("admin-directory.png").await;
        browser.goto("/admin/users").await;
        browser
            .wait_page_text("LDAP", Duration::from_secs(10))
            .await;
        browser.screenshot("admin-users-directory.png").await;
        browser.close().await;
    }
}

/// `[[auth.oidc]]` for `provider`, its client secret in a file, groups mapped.
fn oidc_config(dir: &Path, provider: &OidcProvider, extra: &str) -> Config {
    let secret = secret_file(dir, "oidc-secret", "notebox-client-secret");
    let text = format!(
        r#"
[[auth.oidc]]
id = "lab"
name = "Lab SSO"
issuer = "{issuer}"
client_id = "notebox"
client_secret_file = "{secret}"
scopes = ["openid", "profile", "email"]
allowed_groups = ["lab", "phd"]

[[groups]]
id = "phd"
directory = ["phd"]
max_gpus = 2
{extra}
"#,
        issuer = provider.issuer(),
        secret = secret.display(),
    );
    config_from(dir, &text)
}

/// Starts a sign-in with `c` (a browser-like client): the provider's authorization URL.
async fn begin_signin(c: &reqwest::Client, base: &str) -> String {
    let r = c
        .get(format!("{base}/login/oidc/lab"))
        .send()
        .await
        .expect("GET /login/oidc/lab");
    assert_eq!(r.status(), 303, "the sign-in starts with a redirect");
    let to = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    for part in [
        "code_challenge=",
        "code_challenge_method=S256",
        "state=",
        "nonce=",
    ] {
        assert!(to.contains(part), "{part} in {to}");
    }
    to
}

/// Acceptance 2, the refusals: the real flow, with the provider made to issue a token
/// with the wrong audience, an expired one, one with the wrong nonce, issuer or key, an
/// HS256 or unsigned one; a `state` used twice; a callback from another browser. Each is
/// refused with a message and no session.
#[tokio::test]
async fn oidc_forged_tokens_and_replays_are_refused() {
    if !have_oidc() {
        return;
    }
    let provider = OidcProvider::start();
    provider
        .put_user(
            "sub-frank",
            json!({"preferred_username": "frank", "name": "Frank", "groups": ["lab"]}),
        )
        .await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = oidc_config(dir.path(), &provider, "");
    let server = TestServer::start_in(dir, config).await;
    let base = &server.url;

    let forged = [
        (
            "wrong audience",
            json!({"claims": {"aud": ["someone-else"]}}),
        ),
        ("expired", json!({"exp_offset": -120})),
        (
            "wrong nonce",
            json!({"claims": {"nonce": "not-the-one-we-sent"}}),
        ),
        ("no nonce", json!({"claims": {"nonce": null}})),
        (
            "wrong issuer",
            json!({"claims": {"iss": "http://127.0.0.1:9/evil"}}),
        ),
        ("foreign key", json!({"foreign_key": true})),
        ("HS256", json!({"alg": "HS256"})),
        ("unsigned", json!({"alg": "none"})),
    ];
    for (what, tamper) in forged {
        let c = client();
        let authorize = begin_signin(&c, base).await;
        provider.tamper(tamper).await;
        let callback = provider.authorize(&authorize, "sub-frank").await;
        let (status, text) = page(&c, &callback).await;
        assert_eq!(status, 400, "{what}: refused\n{text}");
        assert!(text.contains("Sign-in refused"), "{what}: {text}");
        eprintln!("{what}: {}", alert_of(&text));
        assert_eq!(me(&c, base).await.0, 401, "{what}: no session");
    }

    // The real thing works, once.
    let c = client();
    let authorize = begin_signin(&c, base).await;
    let callback = provider.authorize(&authorize, "sub-frank").await;
    let r = c.get(&callback).send().await.expect("callback");
    assert_eq!(r.status(), 303, "signed in");
    let (_, body) = me(&c, base).await;
    assert_eq!(body["username"], "frank");
    assert_eq!(body["source"], "oidc:lab");
    // Replayed: the same state (and code) again.
    let again = client();
    let (status, text) = page(&again, &callback).await;
    assert_eq!(status, 400, "replayed state\n{text}");
    assert!(text.contains("expired or was already used"), "{text}");
    assert_eq!(me(&again, base).await.0, 401);

    // A sign-in started in one browser cannot be finished in another (login CSRF).
    let victim = client();
    let authorize = begin_signin(&client(), base).await;
    let callback = provider.authorize(&authorize, "sub-frank").await;
    let (status, _) = page(&victim, &callback).await;
    assert_eq!(status, 400, "another browser's sign-in");
    assert_eq!(me(&victim, base).await.0, 401);

    // The member denies at the provider: said on the login page.
    let c = client();
    let authorize = begin_signin(&c, base).await;
    let callback = provider.deny(&authorize).await;
    let (status, text) = page(&c, &callback).await;
    assert_eq!(status, 400);
    assert!(text.contains("Lab SSO did not sign you in"), "{text}");

    // Someone outside the allowed groups is refused.
    provider
        .put_user(
            "sub-gina",
            json!({"preferred_username": "gina", "groups": ["visitors"]}),
        )
        .await;
    let c = client();
    let authorize = begin_signin(&c, base).await;
    let callback = provider.authorize(&authorize, "sub-gina").await;
    let (status, text) = page(&c, &callback).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("not in a group allowed"), "{text}");

    // Another subject claiming frank's username is refused (no take-over) and shown to
    // the admin.
    provider
        .put_user(
            "sub-impostor",
            json!({"preferred_username": "Frank", "groups": ["lab"]}),
        )
        .await;
    let c = client();
    let authorize = begin_signin(&c, base).await;
    let callback = provider.authorize(&authorize, "sub-impostor").await;
    let (status, text) = page(&c, &callback).await;
    assert_eq!(status, 409, "{text}");
    assert_eq!(me(&c, base).await.0, 401);

    // A member logged in here is never replaced by a sign-in someone else started.
    provider
        .put_user(
            "sub-hal",
            json!({"preferred_username": "hal", "groups": ["lab"]}),
        )
        .await;
    let frank = client();
    let authorize = begin_signin(&frank, base).await;
    let callback = provider.authorize(&authorize, "sub-frank").await;
    assert_eq!(frank.get(&callback).send().await.expect("cb").status(), 303);
    let authorize = begin_signin(&frank, base).await;
    let callback = provider.authorize(&authorize, "sub-hal").await;
    let (status, text) = page(&frank, &callback).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("you are logged in here as frank"), "{text}");
    assert_eq!(me(&frank, base).await.1["username"], "frank");

    // Sign-ins started and never finished: a few per address, each a small entry.
    let started = Instant::now();
    let mut refused = None;
    for i in 0..200 {
        let r = client()
            .get(format!("{base}/login/oidc/lab"))
            .send()
            .await
            .expect("begin");
        if r.status() != 303 {
            assert_eq!(r.status(), 400);
            let text = r.text().await.unwrap_or_default();
            assert!(
                text.contains("too many sign-ins were started from your address"),
                "{text}"
            );
            refused = Some(i);
            break;
        }
    }
    let refused = refused.expect("the address's sign-ins are bounded");
    assert!(refused <= 20, "refused after {refused}");
    eprintln!(
        "sign-ins from one address: refused after {refused}, in {:?}",
        started.elapsed()
    );
    let r = client()
        .get(format!("{base}/login/oidc/nope"))
        .send()
        .await
        .expect("unknown");
    assert_eq!(r.status(), 400, "an unknown provider");
}

/// Acceptance 2, the happy path: "Sign in with Lab SSO" in Chromium, the provider's own
/// consent page, back on the dashboard; the groups claim maps to a Notebox group; a
/// personal access token keeps working for the account; logging out offers the
/// provider's end-session.
#[tokio::test]
async fn oidc_sign_in_in_chromium() {
    if !have_oidc()
        || !require(
            "chromium",
            chromium::available(),
            "Debian's chromium and chromium-driver",
        )
    {
        return;
    }
    let provider = OidcProvider::start();
    provider
        .put_user(
            "sub-carol",
            json!({"preferred_username": "carol", "name": "Carol Danvers", "email": "carol@lab.example", "groups": ["phd", "lab"]}),
        )
        .await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = oidc_config(dir.path(), &provider, "");
    let server = TestServer::start_in(dir, config).await;
    let browser = chromium::Browser::start(&server.url).await;
    browser.goto("/login").await;
    browser
        .wait_page_text("Sign in with Lab SSO", Duration::from_secs(10))
        .await;
    browser.screenshot("login-sso.png").await;
    browser.click("Sign in with Lab SSO").await;
    browser.fill("input[name=sub]", "sub-carol").await;
    browser.click("Authorize").await;
    browser
        .wait("back on the dashboard", Duration::from_secs(20), || async {
            let url = browser.client.current_url().await.ok()?;
            (url.port() == reqwest::Url::parse(&server.url).ok()?.port() && url.path() == "/")
                .then_some(())
        })
        .await;
    browser.goto("/settings").await;
    browser
        .wait_page_text("GPU limit 2, from group phd", Duration::from_secs(10))
        .await;
    let text = browser.page_text().await;
    assert!(
        text.contains("Carol Danvers") && text.contains("Lab SSO"),
        "{text}"
    );
    browser.screenshot("settings-account-sso.png").await;

    // Tokens work for directory accounts (VS Code, scripts).
    let token = token_for(&server, "carol");
    let (status, me) = Api::new(&server.url, &token).get("/api/v1/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["groups"], json!(["phd"]));

    // Logging out offers the provider's end-session.
    browser.goto("/").await;
    browser.click("Log out").await;
    browser
        .wait_page_text("Sign out of Lab SSO too", Duration::from_secs(10))
        .await;
    let link = browser
        .client
        .find(fantoccini::Locator::LinkText("Sign out of Lab SSO too"))
        .await
        .expect("end-session link");
    let href = link.attr("href").await.expect("href").unwrap_or_default();
    assert!(href.starts_with(&provider.issuer()), "{href}");
    browser.goto("/").await;
    browser.wait_path("/login", Duration::from_secs(10)).await;
    browser.close().await;
}

/// The login page's error message.
fn alert_of(page: &str) -> String {
    page.split_once("role=\"alert\">")
        .and_then(|(_, rest)| rest.split_once("</p>"))
        .map(|(m, _)| m.to_string())
        .unwrap_or_default()
}

/// The test image, or None (skipped, or failed under CI) with why.
fn jupyter_image() -> Option<String> {
    if !require("docker", docker_works(), "the Docker engine") {
        return None;
    }
    let image = test_image();
    if !require("the test image", image.is_some(), "tests/image/build.sh") {
        return None;
    }
    image
}

/// Acceptance 4: a member removed from the allowed LDAP group loses everything within one
/// check: their pages go to the login page, their token gets 401, their proxied kernel
/// WebSocket closes and their notebook stops. The times are printed (the issue's note).
#[tokio::test]
async fn removal_from_the_allowed_group_reaches_sessions_tokens_sockets_and_notebooks() {
    if !have_slapd() {
        return;
    }
    let Some(image) = jupyter_image() else { return };
    let slapd = Slapd::start();
    slapd.add_user("hana", "Hana", "hana-pass-1");
    slapd.add_to_group("lab", "hana");
    let dir = tempfile::tempdir().expect("tmp");
    let allowed = format!("allowed_groups = [\"{}\"]", slapd.group_dn("lab"));
    let mut config = ldap_config(dir.path(), &slapd, &slapd.ldaps_url(), &allowed, "");
    docker_config(&mut config, &image);
    let server = TestServer::start_in(dir, config).await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    let base = &server.url;
    let c = client();
    login_ok(&c, base, "hana", "hana-pass-1").await;
    let token = token_for(&server, "hana");
    let api = Api::new(base, &token);
    let notebook = api.create_notebook("hana's").await;
    api.wait_state(&notebook, "running", READY).await;
    let socket = open_kernel_socket(&api, &notebook).await;

    slapd.remove_from_group("lab", "hana");
    let removed = Instant::now();
    let closed = watch_close(socket, removed);
    let token_refused = wait_for("the token to be refused", REFRESH * 5, || async {
        let (status, _) = api.get("/api/v1/me").await;
        (status == 401).then(|| removed.elapsed())
    })
    .await;
    let r = c.get(format!("{base}/")).send().await.expect("GET /");
    assert_eq!(r.status(), 303, "the session's pages go to the login page");
    assert!(r.headers()["location"]
        .to_str()
        .unwrap_or("")
        .starts_with("/login"));
    let socket_closed = closed
        .await
        .expect("join")
        .expect("the proxied WebSocket closed");
    let stopped = container_stopped(&notebook, removed).await;
    eprintln!(
        "removed from the allowed group (check every {REFRESH:?}): token refused after {token_refused:?}, \
         WebSocket closed after {socket_closed:?}, notebook stopped after {stopped:?}"
    );
    // And a new login is refused with the reason.
    let r = login(&client(), base, "hana", "hana-pass-1").await;
    assert_eq!(r.status(), 403);
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("not in a group allowed"));
    // Back in the group: the next login works again (the directory had disabled them).
    slapd.add_to_group("lab", "hana");
    let c = client();
    assert_eq!(login(&c, base, "hana", "hana-pass-1").await.status(), 303);

    // `notebox user disable` from the shell has the admin page's effect, at once.
    let api = Api::new(base, &token_for(&server, "hana"));
    let (status, _) = api
        .post(&format!("/api/v1/notebooks/{notebook}/start"), json!({}))
        .await;
    assert_eq!(status, 202);
    api.wait_state(&notebook, "running", READY).await;
    let socket = open_kernel_socket(&api, &notebook).await;
    let out = server.cli(&["user", "disable", "hana"], None);
    assert!(out.status.success(), "{}", out.stderr);
    let disabled = Instant::now();
    let closed = watch_close(socket, disabled);
    let token_refused = wait_for(
        "the token to be refused",
        Duration::from_secs(5),
        || async {
            let (status, _) = api.get("/api/v1/me").await;
            (status == 401).then(|| disabled.elapsed())
        },
    )
    .await;
    assert_eq!(me(&c, base).await.0, 401, "the session ended");
    let socket_closed = closed
        .await
        .expect("join")
        .expect("the proxied WebSocket closed");
    let stopped = container_stopped(&notebook, disabled).await;
    eprintln!(
        "notebox user disable: token refused after {token_refused:?}, WebSocket closed after \
         {socket_closed:?}, notebook stopped after {stopped:?}"
    );
    let out = server.cli(&["user", "enable", "hana"], None);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        login(&client(), base, "hana", "hana-pass-1").await.status(),
        303
    );
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long after `since` the socket closed (within 30 s), watched in the background.
fn watch_close(mut socket: Socket, since: Instant) -> tokio::task::JoinHandle<Option<Duration>> {
    tokio::spawn(async move {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
                Err(_) => return None,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                    return Some(since.elapsed())
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    })
}

/// Waits (60 s at most) until no container of the notebook runs: how long after `since`.
async fn container_stopped(notebook: &str, since: Instant) -> Duration {
    wait_for(
        "the notebook's container to stop",
        Duration::from_secs(60),
        || async {
            let running = containers_of_notebook(notebook)
                .iter()
                .any(|c| docker_inspect(c)["State"]["Running"] == true);
            (!running).then(|| since.elapsed())
        },
    )
    .await
}

/// Acceptance 5: a group folder. Two members of `vision` write and read each other's
/// files under /shared/vision; a member of `nlp` does not see it (and sees /shared/nlp,
/// which `vision` members do not).
#[tokio::test]
async fn group_folders_are_shared_within_the_group_only() {
    if !have_slapd() {
        return;
    }
    let Some(image) = jupyter_image() else { return };
    let slapd = Slapd::start();
    for (uid, group) in [("ivan", "vision"), ("jade", "vision"), ("kai", "nlp")] {
        slapd.add_user(uid, uid, &format!("{uid}-pass-1"));
        slapd.add_to_group(group, uid);
    }
    let dir = tempfile::tempdir().expect("tmp");
    let groups = r#"
[[groups]]
id = "vision"
directory = ["vision"]
folder = true
[[groups]]
id = "nlp"
directory = ["nlp"]
folder = true
"#;
    let mut config = ldap_config(dir.path(), &slapd, &slapd.ldaps_url(), "", groups);
    docker_config(&mut config, &image);
    let server = TestServer::start_in(dir, config).await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    let base = &server.url;
    let mut apis = Vec::new();
    for uid in ["ivan", "jade", "kai"] {
        login_ok(&client(), base, uid, &format!("{uid}-pass-1")).await;
        let api = Api::new(base, &token_for(&server, uid));
        let notebook = api.create_notebook(&format!("{uid}'s")).await;
        apis.push((api, notebook));
    }
    for (api, notebook) in &apis {
        api.wait_state(notebook, "running", READY).await;
    }
    let [(ivan, ivan_nb), (jade, jade_nb), (kai, kai_nb)] = &apis[..] else {
        unreachable!()
    };
    let wrote = run_in_kernel(
        ivan,
        ivan_nb,
        "open('/shared/vision/from-ivan.txt', 'w').write('hello from ivan')",
    )
    .await;
    assert_eq!(wrote, "15");
    let read = run_in_kernel(
        jade,
        jade_nb,
        "open('/shared/vision/from-jade.txt', 'w').write('and jade'); open('/shared/vision/from-ivan.txt').read()",
    )
    .await;
    assert_eq!(read, "'hello from ivan'");
    let read = run_in_kernel(ivan, ivan_nb, "open('/shared/vision/from-jade.txt').read()").await;
    assert_eq!(read, "'and jade'");
    let seen = run_in_kernel(
        kai,
        kai_nb,
        "import os; (os.path.exists('/shared/vision'), sorted(os.listdir('/shared')))",
    )
    .await;
    assert_eq!(seen, "(False, ['nlp'])", "nlp does not see vision's folder");
    let seen = run_in_kernel(ivan, ivan_nb, "import os; sorted(os.listdir('/shared'))").await;
    assert_eq!(seen, "['vision']");

    // Taken out of vision in the directory: at the next check jade's notebook, which
    // mounts the folder read-write, stops (a mount cannot leave a running container);
    // started again, it no longer has the folder.
    slapd.remove_from_group("vision", "jade");
    let stopped = jade
        .wait_state(jade_nb, "stopped", Duration::from_secs(60))
        .await;
    let detail = stopped["state_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("no longer in group vision"), "{stopped}");
    let (status, _) = jade
        .post(&format!("/api/v1/notebooks/{jade_nb}/start"), json!({}))
        .await;
    assert_eq!(status, 202);
    jade.wait_state(jade_nb, "running", READY).await;
    let seen = run_in_kernel(jade, jade_nb, "import os; os.path.exists('/shared/vision')").await;
    assert_eq!(seen, "False");
    // ivan's notebook was not touched.
    let (_, nb) = ivan.get(&format!("/api/v1/notebooks/{ivan_nb}")).await;
    assert_eq!(nb["state"], "running");
}

/// Runs `notebox serve --config` on `text`; it must exit with an error: its stderr.
fn serve_fails(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{text}",
        dir.path().join("data").display()
    );
    std::fs::write(&path, &text).expect("config");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("NOTEBOX_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("notebox serve");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "serve must fail on:\n{text}");
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
                .expect("read stderr");
            return err;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("serve kept running with:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Acceptance 6: bad config fails at start, naming the key: an unknown key, a directory
/// that cannot be reached, a bind DN template without {username}, a clear-text URL, an
/// HMAC algorithm, a provider whose discovery fails, a group naming an unknown machine.
#[test]
fn bad_directory_config_fails_at_start_naming_the_key() {
    if !have_slapd() {
        return;
    }
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let password = secret_file(dir.path(), "pw", &slapd.service_password());
    let wrong = secret_file(dir.path(), "wrong-pw", "not-the-password");
    let ldap = |extra: &str| {
        format!(
            "[auth.ldap]\nurl = \"{}\"\nca_file = \"{}\"\nbind_dn = \"{}\"\nbind_password_file = \"{}\"\nuser_base = \"{}\"\n{extra}\n",
            slapd.ldaps_url(),
            slapd.ca_file().display(),
            slapd.service_dn(),
            password.display(),
            slapd.people_base()
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (ldap("user_filterr = \"(uid={username})\""), "user_filterr"),
        (ldap("bind_dn_template = \"uid=x,ou=people,dc=lab,dc=example\""), "auth.ldap.bind_dn_template"),
        (ldap("user_filter = \"(uid=*)\""), "auth.ldap.user_filter"),
        (
            ldap("").replace(&slapd.ldaps_url(), "ldaps://127.0.0.1:1"),
            "auth.ldap.url",
        ),
        (ldap("").replace(&slapd.ldaps_url(), &slapd.ldap_url()), "auth.ldap.url"),
        (ldap("").replace("ldaps://", "http://"), "auth.ldap.url"),
        (
            ldap("").replace(&password.display().to_string(), &wrong.display().to_string()),
            "auth.ldap.bind_dn",
        ),
        (
            "[[auth.oidc]]\nid = \"sso\"\nname = \"SSO\"\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"n\"\n".into(),
            "auth.oidc[0].issuer",
        ),
        (
            "[[auth.oidc]]\nid = \"sso\"\nname = \"SSO\"\nissuer = \"https://sso.example\"\nclient_id = \"n\"\nalgorithms = [\"HS256\"]\n".into(),
            "auth.oidc[0].algorithms",
        ),
        (
            "[[auth.oidc]]\nid = \"sso\"\nname = \"SSO\"\nissuer = \"http://sso.lab.example\"\nclient_id = \"n\"\n".into(),
            "auth.oidc[0].issuer",
        ),
        ("[[groups]]\nid = \"phd\"\nmachines = [\"nope\"]\n".into(), "groups[0].machines"),
        ("[[groups]]\nid = \"phd\"\nfolder_others = \"read\"\n".into(), "groups[0].folder_others"),
        ("public_url = \"https://gpu.lab.example/notebox\"\n".into(), "public_url"),
    ];
    for (text, key) in cases {
        let err = serve_fails(&text);
        assert!(
            err.contains(key),
            "the message names {key}:\n{err}\nconfig:\n{text}"
        );
        eprintln!("{}", err.trim());
    }
}
