//! An OpenID Connect provider for the tests: `tests/oidc_provider/provider.py` (PyPI's
//! oidc-provider-mock plus endpoints to forge bad ID tokens) as a child process on
//! 127.0.0.1, run from a Python venv that `tests/oidc_provider/setup.sh` makes. Tests that
//! need it skip when `oidc_available()` is false.
//!
//! The provider (see provider.py for details):
//! - issuer `http://127.0.0.1:PORT` (the discovery document's, and the ID tokens' "iss");
//! - any client_id and client secret, either as client_secret_basic or client_secret_post
//!   (not "none": public clients are refused), and any redirect_uri, unless started with
//!   `--require-client-registration` (then `register_client`, and the method registered);
//! - RS256 ID tokens whose header has no "kid" (though the JWKS key has one), "aud" an
//!   array of the client_id, "nonce" when the request had one; PKCE is not enforced;
//! - `put_user` sets a user's claims: "groups" and other non-standard claims are always
//!   in the ID token, name/preferred_username need scope "profile", email scope "email"
//!   ("groups" is no scope it knows: asked for, it is dropped without an error).
//!
//! The venv: `OIDC_TEST_VENV`, else `<repo>/target/oidc-venv`. (Not a `NOTEBOX_*` name:
//! notebox refuses environment settings it does not know.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long the provider may take to listen (it takes about a second).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of the provider's stderr (its log) is kept, from the end.
const LOG_KEEP: usize = 256 * 1024;

pub struct OidcProvider {
    child: Child,
    pub port: u16,
    http: reqwest::Client,
    log: Arc<Mutex<String>>,
}

/// The venv the provider runs from.
pub fn venv() -> PathBuf {
    match std::env::var_os("OIDC_TEST_VENV") {
        Some(v) => PathBuf::from(v),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oidc-venv"),
    }
}

