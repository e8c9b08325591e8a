//! Security acceptance: a bounded HTTP fuzzer over every route of `web::routes()`, as an
//! anonymous caller, a member (session cookie + CSRF token, and a personal access token)
//! and an admin (session), against the real binary run as a child process.
//!
//! Random and mutated methods, paths (percent-encoded garbage, bad bytes, very long),
//! query strings, headers (random names, oversized and non-UTF-8 values, duplicate
//! Cookie/Authorization, Origin) and bodies (random bytes, bad UTF-8, big JSON, forms,
//! wrong content types). Well-formed requests go through reqwest; what reqwest refuses to
//! send (bad bytes in the request line or header values, odd methods) goes over a raw
//! TCP connection written by hand.
//!
//! First a sweep (every route with real ids as each identity, then every hostile value in
//! every path parameter), then random requests. The server runs on the real Docker engine
//! with the Jupyter test image and without GPUs: its notebooks really start, stop, restart
//! and proxy while they are fuzzed. Requests go one at a time, so a failure replays alone.
//!
//! What must hold: no response with a status >= 500, the server alive and answering
//! /healthz afterwards, and its resident memory back under 50 MiB.
//!
//! Replay: the seed is printed; `NOTEBOX_FUZZ_SEED=<seed>` repeats the same requests (the
//! requests depend on the seed only, never on the answers), and `NOTEBOX_FUZZ_ONLY=17,230`
//! sends only those request numbers. `NOTEBOX_FUZZ_REQUESTS` changes the total.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEFAULT_SEED: u64 = 0x6e6f_7465_626f_7821; // "notebox!"
const DEFAULT_TOTAL: usize = 3000;
/// The random phase always gets at least this many requests.
const MIN_RANDOM: usize = 800;
/// The fuzzing loop stops here even if requests are left (it keeps the test under 3 min).
const DEADLINE: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const HALF_CLOSE_AFTER: Duration = Duration::from_secs(3);
/// What the fuzzing may add to the server's memory, over its RSS after the setup (the debug
/// binary's own resident pages grow with the code, and the setup's two logins leave
/// argon2's 19 MiB working memory to the allocator, which keeps part of it: start → after
/// setup was 6.2 MiB in one CI run and less in others, so counting from the start measured
/// the allocator's mood more than the fuzzing; the fuzzing itself added 3.7 MiB there).
const RSS_GROWTH_LIMIT_KIB: u64 = 9 * 1024;

// ---------------------------------------------------------------------------------------
// A small deterministic PRNG (splitmix64).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// lo..=hi.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Printable ASCII without spaces.
    fn word(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| b'!' + self.below(94) as u8).collect()
    }

    fn alnum(&mut self, n: usize) -> Vec<u8> {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
        (0..n).map(|_| *self.pick(A)).collect()
    }

    /// Text with bytes that are not UTF-8 (lone continuation bytes, overlong forms, 0xff).
    fn bad_utf8(&mut self, n: usize) -> Vec<u8> {
        const BAD: &[&[u8]] = &[
            b"\xff",
            b"\xfe",
            b"\xc0\xaf",
            b"\xe0\x80\xaf",
            b"\xed\xa0\x80",
            b"\x80",
            b"\xc3\x28",
            b"\xf8\x88\x80\x80\x80",
        ];
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.chance(40) {
                out.extend_from_slice(BAD[self.below(BAD.len())]);
            } else {
                out.push(b'a' + self.below(26) as u8);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Request templates: literal bytes and named fixtures (ids, cookies, tokens) filled in at
// send time, so that the generated requests depend on the seed alone and print readably.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fix {
    Nb,
    NbSpare,
    AdminNb,
    Share,
    ShareSpare,
    PublicShare,
    VictimId,
    SpareTokenId,
    MemberCookie,
    AdminCookie,
    MemberCsrf,
    AdminCsrf,
    MemberPat,
    LoginCsrf,
    Origin,
}

#[derive(Clone, Debug)]
enum Piece {
    Lit(Vec<u8>),
    Fix(Fix),
}

#[derive(Clone, Debug, Default)]
struct T(Vec<Piece>);

impl T {
    fn lit(b: impl AsRef<[u8]>) -> T {
        T(vec![Piece::Lit(b.as_ref().to_vec())])
    }

    fn fix(f: Fix) -> T {
        T(vec![Piece::Fix(f)])
    }

    fn push(&mut self, b: impl AsRef<[u8]>) -> &mut T {
        self.0.push(Piece::Lit(b.as_ref().to_vec()));
        self
    }

    fn push_fix(&mut self, f: Fix) -> &mut T {
        self.0.push(Piece::Fix(f));
        self
    }

    fn append(&mut self, other: T) -> &mut T {
        self.0.extend(other.0);
        self
    }

    fn render(&self, fx: &Fixtures) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
            match p {
                Piece::Lit(b) => out.extend_from_slice(b),
                Piece::Fix(f) => out.extend_from_slice(fx.get(*f).as_bytes()),
            }
        }
        out
    }

    fn show(&self, max: usize) -> String {
        let mut out = String::new();
        let mut len = 0;
        for p in &self.0 {
            match p {
                Piece::Lit(b) => {
                    len += b.len();
                    out.push_str(&b.escape_ascii().to_string());
                }
                Piece::Fix(f) => {
                    len += 1;
                    out.push_str(&format!("<{f:?}>"));
                }
            }
        }
        if out.len() > max {
            let mut cut = max;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}… ({len} bytes)", &out[..cut])
        } else {
            out
        }
    }

    fn lit_len(&self) -> usize {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Lit(b) => b.len(),
                Piece::Fix(_) => 40,
            })
            .sum()
    }
}

/// The real ids, tokens and sessions the templates refer to.
struct Fixtures {
    values: BTreeMap<String, String>,
}

impl Fixtures {
    fn get(&self, f: Fix) -> &str {
        self.values
            .get(&format!("{f:?}"))
            .map(String::as_str)
            .unwrap_or("missing-fixture")
    }

    fn set(&mut self, f: Fix, v: impl Into<String>) {
        self.values.insert(format!("{f:?}"), v.into());
    }
}

// ---------------------------------------------------------------------------------------
// The route table: every route of `src/web/mod.rs::routes()`.

/// Methods for `web::route()` (any method).
const ANY: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

struct Route {
    methods: &'static [&'static str],
    pattern: &'static str,
}

macro_rules! routes {
    ($(($m:expr, $p:expr)),* $(,)?) => { &[$(Route { methods: $m, pattern: $p }),*] };
}

