//! JupyterLab end to end, in headless Chromium, through the Notebox proxy, with notebooks
//! on origins of their own (`origin = "ports"`, the default): the member logs in through
//! the Notebox form, opens the notebook from Notebox (the entry handshake hands the
//! browser to the notebook's own port), creates a notebook from the launcher, runs
//! `print(6*7)` and sees `42`, then opens a terminal and sees `echo notebox-$((40+2))`
//! answer `notebox-42`. Every asset, API call and WebSocket goes through the proxy with
//! only the notebook's own cookie (and whatever JupyterLab itself adds to its requests). Screenshots: jupyterlab-notebook.png and
//! jupyterlab-terminal.png in the kit's screenshot folder.
//!
//! When a step times out, the failure shows the page's text, every fetch/XHR/WebSocket of
//! the page with its status (and the body of error answers), Jupyter's log, Notebox's
//! request log and a screenshot (jupyterlab-failure.png).

use crate::chromium;
use crate::common;

use std::time::{Duration, Instant};

use chromium::{Browser, SHORT};
use common::*;
use fantoccini::Locator;

/// How long a fresh notebook may take to reach `running` (Jupyter starting in Docker).
const READY: Duration = Duration::from_secs(90);
/// How long JupyterLab (a big single-page app) may take to show something, on a small
/// machine where the kernel or terminal also has to start.
const LAB: Duration = Duration::from_secs(60);

/// WebDriver's Shift and Enter keys (a modifier stays down until the end of the keys).
const SHIFT_ENTER: &str = "\u{E008}\u{E007}";
const ENTER: &str = "\u{E007}";

/// Runs `script` in the page; `null` when it throws or the page is changing.
async fn js(b: &Browser, script: &str) -> serde_json::Value {
    b.client
        .execute(script, vec![])
        .await
        .unwrap_or(serde_json::Value::Null)
}

