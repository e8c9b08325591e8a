//! Headless Chromium for the end-to-end UI tests: a `chromedriver` child process on a free
//! port, a fantoccini WebDriver session, and the few helpers the tests need (log in through
//! the real form, wait for a selector or a text by polling, save a screenshot).
//!
//! The test files include it next to the kit: `mod chromium; mod common;`.
//!
//! `UI_TEST_DARK=1` runs the browser with `prefers-color-scheme: dark` and writes the
//! screenshots under `target/ui-screenshots-dark/` instead of `docs/screenshots/`, to look
//! at the dark theme without touching the committed pictures. (Not a `NOTEBOX_*` name:
//! notebox refuses environment settings it does not know.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::common;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The viewport every screenshot has.
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 900;

/// How long a page may take to show what a test waits for, unless the test says otherwise.
pub const SHORT: Duration = Duration::from_secs(15);

fn executable(path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether the browser can run here; fails under CI=true, skips visibly elsewhere.
pub fn available() -> bool {
    common::require(
        "chromium",
        executable(CHROMIUM),
        &format!("{CHROMIUM} is missing (Debian package `chromium`)"),
    ) && common::require(
        "chromedriver",
        executable(CHROMEDRIVER),
        &format!("{CHROMEDRIVER} is missing (Debian package `chromium-driver`)"),
    )
}

/// Whether this run looks at the dark theme (`UI_TEST_DARK=1`).
pub fn dark() -> bool {
    std::env::var("UI_TEST_DARK").is_ok_and(|v| v == "1")
}

/// Where screenshots go: `docs/screenshots/` (committed), or a scratch folder in dark mode.
/// Screenshots go to target/ui-screenshots on every run; `UPDATE_SCREENSHOTS=1` writes the
/// README's copies in docs/screenshots instead.
pub fn screenshot_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if dark() {
        root.join("target/ui-screenshots-dark")
    } else if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        root.join("docs/screenshots")
    } else {
        root.join("target/ui-screenshots")
    }
}