/// Placeholders: {nb} a notebook id, {nb_del} one that may be deleted, {tail} a Jupyter
/// path, {asset} a static file, {share} a share token, {share_del} one that may be
/// revoked, {file} a path inside a share, {action} a notebook action, {user} a user id
/// that may be changed (never the fuzzing identities' own), {tok_del} a token id that
/// may be revoked, {api} anything under /api/v1/, {job} a job id (none exists: a
/// notebook's id, or another).
const ROUTES: &[Route] = routes![
    (ANY, "/nb/{nb}/{tail}"),
    (ANY, "/nb/{nb}"),
    (&["GET"], "/healthz"),
    (&["GET"], "/static/{asset}"),
    (&["GET"], "/login"),
    (&["POST"], "/login"),
    (&["POST"], "/logout"),
    (&["GET"], "/"),
    (&["GET"], "/notebooks/new"),
    (&["POST"], "/notebooks"),
    (&["GET"], "/notebooks/{nb}"),
    (&["POST"], "/notebooks/{nb}/extend"),
    (&["GET"], "/notebooks/{nb}/delete"),
    (&["POST"], "/notebooks/{nb_del}/delete"),
    (&["POST"], "/notebooks/{nb}/fork"),
    (&["POST"], "/notebooks/{nb}/shares"),
    (&["POST"], "/notebooks/{nb_del}/shares/{share_del}/revoke"),
    (&["POST"], "/notebooks/{nb}/{action}"),
    (&["GET"], "/s/{share}"),
    (&["GET"], "/s/{share}/"),
    (&["GET"], "/s/{share}/view/{file}"),
    (&["GET"], "/s/{share}/raw/{file}"),
    (&["POST"], "/s/{share}/fork"),
    (&["GET"], "/gallery"),
    (&["GET"], "/gpus"),
    (&["GET", "POST"], "/reservations"),
    (&["POST"], "/reservations/{job}/cancel"),
    (&["GET", "POST"], "/jobs"),
    (&["GET"], "/jobs/{job}"),
    (&["POST"], "/jobs/{job}/cancel"),
    (&["POST"], "/jobs/{job}/rerun"),
    (&["POST"], "/jobs/schedules/{job}/delete"),
    (&["GET"], "/settings"),
    (&["POST"], "/settings/password"),
    (&["GET"], "/settings/tokens"),
    (&["POST"], "/settings/tokens"),
    (&["POST"], "/settings/tokens/{tok_del}/revoke"),
    (&["GET", "POST"], "/settings/variables"),
    (&["POST"], "/settings/variables/delete"),
    (&["GET", "POST"], "/settings/registries"),
    (&["POST"], "/settings/registries/remove"),
    (&["GET"], "/admin"),
    (&["GET"], "/admin/users"),
    (&["POST"], "/admin/users"),
    (&["POST"], "/admin/users/{user}/password"),
    (&["POST"], "/admin/users/{user}/admin"),
    (&["POST"], "/admin/users/{user}/disabled"),
    (&["POST"], "/admin/users/{user}/gpu-limit"),
    (&["GET"], "/api/v1/me"),
    (&["GET"], "/api/v1/images"),
    (&["GET"], "/api/v1/machines"),
    (&["GET"], "/api/v1/gpus"),
    (&["GET"], "/api/v1/notebooks"),
    (&["POST"], "/api/v1/notebooks"),
    (&["GET"], "/api/v1/notebooks/{nb}"),
    (&["DELETE"], "/api/v1/notebooks/{nb_del}"),
    (&["POST"], "/api/v1/notebooks/{nb}/start"),
    (&["POST"], "/api/v1/notebooks/{nb}/stop"),
    (&["POST"], "/api/v1/notebooks/{nb}/restart"),
    (&["POST"], "/api/v1/notebooks/{nb}/extend"),
    (&["GET"], "/api/v1/notebooks/{nb}/logs"),
    (&["GET"], "/api/v1/notebooks/{nb}/shares"),
    (&["POST"], "/api/v1/notebooks/{nb}/shares"),
    (&["POST"], "/api/v1/notebooks/{nb}/fork"),
    (&["DELETE"], "/api/v1/shares/{share_del}"),
    (&["POST"], "/api/v1/shares/{share}/fork"),
    (&["GET"], "/api/v1/secrets"),
    (&["PUT", "DELETE"], "/api/v1/secrets/OPENAI_API_KEY"),
    (&["GET", "POST"], "/api/v1/registries"),
    (&["DELETE"], "/api/v1/registries/127.0.0.1:5000"),
    (&["GET", "POST"], "/api/v1/reservations"),
    (&["GET"], "/api/v1/reservations/calendar.ics"),
    (&["GET", "DELETE"], "/api/v1/reservations/{job}"),
    (&["GET", "POST"], "/api/v1/jobs"),
    (&["GET"], "/api/v1/jobs/{job}"),
    (&["POST"], "/api/v1/jobs/{job}/cancel"),
    (&["POST"], "/api/v1/jobs/{job}/rerun"),
    (&["GET"], "/api/v1/jobs/{job}/logs"),
    (&["GET"], "/api/v1/jobs/{job}/outputs"),
    (&["GET"], "/api/v1/jobs/{job}/outputs/{file}"),
    (&["GET"], "/api/v1/schedules"),
    (&["DELETE"], "/api/v1/schedules/{job}"),
    (&["GET", "POST", "DELETE"], "/api/v1/{api}"),
];

enum Seg {
    Lit(&'static str),
    Param(&'static str),
}

fn segments(pattern: &'static str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Seg::Lit(&rest[..open]));
        }
        let close = rest[open..].find('}').expect("closing brace") + open;
        out.push(Seg::Param(&rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Seg::Lit(rest));
    }
    out
}

/// A real value for a parameter (ids and tokens that exist).
fn real_value(rng: &mut Rng, param: &str) -> T {
    match param {
        "nb" => T::fix(*rng.pick(&[Fix::Nb, Fix::Nb, Fix::AdminNb, Fix::NbSpare])),
        "nb_del" => T::fix(Fix::NbSpare),
        // No job exists: notebook ids where a job's is expected (never the same thing).
        "job" => match rng.pick(&[0, 1, 2]) {
            0 => T::fix(Fix::Nb),
            1 => T::fix(Fix::AdminNb),
            _ => T::lit("0000000000000"),
        },
        "share" => T::fix(*rng.pick(&[Fix::Share, Fix::Share, Fix::PublicShare])),
        "share_del" => T::fix(Fix::ShareSpare),
        "user" => T::fix(Fix::VictimId),
        "tok_del" => T::fix(Fix::SpareTokenId),
        "action" => T::lit(*rng.pick(&["start", "stop", "restart", "keepalive", "fork"])),
        "asset" => T::lit(*rng.pick(&["app.css", "app.js", "favicon.svg"])),
        "tail" => T::lit(*rng.pick(&[
            "",
            "lab",
            "tree",
            "api/status",
            "api/kernels",
            "api/contents/nb.ipynb",
            "api/kernels/0000/channels",
            "static/lab/index.html",
        ])),
        "file" => T::lit(*rng.pick(&[
            "hello.txt",
            "nb.ipynb",
            "README.md",
            "sub/inner.txt",
            "sub/",
            "missing.txt",
        ])),
        "api" => T::lit(*rng.pick(&["", "nope", "notebooks/x/y/z", "me/", "usage", "v2"])),
        other => panic!("unknown route parameter {other}"),
    }
}

/// Hostile values for one path segment, as they appear in the request target. Those
/// marked raw-only cannot be sent by reqwest (bytes that are not allowed in a URL).
fn garbage_segments() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "",
        "0",
        "-1",
        "18446744073709551616",
        "9223372036854775807",
        "abc",
        "%00",
        "abc%00def",
        "%0d%0a",
        "abc%0d%0aSet-Cookie:%20x=y",
        "%0a",
        "%09",
        "%7f",
        "%ff",
        "%fe%ff",
        "%c0%af",
        "%e0%80%af",
        "%c3%28",
        "%ed%a0%80",
        "%",
        "%z",
        "%zz",
        "%%",
        "..",
        ".",
        "%2e%2e",
        "%2f",
        "%2e%2e%2f%2e%2e%2fnotebox.db",
        "%5c",
        "%20",
        "+",
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "'%20OR%201=1--",
        "%E2%80%AE",
        "%F0%9F%92%A9",
        "a;b=c",
        "@:",
        "null",
        "{id}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(vec![b'A'; 300]);
    v.push(vec![b'A'; 5000]);
    // Raw-only: bytes reqwest will not put in a URL.
    v.push(b"\xff\xfe".to_vec());
    v.push(b"a\x7fb".to_vec());
    v.push(b"a b".to_vec());
    v
}

/// Extra hostile values for `{tail}` and `{file}` (several segments).
fn garbage_tails() -> Vec<Vec<u8>> {
    let mut v = garbage_segments();
    for s in [
        "../../notebox.db",
        "..%2f..%2fnotebox.db",
        "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "sub/../../..",
        "a//b",
        "/",
        "//",
        "sub/%00.txt",
        "nb.ipynb/",
        ".",
        "sub/.",
        "C:%5cwindows",
    ] {
        v.push(s.as_bytes().to_vec());
    }
    v
}