/// Polls `check` until it returns Some; after `timeout`, panics with what helps to find
/// out why: the page's text, the requests that failed, the container's log, a screenshot.
async fn until<T, F, Fut>(b: &Browser, id: &str, what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    if let Some(v) = try_wait_for(timeout, check).await {
        return v;
    }
    let shot = b.screenshot("jupyterlab-failure.png").await;
    let failed = b.failed_requests().await;
    let network = b.network_log().await;
    let log = containers_of_notebook(id)
        .first()
        .map(|c| {
            let out = std::process::Command::new("docker")
                .args(["logs", "--tail", "40", c])
                .output()
                .expect("docker logs");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .unwrap_or_default();
    let text = b.page_text().await;
    panic!(
        "timed out after {timeout:?} waiting for {what}\n\
         page {} shows:\n{text}\n\
         failed requests: {failed:#?}\n\
         the page's requests: {network:#?}\n\
         Jupyter's log:\n{log}\n\
         screenshot: {}",
        b.path().await,
        shot.display()
    )
}

/// Waits until an element matching `css` is displayed (see `until`).
async fn shown(
    b: &Browser,
    id: &str,
    css: &str,
    timeout: Duration,
) -> fantoccini::elements::Element {
    until(b, id, &format!("`{css}` to be shown"), timeout, || {
        b.visible(css)
    })
    .await
}

/// Waits until a displayed element matching `css` has a text containing `text`.
async fn shows(b: &Browser, id: &str, css: &str, text: &str, timeout: Duration) -> String {
    until(
        b,
        id,
        &format!("`{css}` to show {text:?}"),
        timeout,
        || async {
            let el = b.visible(css).await?;
            let t = el.text().await.ok()?;
            t.contains(text).then_some(t)
        },
    )
    .await
}

/// Saves one of the notebook's JupyterLab settings (`raw`: the JSON the settings editor
/// would save) through the proxy, with the member's access token.
async fn lab_setting(api: &Api, id: &str, plugin: &str, raw: &str) {
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            &format!("/nb/{id}/lab/api/settings/{plugin}"),
            Some(serde_json::json!({ "raw": raw })),
        )
        .await;
    assert_eq!(status, 204, "save the JupyterLab setting {plugin}: {body}");
}

/// The member's dashboard, open in `b` while the notebook started, reloads itself once it
/// sees "running" (static/app.js). Opening JupyterLab in that moment races the reload,
/// which won once in the suite (the browser ended on the dashboard, its launcher never
/// shown): the tests wait for the dashboard to show the new state first.
async fn dashboard_settled(b: &Browser, id: &str) {
    b.wait_css(
        &format!("[data-notebook='{id}'][data-state=running]"),
        Duration::from_secs(20),
    )
    .await;
}

/// Clicks the launcher card whose label is `label` (e.g. "Python 3 (ipykernel)",
/// "Terminal"), waiting for it to be shown.
async fn click_launcher_card(b: &Browser, id: &str, label: &str) {
    let xpath = format!(
        "//div[contains(concat(' ', normalize-space(@class), ' '), ' jp-LauncherCard ')]\
         [.//*[contains(@class, 'jp-LauncherCard-label')][normalize-space()='{label}']]"
    );
    let card = until(
        b,
        id,
        &format!("the launcher card {label:?}"),
        LAB,
        || async {
            for el in b.client.find_all(Locator::XPath(&xpath)).await.ok()? {
                if el.is_displayed().await.unwrap_or(false) {
                    return Some(el);
                }
            }
            None
        },
    )
    .await;
    card.click()
        .await
        .unwrap_or_else(|e| panic!("click the launcher card {label:?}: {e}"));
}

/// A new Python notebook from the launcher, once its kernel is connected and idle (the
/// status bar says so only once the kernel's WebSocket is open).
async fn new_python_notebook(b: &Browser, id: &str) {
    click_launcher_card(b, id, "Python 3 (ipykernel)").await;
    shown(b, id, ".jp-NotebookPanel .jp-Cell .cm-content", LAB).await;
    shows(
        b,
        id,
        "#jp-main-statusbar",
        "Python 3 (ipykernel) | Idle",
        LAB,
    )
    .await;
}

/// The text of the terminal as the user sees it: xterm paints on a canvas (WebGL or 2D),
/// so this reads the screen-reader mirror of its rows, or the DOM renderer's rows.
const TERMINAL_TEXT: &str = r#"
    const t = document.querySelector('.jp-Terminal:not(.lm-mod-hidden)') || document;
    const rows = t.querySelector('.xterm-accessibility-tree') || t.querySelector('.xterm-rows');
    return rows ? rows.textContent : null;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_runs_a_cell_and_a_terminal_through_the_proxy() {
    if !chromium::available() {
        return;
    }
    let Some(image) = test_image() else {
        return;
    };
    // Notebox's own log (each proxied request, the proxy's warnings), shown if it fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,notebox=info,notebox::web::middleware=debug",
        ))
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let server = TestServer::start_with(|c| {
        jupyterlab_config(c, &image);
        c.notebooks.origin = notebox::config::OriginMode::Ports;
    })
    .await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    add_user(&server, "ada", "ada-password-1", false);
    let api = Api::new(&server.url, &token_for(&server, "ada"));
    let id = api.create_notebook("lab tour").await;

    // While the container starts: the browser, and the login through the Notebox form.
    let b = Browser::start(&server.url).await;
    b.record_network().await;
    b.login("ada", "ada-password-1").await;
    api.wait_state(&id, "running", READY).await;
    dashboard_settled(&b, &id).await;
    eprintln!("notebook running after {:?}", started.elapsed());

    // Two of the member's JupyterLab settings, saved through the proxy with a personal
    // access token: the terminal's screen-reader mode mirrors its rows (painted on a
    // canvas) in the DOM, where the test reads them; and no "Would you like to get
    // notified about official Jupyter news?" toast over the pictures.
    lab_setting(
        &api,
        &id,
        "@jupyterlab/terminal-extension:plugin",
        r#"{"screenReaderMode": true}"#,
    )
    .await;
    lab_setting(
        &api,
        &id,
        "@jupyterlab/apputils-extension:notification",
        r#"{"fetchNews": "false"}"#,
    )
    .await;

    // JupyterLab loads through the proxy, on the notebook's own origin, and shows its
    // launcher.
    b.goto(&format!("/notebooks/{id}/open?path=lab")).await;
    let (_, nb) = api.get(&format!("/api/v1/notebooks/{id}")).await;
    let own = nb["jupyter_url"].as_str().expect("jupyter_url").to_string();
    assert!(!own.starts_with(&server.url), "{own}");
    shown(&b, &id, ".jp-Launcher .jp-LauncherCard", LAB).await;
    // Under this run's path key (`/nb/{id}/k-…/`), which the notebook's cookie is
    // confined to.
    let at = b.client.current_url().await.expect("url");
    let under_key = at
        .as_str()
        .strip_prefix(own.as_str())
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(key, rest)| key.starts_with("k-") && rest == "lab");
    assert!(under_key, "JupyterLab at {at}, not {own}k-…/lab");
    eprintln!("launcher shown after {:?}", started.elapsed());

    // A new notebook from the launcher; its kernel starts, connects and goes idle.
    new_python_notebook(&b, &id).await;
    eprintln!("kernel idle after {:?}", started.elapsed());

    // Type into the first cell and run it with Shift+Enter: the output area shows 42.
    let first_cell = ".jp-NotebookPanel .jp-Cell .cm-content";
    let first_prompt = ".jp-NotebookPanel .jp-InputArea-prompt";
    shown(&b, &id, first_cell, SHORT)
        .await
        .click()
        .await
        .expect("click the first cell");
    b.type_keys("print(6*7)").await;
    shows(&b, &id, first_cell, "print(6*7)", SHORT).await;
    b.type_keys(SHIFT_ENTER).await;
    // JupyterLab can still be settling the notebook's session (it sometimes starts two and
    // drops one); a run it did not take leaves the prompt at "[ ]:". Then, as a user would,
    // run the cell again.
    for attempt in 1..=3 {
        let ran = try_wait_for(Duration::from_secs(10), || async {
            let p = b.visible(first_prompt).await?.text().await.ok()?;
            (p.trim() != "[ ]:").then_some(())
        })
        .await;
        if ran.is_some() {
            break;
        }
        eprintln!("the cell did not run (attempt {attempt}); running it again");
        shown(&b, &id, first_cell, SHORT)
            .await
            .click()
            .await
            .expect("click the first cell");
        b.type_keys(SHIFT_ENTER).await;
    }
    let output = shows(
        &b,
        &id,
        ".jp-NotebookPanel .jp-OutputArea-output",
        "42",
        LAB,
    )
    .await;
    assert_eq!(output.trim(), "42", "the cell's output");
    let prompt = shows(&b, &id, first_prompt, "[1]", SHORT).await;
    assert_eq!(prompt.trim(), "[1]:", "the cell ran once");
    eprintln!("cell output shown after {:?}", started.elapsed());
    b.screenshot("jupyterlab-notebook.png").await;

    // A terminal: a new launcher (the "+" of the main area's tabs), its Terminal card.
    shown(&b, &id, "#jp-main-dock-panel .lm-TabBar-addButton", SHORT)
        .await
        .click()
        .await
        .expect("click + for a new launcher");
    click_launcher_card(&b, &id, "Terminal").await;
    let terminal = shown(&b, &id, ".jp-Terminal .xterm-screen", LAB).await;
    let text = until(
        &b,
        &id,
        "the terminal to show a shell prompt",
        LAB,
        || async {
            let t = js(&b, TERMINAL_TEXT).await;
            let t = t.as_str()?;
            t.contains('$').then(|| t.to_string())
        },
    )
    .await;
    assert!(!text.contains("notebox-42"), "a fresh terminal: {text}");
    terminal.click().await.expect("click the terminal");
    b.type_keys(&format!("echo notebox-$((40+2)){ENTER}")).await;
    let text = until(&b, &id, "the terminal to echo notebox-42", LAB, || async {
        let t = js(&b, TERMINAL_TEXT).await;
        let t = t.as_str()?;
        // The command line has the arithmetic, the line after it the shell's answer.
        t.replace("echo notebox-$((40+2))", "")
            .contains("notebox-42")
            .then(|| t.to_string())
    })
    .await;
    assert!(text.contains("echo notebox-$((40+2))"), "{text}");
    eprintln!("terminal answered after {:?}", started.elapsed());
    b.screenshot("jupyterlab-terminal.png").await;

    // An upload from the page, as JupyterLab's uploader sends it (PUT of base64 content
    // with the `_xsrf` cookie's value as `X-XSRFToken`, under the base URL in its page
    // config), with the page's own credentials: the notebook's cookie on its own origin.
    let status = js(
        &b,
        &format!(
            r#"const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || '';
            const base = JSON.parse(document.getElementById('jupyter-config-data').textContent).baseUrl;
            if (!base.startsWith('/nb/{id}/k-')) return 'base URL ' + base;
            return fetch(base + 'api/contents/uploaded-through-lab.txt', {{
                method: 'PUT', credentials: 'same-origin',
                headers: {{'Content-Type': 'application/json', 'X-XSRFToken': decodeURIComponent(xsrf)}},
                body: JSON.stringify({{type: 'file', format: 'base64', name: 'uploaded-through-lab.txt',
                                      content: btoa("uploaded on the notebook's own origin\n")}})
            }}).then(r => r.status);"#
        ),
    )
    .await;
    assert!(
        status.as_i64().is_some_and(|s| s == 200 || s == 201),
        "upload answered {status}"
    );
    let file_url = format!("{own}api/contents/uploaded-through-lab.txt?content=1");
    let uploaded = wait_for("the upload to land", LAB, || async {
        let r = reqwest::Client::new()
            .get(&file_url)
            .bearer_auth(&api.token)
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        v["content"].as_str().map(str::to_string)
    })
    .await;
    assert_eq!(uploaded, "uploaded on the notebook's own origin\n");
    eprintln!("upload landed after {:?}", started.elapsed());

    // Nothing JupyterLab asked for was refused on the way.
    let failed = b.failed_requests().await;
    assert!(failed.is_empty(), "requests that failed: {failed:#?}");

    // The kernel's and the terminal's WebSockets were relayed, with the subprotocol Jupyter
    // chose; every other socket of the page opened too, or was closed by the page itself
    // (JupyterLab drops the kernel of a session it started twice) before it opened.
    let network = b.network_log().await;
    let sockets: Vec<&String> = network
        .iter()
        .filter(|l| l.starts_with("websocket "))
        .collect();
    assert!(
        sockets.iter().any(|l| l.contains("/channels?")
            && l.contains(" 101 ")
            && l.contains("v1.kernel.websocket.jupyter.org")
            && !l.contains("closed")),
        "the kernel's WebSocket: {sockets:#?}"
    );
    assert!(
        sockets.iter().any(|l| l.contains("/terminals/websocket/")
            && l.contains(" 101 ")
            && !l.contains("closed")),
        "the terminal's WebSocket: {sockets:#?}"
    );
    assert!(
        sockets
            .iter()
            .all(|l| (l.contains(" 101 ") && !l.contains("closed"))
                || l.contains("close() by the page")),
        "a WebSocket failed: {sockets:#?}"
    );

    b.close().await;
    eprintln!("done after {:?}", started.elapsed());
}