/// `chromedriver` as a child process in its own process group, so that dropping it also
/// ends the Chromium it started (even when a test panics half-way).
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Driver {
    async fn start(log_dir: &Path) -> Driver {
        use std::os::unix::process::CommandExt;
        // A free port: bind, read it, let it go. Retried if chromedriver loses the race.
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let log = log_dir.join(format!("chromedriver-{port}.log"));
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("spawn chromedriver");
            let mut driver = Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log,
            };
            match driver.wait_ready(Duration::from_secs(15)).await {
                Ok(()) => return driver,
                Err(e) => last_err = e, // dropped: killed
            }
        }
        panic!("chromedriver never became ready: {last_err}");
    }

    /// Polls `GET /status` until chromedriver says it is ready.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let http = reqwest::Client::new();
        let url = self.url.clone();
        let child = &mut self.child;
        let answer = common::try_wait_for(timeout, || {
            let exited = child.try_wait().ok().flatten();
            let (http, url) = (http.clone(), url.clone());
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                let r = http.get(format!("{url}/status")).send().await.ok()?;
                let v = r.json::<serde_json::Value>().await.ok()?;
                (v["value"]["ready"] == true).then_some(Ok(()))
            }
        })
        .await;
        match answer {
            Some(Ok(())) => Ok(()),
            Some(Err(status)) => Err(format!(
                "chromedriver exited with {status}: {}",
                self.log_tail()
            )),
            None => Err(format!("no answer on {} after {timeout:?}", self.url)),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group this test started: chromedriver and the browser under it.
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium pointed at one notebox.
pub struct Browser {
    pub client: Client,
    /// The notebox base URL, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    // Dropped after the client, which closes its session when dropped.
    driver: Driver,
    scratch: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (1280x900).
    pub async fn start(base: &str) -> Browser {
        let scratch = tempfile::tempdir().expect("temp dir");
        let driver = Driver::start(scratch.path()).await;
        let profile = scratch.path().join("profile");
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={WIDTH},{HEIGHT}"),
            format!("--user-data-dir={}", profile.display()),
            "--lang=en-US".into(),
            "--hide-scrollbars".into(),
            "--force-color-profile=srgb".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-extensions".into(),
            "--disable-background-networking".into(),
            "--disable-sync".into(),
            "--password-store=basic".into(),
        ];
        if dark() {
            args.push("--force-dark-mode".into());
            args.push("--blink-settings=preferredColorScheme=0".into());
        }
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                // Chromium's own password manager bubble must not cover the pages.
                "prefs": {
                    "credentials_enable_service": false,
                    "profile.password_manager_enabled": false,
                    "profile.password_manager_leak_detection": false,
                },
            },
        });
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "WebDriver session with {CHROMIUM}: {e}\nchromedriver log:\n{}",
                    driver.log_tail()
                )
            });
        let browser = Browser {
            client,
            base: base.trim_end_matches('/').to_string(),
            driver,
            scratch,
        };
        // Headless windows sometimes open smaller than asked; the viewport is what counts.
        browser.fit_viewport().await;
        browser
    }

    /// Resizes the window so that the page's viewport is exactly WIDTH x HEIGHT.
    async fn fit_viewport(&self) {
        let inner = || async {
            let v = self
                .client
                .execute("return [window.innerWidth, window.innerHeight];", vec![])
                .await
                .expect("viewport size");
            (
                v[0].as_i64().unwrap_or(0) as i32,
                v[1].as_i64().unwrap_or(0) as i32,
            )
        };
        let (w, h) = inner().await;
        if (w, h) == (WIDTH as i32, HEIGHT as i32) {
            return;
        }
        let (ow, oh) = self.client.get_window_size().await.expect("window size");
        let (nw, nh) = (ow as i32 + WIDTH as i32 - w, oh as i32 + HEIGHT as i32 - h);
        self.client
            .set_window_size(nw.max(100) as u32, nh.max(100) as u32)
            .await
            .expect("set window size");
    }

    /// Closes the browser session cleanly (Drop also ends it, less politely).
    pub async fn close(self) {
        let Browser { client, driver, .. } = self;
        let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
        drop(driver);
    }

    /// An absolute URL on the notebox under test (a whole URL stays as it is: a
    /// notebook's own origin).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_string();
        }
        format!("{}{path}", self.base)
    }

    /// Opens `path`. Chromium abandons a load with ERR_NETWORK_CHANGED when the machine's
    /// interfaces change under it — Docker adds and removes one per container that starts
    /// or stops, which the other tests running beside this one do at any moment: such a
    /// load is tried again (at most three times), as a member would reload.
    pub async fn goto(&self, path: &str) {
        let url = self.url(path);
        for _ in 0..3 {
            self.client
                .goto(&url)
                .await
                .unwrap_or_else(|e| panic!("open {url}: {e}"));
            if !self.page_text().await.contains("ERR_NETWORK_CHANGED") {
                return;
            }
        }
    }

    /// The path (and query) of the page the browser shows now.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The visible text of the whole page.
    pub async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Polls `check` (see `common::wait_for`) until it returns Some, or panics after
    /// `timeout` with what the page showed then.
    pub async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        if let Some(v) = common::try_wait_for(timeout, check).await {
            return v;
        }
        let path = self.path().await;
        let text = self.page_text().await;
        panic!(
            "timed out after {timeout:?} waiting for {what}\n\
             page {path} shows:\n{text}"
        );
    }

    /// The first element matching `css` that is displayed, if any (no waiting).
    pub async fn visible(&self, css: &str) -> Option<Element> {
        let all = self.client.find_all(Locator::Css(css)).await.ok()?;
        for el in all {
            if el.is_displayed().await.unwrap_or(false) {
                return Some(el);
            }
        }
        None
    }

    /// Waits until an element matching `css` is displayed.
    pub async fn wait_css(&self, css: &str, timeout: Duration) -> Element {
        self.wait(&format!("`{css}` to be shown"), timeout, || {
            self.visible(css)
        })
        .await
    }

    /// Waits until a displayed element matching `css` has a text containing `text`; returns
    /// the element's whole text. Survives the page reloading underneath.
    pub async fn wait_text(&self, css: &str, text: &str, timeout: Duration) -> String {
        self.wait(&format!("`{css}` to show {text:?}"), timeout, || async {
            let el = self.visible(css).await?;
            let t = el.text().await.ok()?;
            t.contains(text).then_some(t)
        })
        .await
    }

    /// Waits until the page shows `text` anywhere.
    pub async fn wait_page_text(&self, text: &str, timeout: Duration) {
        self.wait(&format!("the page to show {text:?}"), timeout, || async {
            self.page_text().await.contains(text).then_some(())
        })
        .await
    }

    /// Waits until the browser is on `path` (exact, query ignored) or on a path that
    /// satisfies the regex `path` when it starts with `^`.
    pub async fn wait_path(&self, path: &str, timeout: Duration) -> String {
        let re = path
            .starts_with('^')
            .then(|| regex::Regex::new(path).expect("path regex"));
        self.wait(&format!("the browser to be on {path}"), timeout, || async {
            let url = self.client.current_url().await.ok()?;
            let ok = match &re {
                Some(re) => re.is_match(url.path()),
                None => url.path() == path,
            };
            ok.then(|| url.path().to_string())
        })
        .await
    }

    /// A displayed link or button whose visible text is exactly `text` (whitespace
    /// normalised), waiting for it.
    pub async fn control(&self, text: &str) -> Element {
        let xpath = format!(
            "//a[normalize-space()={q}] | //button[normalize-space()={q}] | \
             //input[(@type='submit' or @type='button') and @value={q}]",
            q = xpath_literal(text)
        );
        self.wait(&format!("a link or button {text:?}"), SHORT, || async {
            let all = self.client.find_all(Locator::XPath(&xpath)).await.ok()?;
            for el in all {
                if el.is_displayed().await.unwrap_or(false) {
                    return Some(el);
                }
            }
            None
        })
        .await
    }

    /// Clicks the link or button labelled `text`.
    pub async fn click(&self, text: &str) {
        self.control(text)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {text:?}: {e}"));
    }

    /// Whether a displayed link or button labelled `text` is on the page now.
    pub async fn has_control(&self, text: &str) -> bool {
        let xpath = format!(
            "//a[normalize-space()={q}] | //button[normalize-space()={q}]",
            q = xpath_literal(text)
        );
        let Ok(all) = self.client.find_all(Locator::XPath(&xpath)).await else {
            return false;
        };
        for el in all {
            if el.is_displayed().await.unwrap_or(false) {
                return true;
            }
        }
        false
    }

    /// Types into the field matched by `css` (cleared first).
    pub async fn fill(&self, css: &str, value: &str) {
        let el = self.wait_css(css, SHORT).await;
        el.clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        el.send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Accepts the `window.confirm` the page opened, returning its message.
    pub async fn accept_confirm(&self) -> String {
        let text = self
            .wait("a confirmation dialog", SHORT, || async {
                self.client.get_alert_text().await.ok()
            })
            .await;
        self.client.accept_alert().await.expect("accept dialog");
        text
    }

    /// Logs in through the real login form and waits to have left it.
    pub async fn login(&self, username: &str, password: &str) {
        self.goto("/login").await;
        self.fill("input[name=username]", username).await;
        self.fill("input[name=password]", password).await;
        self.click("Log in").await;
        self.wait(
            &format!("the login of {username} to succeed"),
            SHORT,
            || async {
                let url = self.client.current_url().await.ok()?;
                (url.path() != "/login").then_some(())
            },
        )
        .await;
    }

    /// Logs out with the top bar's button and waits for the login page.
    pub async fn logout(&self) {
        self.click("Log out").await;
        self.wait_path("/login", SHORT).await;
    }

    /// Saves a screenshot of the viewport as `{screenshot_dir}/{name}`; returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(name);
        self.screenshot_to(&path).await;
        path
    }

    /// Saves a screenshot of the viewport to `path`, checking it is WIDTH x HEIGHT.
    pub async fn screenshot_to(&self, path: &Path) {
        // No caret blinking or half-finished transitions in the picture.
        let _ = self
            .client
            .execute(
                "document.activeElement && document.activeElement.blur && document.activeElement.blur();",
                vec![],
            )
            .await;
        let png = self.client.screenshot().await.expect("screenshot");
        let (w, h) = png_size(&png).expect("screenshot is a PNG");
        assert_eq!(
            (w, h),
            (WIDTH, HEIGHT),
            "screenshot {} has the wrong size",
            path.display()
        );
        std::fs::write(path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Scrolls so that `css` is in view (bottom-aligned, the page head kept where it fits).
    pub async fn scroll_into_view(&self, css: &str) {
        let el = self.wait_css(css, SHORT).await;
        let arg = serde_json::to_value(&el).expect("element as JSON");
        self.client
            .execute(
                "arguments[0].scrollIntoView({block: 'end', inline: 'nearest'});",
                vec![arg],
            )
            .await
            .expect("scroll");
    }
}

/// Width and height from a PNG's IHDR chunk.
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}

