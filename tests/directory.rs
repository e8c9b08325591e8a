//! Issue 25: logging in with the lab's directory, with the real parts: Debian's `slapd`
//! (a directory of its own per test, TLS from a test CA, over ldaps:// and StartTLS), an
//! OpenID Connect provider on loopback (PyPI's oidc-provider-mock, with a hook that forges
//! bad ID tokens from the real flow) driven through its consent page in headless
//! Chromium, real notebooks for the revocation and group-folder tests.

mod chromium;
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::oidc::{oidc_available, OidcProvider};
use common::slapd::{slapd_available, Slapd};
use common::*;
use notebox::Config;
use serde_json::{json, Value};

/// How often the directory is checked again in these tests.
const REFRESH: Duration = Duration::from_secs(2);

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
user_filter = "(&(objectClass=inetOrgPerson)(uid={{username}}))"
display_name_attribute = "displayName"
timeout = "3s"
{ldap_extra}

{extra}
"#,
        ca = slapd.ca_file().display(),
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
    let r = admin
        .post(format!("{base}/admin/directory/links"))
        .form(&[
            ("csrf", admin_csrf.as_str()),
            ("username", "carol"),
            ("source", "ldap"),
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
        "bind_dn_template = \"uid={{username}},{}\"\nstarttls = true",
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
}