// ---------------------------------------------------------------------------------------
// One request.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Anonymous,
    Member,
    Admin,
}

const WHO: [Who; 3] = [Who::Anonymous, Who::Member, Who::Admin];

struct Case {
    index: usize,
    phase: &'static str,
    route: &'static str,
    note: String,
    who: Who,
    /// Raw TCP even when reqwest could send it.
    prefer_raw: bool,
    method: Vec<u8>,
    target: T,
    headers: Vec<(Vec<u8>, T)>,
    body: T,
    chunked: bool,
}

impl Case {
    fn describe(&self, transport: &str) -> String {
        let mut s = format!(
            "#{} [{} {:?} via {transport}] route {} ({})\n    {} {}\n",
            self.index,
            self.phase,
            self.who,
            self.route,
            self.note,
            self.method.escape_ascii(),
            self.target.show(300)
        );
        for (name, value) in &self.headers {
            s.push_str(&format!(
                "    {}: {}\n",
                name.escape_ascii(),
                value.show(160)
            ));
        }
        s.push_str(&format!(
            "    body: ~{} bytes{}: {}\n",
            self.body.lit_len(),
            if self.chunked { " (chunked)" } else { "" },
            self.body.show(160)
        ));
        s
    }
}

fn auth_headers(rng: &mut Rng, who: Who, headers: &mut Vec<(Vec<u8>, T)>) {
    let session = |f: Fix| {
        let mut t = T::lit("notebox_session=");
        t.push_fix(f);
        t
    };
    match who {
        Who::Anonymous => {
            if rng.chance(25) {
                let v = match rng.below(4) {
                    0 => T::lit(b"notebox_session=0000"),
                    1 => {
                        let mut t = T::lit("notebox_session=");
                        t.push(rng.alnum(64));
                        t
                    }
                    2 => T::lit([b"notebox_session=".as_slice(), &[b'x'; 200]].concat()),
                    _ => {
                        let mut t = T::lit("notebox_login_csrf=");
                        t.push_fix(Fix::LoginCsrf);
                        t
                    }
                };
                headers.push((b"cookie".to_vec(), v));
            }
            if rng.chance(15) {
                let mut t = T::lit(*rng.pick(&["Bearer ", "token ", "bearer ", "Basic "]));
                t.push({
                    let n = rng.range(0, 60);
                    rng.alnum(n)
                });
                headers.push((b"authorization".to_vec(), t));
            }
        }
        Who::Member => {
            let mode = rng.below(10);
            if mode <= 5 {
                headers.push((b"cookie".to_vec(), session(Fix::MemberCookie)));
                if mode >= 3 {
                    headers.push((b"x-csrf-token".to_vec(), T::fix(Fix::MemberCsrf)));
                }
            }
            if mode >= 5 {
                let mut t = T::lit(*rng.pick(&["Bearer ", "token ", "bearer ", "Bearer  "]));
                t.push_fix(Fix::MemberPat);
                if rng.chance(10) {
                    t.push(rng.alnum(3));
                }
                headers.push((b"authorization".to_vec(), t));
            }
        }
        Who::Admin => {
            headers.push((b"cookie".to_vec(), session(Fix::AdminCookie)));
            if rng.chance(60) {
                headers.push((b"x-csrf-token".to_vec(), T::fix(Fix::AdminCsrf)));
            }
        }
    }
}

/// A header value: short text, bad UTF-8, oversized, or control characters.
fn header_value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=3 => {
            let n = rng.range(0, 40);
            rng.word(n)
        }
        4 | 5 => {
            let n = rng.range(1, 80);
            rng.bad_utf8(n)
        }
        6 => vec![b'A' + rng.below(26) as u8; rng.range(4096, 16 * 1024)],
        7 => {
            let n = rng.range(4096, 16 * 1024);
            rng.bad_utf8(n)
        }
        8 => {
            // Control characters: raw-only (reqwest refuses them).
            let mut v = rng.word(5);
            v.push(*rng.pick(&[0u8, 1, 0x1b, 0x7f, b'\r']));
            v.extend(rng.word(5));
            v
        }
        _ => Vec::new(),
    }
}

fn extra_header(rng: &mut Rng, headers: &mut Vec<(Vec<u8>, T)>) {
    let h = |n: &str| n.as_bytes().to_vec();
    match rng.below(22) {
        0 | 1 => {
            let v = match rng.below(6) {
                0 => T::fix(Fix::Origin),
                1 => T::lit("null"),
                2 => T::lit("http://evil.example"),
                3 => T::lit("https://127.0.0.1"),
                4 => T::lit(header_value(rng)),
                _ => {
                    let mut t = T::fix(Fix::Origin);
                    t.push(".evil.example");
                    t
                }
            };
            headers.push((h("origin"), v));
        }
        2 => {
            let mut t = T::fix(Fix::Origin);
            t.push("/");
            t.push(header_value(rng));
            headers.push((h("referer"), t));
        }
        3 => headers.push((h("x-csrf-token"), T::lit(header_value(rng)))),
        4 | 5 => {
            // A second (or first) Cookie header: garbage, or someone else's session.
            let v = match rng.below(6) {
                0 => {
                    let mut t = T::lit("notebox_session=");
                    t.push_fix(Fix::MemberCookie);
                    t
                }
                1 => {
                    let mut t = T::lit("notebox_session=");
                    t.push_fix(Fix::AdminCookie);
                    t.push("; notebox_session=x");
                    t
                }
                2 => T::lit(b"notebox_session=\"quoted\"; a=b; ;;; =; c"),
                3 => {
                    let mut t = T::lit("notebox_session=");
                    t.push(rng.bad_utf8(40));
                    t
                }
                4 => T::lit(header_value(rng)),
                _ => {
                    let mut t = T::lit("notebox_login_csrf=");
                    t.push_fix(Fix::LoginCsrf);
                    t
                }
            };
            headers.push((h("cookie"), v));
        }
        6 | 7 => {
            let v = match rng.below(6) {
                0 => T::lit("Basic YWRtaW46YWRtaW4="),
                1 => T::lit("Bearer"),
                2 => T::lit("Bearer "),
                3 => {
                    let mut t = T::lit("Bearer ");
                    t.push(rng.bad_utf8(30));
                    t
                }
                4 => {
                    let mut t = T::lit("token ");
                    t.push_fix(Fix::MemberPat);
                    t
                }
                _ => {
                    let mut t = T::lit("Bearer ");
                    t.push(header_value(rng));
                    t
                }
            };
            headers.push((h("authorization"), v));
        }
        8 | 9 => headers.push((h("content-type"), T::lit(content_type(rng)))),
        10 => {
            let v = *rng.pick(&[
                "text/html",
                "application/json",
                "*/*",
                "text/html;q=0.x, */*;q=2",
                "",
            ]);
            headers.push((h("accept"), T::lit(v)));
        }
        11 => {
            let v = *rng.pick(&["gzip", "br", "deflate", "identity;q=0", "gzip;q=2, *", "x"]);
            headers.push((h("accept-encoding"), T::lit(v)));
        }
        12 => {
            headers.push((h("upgrade"), T::lit("websocket")));
            headers.push((h("connection"), T::lit("Upgrade")));
            headers.push((h("sec-websocket-version"), T::lit("13")));
            headers.push((h("sec-websocket-key"), T::lit("dGhlIHNhbXBsZSBub25jZQ==")));
            if rng.chance(50) {
                headers.push((h("sec-websocket-protocol"), T::lit(header_value(rng))));
            }
        }
        13 => {
            let v = *rng.pick(&[
                "bytes=0-10",
                "bytes=-1",
                "bytes=99999999999999999999-",
                "bytes=5-1",
                "bytes=0-1,2-3,4-5,6-7,8-9",
                "pages=1",
            ]);
            headers.push((h("range"), T::lit(v)));
        }
        14 => {
            let name = *rng.pick(&["if-none-match", "if-modified-since", "if-match"]);
            headers.push((h(name), T::lit(header_value(rng))));
        }
        15 => {
            let name = *rng.pick(&[
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "forwarded",
                "x-real-ip",
            ]);
            let v = match rng.below(3) {
                0 => {
                    T::lit(*rng.pick(&["https", "1.2.3.4, 127.0.0.1", "for=\"[::1]\";proto=https"]))
                }
                _ => T::lit(header_value(rng)),
            };
            headers.push((h(name), v));
        }
        16 => headers.push((h("user-agent"), T::lit(header_value(rng)))),
        17 => headers.push((h("expect"), T::lit("100-continue"))),
        18 | 19 => {
            let name = {
                let n = rng.range(1, 40);
                rng.alnum(n)
            }
            .to_ascii_lowercase();
            headers.push((name, T::lit(header_value(rng))));
        }
        20 => {
            // Raw-only: a header name that is not a token.
            let name = rng
                .pick(&[&b"x y"[..], b"x\xff", b"", b"x:y", b"\x00"])
                .to_vec();
            headers.push((name, T::lit(rng.word(8))));
        }
        _ => {
            // Raw-only: a second Host.
            headers.push((h("host"), T::lit(header_value(rng))));
        }
    }
}