/// `text` as an XPath string literal (XPath 1.0 has no escapes).
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        format!("'{text}'")
    } else if !text.contains('"') {
        format!("\"{text}\"")
    } else {
        let parts: Vec<String> = text.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

impl Browser {
    /// Types `keys` into whatever has the focus, as key presses (WebDriver actions), for
    /// widgets that are no form field (a terminal's hidden textarea, an editor). WebDriver
    /// modifier keys (Shift U+E008, Control U+E009, Alt U+E00A, Meta U+E03D) stay down
    /// until the end, as with `send_keys`: "\u{E008}\u{E007}" is Shift+Enter.
    pub async fn type_keys(&self, keys: &str) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        const MODIFIERS: [char; 4] = ['\u{E008}', '\u{E009}', '\u{E00A}', '\u{E03D}'];
        let mut actions = KeyActions::new("keyboard".into());
        let mut held = Vec::new();
        for c in keys.chars() {
            actions = actions.then(KeyAction::Down { value: c });
            if MODIFIERS.contains(&c) {
                held.push(c);
            } else {
                actions = actions.then(KeyAction::Up { value: c });
            }
        }
        for c in held.into_iter().rev() {
            actions = actions.then(KeyAction::Up { value: c });
        }
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("type {keys:?}: {e}"));
    }

    /// Requests of the current page that got an HTTP error (status >= 400), as
    /// "STATUS URL" lines, from the Resource Timing API (WebSockets are not in it).
    pub async fn failed_requests(&self) -> Vec<String> {
        let v = self
            .client
            .execute(
                "return performance.getEntriesByType('resource')\
                   .filter(e => e.responseStatus >= 400)\
                   .map(e => e.responseStatus + ' ' + e.name);",
                vec![],
            )
            .await;
        string_list(v)
    }
}