/// Issue 12, acceptance 4: JupyterLab open and untouched keeps polling Notebox every few
/// seconds, and none of that is activity: the notebook is reclaimed on time. Running a
/// cell before the timeout starts the clock again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_untouched_jupyterlab_is_idle_and_running_a_cell_resets_the_clock() {
    if !chromium::available() {
        return;
    }
    let Some(image) = test_image() else {
        return;
    };
    const TIMEOUT: Duration = Duration::from_secs(20);
    const INTERVAL: Duration = Duration::from_secs(1);
    let server = TestServer::start_with(|c| {
        jupyterlab_config(c, &image);
        c.notebooks.activity_interval = INTERVAL;
        c.notebooks.idle_warning = Duration::from_secs(5);
        c.machines[0].idle_timeout = Some(Some(TIMEOUT));
        c.notebooks.origin = notebox::config::OriginMode::Ports;
    })
    .await;
    let _containers = ContainerGuard(server.data_dir().to_path_buf());
    add_user(&server, "ada", "ada-password-1", false);
    let api = Api::new(&server.url, &token_for(&server, "ada"));
    let id = api.create_notebook("left open").await;
    let b = Browser::start(&server.url).await;
    b.login("ada", "ada-password-1").await;
    api.wait_state(&id, "running", READY).await;
    dashboard_settled(&b, &id).await;
    lab_setting(
        &api,
        &id,
        "@jupyterlab/apputils-extension:notification",
        r#"{"fetchNews": "false"}"#,
    )
    .await;
    b.goto(&format!("/notebooks/{id}/open?path=lab")).await;
    new_python_notebook(&b, &id).await;

    // Untouched, the tab polls on; the idle clock runs on regardless.
    let activity = || async {
        let (_, nb) = api.get(&format!("/api/v1/notebooks/{id}")).await;
        nb["activity"].clone()
    };
    let a = wait_for(
        "12 s of idleness with the tab open",
        Duration::from_secs(40),
        || async {
            let a = activity().await;
            (a["idle_seconds"].as_i64() >= Some(12)).then_some(a)
        },
    )
    .await;
    assert_eq!(a["busy"], false, "{a}");
    let opened = a["last_member_action"].clone();
    assert!(
        opened["kind"] == "open" || opened["kind"] == "file_change",
        "opening the notebook was the last thing the member did: {a}"
    );

    // Running a cell before the timeout resets the clock.
    let first_cell = ".jp-NotebookPanel .jp-Cell .cm-content";
    shown(&b, &id, first_cell, SHORT)
        .await
        .click()
        .await
        .expect("click the cell");
    b.type_keys("print(6*7)").await;
    b.type_keys(SHIFT_ENTER).await;
    shows(
        &b,
        &id,
        ".jp-NotebookPanel .jp-OutputArea-output",
        "42",
        LAB,
    )
    .await;
    let ran = Instant::now();
    let a = activity().await;
    assert_eq!(a["last_member_action"]["kind"], "execute", "{a}");
    assert!(a["idle_seconds"].as_i64() <= Some(2), "{a}");

    // Untouched again: past the first timeout it still runs (the cell reset the clock),
    // then it is reclaimed on time while the tab keeps polling.
    let (nb, took) = {
        let start = Instant::now();
        let nb = wait_for("the reclaim", Duration::from_secs(60), || async {
            let (_, nb) = api.get(&format!("/api/v1/notebooks/{id}")).await;
            (nb["state"] != "running").then_some(nb)
        })
        .await;
        (nb, start.elapsed() + (start - ran))
    };
    assert!(
        took >= TIMEOUT - INTERVAL && took <= TIMEOUT + 2 * INTERVAL + Duration::from_secs(2),
        "reclaimed {took:?} after the cell ran (timeout {TIMEOUT:?}): {nb}"
    );
    eprintln!(
        "reclaimed {took:?} after the cell ran, the tab still open: {}",
        nb["state_detail"]
    );
    b.close().await;
}