fn content_type(rng: &mut Rng) -> Vec<u8> {
    const TYPES: &[&[u8]] = &[
        b"application/json",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=xyz",
        b"text/plain",
        b"application/json; charset=utf-16",
        b"application/x-www-form-urlencoded; charset=\xff\xfe",
        b"",
        b"*/*",
        b"application/json\x80",
        b"application/octet-stream",
    ];
    TYPES[rng.below(TYPES.len())].to_vec()
}

const FORM_FIELDS: &[&str] = &[
    "csrf",
    "username",
    "password",
    "next",
    "name",
    "image",
    "custom_image",
    "machine",
    "auto_shutdown",
    "visibility",
    "value",
    "limit",
    "current",
    "new",
    "confirm",
    "admin",
    "token",
];

fn form_value(rng: &mut Rng, field: &str, who: Who) -> T {
    if field == "csrf" && rng.chance(60) {
        return T::fix(match who {
            Who::Anonymous => Fix::LoginCsrf,
            Who::Member => Fix::MemberCsrf,
            Who::Admin => Fix::AdminCsrf,
        });
    }
    match rng.below(8) {
        0 => T::lit(*rng.pick(&[
            "scipy", "cpu", "gpu-2", "link", "public", "on", "off", "true", "1", "0", "-1", "1h",
            "never", "1w", "999999d", "admin", "member", "victim",
        ])),
        1 => T::lit(*rng.pick(&[
            "%ff%fe",
            "%zz",
            "%00",
            "%0d%0a",
            "+++",
            "%",
            "//evil.example",
            "/%5cevil",
            "99999999999999999999999",
            "javascript:alert(1)",
        ])),
        2 => T::lit({
            let n = rng.range(1, 60);
            rng.bad_utf8(n)
        }),
        3 => T::lit(vec![b'x'; rng.range(100, 3000)]),
        _ => T::lit({
            let n = rng.range(0, 20);
            rng.alnum(n)
        }),
    }
}

