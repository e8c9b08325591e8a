//! Issue 14: every notebook on its own origin. With `origin = "ports"` (the default) a
//! running notebook is served on a port of its own, entered through a single-use code,
//! with a cookie for that notebook only; Notebox's own origin serves no notebook page to a
//! browser and refuses requests from notebook origins. `subdomains` routes by `Host`.

use crate::chromium;
use crate::common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use notebox::config::OriginMode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const READY: Duration = Duration::from_secs(90);

/// A server with notebooks on ports of their own (from `ports`: tests that run at the same
/// time use ranges of their own), and two running echo notebooks of alice.
async fn two_echo_notebooks(image: &str, ports: &str) -> (TestServer, Api, String, String) {
    let image = image.to_string();
    let ports = notebox::config::PortRange::parse(ports).expect("port range");
    let server = TestServer::start_with(move |c| {
        echo_config(c, &image);
        c.notebooks.origin = OriginMode::Ports;
        c.notebooks.origin_ports = ports;
    })
    .await;
    add_user(&server, "alice", "alice-password", false);
    let alice = Api::new(&server.url, &token_for(&server, "alice"));
    let a = alice.create_notebook("a").await;
    let b = alice.create_notebook("b").await;
    alice.wait_state(&a, "running", READY).await;
    alice.wait_state(&b, "running", READY).await;
    (server, alice, a, b)
}

/// A notebook's `jupyter_url`, once its port is bound.
async fn jupyter_url(api: &Api, id: &str) -> String {
    wait_for(
        &format!("notebook {id} to have its own URL"),
        Duration::from_secs(10),
        || async {
            let (_, nb) = api.get(&format!("/api/v1/notebooks/{id}")).await;
            nb["jupyter_url"].as_str().map(str::to_string)
        },
    )
    .await
}

/// `http://127.0.0.1:PORT` of a `http://127.0.0.1:PORT/nb/{id}/` URL.
fn origin_of(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    format!("http://{}", rest.split('/').next().unwrap_or(""))
}

/// Sends a request the test expects an answer to.
trait Go {
    async fn go(self) -> reqwest::Response;
    /// The Fetch Metadata a browser adds: which site the request comes from, and how.
    fn fetch_meta(self, site: &str, mode: &str) -> Self;
}

impl Go for reqwest::RequestBuilder {
    async fn go(self) -> reqwest::Response {
        self.send().await.expect("request")
    }