/// A script run at the start of every page (see `record_network`): it keeps, in
/// `window.__network`, one entry per fetch, XHR and WebSocket with how it ended, and every
/// uncaught error, so that a request that never finishes or a socket that closes shows up.
const NETWORK_RECORDER: &str = r#"(() => {
  const log = window.__network = [];
  const t0 = performance.now();
  const at = () => Math.round(performance.now() - t0);
  const add = (kind, method, url) => {
    const e = { kind, method, url: String(url), start: at(), end: null, status: null, note: '' };
    log.push(e);
    return e;
  };
  const origFetch = window.fetch;
  window.fetch = function (input, init) {
    const url = input && input.url ? input.url : input;
    const method = (init && init.method) || (input && input.method) || 'GET';
    const e = add('fetch', method, url);
    return origFetch.apply(this, arguments).then(
      r => {
        e.end = at();
        e.status = r.status;
        if (r.status >= 400) r.clone().text().then(t => { e.note = t.slice(0, 300); }, () => {});
        return r;
      },
      err => { e.end = at(); e.note = 'error: ' + err; throw err; });
  };
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url) {
    const e = add('xhr', method, url);
    this.addEventListener('loadend', () => { e.end = at(); e.status = this.status; });
    return open.apply(this, arguments);
  };
  const WS = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    const e = add('websocket', 'GET', url);
    const ws = protocols === undefined ? new WS(url) : new WS(url, protocols);
    ws.addEventListener('open', () => { e.status = 101; e.note = 'open ' + at() + 'ms, protocol ' + JSON.stringify(ws.protocol); });
    ws.addEventListener('error', () => { e.note += ' error ' + at() + 'ms'; });
    ws.addEventListener('close', ev => { e.end = at(); e.note += ' closed ' + ev.code + ' ' + JSON.stringify(ev.reason); });
    const close = ws.close;
    ws.close = function () { e.note += ' close() by the page at ' + at() + 'ms'; return close.apply(ws, arguments); };
    return ws;
  };
  window.WebSocket.prototype = WS.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.addEventListener('error', ev => log.push({ kind: 'error', url: String(ev.message), start: at(), note: String(ev.filename) + ':' + ev.lineno }));
  window.addEventListener('unhandledrejection', ev => log.push({ kind: 'rejection', url: String(ev.reason && (ev.reason.stack || ev.reason)), start: at() }));
})();"#;

impl Browser {
    /// Runs a Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: serde_json::Value) -> serde_json::Value {
        let session = self
            .client
            .session_id()
            .await
            .expect("session id")
            .expect("a WebDriver session");
        let r = reqwest::Client::new()
            .post(format!(
                "{}/session/{session}/goog/cdp/execute",
                self.driver.url
            ))
            .json(&serde_json::json!({ "cmd": cmd, "params": params }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("CDP {cmd}: {e}"));
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        v["value"].clone()
    }

    /// From the next page on, records every fetch, XHR and WebSocket of the page and its
    /// uncaught errors (read them with `network_log`). For diagnosing single-page apps.
    pub async fn record_network(&self) {
        let v = self
            .cdp(
                "Page.addScriptToEvaluateOnNewDocument",
                serde_json::json!({ "source": NETWORK_RECORDER }),
            )
            .await;
        assert!(
            v.get("identifier").is_some(),
            "CDP did not take the recorder: {v}"
        );
    }

    /// What `record_network` saw on the current page, one line per request: method, URL,
    /// status (or "pending"), start and end in ms since the page began, and notes.
    pub async fn network_log(&self) -> Vec<String> {
        let v = self
            .client
            .execute(
                "if (!window.__network) return ['(nothing recorded: record_network was not called before this page)']; \
                 return window.__network.map(e => [e.kind, e.method || '', e.url, \
                 e.status === null ? (e.end === null ? 'PENDING' : '-') : e.status, \
                 e.start + '..' + (e.end === null ? '' : e.end) + 'ms', e.note || ''].join(' '));",
                vec![],
            )
            .await;
        string_list(v)
    }
}

/// A script's answer as a list of strings; the error, if the script failed, as one line.
fn string_list(v: Result<serde_json::Value, fantoccini::error::CmdError>) -> Vec<String> {
    match v {
        Ok(v) => v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        Err(e) => vec![format!("(cannot read it from the page: {e})")],
    }
}