fn json_value(rng: &mut Rng, depth: usize) -> String {
    let k = if depth >= 3 {
        rng.below(6)
    } else {
        rng.below(9)
    };
    match k {
        0 => "null".into(),
        1 => rng.pick(&["true", "false"]).to_string(),
        2 => rng
            .pick(&[
                "0",
                "-1",
                "10081",
                "1e400",
                "9223372036854775808",
                "-9223372036854775809",
                "0.5",
                "1",
                "60",
            ])
            .to_string(),
        3 | 4 => format!(
            "\"{}\"",
            rng.pick(&[
                "scipy",
                "cpu",
                "gpu-1",
                "link",
                "public",
                "12h",
                "never",
                "",
                "fuzz nb",
                "\\ud800",
                "\\u0000",
                "x\\ny",
                "quay.io/jupyter/scipy-notebook:latest",
                "../../etc",
            ])
        ),
        5 => format!("\"{}\"", "w".repeat(rng.range(100, 5000))),
        6 | 7 => {
            let n = rng.range(0, 4);
            let fields: Vec<String> = (0..n)
                .map(|_| {
                    let key = *rng.pick(&[
                        "name",
                        "image",
                        "machine",
                        "auto_shutdown_minutes",
                        "auto_shutdown",
                        "visibility",
                        "extra",
                        "",
                    ]);
                    format!("\"{key}\": {}", json_value(rng, depth + 1))
                })
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        _ => {
            let n = rng.range(0, 4);
            let items: Vec<String> = (0..n).map(|_| json_value(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
    }
}

/// A body and the content type that would match it.
fn body(rng: &mut Rng, who: Who, post_like: bool) -> (T, Option<&'static str>) {
    let roll = if post_like {
        rng.below(100)
    } else {
        // Bodies on GET and friends are rarer.
        if rng.chance(80) {
            return (T::default(), None);
        }
        rng.below(100)
    };
    match roll {
        0..=19 => (T::default(), None),
        20..=44 => {
            let mut t = T::default();
            let n = rng.range(0, 6);
            for i in 0..n {
                if i > 0 {
                    t.push(if rng.chance(5) { ";" } else { "&" });
                }
                let field = if rng.chance(85) {
                    rng.pick(FORM_FIELDS).to_string()
                } else {
                    String::from_utf8_lossy(&rng.alnum(6)).into_owned()
                };
                t.push(field.as_bytes());
                if rng.chance(95) {
                    t.push("=");
                }
                let v = form_value(rng, &field, who);
                t.append(v);
            }
            (t, Some("application/x-www-form-urlencoded"))
        }
        45..=64 => (T::lit(json_value(rng, 0)), Some("application/json")),
        65..=74 => (
            T::lit({
                let n = rng.range(1, 4096);
                rng.bytes(n)
            }),
            None,
        ),
        75..=81 => (
            T::lit({
                let n = rng.range(1, 2048);
                rng.bad_utf8(n)
            }),
            Some("application/x-www-form-urlencoded"),
        ),
        82..=84 => {
            // Big JSON: over the 256 KiB limit, or deeply nested.
            let t = if rng.chance(50) {
                let mut s = String::from("{\"name\": [");
                for i in 0..45_000 {
                    s.push_str(&format!("{i},"));
                }
                s.push_str("0]}");
                T::lit(s)
            } else {
                let depth = rng.range(200, 20_000);
                T::lit(format!("{}{}", "[".repeat(depth), "]".repeat(depth)))
            };
            (t, Some("application/json"))
        }
        85..=86 => {
            // A form over the 64 KiB limit.
            let mut t = T::lit("csrf=");
            t.push_fix(Fix::MemberCsrf);
            t.push("&name=");
            t.push(vec![b'n'; rng.range(60_000, 80_000)]);
            (t, Some("application/x-www-form-urlencoded"))
        }
        87..=90 => {
            let mut s = b"--xyz\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n".to_vec();
            s.extend(rng.bad_utf8(30));
            s.extend_from_slice(b"\r\n--xyz--\r\n");
            (T::lit(s), Some("multipart/form-data; boundary=xyz"))
        }
        _ => (
            T::lit(format!(
                "{{\"visibility\": \"{}\"}}",
                rng.pick(&["link", "public", "secret", ""])
            )),
            Some("application/json"),
        ),
    }
}

fn query(rng: &mut Rng) -> T {
    if rng.chance(55) {
        return T::default();
    }
    let mut t = T::lit("?");
    match rng.below(10) {
        0 => {
            t.push(*rng.pick(&["&&&==", "%", "a=%ff%fe", "?", "=", "a=%zz&b", "token"]));
        }
        1 => {
            t.push("q=");
            t.push(vec![b'q'; rng.range(1000, 12_000)]);
        }
        _ => {
            let n = rng.range(1, 4);
            for i in 0..n {
                if i > 0 {
                    t.push("&");
                }
                let name = *rng.pick(&[
                    "next", "done", "user", "tail", "from", "to", "group_by", "token", "page",
                    "_xsrf", "path",
                ]);
                t.push(name);
                t.push("=");
                let v = *rng.pick(&[
                    "%2F%2Fevil.example",
                    "/%5Cevil",
                    "/notebooks/1",
                    "javascript:alert(1)",
                    "%0d%0aX:y",
                    "%00",
                    "%ff",
                    "-1",
                    "18446744073709551616",
                    "abc",
                    "member",
                    "added",
                    "password",
                    "1970-01-01",
                    "9999-99-99",
                    "day",
                    "gpu",
                    "",
                ]);
                t.push(v);
            }
        }
    }
    t
}

fn pick_method(rng: &mut Rng, route: &Route) -> Vec<u8> {
    match rng.below(100) {
        0..=64 => rng.pick(route.methods).as_bytes().to_vec(),
        65..=89 => rng.pick(ANY).as_bytes().to_vec(),
        _ => rng
            .pick(&[
                &b"FOO"[..],
                b"get",
                b"PROPFIND",
                b"TRACE",
                b"CONNECT",
                b"M-SEARCH",
                b"G\xffT",
                b"",
                b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ])
            .to_vec(),
    }
}

/// A request on `route` with its parameters filled by `fill` (index of the slot, name).
fn build(
    rng: &mut Rng,
    index: usize,
    phase: &'static str,
    route: &Route,
    who: Who,
    method: Vec<u8>,
    mut fill: impl FnMut(&mut Rng, usize, &str) -> (T, String),
) -> Case {
    let random_extras = phase == "random";
    let mut target = T::default();
    let mut notes = Vec::new();
    for (slot, seg) in segments(route.pattern).into_iter().enumerate() {
        match seg {
            Seg::Lit(s) => {
                target.push(s);
            }
            Seg::Param(p) => {
                let (v, note) = fill(rng, slot, p);
                notes.push(format!("{p}={note}"));
                target.append(v);
            }
        }
    }
    let mut headers = Vec::new();
    auth_headers(rng, who, &mut headers);
    let post_like = !matches!(&method[..], b"GET" | b"HEAD" | b"OPTIONS");
    let (mut body_t, ctype) = if random_extras || post_like {
        body(rng, who, post_like)
    } else {
        (T::default(), None)
    };
    if !random_extras && post_like && rng.chance(50) {
        // Sweep: a well-formed form with the right CSRF token gets past the checks and
        // reaches the handler's use of the path.
        body_t = T::lit("csrf=");
        body_t.push_fix(match who {
            Who::Anonymous => Fix::LoginCsrf,
            Who::Member => Fix::MemberCsrf,
            Who::Admin => Fix::AdminCsrf,
        });
        headers.push((
            b"content-type".to_vec(),
            T::lit("application/x-www-form-urlencoded"),
        ));
    } else if let Some(ct) = ctype {
        if rng.chance(75) {
            headers.push((b"content-type".to_vec(), T::lit(ct)));
        }
    }
    let mut prefer_raw = rng.chance(35);
    let mut chunked = false;
    if random_extras {
        target.append(query(rng));
        // Path mutations.
        match rng.below(20) {
            0 => {
                target.push("/");
            }
            1 => {
                let mut t = T::lit("/");
                t.append(target);
                target = t;
            }
            2 => {
                target.push("/");
                target.push(vec![b'L'; rng.range(8_000, 70_000)]);
            }
            3 => {
                target = T::lit(
                    [b"/".as_slice(), &{
                        let n = rng.range(1, 200);
                        rng.bytes(n)
                    }]
                    .concat(),
                );
                prefer_raw = true;
            }
            4 => {
                target.push("/..%2f..%2f%00%ff");
            }
            5 => {
                target.push(*rng.pick(&["#frag", ";jsessionid=x", "%", "/%2e%2e/%2e%2e/healthz"]));
            }
            6 if prefer_raw => {
                // Absolute-form and asterisk-form targets.
                let mut t = T::fix(Fix::Origin);
                t.append(target);
                target = if rng.chance(80) { t } else { T::lit("*") };
            }
            _ => {}
        }
        let n = if rng.chance(3) {
            rng.range(60, 140)
        } else {
            rng.range(0, 4)
        };
        for _ in 0..n {
            extra_header(rng, &mut headers);
        }
        if rng.chance(10) {
            headers.reverse();
        }
        chunked = prefer_raw && !body_t.0.is_empty() && rng.chance(25);
    }
    if route.pattern == "/logout" {
        // Never the session's own CSRF token here: the fuzzer would log itself out.
        for p in &mut body_t.0 {
            if matches!(p, Piece::Fix(Fix::MemberCsrf | Fix::AdminCsrf)) {
                *p = Piece::Lit(b"not-the-csrf-token".to_vec());
            }
        }
    }
    Case {
        index,
        phase,
        route: route.pattern,
        note: notes.join(" "),
        who,
        prefer_raw,
        method,
        target,
        headers,
        body: body_t,
        chunked,
    }
}

/// The sweep: every route with real values as each identity, then every hostile value in
/// every parameter slot.
fn sweep(rng: &mut Rng) -> Vec<Case> {
    let segs = garbage_segments();
    let tails = garbage_tails();
    let mut cases = Vec::new();
    for route in ROUTES {
        for who in WHO {
            let method = rng.pick(route.methods).as_bytes().to_vec();
            let c = build(
                rng,
                cases.len(),
                "sweep",
                route,
                who,
                method,
                |rng, _, p| (real_value(rng, p), "real".into()),
            );
            cases.push(c);
        }
        let slots: Vec<(usize, &str)> = segments(route.pattern)
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Seg::Param(p) => Some((i, p)),
                Seg::Lit(_) => None,
            })
            .collect();
        for (slot, param) in slots {
            let values = if matches!(param, "tail" | "file" | "api") {
                &tails
            } else {
                &segs
            };
            for value in values {
                let who = WHO[cases.len() % 3];
                let method = rng.pick(route.methods).as_bytes().to_vec();
                let c = build(
                    rng,
                    cases.len(),
                    "sweep",
                    route,
                    who,
                    method,
                    |rng, s, p| {
                        if s == slot {
                            let shown = T::lit(value).show(40);
                            (T::lit(value), format!("garbage:{shown}"))
                        } else {
                            (real_value(rng, p), "real".into())
                        }
                    },
                );
                cases.push(c);
            }
        }
    }
    cases
}

fn random_case(rng: &mut Rng, index: usize) -> Case {
    let segs = garbage_segments();
    let tails = garbage_tails();
    let route = rng.pick(ROUTES);
    let who = *rng.pick(&WHO);
    let method = pick_method(rng, route);
    build(rng, index, "random", route, who, method, |rng, _, p| {
        if rng.chance(55) {
            (real_value(rng, p), "real".into())
        } else if rng.chance(15) {
            let v = {
                let n = rng.range(1, 30);
                rng.bad_utf8(n)
            };
            let shown = T::lit(&v).show(40);
            (T::lit(v), format!("random:{shown}"))
        } else {
            let list = if matches!(p, "tail" | "file" | "api") {
                &tails
            } else {
                &segs
            };
            let v = rng.pick(list).clone();
            let shown = T::lit(&v).show(40);
            (T::lit(v), format!("garbage:{shown}"))
        }
    })
}

// ---------------------------------------------------------------------------------------
// Sending.

enum Outcome {
    Status(u16),
    /// Answered only once the client had closed its sending side.
    AfterHalfClose(u16),
    NoAnswer(String),
}

struct Rendered {
    method: Vec<u8>,
    target: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

fn render(case: &Case, fx: &Fixtures) -> Rendered {
    Rendered {
        method: case.method.clone(),
        target: case.target.render(fx),
        headers: case
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.render(fx)))
            .collect(),
        body: case.body.render(fx),
    }
}

/// The request as reqwest would send it, or None when only a raw connection can.
fn as_reqwest(http: &reqwest::Client, base: &str, r: &Rendered) -> Option<reqwest::Request> {
    let method = reqwest::Method::from_bytes(&r.method).ok()?;
    if method == reqwest::Method::CONNECT || method == reqwest::Method::TRACE {
        return None;
    }
    if !r.target.starts_with(b"/")
        || r.target.len() > 60_000
        || r.target.iter().any(|&b| !(0x21..0x7f).contains(&b))
        || r.target.contains(&b'#')
    {
        return None;
    }
    let url = format!("{base}{}", std::str::from_utf8(&r.target).ok()?);
    let url = reqwest::Url::parse(&url).ok()?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (n, v) in &r.headers {
        // Hop-by-hop and framing headers are the raw client's business.
        if matches!(
            &n[..],
            b"host" | b"connection" | b"upgrade" | b"expect" | b"content-length"
        ) {
            return None;
        }
        let name = reqwest::header::HeaderName::from_bytes(n).ok()?;
        let value = reqwest::header::HeaderValue::from_bytes(v).ok()?;
        headers.append(name, value);
    }
    http.request(method, url)
        .headers(headers)
        .body(r.body.clone())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .ok()
}

async fn send_reqwest(http: &reqwest::Client, req: reqwest::Request) -> Outcome {
    match http.execute(req).await {
        Ok(res) => {
            let status = res.status().as_u16();
            match res.bytes().await {
                Ok(_) => Outcome::Status(status),
                Err(e) => Outcome::NoAnswer(format!("{status}, then the body failed: {e}")),
            }
        }
        Err(e) => Outcome::NoAnswer(format!("reqwest: {e}")),
    }
}

fn raw_request(addr: &str, r: &Rendered, chunked: bool) -> Vec<u8> {
    let mut req = Vec::with_capacity(r.body.len() + 1024);
    req.extend_from_slice(&r.method);
    req.push(b' ');
    req.extend_from_slice(&r.target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(addr.as_bytes());
    req.extend_from_slice(b"\r\n");
    for (n, v) in &r.headers {
        req.extend_from_slice(n);
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    if chunked {
        req.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else if !r.body.is_empty() || r.method == b"POST" {
        req.extend_from_slice(format!("Content-Length: {}\r\n", r.body.len()).as_bytes());
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    if chunked {
        for chunk in r.body.chunks(1000) {
            req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            req.extend_from_slice(chunk);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
    } else {
        req.extend_from_slice(&r.body);
    }
    req
}

async fn send_raw(addr: &str, r: &Rendered, chunked: bool) -> Outcome {
    let req = raw_request(addr, r, chunked);
    let head_only = r.method == b"HEAD";
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // The server may answer (and close) before it read everything: keep going.
        let write = s.write_all(&req).await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let mut half_closed = false;
        loop {
            if let Some(resp) = parse_response(&buf, head_only) {
                if resp.complete {
                    return Ok((resp.status, half_closed));
                }
            }
            // A server that waits for more of the request (an upgrade request's body is
            // read until the end of the stream) gets the end of it after a while.
            let read = tokio::time::timeout(HALF_CLOSE_AFTER, s.read(&mut chunk)).await;
            match read {
                Err(_) if !half_closed => {
                    half_closed = true;
                    let _ = s.shutdown().await;
                }
                Err(_) => {}
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => {
                    return match parse_response(&buf, head_only) {
                        Some(resp) => Ok((resp.status, half_closed)),
                        None => Err(format!("read: {e} (write: {write:?})")),
                    }
                }
            }
        }
        match parse_response(&buf, head_only) {
            Some(resp) => Ok((resp.status, half_closed)),
            None => Err(format!(
                "connection closed without an answer (write: {write:?}; got {:?})",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            )),
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok((status, false))) => Outcome::Status(status),
        Ok(Ok((status, true))) => Outcome::AfterHalfClose(status),
        Ok(Err(e)) => Outcome::NoAnswer(e),
        Err(_) => Outcome::NoAnswer(format!("no complete answer within {REQUEST_TIMEOUT:?}")),
    }
}

struct RawResponse {
    status: u16,
    complete: bool,
}

/// The first final (not 100 Continue) response in `buf`, once its head is complete, and
/// whether its body is complete too.
fn parse_response(buf: &[u8], head_only: bool) -> Option<RawResponse> {
    let mut rest = buf;
    loop {
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        let status: u16 = head.get(9..12)?.parse().ok()?;
        if status == 100 {
            rest = &rest[head_end..];
            continue;
        }
        let body = &rest[head_end..];
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                (n.trim() == name).then(|| v.trim().to_string())
            })
        };
        let complete = if head_only || status < 200 || status == 204 || status == 304 {
            true
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.len() >= len
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            chunked_complete(body)
        } else {
            false // until the server closes the connection
        };
        return Some(RawResponse { status, complete });
    }
}

fn chunked_complete(mut body: &[u8]) -> bool {
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let line = String::from_utf8_lossy(&body[..line_end]);
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            return true; // not ours to judge: stop reading
        };
        body = &body[line_end + 2..];
        if size == 0 {
            return body.windows(2).any(|w| w == b"\r\n");
        }
        if body.len() < size + 2 {
            return false;
        }
        body = &body[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------
// Setup: users, sessions, tokens, notebooks, shares.

struct Session {
    cookie: String,
    csrf: String,
}

fn set_cookie_value(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))
                .map(|rest| rest.split(';').next().unwrap_or("").to_string())
        })
}