    fn fetch_meta(self, site: &str, mode: &str) -> Self {
        self.header("sec-fetch-site", site)
            .header("sec-fetch-mode", mode)
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `{origin}/nb/{id}/{key}/`: where the entry handshake (`r`, its answer) sent the browser,
/// under the notebook's path key (where the notebook's cookie counts).
fn keyed_base(origin: &str, r: &reqwest::Response) -> String {
    let to = location(r);
    let mut parts = to.trim_start_matches('/').splitn(4, '/');
    let (nb, id, key) = (parts.next(), parts.next(), parts.next());
    assert_eq!(nb, Some("nb"), "{to}");
    let (id, key) = (id.unwrap_or_default(), key.unwrap_or_default());
    assert!(key.starts_with("k-"), "a path key in {to}");
    format!("{origin}/nb/{id}/{key}/")
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

/// Opens the notebook from Notebox as a browser does: `/notebooks/{id}/open` → the code
/// on the notebook's origin → the notebook. Returns (the enter URL, its response).
async fn enter(
    browser: &reqwest::Client,
    main: &str,
    id: &str,
    path: &str,
) -> (String, reqwest::Response) {
    let r = browser
        .get(format!("{main}/notebooks/{id}/open?path={path}"))
        .go()
        .await;
    assert_eq!(
        r.status(),
        303,
        "open: {}",
        r.text().await.unwrap_or_default()
    );
    let to = location(&r);
    assert!(to.contains("/__notebox/enter?code="), "{to}");
    let entered = browser.get(&to).send().await.expect("enter");
    (to, entered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_is_entered_with_a_single_use_code_and_its_cookie_opens_it_alone() {
    let Some(image) = test_image() else { return };
    let (server, alice, a, b) = two_echo_notebooks(&image, "8100-8199").await;
    let main = server.url.clone();
    let url_a = jupyter_url(&alice, &a).await;
    let url_b = jupyter_url(&alice, &b).await;
    let (origin_a, origin_b) = (origin_of(&url_a), origin_of(&url_b));
    assert_eq!(url_a, format!("{origin_a}/nb/{a}/"));
    let port_a: u16 = origin_a
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert!((8100..=8199).contains(&port_a), "{url_a}");
    assert_ne!(origin_a, origin_b, "each notebook has an origin of its own");

    // Tokens keep working on the notebook's URL (VS Code, scripts): header and URL.
    let plain = reqwest::Client::new();
    let seen: serde_json::Value = plain
        .get(format!("{url_a}api/status"))
        .bearer_auth(&alice.token)
        .go()
        .await
        .json()
        .await
        .expect("echo json");
    assert!(
        seen["authorization"]
            .as_str()
            .is_some_and(|a| a.starts_with("token ") && !a.contains("nbx_")),
        "{seen}"
    );
    let r = plain
        .get(format!("{url_a}api/status?token={}", alice.token))
        .go()
        .await;
    assert_eq!(r.status(), 200);
    // ...and a header token still works on Notebox's own origin (no browser sends one).
    assert_eq!(alice.get(&format!("/nb/{a}/api/status")).await.0, 200);

    // A browser logged in to Notebox. Its cookie store, like a browser's, ignores ports:
    // Notebox's session cookie goes to the notebook's port too, where it counts for nothing.
    let browser = client();
    login_ok(&browser, &main, "alice", "alice-password").await;
    let r = browser.get(format!("{url_a}api/status")).go().await;
    assert_eq!(
        r.status(),
        401,
        "Notebox's session is no credential on a notebook's origin"
    );
    let r = browser
        .get(format!("{url_a}lab"))
        .header("accept", "text/html")
        .go()
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("{main}/notebooks/{a}/open?path=lab"));
    // On Notebox's origin a browser gets no notebook: pages go through the handshake,
    // anything else is told where the notebook is.
    let r = browser
        .get(format!("{main}/nb/{a}/lab/tree"))
        .header("accept", "text/html")
        .go()
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("/notebooks/{a}/open?path=lab/tree"));
    let r = browser.get(format!("{main}/nb/{a}/api/status")).go().await;
    assert_eq!(r.status(), 421);
    let r = plain
        .get(format!("{main}/nb/{a}/api/status?token={}", alice.token))
        .go()
        .await;
    assert_eq!(
        r.status(),
        421,
        "a token in the URL is for the notebook's own URL"
    );

    // The handshake: a code on the notebook's origin, exchanged for its cookie.
    let (enter_url, r) = enter(&browser, &main, &a, "api/status").await;
    assert!(
        enter_url.starts_with(&format!("{origin_a}/__notebox/enter?code=")),
        "{enter_url}"
    );
    let code = enter_url.split("code=").nth(1).expect("code");
    assert!(code.len() >= 22, "at least 128 bits: {code}");
    assert_eq!(r.status(), 303);
    // The browser lands under the notebook's path key: a secret segment of this run's base
    // URL, which no page that had this port before can know.
    let landed = location(&r);
    let key = landed
        .strip_prefix(&format!("/nb/{a}/"))
        .and_then(|rest| rest.strip_suffix("/api/status"))
        .unwrap_or_else(|| panic!("landed under the path key: {landed}"));
    assert!(key.starts_with("k-") && key.len() == 34, "{key}");
    let keyed_a = format!("{origin_a}/nb/{a}/{key}/");
    let cookies = set_cookies(&r);
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with(&format!("notebox_nb_{a}=")))
        .unwrap_or_else(|| panic!("the notebook's cookie: {cookies:?}"));
    for attribute in ["HttpOnly", "SameSite=Lax", &format!("Path=/nb/{a}/{key}/")] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    // Without the key the cookie counts for nothing, even when it is sent.
    let grant = cookie.split(';').next().unwrap_or_default().to_string();
    let r = plain
        .get(format!("{url_a}api/status"))
        .header("cookie", grant.clone())
        .go()
        .await;
    assert_eq!(
        r.status(),
        401,
        "the notebook's cookie outside its path key"
    );
    let r = plain
        .get(format!(
            "{origin_a}/nb/{a}/k-00000000000000000000000000000000/api/status"
        ))
        .header("cookie", grant)
        .go()
        .await;
    assert_eq!(r.status(), 401, "the notebook's cookie under a wrong key");
    let seen: serde_json::Value = browser
        .get(format!("{keyed_a}api/status"))
        .go()
        .await
        .json()
        .await
        .expect("echo json");
    let upstream_cookies = seen["cookie"].as_str().unwrap_or_default();
    assert!(
        !upstream_cookies.contains("notebox"),
        "Notebox's cookies reach Jupyter: {upstream_cookies}"
    );
    assert!(seen["authorization"]
        .as_str()
        .is_some_and(|a| a.starts_with("token ")));

    // Single use; bound to its notebook.
    let again = browser.get(&enter_url).send().await.expect("enter again");
    assert_eq!(again.status(), 403, "a code works once");
    let r = browser
        .get(format!("{main}/notebooks/{a}/open?path=lab"))
        .go()
        .await;
    let for_a = location(&r);
    let at_b = for_a.replace(&origin_a, &origin_b);
    let r = browser.get(&at_b).go().await;
    assert_eq!(r.status(), 403, "a's code is refused on b's origin");
    assert_eq!(
        browser.get(&for_a).send().await.expect("enter").status(),
        403,
        "and used up"
    );
    // a's cookie does not open b (the browser sends it to b's port too).
    let r = browser.get(format!("{url_b}api/status")).go().await;
    assert_eq!(r.status(), 401, "a's cookie opens a only");
    // Not a landing path outside the notebook.
    let r = browser
        .get(format!("{main}/notebooks/{a}/open?path=//evil.example/"))
        .go()
        .await;
    assert_eq!(r.status(), 400);

    // Nothing from another origin gets through on the notebook's origin, reads included.
    let with_origin = |origin: &str| {
        browser
            .get(format!("{keyed_a}api/status"))
            .header("origin", origin.to_string())
    };
    assert_eq!(
        with_origin(&origin_a).send().await.expect("GET").status(),
        200
    );
    assert_eq!(with_origin(&main).send().await.expect("GET").status(), 403);
    assert_eq!(
        with_origin(&origin_b).send().await.expect("GET").status(),
        403
    );
    let r = browser
        .get(format!("{keyed_a}hello"))
        .fetch_meta("same-site", "no-cors")
        .go()
        .await;
    assert_eq!(r.status(), 403, "another origin's <script src> is refused");
    let r = browser
        .get(format!("{keyed_a}hello"))
        .fetch_meta("same-site", "navigate")
        .go()
        .await;
    assert_eq!(r.status(), 200, "a link from elsewhere is fine");
    let r = browser
        .get(format!("{keyed_a}hello"))
        .fetch_meta("same-site", "navigate")
        .header("sec-fetch-dest", "iframe")
        .go()
        .await;
    assert_eq!(
        r.status(),
        403,
        "another origin framing the notebook is refused"
    );
    // A page with a token in its URL would show it to the notebook's scripts.
    let r = plain
        .get(format!("{url_a}hello?token={}", alice.token))
        .header("accept", "text/html")
        .go()
        .await;
    assert_eq!(r.status(), 403, "a token in a page's URL");
    // A service worker stays inside the notebook's folder; none is registered at all (it
    // would outlive the notebook and see the next notebook's pages on this port).
    let r = browser.get(format!("{keyed_a}sw.js")).go().await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("service-worker-allowed").is_none(),
        "{:?}",
        r.headers()
    );
    let r = browser
        .get(format!("{keyed_a}sw.js"))
        .header("service-worker", "script")
        .header("sec-fetch-dest", "serviceworker")
        .go()
        .await;
    assert_eq!(r.status(), 403, "a service worker's script");
    // A code brought by another site is refused; sent from elsewhere, `open` lands on
    // JupyterLab's start, not on the sender's path.
    let r = browser
        .get(format!("{main}/notebooks/{a}/open?path=hello"))
        .go()
        .await;
    let r = browser
        .get(location(&r))
        .header("sec-fetch-site", "cross-site")
        .go()
        .await;
    assert_eq!(r.status(), 403, "a code from another site");
    // Sent from elsewhere (a notebook's page, another site) or loaded in a frame, `open`
    // issues no code: the member confirms on Notebox's page, which cuts the window off from
    // its opener.
    for (site, dest) in [
        ("same-site", "document"),
        ("cross-site", "document"),
        ("same-origin", "iframe"),
    ] {
        let r = browser
            .get(format!("{main}/notebooks/{a}/open?path=hello"))
            .fetch_meta(site, "navigate")
            .header("sec-fetch-dest", dest)
            .go()
            .await;
        assert_eq!(r.status(), 200, "{site} {dest}");
        assert_eq!(
            r.headers()
                .get("cross-origin-opener-policy")
                .and_then(|v| v.to_str().ok()),
            Some("same-origin")
        );
        assert_eq!(
            r.headers()
                .get("x-frame-options")
                .and_then(|v| v.to_str().ok()),
            Some("DENY")
        );
        let page = r.text().await.expect("page");
        assert!(
            page.contains("open-confirm") && !page.contains("__notebox/enter"),
            "{page}"
        );
    }
    // The handshake sets no cookie but in a top-level navigation.
    for (mode, dest) in [
        ("navigate", "iframe"),
        ("cors", "empty"),
        ("no-cors", "script"),
    ] {
        let r = browser
            .get(format!("{main}/notebooks/{a}/open?path=hello"))
            .go()
            .await;
        let r = browser
            .get(location(&r))
            .fetch_meta("same-site", mode)
            .header("sec-fetch-dest", dest)
            .go()
            .await;
        assert_eq!(r.status(), 403, "enter as {mode} {dest}");
        assert!(set_cookies(&r).is_empty(), "{:?}", set_cookies(&r));
    }
    // The notebook's origin serves the notebook and nothing of Notebox's.
    for path in [
        "/api/v1/me",
        "/settings",
        "/login",
        &format!("/nb/{b}/api/status"),
    ] {
        let r = browser.get(format!("{origin_a}{path}")).go().await;
        assert_eq!(r.status(), 404, "{path} on a notebook's origin");
    }

    // Notebox refuses whatever a notebook's page sends it, with any credential.
    let r = plain
        .post(format!("{main}/api/v1/notebooks"))
        .bearer_auth(&alice.token)
        .header("origin", origin_a.clone())
        .json(&serde_json::json!({"name": "x", "image": "test", "machine": "cpu"}))
        .go()
        .await;
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "notebook_origin");
    let r = browser
        .get(format!("{main}/api/v1/me"))
        .header("origin", origin_b.clone())
        .go()
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        browser.get(format!("{main}/api/v1/me")).go().await.status(),
        200
    );
    // Nor writes from an opaque origin (a sandboxed frame), nor writes or sub-resource
    // loads from another origin of the site.
    let r = plain
        .post(format!("{main}/login"))
        .header("origin", "null")
        .form(&[
            ("username", "alice"),
            ("password", "alice-password"),
            ("csrf", "x"),
        ])
        .go()
        .await;
    assert_eq!(r.status(), 403, "a login posted from an opaque origin");
    assert!(r.text().await.expect("body").contains("notebook_origin"));
    let r = browser
        .post(format!("{main}/logout"))
        .fetch_meta("same-site", "navigate")
        .form(&[("csrf", "x")])
        .go()
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.expect("body").contains("notebook_origin"));
    let r = browser
        .get(format!("{main}/settings"))
        .fetch_meta("same-site", "no-cors")
        .go()
        .await;
    assert_eq!(r.status(), 403);
    let r = browser
        .get(format!("{main}/settings"))
        .fetch_meta("same-site", "navigate")
        .go()
        .await;
    assert_eq!(r.status(), 200, "a link from a notebook to Notebox is fine");
    // Under TLS (as a reverse proxy says) the login form's cookie is a `__Host-` one.
    let r = plain
        .get(format!("{main}/login"))
        .header("x-forwarded-proto", "https")
        .go()
        .await;
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("__Host-notebox_login_csrf=")
                && c.contains("Secure")
                && !c.contains("Path=/login")),
        "{:?}",
        set_cookies(&r)
    );

    // Cookie tossing: a request that carries Notebox's session cookie twice is refused,
    // and every copy it could have come with is deleted.
    let r = plain
        .get(format!("{main}/settings"))
        .header("cookie", "notebox_session=planted; notebox_session=real")
        .go()
        .await;
    assert_eq!(r.status(), 400);
    let removals = set_cookies(&r);
    for expected in [
        "notebox_session=; Max-Age=0; Path=/",
        "notebox_session=; Max-Age=0; Path=/settings",
        "notebox_session=; Max-Age=0; Path=/; Domain=127.0.0.1",
    ] {
        assert!(
            removals.iter().any(|c| c == expected),
            "{expected} in {removals:?}"
        );
    }
    assert!(r.text().await.expect("body").contains("twice"));
    // A `;` in the path never becomes an attribute of the removals.
    let r = plain
        .get(format!("{main}/x;Max-Age=99999/y"))
        .header("cookie", "notebox_session=a; notebox_session=b")
        .go()
        .await;
    assert_eq!(r.status(), 400);
    assert!(
        set_cookies(&r).iter().all(|c| !c.contains("99999")),
        "{:?}",
        set_cookies(&r)
    );
    let r = plain
        .get(format!("{url_a}api/status"))
        .header("cookie", format!("notebox_nb_{a}=x; notebox_nb_{a}=y"))
        .go()
        .await;
    assert_eq!(r.status(), 400, "on a notebook's origin too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_password_change_end_notebook_cookies_and_a_stop_closes_the_port() {
    let Some(image) = test_image() else { return };
    let (server, alice, a, b) = two_echo_notebooks(&image, "8300-8349").await;
    let main = server.url.clone();
    let url_a = jupyter_url(&alice, &a).await;
    // Both served before `a` stops: a port of alice's that `a` frees is hers, and her
    // notebook still waiting for a port would take it at once (seen on a busy machine:
    // the "closed" port was then `b`'s).
    let url_b = jupyter_url(&alice, &b).await;
    assert_ne!(origin_of(&url_a), origin_of(&url_b));
    let browser = client();
    let csrf = login_ok(&browser, &main, "alice", "alice-password").await;
    let (_, r) = enter(&browser, &main, &a, "hello").await;
    let keyed_a = keyed_base(&origin_of(&url_a), &r);
    let grant = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("notebox_nb_"))
        .expect("grant cookie");
    let grant = grant.split(';').next().expect("pair").to_string();
    assert_eq!(
        browser.get(format!("{keyed_a}hello")).go().await.status(),
        200
    );

    // A WebSocket on the notebook's origin with the notebook's cookie.
    let ws_url = format!("{}echo", keyed_a.replacen("http://", "ws://", 1));
    let mut request = ws_url.as_str().into_client_request().expect("ws request");
    request
        .headers_mut()
        .insert("cookie", grant.parse().expect("header"));
    request
        .headers_mut()
        .insert("origin", origin_of(&url_a).parse().expect("header"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the notebook's WebSocket opens with its cookie");
    socket
        .send(Message::Text("ping".into()))
        .await
        .expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("echo in time")
        .expect("open")
        .expect("frame");
    assert_eq!(echoed, Message::Text("ping".into()));

    // Logging out of Notebox ends the notebook's cookie and closes its WebSocket at once.
    let r = browser
        .post(format!("{main}/logout"))
        .form(&[("csrf", csrf.as_str())])
        .go()
        .await;
    assert_eq!(r.status(), 303);
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the WebSocket outlived the logout");
    let r = reqwest::Client::new()
        .get(format!("{keyed_a}hello"))
        .header("cookie", grant.clone())
        .go()
        .await;
    assert_eq!(
        r.status(),
        401,
        "the notebook's cookie ended with the session"
    );

    // A password change ends them too (also those of the session that changed it).
    let csrf = login_ok(&browser, &main, "alice", "alice-password").await;
    enter(&browser, &main, &a, "hello").await;
    assert_eq!(
        browser.get(format!("{keyed_a}hello")).go().await.status(),
        200
    );
    let r = browser
        .post(format!("{main}/settings/password"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("current", "alice-password"),
            ("new", "alice-password-2"),
            ("confirm", "alice-password-2"),
        ])
        .go()
        .await;
    assert!(
        r.status().is_redirection() || r.status().is_success(),
        "{}",
        r.status()
    );
    assert_eq!(
        browser.get(format!("{main}/api/v1/me")).go().await.status(),
        200,
        "the changing session stays"
    );
    assert_eq!(
        browser.get(format!("{keyed_a}hello")).go().await.status(),
        401,
        "its notebook cookie does not"
    );

    // Stopping the notebook closes its port.
    let (status, _) = alice
        .post(
            &format!("/api/v1/notebooks/{a}/stop"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 202);
    alice.wait_state(&a, "stopped", READY).await;
    let addr = origin_of(&url_a).trim_start_matches("http://").to_string();
    // The port closes when the stop's event reaches the port listeners: moments, but
    // seconds on a 2-core machine busy with the rest of the suite.
    wait_for(
        "the notebook's port to close",
        Duration::from_secs(20),
        || async {
            tokio::net::TcpStream::connect(&addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    let (_, nb) = alice.get(&format!("/api/v1/notebooks/{a}")).await;
    assert!(nb["jupyter_url"].is_null(), "{nb}");

    // Started again, it gets the same port back (VS Code keeps its URL).
    let (status, _) = alice
        .post(
            &format!("/api/v1/notebooks/{a}/start"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 202);
    alice.wait_state(&a, "running", READY).await;
    assert_eq!(jupyter_url(&alice, &a).await, url_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subdomains_serve_each_notebook_by_its_host_alone() {
    let Some(image) = test_image() else { return };
    let image2 = image.clone();
    let server = TestServer::start_with(move |c| {
        echo_config(c, &image2);
        c.notebooks.origin = OriginMode::Subdomains;
        c.notebooks.origin_domain = "nb.lab.test".into();
    })
    .await;
    add_user(&server, "alice", "alice-password", false);
    let alice = Api::new(&server.url, &token_for(&server, "alice"));
    let id = alice.create_notebook("sub").await;
    alice.wait_state(&id, "running", READY).await;
    let (_, nb) = alice.get(&format!("/api/v1/notebooks/{id}")).await;
    assert_eq!(
        nb["jupyter_url"],
        format!("https://{id}.nb.lab.test/nb/{id}/")
    );

    // Names resolved to the test server, as wildcard DNS would.
    let addr: std::net::SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let port = addr.port();
    let nb_host = format!("{id}.nb.lab.test");
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve("lab.test", addr)
        .resolve(&nb_host, addr)
        .build()
        .expect("client");
    let main = format!("http://lab.test:{port}");
    login_ok(&browser, &main, "alice", "alice-password").await;
    let r = browser
        .get(format!("{main}/notebooks/{id}/open?path=hello"))
        .go()
        .await;
    assert_eq!(r.status(), 303);
    let to = location(&r);
    assert!(
        to.starts_with(&format!("https://{nb_host}/__notebox/enter?code=")),
        "{to}"
    );
    // (No TLS here: the same request, over plain HTTP to the test server.)
    let nb_origin = format!("http://{nb_host}:{port}");
    let to = to.replace(&format!("https://{nb_host}"), &nb_origin);
    assert_eq!(
        browser
            .get(format!("{nb_origin}/nb/{id}/hello"))
            .go()
            .await
            .status(),
        401
    );
    let r = browser.get(&to).send().await.expect("enter");
    assert_eq!(r.status(), 303);
    let r = browser.get(format!("{nb_origin}/nb/{id}/hello")).go().await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello\n");
    // The subdomain is that notebook only; Notebox refuses its pages' requests.
    for path in ["/api/v1/me", "/settings", "/"] {
        let r = browser.get(format!("{nb_origin}{path}")).go().await;
        assert_ne!(r.status(), 200, "{path} on the notebook's subdomain");
    }
    let r = browser
        .get(format!("{main}/api/v1/me"))
        .header("origin", format!("https://{nb_host}"))
        .go()
        .await;
    assert_eq!(r.status(), 403);
}

/// What the attack page (served by the notebook itself, on its own origin, with the
/// member's browser logged in to Notebox) tries; it writes what it managed into #report.
const ATTACK_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>attack</title></head><body>
<pre id="report">running</pre>
<script>
const q = new URLSearchParams(location.search);
const MAIN = q.get('main'), OTHER = q.get('other'), KERNEL = q.get('kernel'), PLANT = q.get('plant');
const report = {};
async function attempt(name, f) {
  try { report[name] = await f(); } catch (e) { report[name] = 'failed: ' + e; }
}
function socket(url) {
  return new Promise((resolve) => {
    let ws;
    try { ws = new WebSocket(url); } catch (e) { resolve('failed: ' + e); return; }
    const timer = setTimeout(() => resolve('failed: no answer'), 8000);
    ws.onopen = () => { clearTimeout(timer); ws.close(); resolve('OPENED'); };
    ws.onerror = () => { clearTimeout(timer); resolve('failed: refused'); };
  });
}
(async () => {
  await attempt('read_session_cookie', async () =>
    document.cookie.includes('notebox_session') ? 'READ ' + document.cookie : 'failed: not visible');
  await attempt('api_me', async () => {
    const r = await fetch(MAIN + '/api/v1/me', {credentials: 'include'});
    const t = await r.text();
    return r.ok ? 'READ ' + t : 'failed: ' + r.status;
  });
  await attempt('settings_csrf', async () => {
    const r = await fetch(MAIN + '/settings', {credentials: 'include'});
    const t = await r.text();
    return t.includes('name="csrf"') ? 'READ csrf' : 'failed: ' + r.status;
  });
  await attempt('create_notebook_json', async () => {
    const r = await fetch(MAIN + '/api/v1/notebooks', {method: 'POST', credentials: 'include',
      headers: {'content-type': 'application/json'},
      body: JSON.stringify({name: 'pwned', image: 'test', machine: 'cpu'})});
    return r.ok ? 'CREATED' : 'failed: ' + r.status;
  });
  await attempt('create_notebook_form', async () => {
    await fetch(MAIN + '/notebooks', {method: 'POST', mode: 'no-cors', credentials: 'include',
      body: new URLSearchParams({name: 'pwned-form', image: 'test', machine: 'cpu', csrf: 'x'})});
    return 'sent (the test checks the server)';
  });
  await attempt('create_token', async () => {
    await fetch(MAIN + '/settings/tokens', {method: 'POST', mode: 'no-cors', credentials: 'include',
      body: new URLSearchParams({name: 'pwned', csrf: 'x'})});
    const r = await fetch(MAIN + '/api/v1/me', {credentials: 'include'});
    return r.ok ? 'READ' : 'failed: ' + r.status;
  });
  await attempt('other_notebook_http', async () => {
    const r = await fetch(OTHER + 'api/contents', {credentials: 'include'});
    const t = await r.text();
    return r.ok ? 'READ ' + t.slice(0, 80) : 'failed: ' + r.status;
  });
  await attempt('other_notebook_via_notebox', async () => {
    const r = await fetch(MAIN + OTHER.replace(/^https?:\/\/[^/]+/, '') + 'api/contents', {credentials: 'include'});
    const t = await r.text();
    return r.ok ? 'READ ' + t.slice(0, 80) : 'failed: ' + r.status;
  });
  await attempt('other_notebook_websocket', () =>
    socket(OTHER.replace(/^http/, 'ws') + 'api/kernels/' + KERNEL + '/channels'));
  await attempt('other_notebook_websocket_via_notebox', () =>
    socket(MAIN.replace(/^http/, 'ws') + OTHER.replace(/^https?:\/\/[^/]+/, '') + 'api/kernels/' + KERNEL + '/channels'));
  await attempt('plant_session_cookie', async () => {
    document.cookie = 'notebox_session=' + PLANT + '; path=/';
    document.cookie = 'notebox_session=' + PLANT + '; path=/settings';
    document.cookie = 'notebox_session=' + PLANT + '; path=/api';
    return 'planted; document.cookie now: ' + document.cookie;
  });
  document.getElementById('report').textContent = JSON.stringify(report);
  document.title = 'done';
})();
</script>
</body></html>
"#;

/// JupyterLab with an extra static directory (`/notebooks/attack`, served at
/// `{base_url}static/`): pages there have the notebook's own origin and no sandbox (unlike
/// /files/), as a package's or an extension's would.
fn serve_attack_folder(c: &mut notebox::config::Config) {
    c.images[0].launcher = notebox::config::Launcher::Command;
    c.images[0].command = [
        "jupyter-lab",
        "--ip=0.0.0.0",
        "--port={port}",
        "--no-browser",
        "--ServerApp.base_url={base_url}",
        "--ServerApp.root_dir={root_dir}",
        "--ServerApp.extra_static_paths=['/notebooks/attack']",
    ]
    .map(String::from)
    .to_vec();
}

/// The acceptance test: a page a notebook serves, on its own origin, with the member's
/// browser logged in to Notebox, fails at everything it tries against the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_served_by_a_notebook_cannot_act_as_its_member() {
    if !chromium::available() {
        return;
    }
    let Some(image) = test_image() else { return };
    let image2 = image.clone();
    let server = TestServer::start_with(move |c| {
        jupyterlab_config(c, &image2);
        c.notebooks.origin = OriginMode::Ports;
        serve_attack_folder(c);
    })
    .await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    add_user(&server, "ada", "ada-password-1", false);
    add_user(&server, "mallory", "mallory-password", false);
    let ada = Api::new(&server.url, &token_for(&server, "ada"));
    let evil = ada.create_notebook("forked from a stranger").await;
    let other = ada.create_notebook("thesis").await;
    ada.wait_state(&evil, "running", READY).await;
    ada.wait_state(&other, "running", READY).await;
    let evil_url = jupyter_url(&ada, &evil).await;
    let other_url = jupyter_url(&ada, &other).await;

    // The page, written into the notebook's files (as a package could), and a kernel in
    // the other notebook for the WebSocket attempt (started with ada's token, as VS Code
    // would).
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{evil_url}api/contents/attack"))
        .bearer_auth(&ada.token)
        .json(&serde_json::json!({"type": "directory"}))
        .go()
        .await;
    assert!(r.status().is_success(), "mkdir attack: {}", r.status());
    let r = http
        .put(format!("{evil_url}api/contents/attack/attack.html"))
        .bearer_auth(&ada.token)
        .json(&serde_json::json!({"type": "file", "format": "text", "content": ATTACK_PAGE}))
        .go()
        .await;
    assert!(r.status().is_success(), "write attack.html: {}", r.status());
    let r = http
        .post(format!("{other_url}api/kernels"))
        .bearer_auth(&ada.token)
        .json(&serde_json::json!({"name": "python3"}))
        .go()
        .await;
    assert_eq!(r.status(), 201);
    let kernel: serde_json::Value = r.json().await.expect("kernel json");
    let kernel = kernel["id"].as_str().expect("kernel id").to_string();

    // Mallory's own, valid session: what the page tries to plant in ada's browser.
    let mallory = client();
    login_ok(&mallory, &server.url, "mallory", "mallory-password").await;
    let plant = {
        let r = login(&client(), &server.url, "mallory", "mallory-password").await;
        set_cookies(&r)
            .into_iter()
            .find_map(|c| {
                c.strip_prefix("notebox_session=")
                    .map(|v| v.split(';').next().unwrap_or("").to_string())
            })
            .expect("mallory's session cookie")
    };
    let ada_pages = client();
    login_ok(&ada_pages, &server.url, "ada", "ada-password-1").await;
    let tokens_page = || async {
        ada_pages
            .get(format!("{}/settings/tokens", server.url))
            .go()
            .await
            .text()
            .await
            .expect("body")
    };
    assert!(!tokens_page().await.contains("pwned"));
    let notebooks_before = ada.get("/api/v1/notebooks").await.1["notebooks"]
        .as_array()
        .map_or(0, Vec::len);

    let b = chromium::Browser::start(&server.url).await;
    b.login("ada", "ada-password-1").await;
    // Ada opens the notebook from Notebox (the handshake), then the page it serves.
    b.goto(&format!("/notebooks/{evil}/open?path=lab")).await;
    b.wait("JupyterLab on the notebook's own origin", READY, || async {
        let url = b.client.current_url().await.ok()?;
        (url.as_str().starts_with(&evil_url)).then_some(())
    })
    .await;
    let attack = format!(
        "{evil_url}static/attack.html?main={}&other={}&kernel={kernel}&plant={plant}",
        server.url, other_url
    );
    b.goto(&attack).await;
    let report = b
        .wait(
            "the attack page's report",
            Duration::from_secs(60),
            || async {
                let t = b.client.title().await.ok()?;
                if t != "done" {
                    return None;
                }
                let text = b
                    .client
                    .find(fantoccini::Locator::Css("#report"))
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                serde_json::from_str::<serde_json::Value>(&text).ok()
            },
        )
        .await;
    eprintln!("attack report: {report:#}");
    b.screenshot("origins-attack-report.png").await;
    let report = report.as_object().expect("report object");
    for attempt in [
        "read_session_cookie",
        "api_me",
        "settings_csrf",
        "create_notebook_json",
        "other_notebook_http",
        "other_notebook_via_notebox",
        "other_notebook_websocket",
        "other_notebook_websocket_via_notebox",
    ] {
        let outcome = report[attempt].as_str().unwrap_or_default();
        assert!(
            outcome.starts_with("failed"),
            "{attempt} succeeded: {outcome}"
        );
    }
    // Nothing was created on the member's behalf.
    let notebooks_after = ada.get("/api/v1/notebooks").await.1["notebooks"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(notebooks_after, notebooks_before, "a notebook was created");
    assert!(
        !tokens_page().await.contains("pwned"),
        "a token was created"
    );

    // The planted cookie: reloading a Notebox page never makes ada mallory. Either the
    // browser refused to plant it, or Notebox refuses the request that carries two.
    b.goto("/settings").await;
    let text = b.page_text().await;
    assert!(
        !text.contains("mallory"),
        "ada's browser acts as mallory:\n{text}"
    );
    let refused = text.contains("twice");
    eprintln!(
        "Notebox page after planting: {}",
        if refused {
            "refused (two session cookies)"
        } else {
            "still ada's"
        }
    );
    if refused {
        // Both copies were deleted: the next page asks to log in, and logging in works.
        b.goto("/").await;
        b.wait_path("/login", Duration::from_secs(10)).await;
        b.login("ada", "ada-password-1").await;
        b.goto("/settings").await;
        assert!(b.page_text().await.contains("ada"));
    } else {
        assert!(text.contains("ada"), "{text}");
    }
    b.close().await;
}

/// What a page left open in the member's browser tries against the notebook now served on
/// its port (`arguments`: Notebox's URL, that notebook's id): read and write its files
/// directly, after the entry handshake in a frame, and after it in a popup (whose window
/// it keeps as `window.__popup`, named `nbpopup`).
const PORT_REUSE_ATTACK: &str = r#"
const [MAIN, NB, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const report = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const files = (name) => '/nb/' + NB + '/api/contents/' + name;
const read = async (tag) => {
  try {
    const r = await fetch(files('secret.txt'), {credentials: 'include'});
    const t = await r.text();
    report[tag] = r.ok ? 'READ ' + t.slice(0, 200) : 'failed: ' + r.status;
  } catch (e) { report[tag] = 'failed: ' + e; }
};
const write = async (tag) => {
  try {
    const r = await fetch(files('planted.txt'), {method: 'PUT', credentials: 'include',
      headers: {'content-type': 'application/json'},
      body: JSON.stringify({type: 'file', format: 'text', content: 'planted'})});
    report[tag] = r.ok ? 'WROTE' : 'failed: ' + r.status;
  } catch (e) { report[tag] = 'failed: ' + e; }
};
(async () => {
  await read('read'); await write('write');
  const f = document.createElement('iframe');
  f.src = MAIN + '/notebooks/' + NB + '/open?path=api/contents/secret.txt';
  document.body.appendChild(f);
  await sleep(3000);
  try { report.frame_url = f.contentWindow.location.href; } catch (e) { report.frame_url = 'failed: ' + e.name; }
  await read('read_after_frame'); await write('write_after_frame');
  const w = window.open(MAIN + '/notebooks/' + NB + '/open?path=api/contents/secret.txt', 'nbpopup');
  window.__popup = w;
  await sleep(3000);
  try { report.popup_url = w.location.href; } catch (e) { report.popup_url = 'failed: ' + e.name; }
  await read('read_after_popup'); await write('write_after_popup');
  done(report);
})();
"#;

/// After the member confirmed the popup's "Open": what the old page can reach of it now.
const PORT_REUSE_AFTER_CONFIRM: &str = r#"
const [NB, done] = [arguments[0], arguments[arguments.length - 1]];
const report = {};
(async () => {
  const w = window.__popup;
  try { report.popup_url = w.location.href; } catch (e) { report.popup_url = 'failed: ' + e.name; }
  try { report.popup_text = w.document.body.innerText.slice(0, 200); } catch (e) { report.popup_text = 'failed: ' + e.name; }
  try {
    const named = window.open('', 'nbpopup');
    report.named_url = named.location.href;
    if (named !== w) named.close();
  } catch (e) { report.named_url = 'failed: ' + e.name; }
  for (const path of ['/nb/' + NB + '/api/contents/secret.txt', '/nb/' + NB + '/lab']) {
    try {
      const r = await fetch(path, {credentials: 'include'});
      const t = await r.text();
      report['fetch ' + path] = r.ok ? 'READ ' + t.slice(0, 200) : 'failed: ' + r.status;
    } catch (e) { report['fetch ' + path] = 'failed: ' + e; }
  }
  done(report);
})();
"#;

/// The port number of a notebook's `jupyter_url`.
fn port_of(url: &str) -> u16 {
    origin_of(url)
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a port in {url}"))
}

/// Writes `secret.txt` into a running notebook with its member's token.
async fn plant_secret(api: &Api, id: &str, secret: &str) {
    let url = jupyter_url(api, id).await;
    let r = reqwest::Client::new()
        .put(format!("{url}api/contents/secret.txt"))
        .bearer_auth(&api.token)
        .json(&serde_json::json!({"type": "file", "format": "text", "content": secret}))
        .go()
        .await;
    assert!(r.status().is_success(), "write secret.txt: {}", r.status());
}

/// Every attempt of an attack report failed: no secret read, nothing written, no path key
/// of `next` learned.
fn assert_all_failed(round: usize, report: &serde_json::Value, secret: &str, next: &str) {
    for (tag, outcome) in report.as_object().into_iter().flatten() {
        let outcome = outcome.as_str().unwrap_or_default();
        assert!(
            !outcome.contains(secret) && !outcome.starts_with("READ") && outcome != "WROTE",
            "round {round}: {tag} succeeded: {outcome}"
        );
        assert!(
            !outcome.contains(&format!("/nb/{next}/k-")),
            "round {round}: {tag} learned the path key: {outcome}"
        );
    }
}

/// Whether a notebook has `planted.txt` (what the attack tried to write).
async fn has_planted(api: &Api, id: &str) -> bool {
    let url = jupyter_url(api, id).await;
    reqwest::Client::new()
        .get(format!("{url}api/contents/planted.txt"))
        .bearer_auth(&api.token)
        .go()
        .await
        .status()
        == 200
}

/// Issue 22, finding 1: a page of notebook A, still open in the member's tab after A was
/// stopped (and, separately, deleted), on a port that now serves the member's next notebook,
/// cannot read or write that notebook's files — not directly, not through the entry
/// handshake in a frame or a popup, not after the member confirms the popup's "Open". And
/// a port that served one member's notebook never serves another member's, even with every
/// port of the range used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_an_earlier_notebook_on_the_port_cannot_reach_the_next_one() {
    if !chromium::available() {
        return;
    }
    let Some(image) = test_image() else { return };
    let image2 = image.clone();
    // Two ports: every port of the range gets used (one is ada's, one bob's).
    let server = TestServer::start_with(move |c| {
        jupyterlab_config(c, &image2);
        c.notebooks.origin = OriginMode::Ports;
        c.notebooks.origin_ports =
            notebox::config::PortRange::parse("8650-8651").expect("port range");
        serve_attack_folder(c);
    })
    .await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    add_user(&server, "ada", "ada-password-1", false);
    add_user(&server, "bob", "bob-password-1", false);
    let ada = Api::new(&server.url, &token_for(&server, "ada"));
    let bob = Api::new(&server.url, &token_for(&server, "bob"));

    let a = ada.create_notebook("forked from a stranger").await;
    ada.wait_state(&a, "running", READY).await;
    let port = port_of(&jupyter_url(&ada, &a).await);
    let x = bob.create_notebook("bob's").await;
    bob.wait_state(&x, "running", READY).await;
    let bob_port = port_of(&jupyter_url(&bob, &x).await);
    assert_ne!(bob_port, port, "bob never gets ada's port");

    // A's page: any page a notebook serves (here from an extra static folder).
    let a_url = jupyter_url(&ada, &a).await;
    let http = reqwest::Client::new();
    for (path, body) in [
        ("attack", serde_json::json!({"type": "directory"})),
        (
            "attack/page.html",
            serde_json::json!({"type": "file", "format": "text",
                               "content": "<!doctype html><title>old page</title><body>old page</body>"}),
        ),
    ] {
        let r = http
            .put(format!("{a_url}api/contents/{path}"))
            .bearer_auth(&ada.token)
            .json(&body)
            .go()
            .await;
        assert!(r.status().is_success(), "write {path}: {}", r.status());
    }

    let b = chromium::Browser::start(&server.url).await;
    b.login("ada", "ada-password-1").await;
    b.goto(&format!("/notebooks/{a}/open?path=static/page.html"))
        .await;
    b.wait("A's page on its own origin", READY, || async {
        let url = b.client.current_url().await.ok()?;
        (url.as_str().starts_with(&a_url) && url.path().ends_with("static/page.html")).then_some(())
    })
    .await;
    let old_tab = b.client.window().await.expect("the old page's window");

    // Each way A can leave the port: stopped, then deleted. Each time ada's next notebook
    // gets the port, with a secret in it.
    for (round, a_leaves) in ["stopped", "deleted"].into_iter().enumerate() {
        match a_leaves {
            "stopped" => {
                let (status, _) = ada
                    .post(
                        &format!("/api/v1/notebooks/{a}/stop"),
                        serde_json::json!({}),
                    )
                    .await;
                assert_eq!(status, 202);
                ada.wait_state(&a, "stopped", READY).await;
            }
            _ => {
                let (status, _) = ada
                    .send(
                        reqwest::Method::DELETE,
                        &format!("/api/v1/notebooks/{a}"),
                        None,
                    )
                    .await;
                assert!(
                    status == 200 || status == 202 || status == 204,
                    "delete: {status}"
                );
            }
        }
        let next = ada.create_notebook(&format!("thesis {round}")).await;
        ada.wait_state(&next, "running", READY).await;
        assert_eq!(
            port_of(&jupyter_url(&ada, &next).await),
            port,
            "ada's next notebook has her port (the range is used up)"
        );
        let secret = format!("the-secret-of-round-{round}");
        plant_secret(&ada, &next, &secret).await;

        b.client
            .switch_to_window(old_tab.clone())
            .await
            .expect("back to the old page");
        let report = b
            .client
            .execute_async(
                PORT_REUSE_ATTACK,
                vec![server.url.clone().into(), next.clone().into()],
            )
            .await
            .expect("the attack runs");
        eprintln!("round {round} ({a_leaves}), before the member confirms: {report:#}");
        assert_all_failed(round, &report, &secret, &next);
        // The member confirms the popup's "Open", as a member might.
        let windows = b.client.windows().await.expect("windows");
        let popup = windows
            .into_iter()
            .find(|w| *w != old_tab)
            .expect("the popup");
        b.client
            .switch_to_window(popup)
            .await
            .expect("to the popup");
        let open = b.wait_css("#open-notebook", Duration::from_secs(10)).await;
        if round == 0 {
            b.screenshot("open-confirm.png").await;
        }
        open.click().await.expect("click Open");
        b.wait("the member's notebook in the popup", READY, || async {
            let url = b.client.current_url().await.ok()?;
            url.path()
                .starts_with(&format!("/nb/{next}/k-"))
                .then_some(())
        })
        .await;
        b.client.close_window().await.expect("close the popup");
        b.client
            .switch_to_window(old_tab.clone())
            .await
            .expect("back to the old page");
        let after = b
            .client
            .execute_async(PORT_REUSE_AFTER_CONFIRM, vec![next.clone().into()])
            .await
            .expect("the attack runs");
        eprintln!("round {round} ({a_leaves}), after the member confirmed: {after:#}");
        assert_all_failed(round, &after, &secret, &next);
        assert!(!has_planted(&ada, &next).await, "a file was planted");
        // Out of the way for the next round (ada's port comes free again).
        let (status, _) = ada
            .post(
                &format!("/api/v1/notebooks/{next}/stop"),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, 202);
        ada.wait_state(&next, "stopped", READY).await;
    }
    b.screenshot("origins-port-reuse.png").await;

    // Bob's next notebook, with ada's port free and his own taken: it waits for a port of
    // his own rather than get hers.
    let y = bob.create_notebook("bob's second").await;
    bob.wait_state(&y, "running", READY).await;
    let (_, nb) = bob.get(&format!("/api/v1/notebooks/{y}")).await;
    assert!(
        nb["jupyter_url"].is_null(),
        "bob's second notebook got a port: {nb}"
    );
    let browser = client();
    login_ok(&browser, &server.url, "bob", "bob-password-1").await;
    let r = browser
        .get(format!("{}/notebooks/{y}/open", server.url))
        .go()
        .await;
    assert_eq!(r.status(), 503);
    let text = r.text().await.expect("body");
    assert!(text.contains("belongs to another member"), "{text}");
    // Once his first notebook stops, the second gets his port — never ada's.
    let (status, _) = bob
        .post(
            &format!("/api/v1/notebooks/{x}/stop"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 202);
    bob.wait_state(&x, "stopped", READY).await;
    assert_eq!(port_of(&jupyter_url(&bob, &y).await), bob_port);
    // And A's page, still open, reaches nothing of bob's running notebook either.
    plant_secret(&bob, &y, "bob's-secret").await;
    let report = b
        .client
        .execute_async(
            PORT_REUSE_ATTACK,
            vec![server.url.clone().into(), y.clone().into()],
        )
        .await
        .expect("the attack runs");
    eprintln!("against bob's notebook: {report:#}");
    assert_all_failed(2, &report, "bob's-secret", &y);
    assert!(
        !has_planted(&bob, &y).await,
        "a file was planted in bob's notebook"
    );
    b.close().await;
}

/// Issue 22, finding 5: one member cannot take every notebook port. A member may run
/// `notebooks.max_running_per_user` notebooks (queued and starting ones count), and is told
/// so clearly beyond it; another member under the limit still gets a port and opens their
/// notebook; the admin page warns when the range is smaller than members × the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_cannot_take_every_port_and_the_admin_is_warned_of_a_small_range() {
    let Some(image) = test_image() else { return };
    let image2 = image.clone();
    // Six ports; admin, bob and alice may run 3 × 2 = 6 notebooks.
    let server = TestServer::start_with(move |c| {
        echo_config(c, &image2);
        c.notebooks.origin = OriginMode::Ports;
        c.notebooks.origin_ports =
            notebox::config::PortRange::parse("8670-8675").expect("port range");
        c.notebooks.max_running_per_user = 2;
    })
    .await;
    add_user(&server, "bob", "bob-password-1", false);
    add_user(&server, "alice", "alice-password", false);
    let bob = Api::new(&server.url, &token_for(&server, "bob"));
    let alice = Api::new(&server.url, &token_for(&server, "alice"));
    let b1 = bob.create_notebook("b1").await;
    let b2 = bob.create_notebook("b2").await;
    let (status, body) = bob
        .post(
            "/api/v1/notebooks",
            serde_json::json!({"name": "b3", "image": "test", "machine": "cpu"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "too_many_running", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("2 at once") && message.contains("Stop one"),
        "{message}"
    );
    // A stopped notebook of his cannot be started past the limit either.
    bob.wait_state(&b1, "running", READY).await;
    bob.wait_state(&b2, "running", READY).await;
    let (status, _) = bob
        .post(
            &format!("/api/v1/notebooks/{b2}/stop"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 202);
    bob.wait_state(&b2, "stopped", READY).await;
    let b3 = bob.create_notebook("b3").await;
    let (status, body) = bob
        .post(
            &format!("/api/v1/notebooks/{b2}/start"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "too_many_running");

    // Alice, under her limit, gets a port and opens her notebook.
    let a1 = alice.create_notebook("a1").await;
    alice.wait_state(&a1, "running", READY).await;
    bob.wait_state(&b3, "running", READY).await;
    let a_url = jupyter_url(&alice, &a1).await;
    let browser = client();
    login_ok(&browser, &server.url, "alice", "alice-password").await;
    let r = browser
        .get(format!("{}/notebooks/{a1}/open", server.url))
        .go()
        .await;
    assert_eq!(r.status(), 303, "alice opens her notebook");
    assert!(
        location(&r).starts_with(&origin_of(&a_url)),
        "{}",
        location(&r)
    );
    for id in [&b1, &b3] {
        assert_ne!(
            port_of(&jupyter_url(&bob, id).await),
            port_of(&a_url),
            "one port, one member"
        );
    }

    // The admin page: roomy now (3 members × 2 ≤ 6 ports), crowded with a fourth member.
    let admin = client();
    login_ok(&admin, &server.url, "admin", &server.admin_password()).await;
    let page = admin
        .get(format!("{}/admin/users", server.url))
        .go()
        .await
        .text()
        .await
        .expect("page");
    assert!(!page.contains("port-warning"), "no warning yet");
    add_user(&server, "carol", "carol-password", false);
    let page = admin
        .get(format!("{}/admin/notebooks", server.url))
        .go()
        .await
        .text()
        .await
        .expect("page");
    assert!(
        page.contains("port-warning") && page.contains("4 × 2 = 8"),
        "the admin is warned: {page}"
    );
}