/// Whether the venv is set up (its python imports oidc_provider_mock). Asked once.
pub fn oidc_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new(venv().join("bin/python"))
            .args(["-W", "ignore", "-c", "import oidc_provider_mock"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

impl OidcProvider {
    /// Starts the provider with its defaults. Panics, with its stderr, if it doesn't
    /// listen within 20 s.
    pub fn start() -> OidcProvider {
        OidcProvider::start_with(&[])
    }

    /// Starts the provider with these provider.py options, e.g. `--require-nonce`,
    /// `--require-client-registration`, `--no-refresh-token`, `--token-max-age 60`.
    pub fn start_with(args: &[&str]) -> OidcProvider {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc_provider/provider.py");
        let python = venv().join("bin/python");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start the OIDC provider ({} {}): {e}; run tests/oidc_provider/setup.sh",
                    python.display(),
                    script.display()
                )
            });

        // Both pipes are read to the end by threads of their own, so that the provider
        // never blocks on a full pipe; stderr is kept (the tail) for panic messages.
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("provider stderr");
        let keep = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr);
            let mut line = String::new();
            while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                let mut log = keep
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                if log.len() > LOG_KEEP {
                    let mut cut = log.len() - LOG_KEEP / 2;
                    while !log.is_char_boundary(cut) {
                        cut += 1;
                    }
                    log.drain(..cut);
                }
                line.clear();
            }
        });
        let stdout = child.stdout.take().expect("provider stdout");
        let (said, heard) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            let mut line = String::new();
            let _read = out.read_line(&mut line);
            let _gone = said.send(line);
            let _rest = std::io::copy(&mut out, &mut std::io::sink());
        });

        // Empty: stdout closed (it exited); Err: nothing said in time.
        let heard = heard.recv_timeout(START_TIMEOUT);
        let line = heard.clone().unwrap_or_default();
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse::<u16>().ok());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let mut provider = OidcProvider {
            child,
            port: port.unwrap_or(0),
            http,
            log,
        };
        if port.is_none() {
            let _gone = provider.child.kill();
            let _reaped = provider.child.wait();
            std::thread::sleep(Duration::from_millis(100)); // the stderr thread's last lines
            let what = match heard {
                Err(_) => format!("did not say LISTENING within {START_TIMEOUT:?}"),
                Ok(l) if l.is_empty() => "exited before it listened".to_string(),
                Ok(l) => format!("said {l:?} instead of LISTENING <port>"),
            };
            panic!("the OIDC provider {what}; its stderr:\n{}", provider.log());
        }
        provider
    }

    /// `http://127.0.0.1:PORT`, as the discovery document's "issuer" has it.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The provider's URL for `path` (which starts with "/").
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    /// What the provider wrote to stderr so far (its request log, tracebacks).
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The discovery document.
    pub async fn discovery(&self) -> serde_json::Value {
        let resp = self
            .send(self.http.get(self.url("/.well-known/openid-configuration")))
            .await;
        self.json(resp, "discovery").await
    }

    /// Sets the claims of user `sub` (replacing earlier ones), e.g. `{"preferred_username":
    /// "carol", "name": "Carol C", "email": "carol@example.org", "groups": ["phd"]}`.
    /// A `sub` never set still logs in, with claims `{"email": sub}`.
    pub async fn put_user(&self, sub: &str, claims: serde_json::Value) {
        let resp = self
            .send(
                self.http
                    .put(self.url(&format!("/users/{}", path_segment(sub))))
                    .json(&claims),
            )
            .await;
        self.expect_ok(resp, "PUT /users").await;
    }

    /// Spoils the next ID token the provider issues (see provider.py): e.g.
    /// `{"claims": {"aud": "other"}}`, `{"exp_offset": -120}`, `{"foreign_key": true}`,
    /// `{"alg": "HS256"}`, `{"alg": "none"}`, `{"claims": {"nonce": null}}` (removes it).
    pub async fn tamper(&self, body: serde_json::Value) {
        let resp = self
            .send(self.http.post(self.url("/test/tamper")).json(&body))
            .await;
        self.expect_ok(resp, "POST /test/tamper").await;
    }

    /// Forgets a pending tamper.
    pub async fn reset(&self) {
        let resp = self.send(self.http.post(self.url("/test/reset"))).await;
        self.expect_ok(resp, "POST /test/reset").await;
    }

    /// The last ID token issued: `{"id_token", "header", "claims"}`; None before any.
    pub async fn last_id_token(&self) -> Option<serde_json::Value> {
        let resp = self
            .send(self.http.get(self.url("/test/last-id-token")))
            .await;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        Some(self.json(resp, "GET /test/last-id-token").await)
    }

    /// Registers a client (the only way in with `--require-client-registration`; without
    /// it any id and secret work). `auth_method`: "client_secret_basic",
    /// "client_secret_post" or "none". Returns (client_id, client_secret).
    pub async fn register_client(&self, redirect_uri: &str, auth_method: &str) -> (String, String) {
        let body = serde_json::json!({
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": auth_method,
        });
        let resp = self
            .send(self.http.post(self.url("/oauth2/clients")).json(&body))
            .await;
        let v = self.json(resp, "POST /oauth2/clients").await;
        let field = |name: &str| {
            v[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in the registration answer: {v}"))
                .to_string()
        };
        (field("client_id"), field("client_secret"))
    }

    /// Plays the user at the consent page, without a browser: GETs `authorize_url` (the
    /// provider's authorization endpoint with the relying party's query, as it redirected
    /// the browser there), submits the form as `sub`, and returns the redirect Location
    /// back to the relying party (its callback with `code` and `state`), not followed.
    /// When the provider refuses the request with a redirect (`error=...` for the
    /// relying party), that Location is returned as it is; when it refuses with a page
    /// (bad client_id / redirect_uri), this panics with the page.
    pub async fn authorize(&self, authorize_url: &str, sub: &str) -> String {
        self.consent(authorize_url, &[("sub", sub)]).await
    }

    /// Like `authorize`, but presses Deny: the Location has `error=access_denied`.
    pub async fn deny(&self, authorize_url: &str) -> String {
        self.consent(authorize_url, &[("action", "deny")]).await
    }

    async fn consent(&self, authorize_url: &str, form: &[(&str, &str)]) -> String {
        let page = self.send(self.http.get(authorize_url)).await;
        if let Some(location) = location(&page) {
            return location;
        }
        let status = page.status();
        let body = page.text().await.unwrap_or_default();
        assert!(
            status.is_success() && body.contains("name=\"sub\""),
            "the provider's consent page for {authorize_url}: {status}\n{body}\nits log:\n{}",
            self.log()
        );
        // The form has no action: it posts to the page's own URL, query and all.
        let answer = self.send(self.http.post(authorize_url).form(form)).await;
        if let Some(l) = location(&answer) {
            return l;
        }
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        panic!(
            "the consent form gave {status}, no redirect:\n{body}\nits log:\n{}",
            self.log()
        )
    }

    /// Plays the user at the end session page: GETs `end_session_url` (the provider's
    /// end_session_endpoint with the relying party's query), confirms, and returns where
    /// the provider redirects (post_logout_redirect_uri with `state`), or None when the
    /// request had no post_logout_redirect_uri.
    pub async fn end_session(&self, end_session_url: &str) -> Option<String> {
        let page = self.send(self.http.get(end_session_url)).await;
        let status = page.status();
        let body = page.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "the end session page: {status}\n{body}"
        );
        // <input type="hidden" name="redirect_uri" value="...">, when there is one.
        let redirect_uri = body
            .split_once("name=\"redirect_uri\" value=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(value, _)| html_unescape(value));
        let mut form = Vec::new();
        if let Some(uri) = &redirect_uri {
            form.push(("redirect_uri", uri.as_str()));
        }
        let answer = self
            .send(
                self.http
                    .post(self.url("/oauth2/end_session/confirm"))
                    .form(&form),
            )
            .await;
        let status = answer.status();
        let found = location(&answer);
        assert!(
            found.is_some() || status.is_success(),
            "the end session confirmation: {status}"
        );
        found
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        match request.send().await {
            Ok(resp) => resp,
            Err(e) => panic!(
                "request to the OIDC provider: {e}\nits log:\n{}",
                self.log()
            ),
        }
    }

    async fn expect_ok(&self, resp: reqwest::Response, what: &str) {
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            panic!(
                "{what}: {status}\n{body}\nthe provider's log:\n{}",
                self.log()
            );
        }
    }

    async fn json(&self, resp: reqwest::Response, what: &str) -> serde_json::Value {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{what}: {status}\n{body}\nthe provider's log:\n{}",
            self.log()
        );
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"))
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// A redirect's Location, if the response is one.
fn location(resp: &reqwest::Response) -> Option<String> {
    if !resp.status().is_redirection() {
        return None;
    }
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_string)
}

/// `sub` percent-encoded for a URL path segment.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Undoes Jinja's HTML escaping of an attribute value.
fn html_unescape(s: &str) -> String {
    s.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Decodes a JWT's header and payload (no verification): (header, claims).
pub fn decode_jwt(token: &str) -> (serde_json::Value, serde_json::Value) {
    let mut parts = token.split('.');
    let mut part = |what: &str| {
        let text = parts
            .next()
            .unwrap_or_else(|| panic!("no {what} in the JWT {token}"));
        let bytes =
            base64url_decode(text).unwrap_or_else(|| panic!("{what} not base64url: {token}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{what} not JSON ({e}): {token}"))
    };
    let header = part("header");
    let claims = part("payload");
    (header, claims)
}

/// Unpadded base64url (as in JWTs), std only.
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(acc >> bits).ok()?); // < 256: acc keeps < 14 bits
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