async fn session_for(base: &str, user: &str, password: &str) -> Session {
    let c = client();
    let res = login(&c, base, user, password).await;
    assert_eq!(res.status(), 303, "login as {user}");
    let cookie = set_cookie_value(&res, "notebox_session").expect("session cookie");
    let home = c
        .get(format!("{base}/"))
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .expect("body");
    Session {
        cookie,
        csrf: csrf_from(&home),
    }
}

fn cli(data: &Path, config: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut all = vec!["--config", config];
    all.extend_from_slice(args);
    let out = run_cli(data, &all, stdin);
    assert!(
        out.status.success(),
        "notebox {args:?} failed: {}",
        out.stderr
    );
    out.stdout.trim().to_string()
}

fn db_i64(data: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(data.join("notebox.db")).expect("open db");
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

async fn me_status(base: &str, header: (&str, String)) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/me"))
        .header(header.0, header.1)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

const MEMBER_PASSWORD: &str = "member-password-fuzz";
const VICTIM_PASSWORD: &str = "victim-password-fuzz";

fn write_notebook_files(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).expect("notebook dir");
    std::fs::write(dir.join("hello.txt"), "hello\n").expect("file");
    std::fs::write(
        dir.join("README.md"),
        "# Title\n\n<script>alert(1)</script>\n",
    )
    .expect("file");
    std::fs::write(dir.join("sub/inner.txt"), "inner\n").expect("file");
    std::fs::write(
        dir.join("nb.ipynb"),
        r##"{"cells": [
 {"cell_type": "markdown", "metadata": {}, "source": ["# Hi <b>there</b>"]},
 {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": ["print(1)"],
  "outputs": [{"output_type": "stream", "name": "stdout", "text": ["\u001b[31mred\u001b[0m\n"]}]}
], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"##,
    )
    .expect("file");
}

/// Makes sure the fuzzing identities still work (the fuzzer may have ended a session);
/// logs in again where one did not.
async fn keep_identities(base: &str, data: &Path, config: &str, fx: &mut Fixtures) {
    let member = me_status(
        base,
        (
            "cookie",
            format!("notebox_session={}", fx.get(Fix::MemberCookie)),
        ),
    )
    .await;
    if member != 200 {
        println!("fuzz: member session answered {member}; logging in again");
        let s = session_for(base, "member", MEMBER_PASSWORD).await;
        fx.set(Fix::MemberCookie, s.cookie);
        fx.set(Fix::MemberCsrf, s.csrf);
    }
    let admin = me_status(
        base,
        (
            "cookie",
            format!("notebox_session={}", fx.get(Fix::AdminCookie)),
        ),
    )
    .await;
    if admin != 200 {
        println!("fuzz: admin session answered {admin}; logging in again");
        let pw = std::fs::read_to_string(data.join("initial-admin-password")).expect("pw");
        let s = session_for(base, "admin", pw.trim()).await;
        fx.set(Fix::AdminCookie, s.cookie);
        fx.set(Fix::AdminCsrf, s.csrf);
    }
    let pat = me_status(
        base,
        (
            "authorization",
            format!("Bearer {}", fx.get(Fix::MemberPat)),
        ),
    )
    .await;
    if pat != 200 {
        println!("fuzz: member token answered {pat}; making a new one");
        let t = cli(data, config, &["token", "create", "member"], None);
        fx.set(Fix::MemberPat, t);
    }
}

fn read_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(key)?
            .trim_start_matches(':')
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_every_route_as_anonymous_member_and_admin() {
    let seed = match std::env::var("NOTEBOX_FUZZ_SEED") {
        Ok(s) => {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            }
            .expect("NOTEBOX_FUZZ_SEED: a number (decimal or 0x-hex)")
        }
        Err(_) => DEFAULT_SEED,
    };
    let total: usize = std::env::var("NOTEBOX_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_TOTAL);
    let only: Option<Vec<usize>> = std::env::var("NOTEBOX_FUZZ_ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    println!("fuzz: seed NOTEBOX_FUZZ_SEED={seed:#x} (replay with that variable set)");
    // notebox refuses NOTEBOX_* variables it does not know, and the server and the CLI
    // inherit this process's environment.
    for var in [
        "NOTEBOX_FUZZ_SEED",
        "NOTEBOX_FUZZ_REQUESTS",
        "NOTEBOX_FUZZ_ONLY",
    ] {
        std::env::remove_var(var);
    }

    // The server: the real binary on the real Docker engine with the Jupyter test image
    // (so the fuzzed notebooks really start, stop and proxy), no GPUs.
    let Some(image) = test_image() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let _containers = ContainerGuard(data.clone());
    let config_path = dir.path().join("config.toml");
    // The suite's Docker config, plus: no login throttling in the way, no GPUs.
    let toml = docker_config_toml(&data, &image).replacen(
        "[notebooks]",
        "[auth]\nmax_failures_per_account = 100000\nmax_failures_per_address = 100000\n\
         max_failures_per_account_total = 100000\n[gpu]\nbackend = \"none\"\n[notebooks]",
        1,
    );
    std::fs::write(&config_path, toml).expect("config");
    let config = config_path.to_string_lossy().to_string();
    let mut server = ServerProcess::spawn(dir.path(), &["--config", &config], &[]).await;
    let pid = server.child.id();
    let rss_start = read_status_kib(pid, "VmRSS").unwrap_or(0);
    let base = server.url.clone();
    let addr = base.trim_start_matches("http://").to_string();
    println!("fuzz: notebox pid {pid} at {base}");

    // Identities.
    cli(
        &data,
        &config,
        &["user", "add", "member", "--password-stdin"],
        Some(&format!("{MEMBER_PASSWORD}\n")),
    );
    cli(
        &data,
        &config,
        &["user", "add", "victim", "--password-stdin"],
        Some(&format!("{VICTIM_PASSWORD}\n")),
    );
    let pat = cli(&data, &config, &["token", "create", "member"], None);
    let _spare = cli(
        &data,
        &config,
        &["token", "create", "member", "--name", "spare"],
        None,
    );
    let admin_pw = std::fs::read_to_string(data.join("initial-admin-password"))
        .expect("initial admin password")
        .trim()
        .to_string();
    let admin_pat = cli(&data, &config, &["token", "create", "admin"], None);
    let member_s = session_for(&base, "member", MEMBER_PASSWORD).await;
    let admin_s = session_for(&base, "admin", &admin_pw).await;
    let login_page = reqwest::get(format!("{base}/login")).await.expect("login");
    let login_csrf = set_cookie_value(&login_page, "notebox_login_csrf").expect("login csrf");

    // Notebooks and shares.
    let member_api = Api::new(&base, &pat);
    let admin_api = Api::new(&base, &admin_pat);
    let create = |api: Api, name: &'static str| async move {
        let (s, nb) = api
            .post(
                "/api/v1/notebooks",
                serde_json::json!({"name": name, "image": "test", "machine": "cpu"}),
            )
            .await;
        assert_eq!(s, 201, "create notebook {name}: {nb}");
        nb["id"].as_str().expect("id").to_string()
    };
    let nb = create(member_api.clone(), "fuzz-target").await;
    let nb_spare = create(member_api.clone(), "fuzz-spare").await;
    let admin_nb = create(admin_api.clone(), "admin-nb").await;
    for id in [&nb, &nb_spare, &admin_nb] {
        write_notebook_files(&data.join("notebooks").join(id));
    }
    let share = |api: Api, id: String, visibility: &'static str| async move {
        let (s, sh) = api
            .post(
                &format!("/api/v1/notebooks/{id}/shares"),
                serde_json::json!({ "visibility": visibility }),
            )
            .await;
        assert_eq!(s, 201, "share: {sh}");
        sh["token"].as_str().expect("token").to_string()
    };
    let share_t = share(member_api.clone(), nb.clone(), "link").await;
    let share_spare = share(member_api.clone(), nb_spare.clone(), "link").await;
    let public_share = share(admin_api.clone(), admin_nb.clone(), "public").await;
    let overview = reqwest::get(format!("{base}/s/{share_t}/"))
        .await
        .expect("share page")
        .status();
    println!("fuzz: notebooks {nb}, {nb_spare}, {admin_nb}; share page answers {overview}");

    let mut fx = Fixtures {
        values: BTreeMap::new(),
    };
    fx.set(Fix::Nb, nb);
    fx.set(Fix::NbSpare, nb_spare);
    fx.set(Fix::AdminNb, admin_nb);
    fx.set(Fix::Share, share_t);
    fx.set(Fix::ShareSpare, share_spare);
    fx.set(Fix::PublicShare, public_share);
    fx.set(
        Fix::VictimId,
        db_i64(&data, "SELECT id FROM users WHERE username = 'victim'").to_string(),
    );
    fx.set(
        Fix::SpareTokenId,
        db_i64(&data, "SELECT id FROM api_tokens WHERE name = 'spare'").to_string(),
    );
    fx.set(Fix::MemberCookie, member_s.cookie);
    fx.set(Fix::MemberCsrf, member_s.csrf);
    fx.set(Fix::AdminCookie, admin_s.cookie);
    fx.set(Fix::AdminCsrf, admin_s.csrf);
    fx.set(Fix::MemberPat, pat);
    fx.set(Fix::LoginCsrf, login_csrf);
    fx.set(Fix::Origin, base.clone());

    let rss_before = read_status_kib(pid, "VmRSS").unwrap_or(0);
    println!("fuzz: RSS {rss_start} KiB when started, {rss_before} KiB after setup (two logins)");

    // The requests: a sweep of every route and parameter, then random ones.
    let mut rng = Rng(seed);
    let cases = sweep(&mut rng);
    let sweep_len = cases.len();
    let random_len = total.saturating_sub(sweep_len).max(MIN_RANDOM);
    println!(
        "fuzz: {} routes; {sweep_len} sweep requests + {random_len} random requests",
        ROUTES.len()
    );

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let started = Instant::now();
    let mut sent = 0usize;
    let mut via_raw = 0usize;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut by_route: BTreeMap<&str, BTreeMap<u16, usize>> = BTreeMap::new();
    let mut failures: Vec<(u16, String)> = Vec::new();
    let mut no_answers: Vec<String> = Vec::new();
    let mut waited_for_eof: Vec<String> = Vec::new();
    let mut slowest: Vec<(Duration, String)> = Vec::new();
    let mut time_by_transport: BTreeMap<&str, (usize, Duration)> = BTreeMap::new();
    let mut stopped_early = false;
    let mut index = 0usize;
    let mut next_random = 0usize;
    let mut sweep_cases = cases.into_iter();
    loop {
        let case = if let Some(c) = sweep_cases.next() {
            c
        } else if next_random < random_len {
            next_random += 1;
            random_case(&mut rng, index)
        } else {
            break;
        };
        index += 1;
        if let Some(only) = &only {
            if !only.contains(&case.index) {
                continue;
            }
        }
        if started.elapsed() > DEADLINE {
            stopped_early = true;
            break;
        }
        if sent.is_multiple_of(100) && sent > 0 {
            keep_identities(&base, &data, &config, &mut fx).await;
        }
        let r = render(&case, &fx);
        let t0 = Instant::now();
        let reqwest_req = if case.prefer_raw || case.chunked {
            None
        } else {
            as_reqwest(&http, &base, &r)
        };
        let (transport, outcome) = match reqwest_req {
            Some(req) => ("reqwest", send_reqwest(&http, req).await),
            None => {
                via_raw += 1;
                ("raw", send_raw(&addr, &r, case.chunked).await)
            }
        };
        let took = t0.elapsed();
        let t = time_by_transport.entry(transport).or_default();
        t.0 += 1;
        t.1 += took;
        if took > Duration::from_millis(250) {
            let first = case.describe(transport);
            let first = first.lines().take(2).collect::<Vec<_>>().join(" / ");
            slowest.push((took, first.chars().take(300).collect()));
        }
        sent += 1;
        if let Outcome::AfterHalfClose(s) = outcome {
            waited_for_eof.push(format!("{s}: {}", case.describe(transport)));
        }
        match outcome {
            Outcome::Status(s) | Outcome::AfterHalfClose(s) => {
                *statuses.entry(s).or_default() += 1;
                *by_route
                    .entry(case.route)
                    .or_default()
                    .entry(s)
                    .or_default() += 1;
                if s >= 500 {
                    let d = case.describe(transport);
                    println!("fuzz: {s} for\n{d}");
                    failures.push((s, d));
                }
            }
            Outcome::NoAnswer(e) => {
                let e: String = e.chars().take(300).collect();
                no_answers.push(format!("{e}\n{}", case.describe(transport)));
                if let Ok(Some(exit)) = server.child.try_wait() {
                    panic!(
                        "notebox exited ({exit}) after request\n{}\nstderr:\n{}",
                        case.describe(transport),
                        server.stderr()
                    );
                }
            }
        }
    }
    let elapsed = started.elapsed();
    drop(sweep_cases);

    // After the run: alive, healthy, memory back down.
    let alive = server.child.try_wait().expect("try_wait").is_none();
    let health = reqwest::get(format!("{base}/healthz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let hwm = read_status_kib(pid, "VmHWM").unwrap_or(0);
    let rss_now = || read_status_kib(pid, "VmRSS").unwrap_or(u64::MAX);
    let rss = try_wait_for(Duration::from_secs(10), || async {
        let rss = rss_now();
        (rss < rss_before + RSS_GROWTH_LIMIT_KIB).then_some(rss)
    })
    .await
    .unwrap_or_else(rss_now);
    let stderr = server.stderr();
    let panics: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("panicked"))
        .take(20)
        .collect();

    println!(
        "fuzz: seed {seed:#x}: {sent} requests ({via_raw} raw TCP, {} reqwest) in {:.1} s{}",
        sent - via_raw,
        elapsed.as_secs_f64(),
        if stopped_early {
            " (stopped at the deadline)"
        } else {
            ""
        }
    );
    println!("fuzz: statuses {statuses:?}");
    let mut shown = std::collections::BTreeSet::new();
    for route in ROUTES {
        if !shown.insert(route.pattern) {
            continue;
        }
        if let Some(st) = by_route.get(route.pattern) {
            println!("fuzz:   {:48} {st:?}", route.pattern);
        }
    }
    println!(
        "fuzz: RSS at start {rss_start} KiB, before fuzzing {rss_before} KiB, peak (VmHWM) {hwm} KiB = {:.1} MiB, after {rss} KiB = {:.1} MiB",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    for (transport, (n, t)) in &time_by_transport {
        println!(
            "fuzz: {transport}: {n} requests, {:.1} ms on average",
            t.as_secs_f64() * 1000.0 / (*n).max(1) as f64
        );
    }
    slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    println!("fuzz: {} requests took over 250 ms", slowest.len());
    for (t, d) in slowest.iter().take(8) {
        println!("fuzz:   {:.0} ms: {d}", t.as_secs_f64() * 1000.0);
    }
    println!(
        "fuzz: {} requests were answered only after the client closed its side (the \
         server waited for the end of the request stream)",
        waited_for_eof.len()
    );
    for w in waited_for_eof.iter().take(10) {
        println!("fuzz: waited for EOF: {w}");
    }
    println!("fuzz: {} requests got no answer", no_answers.len());
    for n in no_answers.iter().take(10) {
        println!("fuzz: no answer: {n}");
    }
    if !panics.is_empty() {
        println!(
            "fuzz: panics in the server's stderr:\n{}",
            panics.join("\n")
        );
    }

    let mut problems = Vec::new();
    if !failures.is_empty() {
        let mut groups: BTreeMap<String, usize> = BTreeMap::new();
        for (s, d) in &failures {
            let key = d.lines().next().unwrap_or("").to_string();
            let route = key.split("route ").nth(1).unwrap_or(&key).to_string();
            *groups.entry(format!("{s} {route}")).or_default() += 1;
        }
        let list: Vec<String> = failures.iter().map(|(s, d)| format!("{s}: {d}")).collect();
        problems.push(format!(
            "{} responses with a 5xx status (seed {seed:#x}; replay one with \
             NOTEBOX_FUZZ_SEED={seed:#x} NOTEBOX_FUZZ_ONLY=<#>):\n{}\nby route:\n{}",
            failures.len(),
            list.join(""),
            groups
                .iter()
                .map(|(k, n)| format!("  {n:4} × {k}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if !alive {
        problems.push(format!("notebox is not running any more:\n{stderr}"));
    }
    if health != 200 {
        problems.push(format!("/healthz answered {health} after the run"));
    }
    if rss >= rss_before + RSS_GROWTH_LIMIT_KIB {
        problems.push(format!(
            "RSS after the run is {rss} KiB, {} KiB over the {rss_before} KiB it had before fuzzing (at most {RSS_GROWTH_LIMIT_KIB} KiB)",
            rss.saturating_sub(rss_before)
        ));
    }
    if !panics.is_empty() {
        problems.push(format!("the server panicked:\n{}", panics.join("\n")));
    }
    // A request must be answered without the client closing its side first (an upgrade
    // request with a body used to hold its connection until the client gave up).
    if !waited_for_eof.is_empty() {
        problems.push(format!(
            "{} requests were answered only after the client closed its side:\n{}",
            waited_for_eof.len(),
            waited_for_eof.join("\n")
        ));
    }
    if !no_answers.is_empty() {
        problems.push(format!(
            "{} requests got no answer:\n{}",
            no_answers.len(),
            no_answers.join("\n")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
