//! The proxy benchmark: Notebox's `/nb/{id}/` proxy against nginx in front of the same
//! upstream (tests/upstream/echo.py in a notebook container), with the same load-generator
//! code for both. `benches/run-proxy.sh` sets everything up and runs this; see
//! docs/PERFORMANCE.md for what each measurement means and the latest numbers.
//!
//! ```text
//! cargo bench --bench proxy -- --nginx http://127.0.0.1:PORT --notebox http://127.0.0.1:PORT \
//!     --prefix /nb/ID/ --token PAT [--direct http://172.18.0.2:8888] [--json FILE]
//! ```
//!
//! Every option can also come from the environment (`BENCH_NGINX`, `BENCH_NOTEBOX`,
//! `BENCH_DIRECT`, `BENCH_PREFIX`, `BENCH_TOKEN`, `BENCH_CONNS`, …; `--help` lists them).
//! Only loopback and private (Docker bridge) addresses are accepted as targets.
//!
//! Measurements, per target, in rounds whose target order alternates (A B, then B A) so
//! slow drift on a shared machine does not favour either side; the verdicts use the median
//! over rounds, so one burst of unrelated load does not decide them:
//!   (a) small GET throughput: N keep-alive connections, closed loop, fixed duration;
//!   (b) latency at a fixed request rate: open loop, every request has a scheduled send
//!       time; when a connection is still busy at that time, latency counts from the
//!       scheduled time (no coordinated omission);
//!   (c) WebSocket round trip of 1 KiB and 64 KiB JSON-like text messages, one connection;
//!   (d) 100 concurrent WebSocket sessions, each sending M numbered messages pipelined and
//!       checking every echo comes back, in order, intact;
//!   (e) uploads: POSTs of a 256 KiB body (like saving a notebook) one after another over
//!       one keep-alive connection, the head and then the body in 64 KiB pieces as separate
//!       writes, as browsers send them. echo.py has no POST handler, so the answer is
//!       tornado's 405, sent only once it has read the whole body: the time is the upload's.
//!
//! Exit status: 0 all targets met, 1 a target missed, 2 the benchmark could not run.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Jupyter's kernel WebSocket subprotocol; the echo upstream accepts whatever is offered.
const SUBPROTOCOL: &str = "v1.kernel.websocket.jupyter.org";
const HELLO_BODY: &[u8] = b"hello\n";
/// Targets (docs/PERFORMANCE.md).
const MIN_THROUGHPUT_RATIO: f64 = 0.8;
const MAX_P99_EXTRA_MS: f64 = 0.5;

// ---------------------------------------------------------------------------------------
// Options

#[derive(Clone)]
struct Opts {
    targets: Vec<Target>,
    prefix: String,
    token: String,
    /// (a) connections and seconds (per target, over all rounds).
    conns: usize,
    duration: f64,
    warmup: f64,
    /// (b) requests per second, seconds, connections.
    rate: u64,
    rate_duration: f64,
    rate_conns: usize,
    /// (c) round trips per message size.
    rtt_small: usize,
    rtt_large: usize,
    /// (e) uploads per target and their size in KiB.
    uploads: usize,
    upload_kib: usize,
    /// (d) sessions and messages per session.
    sessions: usize,
    messages: usize,
    rounds: usize,
    threads: usize,
    json: Option<String>,
    /// (b)'s every request as CSV, to look for patterns in the slow ones.
    trace: Option<String>,
    max_seconds: u64,
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    /// host:port as written (Host header, WebSocket URL).
    authority: String,
    addr: SocketAddr,
    /// Processes whose CPU time is the proxy's (`--nginx-pids`, `--notebox-pids`).
    pids: Vec<u32>,
}

const HELP: &str = "\
proxy benchmark: Notebox's /nb/{id}/ proxy vs nginx in front of the same upstream

  --nginx URL         nginx base URL, e.g. http://127.0.0.1:18080       (BENCH_NGINX)
  --notebox URL       Notebox base URL, e.g. http://127.0.0.1:18081     (BENCH_NOTEBOX)
  --direct URL        optional: the upstream itself, e.g. http://172.18.0.2:8888 (BENCH_DIRECT)
  --prefix PATH       the notebook's path prefix, e.g. /nb/abc123/      (BENCH_PREFIX)
  --token PAT         Notebox personal access token, sent to every target as
                      `Authorization: token PAT`                        (BENCH_TOKEN)
  --conns N           (a) keep-alive connections [32]                   (BENCH_CONNS)
  --duration S        (a) measured seconds per target [10]              (BENCH_DURATION)
  --warmup S          (a) unmeasured seconds before each run [0.5]      (BENCH_WARMUP)
  --rate R            (b) requests per second [500]                     (BENCH_RATE)
  --rate-duration S   (b) seconds per target [10]                       (BENCH_RATE_DURATION)
  --rate-conns N      (b) connections [10]                              (BENCH_RATE_CONNS)
  --rtt-small N       (c) 1 KiB round trips per target [2000]           (BENCH_RTT_SMALL)
  --rtt-large N       (c) 64 KiB round trips per target [500]           (BENCH_RTT_LARGE)
  --sessions N        (d) concurrent WebSocket sessions [100]           (BENCH_SESSIONS)
  --messages M        (d) messages per session per round [200]          (BENCH_MESSAGES)
  --uploads N         (e) POSTs per target [200]                        (BENCH_UPLOADS)
  --upload-kib K      (e) size of each POST's body in KiB [256]         (BENCH_UPLOAD_KIB)
  --rounds N          rounds, target order alternating [4]; verdicts use
                      the median over rounds                            (BENCH_ROUNDS)
  --threads N         load-generator threads [1]                        (BENCH_THREADS)
  --json FILE         also write the results as JSON                    (BENCH_JSON)
  --trace FILE        write (b)'s requests as CSV: target, round, scheduled
                      second, latency µs                                (BENCH_TRACE)
  --max-seconds S     hard limit on the whole run [420]                 (BENCH_MAX_SECONDS)
  --nginx-pids P,…    optional: nginx's processes, for its CPU time     (BENCH_NGINX_PIDS)
  --notebox-pids P    optional: notebox's process, for its CPU time     (BENCH_NOTEBOX_PIDS)

Only loopback and private (Docker bridge) addresses are accepted as targets.
Exit status: 0 all targets met, 1 a target missed, 2 the benchmark could not run.
";

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("proxy bench: {message}");
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut named: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let keys = [
        "nginx",
        "notebox",
        "direct",
        "prefix",
        "token",
        "conns",
        "duration",
        "warmup",
        "rate",
        "rate-duration",
        "rate-conns",
        "rtt-small",
        "rtt-large",
        "uploads",
        "upload-kib",
        "sessions",
        "messages",
        "rounds",
        "threads",
        "json",
        "trace",
        "max-seconds",
        "nginx-pids",
        "notebox-pids",
    ];
    for key in keys {
        let env = format!("BENCH_{}", key.to_uppercase().replace('-', "_"));
        if let Ok(v) = std::env::var(&env) {
            if !v.is_empty() {
                named.insert(key.to_string(), v);
            }
        }
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // `cargo bench` passes --bench to harness = false targets.
            "--bench" => {}
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0)
            }
            _ => {
                let Some(key) = arg.strip_prefix("--") else {
                    fail(format!("unexpected argument {arg:?} (see --help)"))
                };
                let (key, value) = match key.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (
                        key.to_string(),
                        args.next()
                            .unwrap_or_else(|| fail(format!("--{key} needs a value"))),
                    ),
                };
                if !keys.contains(&key.as_str()) {
                    fail(format!("unknown option --{key} (see --help)"));
                }
                named.insert(key, value);
            }
        }
    }
    let num = |key: &str, default: f64| -> f64 {
        match named.get(key) {
            None => default,
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n > 0.0 => n,
                _ => fail(format!("--{key} must be a positive number, not {v:?}")),
            },
        }
    };
    let mut targets = Vec::new();
    // The direct baseline is context only: it never counts toward the verdict.
    for (name, required) in [("nginx", true), ("notebox", true), ("direct", false)] {
        match named.get(name) {
            Some(url) => {
                let mut target = parse_target(name, url);
                if let Some(list) = named.get(&format!("{name}-pids")) {
                    target.pids = list
                        .split([',', ' '])
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            p.parse().unwrap_or_else(|_| {
                                fail(format!("--{name}-pids: {p:?} is not a process id"))
                            })
                        })
                        .collect();
                }
                targets.push(target)
            }
            None if required => fail(format!("--{name} URL is required (see --help)")),
            None => {}
        }
    }
    let prefix = named
        .get("prefix")
        .cloned()
        .unwrap_or_else(|| fail("--prefix /nb/ID/ is required"));
    if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.contains(['?', '#', ' ']) {
        fail(format!(
            "--prefix must look like /nb/ID/ (slashes on both ends), not {prefix:?}"
        ));
    }
    let token = named
        .get("token")
        .cloned()
        .unwrap_or_else(|| fail("--token PAT is required"));
    if HeaderValue::from_str(&format!("token {token}")).is_err() {
        fail("--token has characters a header cannot carry");
    }
    let opts = Opts {
        targets,
        prefix,
        token,
        conns: num("conns", 32.0) as usize,
        duration: num("duration", 10.0),
        warmup: num("warmup", 0.5),
        rate: num("rate", 500.0) as u64,
        rate_duration: num("rate-duration", 10.0),
        rate_conns: num("rate-conns", 10.0) as usize,
        rtt_small: num("rtt-small", 2000.0) as usize,
        rtt_large: num("rtt-large", 500.0) as usize,
        uploads: num("uploads", 200.0) as usize,
        upload_kib: num("upload-kib", 256.0) as usize,
        sessions: num("sessions", 100.0) as usize,
        messages: num("messages", 200.0) as usize,
        rounds: num("rounds", 4.0) as usize,
        threads: num("threads", 1.0) as usize,
        json: named.get("json").cloned(),
        trace: named.get("trace").cloned(),
        max_seconds: num("max-seconds", 420.0) as u64,
    };
    // Keep every loop bounded: no option may ask for an unbounded or absurd amount of work.
    let limits: [(&str, f64, f64, f64); 14] = [
        ("uploads", opts.uploads as f64, 1.0, 10_000.0),
        ("upload-kib", opts.upload_kib as f64, 1.0, 65_536.0),
        ("conns", opts.conns as f64, 1.0, 1024.0),
        ("duration", opts.duration, 0.1, 120.0),
        ("warmup", opts.warmup, 0.0, 30.0),
        ("rate", opts.rate as f64, 1.0, 50_000.0),
        ("rate-duration", opts.rate_duration, 0.1, 120.0),
        ("rate-conns", opts.rate_conns as f64, 1.0, 1024.0),
        ("rtt-small", opts.rtt_small as f64, 1.0, 100_000.0),
        ("rtt-large", opts.rtt_large as f64, 1.0, 20_000.0),
        ("sessions", opts.sessions as f64, 1.0, 1000.0),
        ("messages", opts.messages as f64, 1.0, 100_000.0),
        ("rounds", opts.rounds as f64, 1.0, 10.0),
        ("threads", opts.threads as f64, 1.0, 64.0),
    ];
    for (key, value, min, max) in limits {
        if value < min || value > max {
            fail(format!(
                "--{key} must be between {min} and {max}, not {value}"
            ));
        }
    }
    if opts.max_seconds > 3600 {
        fail("--max-seconds must be at most 3600");
    }
    opts
}

/// `http://HOST:PORT` (a trailing slash is allowed) where HOST is a loopback or private
/// address: the benchmark never sends load anywhere else.
fn parse_target(name: &'static str, url: &str) -> Target {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| fail(format!("--{name}: only http:// URLs, not {url:?}")));
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        fail(format!(
            "--{name}: give the base URL only (http://HOST:PORT), not {url:?}"
        ));
    }
    let addr = authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| {
            fail(format!(
                "--{name}: cannot resolve {authority:?} (need HOST:PORT)"
            ))
        });
    let allowed = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback() || ip.is_private(),
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if !allowed {
        fail(format!(
            "--{name}: {addr} is neither loopback nor a private (Docker bridge) address"
        ));
    }
    Target {
        name,
        authority: authority.to_string(),
        addr,
        pids: Vec::new(),
    }
}

/// CPU time (user + system) the processes have used so far, from /proc/PID/stat, in
/// seconds; None when a process cannot be read (gone, or not on Linux).
fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    // USER_HZ is 100 on every Linux architecture notebox targets.
    const TICKS_PER_SECOND: f64 = 100.0;
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        ticks += utime + stime;
    }
    Some(ticks as f64 / TICKS_PER_SECOND)
}

// ---------------------------------------------------------------------------------------
// Samples

/// Latencies in microseconds.
#[derive(Default, Clone)]
struct Samples(Vec<u64>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros() as u64);
    }
    fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }
    fn sorted(&self) -> Vec<u64> {
        let mut v = self.0.clone();
        v.sort_unstable();
        v
    }
    /// The p-quantile in milliseconds (nearest rank); NaN when empty.
    fn ms(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] as f64 / 1000.0
    }
    fn max_ms(&self) -> f64 {
        self.0.iter().max().map_or(f64::NAN, |&m| m as f64 / 1000.0)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

type Sender = SendRequest<Empty<Bytes>>;

#[derive(Clone)]
struct HttpGet {
    path: String,
    host: HeaderValue,
    auth: HeaderValue,
}

impl HttpGet {
    fn new(target: &Target, opts: &Opts) -> HttpGet {
        HttpGet {
            path: format!("{}hello", opts.prefix),
            host: HeaderValue::from_str(&target.authority).expect("authority is a header"),
            auth: HeaderValue::from_str(&format!("token {}", opts.token)).expect("checked"),
        }
    }

    async fn connect<B>(addr: SocketAddr) -> Result<SendRequest<B>, String>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One GET of `{prefix}hello` on the connection in `slot` (opened when empty); Ok only
    /// for 200 and exactly "hello\n". A connection the server closed while it was idle
    /// (keep-alive limits, idle timeouts) is replaced first, as any HTTP client does: that
    /// is no error, but `reconnects` counts it and the time it takes is in the latency.
    /// After an error the slot is emptied.
    async fn send(
        &self,
        slot: &mut Option<Sender>,
        addr: SocketAddr,
        reconnects: &mut u64,
    ) -> Result<(), String> {
        let r = self.try_send(slot, addr, reconnects).await;
        if r.is_err() {
            *slot = None;
        }
        r
    }

    async fn try_send(
        &self,
        slot: &mut Option<Sender>,
        addr: SocketAddr,
        reconnects: &mut u64,
    ) -> Result<(), String> {
        if let Some(s) = slot.as_mut() {
            if s.ready().await.is_err() {
                *slot = None;
                *reconnects += 1;
            }
        }
        let sender = match slot {
            Some(s) => s,
            None => {
                let mut s = Self::connect(addr).await?;
                s.ready().await.map_err(|e| format!("connection: {e}"))?;
                slot.insert(s)
            }
        };
        let request = Request::get(self.path.as_str())
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if status != 200 || body.as_ref() != HELLO_BODY {
            return Err(format!(
                "HTTP {status}: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
        Ok(())
    }
}

#[derive(Default, Clone)]
struct Throughput {
    ok: u64,
    errors: u64,
    reconnects: u64,
    secs: f64,
    /// CPU seconds the proxy's processes used in the measured window.
    proxy_cpu: Option<f64>,
    latency: Samples,
    first_error: Option<String>,
}

impl Throughput {
    fn merge(&mut self, o: Throughput) {
        // CPU time is known only if every merged run knew it.
        let first = self.ok == 0 && self.errors == 0 && self.secs == 0.0;
        self.proxy_cpu = match (self.proxy_cpu, o.proxy_cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (None, b) if first => b,
            _ => None,
        };
        self.ok += o.ok;
        self.errors += o.errors;
        self.reconnects += o.reconnects;
        self.secs += o.secs;
        self.latency.extend(o.latency);
        self.first_error = self.first_error.take().or(o.first_error);
    }
    /// The proxy's CPU time per request, in microseconds.
    fn cpu_us_per_request(&self) -> f64 {
        match self.proxy_cpu {
            Some(cpu) if self.ok > 0 => cpu * 1e6 / self.ok as f64,
            _ => f64::NAN,
        }
    }
    fn rps(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            f64::NAN
        }
    }
}

/// (a) `conns` connections, each sending the next request as soon as the last answer came,
/// for `warmup + secs`; completions inside the measured window count.
async fn throughput(target: &Target, opts: &Opts, secs: f64) -> Throughput {
    let get = HttpGet::new(target, opts);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(opts.warmup);
    let end = measure_from + Duration::from_secs_f64(secs);
    let pids = target.pids.clone();
    let cpu = tokio::spawn(async move {
        sleep_until(measure_from).await;
        let before = cpu_seconds(&pids);
        sleep_until(end).await;
        Some(cpu_seconds(&pids)? - before?)
    });
    let mut tasks = Vec::new();
    for _ in 0..opts.conns {
        let get = get.clone();
        let addr = target.addr;
        tasks.push(tokio::spawn(async move {
            let mut out = Throughput::default();
            let mut slot = None;
            while Instant::now() < end && out.errors < 1000 {
                let t0 = Instant::now();
                let mut reconnects = 0;
                let r = match timeout(
                    Duration::from_secs(5),
                    get.send(&mut slot, addr, &mut reconnects),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        slot = None;
                        Err("timed out after 5 s".to_string())
                    }
                };
                let t1 = Instant::now();
                if t1 < measure_from || t1 > end {
                    if r.is_err() {
                        // Not counted, but do not spin on a target that is down.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    continue;
                }
                out.reconnects += reconnects;
                match r {
                    Ok(()) => {
                        out.ok += 1;
                        out.latency.push(t1 - t0);
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            out
        }));
    }
    let mut total = Throughput {
        secs,
        proxy_cpu: cpu.await.ok().flatten(),
        ..Throughput::default()
    };
    for t in tasks {
        if let Ok(r) = t.await {
            total.ok += r.ok;
            total.errors += r.errors;
            total.reconnects += r.reconnects;
            total.latency.extend(r.latency);
            total.first_error = total.first_error.take().or(r.first_error);
        }
    }
    total
}

#[derive(Default, Clone)]
struct FixedRate {
    scheduled: u64,
    ok: u64,
    errors: u64,
    reconnects: u64,
    latency: Samples,
    /// How late the generator itself sent (timer resolution, its own CPU share).
    send_lag: Samples,
    /// The slowest request: its latency and when it was scheduled (seconds into the run).
    worst: Option<(Duration, f64)>,
    /// Every request's (scheduled time in seconds into the run, latency in µs), for
    /// `--trace`.
    timeline: Vec<(f64, u64)>,
    first_error: Option<String>,
}

impl FixedRate {
    fn merge(&mut self, o: FixedRate) {
        self.scheduled += o.scheduled;
        self.ok += o.ok;
        self.errors += o.errors;
        self.reconnects += o.reconnects;
        self.latency.extend(o.latency);
        self.send_lag.extend(o.send_lag);
        self.timeline.extend(o.timeline);
        if o.worst.map(|w| w.0) > self.worst.map(|w| w.0) {
            self.worst = o.worst;
        }
        self.first_error = self.first_error.take().or(o.first_error);
    }
}

/// (b) `rate` requests per second for `secs`, open loop, spread over `rate_conns`
/// connections (request i goes on connection i mod C at start + i/rate). A request whose
/// connection was still busy at its scheduled time is measured from that scheduled time,
/// so a stall counts against every request it delays. A request sent late only because the
/// generator's timer fired late (tokio timers have 1 ms resolution) is measured from when
/// it was actually sent; that lag is reported separately.
async fn fixed_rate(target: &Target, opts: &Opts, secs: f64) -> FixedRate {
    let get = HttpGet::new(target, opts);
    let total = (opts.rate as f64 * secs).round() as u64;
    let conns = opts.rate_conns as u64;
    let interval = 1.0 / opts.rate as f64;
    let mut slots = Vec::new();
    for _ in 0..conns {
        // Open and warm every connection (and the proxy's upstream ones) before the clock.
        let mut slot = None;
        let mut reconnects = 0;
        if let Err(e) = get.send(&mut slot, target.addr, &mut reconnects).await {
            return FixedRate {
                scheduled: total,
                errors: total,
                first_error: Some(e),
                ..FixedRate::default()
            };
        }
        slots.push(slot);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for (k, slot) in slots.into_iter().enumerate() {
        let get = get.clone();
        let addr = target.addr;
        tasks.push(tokio::spawn(async move {
            let mut slot = slot;
            let mut out = FixedRate::default();
            let mut prev_done = start;
            let mut i = k as u64;
            while i < total {
                let scheduled = start + Duration::from_secs_f64(i as f64 * interval);
                out.scheduled += 1;
                if Instant::now() < scheduled {
                    sleep_until(scheduled).await;
                }
                let sent = Instant::now();
                let r = match timeout(
                    Duration::from_secs(2),
                    get.send(&mut slot, addr, &mut out.reconnects),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        slot = None;
                        Err("timed out after 2 s".to_string())
                    }
                };
                let done = Instant::now();
                // Busy past its slot because of the target: count from the schedule.
                // Merely woken late by the generator's own timer: count from the send.
                let from = if prev_done > scheduled {
                    scheduled
                } else {
                    out.send_lag.push(sent.saturating_duration_since(scheduled));
                    sent
                };
                prev_done = done;
                match r {
                    Ok(()) => {
                        out.ok += 1;
                        let latency = done - from;
                        out.latency.push(latency);
                        out.timeline.push((
                            (scheduled - start).as_secs_f64(),
                            latency.as_micros() as u64,
                        ));
                        if out.worst.is_none_or(|w| latency > w.0) {
                            out.worst = Some((latency, (scheduled - start).as_secs_f64()));
                        }
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e);
                    }
                }
                i += conns;
            }
            out
        }));
    }
    let mut all = FixedRate::default();
    for t in tasks {
        if let Ok(r) = t.await {
            all.merge(r);
        }
    }
    all
}

type UploadBody = UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// A request body that hands over `body` in 64 KiB pieces, each after a yield: hyper
/// writes what it has whenever the body is not ready, so the head and every piece go out
/// in writes of their own, as browsers send uploads (not all in one `writev`).
fn upload_body(body: &Bytes) -> UploadBody {
    let pieces: Vec<Bytes> = body.chunks(64 * 1024).map(|c| body.slice_ref(c)).collect();
    let stream = futures_util::stream::unfold(pieces.into_iter(), |mut pieces| async move {
        let piece = pieces.next()?;
        tokio::task::yield_now().await;
        Some((
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(piece)),
            pieces,
        ))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// (e) `n` POSTs of a `upload_kib` KiB JSON-like body, one after another on one
/// keep-alive connection, after 5 unmeasured ones; each must get echo.py's 405 (tornado
/// answers it once the whole body is in).
async fn uploads(target: &Target, opts: &Opts, n: usize) -> RoundTrips {
    let mut out = RoundTrips::default();
    let body = Bytes::from(kernel_message(opts.upload_kib * 1024, 1));
    let length = HeaderValue::from(body.len());
    let path = format!("{}hello", opts.prefix);
    let host = HeaderValue::from_str(&target.authority).expect("authority is a header");
    let auth = HeaderValue::from_str(&format!("token {}", opts.token)).expect("checked");
    let mut slot: Option<SendRequest<UploadBody>> = None;
    for i in 0..(5 + n) {
        let t0 = Instant::now();
        let r = timeout(Duration::from_secs(10), async {
            if let Some(s) = slot.as_mut() {
                if s.ready().await.is_err() {
                    slot = None;
                }
            }
            let sender = match slot.as_mut() {
                Some(s) => s,
                None => {
                    let mut s = HttpGet::connect(target.addr).await?;
                    s.ready().await.map_err(|e| format!("connection: {e}"))?;
                    slot.insert(s)
                }
            };
            let request = Request::post(path.as_str())
                .header(HOST, host.clone())
                .header(AUTHORIZATION, auth.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_LENGTH, length.clone())
                .body(upload_body(&body))
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?;
            if status != 405 {
                return Err(format!("HTTP {status} (echo.py answers POSTs with 405)"));
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".to_string()));
        let elapsed = t0.elapsed();
        match r {
            Ok(()) if i >= 5 => {
                out.ok += 1;
                out.latency.push(elapsed);
            }
            Ok(()) => {}
            Err(e) => {
                slot = None;
                out.errors += 1;
                out.first_error.get_or_insert(e);
                if out.errors >= 20 {
                    return out;
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// WebSocket

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn ws_connect(target: &Target, opts: &Opts) -> Result<Ws, String> {
    let url = format!("ws://{}{}echo", target.authority, opts.prefix);
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("token {}", opts.token)).expect("checked"),
    );
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, response) = timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(request, Some(config), true),
    )
    .await
    .map_err(|_| "WebSocket connect timed out".to_string())?
    .map_err(|e| format!("WebSocket connect: {e}"))?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    if chosen != Some(SUBPROTOCOL) {
        return Err(format!("subprotocol not negotiated: {chosen:?}"));
    }
    Ok(ws)
}

/// A JSON-like kernel message (a stream output) of exactly `size` bytes.
fn kernel_message(size: usize, seq: u64) -> String {
    let head = format!(
        r#"{{"header":{{"msg_id":"bench-{seq:08}","msg_type":"stream","session":"bench","username":"bench","version":"5.3"}},"parent_header":{{}},"metadata":{{}},"channel":"iopub","content":{{"name":"stdout","text":""#
    );
    let tail = r#""}}"#;
    let fill = size.saturating_sub(head.len() + tail.len());
    let mut s = String::with_capacity(size);
    s.push_str(&head);
    let pattern = b"0123456789abcdefghijklmnopqrstuvwxyz \\n";
    s.extend((0..fill).map(|i| pattern[(i + seq as usize) % pattern.len()] as char));
    s.push_str(tail);
    s
}

#[derive(Default, Clone)]
struct RoundTrips {
    ok: u64,
    errors: u64,
    latency: Samples,
    first_error: Option<String>,
}

impl RoundTrips {
    fn merge(&mut self, o: RoundTrips) {
        self.ok += o.ok;
        self.errors += o.errors;
        self.latency.extend(o.latency);
        self.first_error = self.first_error.take().or(o.first_error);
    }
}

/// (c) `n` round trips of `size`-byte text messages over one connection, after 20
/// unmeasured ones. Every echo must equal what was sent.
async fn ws_round_trips(target: &Target, opts: &Opts, size: usize, n: usize) -> RoundTrips {
    let mut out = RoundTrips::default();
    let mut ws = match ws_connect(target, opts).await {
        Ok(ws) => ws,
        Err(e) => {
            out.errors = n as u64;
            out.first_error = Some(e);
            return out;
        }
    };
    let messages: Vec<String> = (0..64).map(|i| kernel_message(size, i)).collect();
    for i in 0..(20 + n) {
        let message = &messages[i % messages.len()];
        let t0 = Instant::now();
        let r = timeout(Duration::from_secs(5), async {
            ws.send(Message::Text(message.into()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t == *message => return Ok(()),
                    Some(Ok(Message::Text(t))) => {
                        return Err(format!("echo differs ({} bytes back)", t.len()))
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(other)) => return Err(format!("unexpected frame {other:?}")),
                    Some(Err(e)) => return Err(format!("receive: {e}")),
                    None => return Err("connection closed".to_string()),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err("no echo within 5 s".to_string()));
        let elapsed = t0.elapsed();
        match r {
            Ok(()) if i >= 20 => {
                out.ok += 1;
                out.latency.push(elapsed);
            }
            Ok(()) => {}
            Err(e) => {
                out.errors += (20 + n - i.max(20)) as u64;
                out.first_error = Some(e);
                return out;
            }
        }
    }
    let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
    out
}

#[derive(Default, Clone)]
struct Sessions {
    sessions: u64,
    connect_failures: u64,
    sent: u64,
    received: u64,
    lost: u64,
    reordered: u64,
    corrupt: u64,
    secs: f64,
    first_error: Option<String>,
}

impl Sessions {
    fn merge(&mut self, o: Sessions) {
        self.sessions += o.sessions;
        self.connect_failures += o.connect_failures;
        self.sent += o.sent;
        self.received += o.received;
        self.lost += o.lost;
        self.reordered += o.reordered;
        self.corrupt += o.corrupt;
        self.secs += o.secs;
        self.first_error = self.first_error.take().or(o.first_error);
    }
    fn clean(&self) -> bool {
        self.connect_failures == 0
            && self.lost == 0
            && self.reordered == 0
            && self.corrupt == 0
            && self.sent > 0
    }
}

fn numbered(session: usize, seq: usize) -> String {
    // About 200 bytes, like a small kernel message.
    format!(
        r#"{{"session":{session},"seq":{seq},"msg_type":"execute_request","content":{{"code":"print({seq})","silent":false}},"pad":"{}"}}"#,
        "x".repeat(96)
    )
}

fn seq_of(message: &str) -> Option<(usize, usize)> {
    let rest = message.strip_prefix(r#"{"session":"#)?;
    let (session, rest) = rest.split_once(',')?;
    let rest = rest.strip_prefix(r#""seq":"#)?;
    let (seq, _) = rest.split_once(',')?;
    Some((session.parse().ok()?, seq.parse().ok()?))
}

/// (d) `sessions` WebSockets at once; each sends `messages` numbered messages as fast as
/// it can (pipelined) while reading the echoes, which must come back complete, in order.
async fn ws_sessions(target: &Target, opts: &Opts) -> Sessions {
    let n = opts.sessions;
    let m = opts.messages;
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let started = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut tasks = Vec::new();
    for s in 0..n {
        let target = target.clone();
        let opts = opts.clone();
        let barrier = barrier.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Sessions {
                sessions: 1,
                ..Sessions::default()
            };
            let ws = ws_connect(&target, &opts).await;
            // Everyone starts sending together, connected or not.
            barrier.wait().await;
            if let Ok(mut at) = started.lock() {
                at.get_or_insert_with(Instant::now);
            }
            let ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    out.connect_failures = 1;
                    out.lost = m as u64;
                    out.first_error = Some(e);
                    return out;
                }
            };
            let (mut tx, mut rx) = ws.split();
            let writer = tokio::spawn(async move {
                let mut sent = 0u64;
                for i in 0..m {
                    if tx.feed(Message::Text(numbered(s, i).into())).await.is_err() {
                        break;
                    }
                    sent += 1;
                    if i % 16 == 15 && tx.flush().await.is_err() {
                        break;
                    }
                }
                let _ = tx.flush().await;
                (sent, tx)
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut seen = HashSet::new();
            let mut expected = 0usize;
            while seen.len() < m {
                let msg = match tokio::time::timeout_at(deadline, rx.next()).await {
                    Ok(Some(Ok(msg))) => msg,
                    Ok(Some(Err(e))) => {
                        out.first_error.get_or_insert(format!("receive: {e}"));
                        break;
                    }
                    Ok(None) => {
                        out.first_error
                            .get_or_insert("connection closed early".to_string());
                        break;
                    }
                    Err(_) => {
                        out.first_error
                            .get_or_insert("echoes missing after 60 s".to_string());
                        break;
                    }
                };
                let Message::Text(text) = msg else { continue };
                out.received += 1;
                match seq_of(&text) {
                    Some((session, seq)) if session == s && seq < m && text == numbered(s, seq) => {
                        let fresh = seen.insert(seq);
                        if seq != expected || !fresh {
                            out.reordered += 1;
                        }
                        expected = seq + 1;
                    }
                    _ => out.corrupt += 1,
                }
            }
            out.lost = (m - seen.len()) as u64;
            match timeout(Duration::from_secs(10), writer).await {
                Ok(Ok((sent, tx))) => {
                    out.sent = sent;
                    if let Ok(mut ws) = tx.reunite(rx) {
                        let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
                    }
                }
                _ => {
                    out.first_error
                        .get_or_insert("writer did not finish".to_string());
                }
            }
            out
        }));
    }
    let mut all = Sessions::default();
    for t in tasks {
        if let Ok(r) = t.await {
            all.merge(r);
        }
    }
    let begun = started
        .lock()
        .ok()
        .and_then(|s| *s)
        .unwrap_or_else(Instant::now);
    all.secs = begun.elapsed().as_secs_f64();
    all
}

// ---------------------------------------------------------------------------------------
// Run and report

#[derive(Default, Clone)]
struct Results {
    throughput: Throughput,
    fixed_rate: FixedRate,
    rtt_small: RoundTrips,
    rtt_large: RoundTrips,
    sessions: Sessions,
    uploads: RoundTrips,
    rounds: PerRound,
}

/// Each round's figure: the verdicts use the median over rounds, so that a burst of
/// unrelated load on a shared machine, which hits one round of one target, does not decide
/// them (the pooled figures, tails included, are reported too).
#[derive(Default, Clone)]
struct PerRound {
    rps: Vec<f64>,
    p99: Vec<f64>,
    rtt_small_p99: Vec<f64>,
    rtt_large_p99: Vec<f64>,
    upload_p99: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn first(error: &Option<String>) -> String {
    error
        .as_ref()
        .map(|e| format!(" (first: {e})"))
        .unwrap_or_default()
}

/// A target that answered nothing at all in a measurement is gone (stopped, crashed): stop
/// here rather than spend minutes printing zeros.
fn alive(target: &Target, ok: u64, first_error: &Option<String>) {
    if ok == 0 {
        fail(format!(
            "{} ({}) answered nothing in the last measurement: {}",
            target.name,
            target.authority,
            first_error.as_deref().unwrap_or("no error recorded")
        ));
    }
}

async fn run(opts: &Opts) -> Vec<Results> {
    let k = opts.targets.len();
    let mut results = vec![Results::default(); k];
    let rounds = opts.rounds;
    let order = |round: usize| -> Vec<usize> {
        let mut o: Vec<usize> = (0..k).collect();
        if round % 2 == 1 {
            o.reverse();
        }
        o
    };
    let per = |total: usize| total.div_ceil(rounds);

    // Reachability first: a clear error beats a table of zeros.
    for t in &opts.targets {
        let get = HttpGet::new(t, opts);
        let r = get.send(&mut None, t.addr, &mut 0).await;
        if let Err(e) = r {
            fail(format!(
                "{} ({}) does not answer GET {}hello: {e}",
                t.name, t.authority, opts.prefix
            ));
        }
        if let Err(e) = ws_connect(t, opts).await {
            fail(format!("{} ({}) WebSocket echo: {e}", t.name, t.authority));
        }
    }

    eprintln!(
        "(a) small GET throughput: {} connections, {} s measured per target",
        opts.conns, opts.duration
    );
    for round in 0..rounds {
        for i in order(round) {
            let r = throughput(&opts.targets[i], opts, opts.duration / rounds as f64).await;
            alive(&opts.targets[i], r.ok, &r.first_error);
            eprintln!(
                "    round {}: {:<8} {:>9.0} req/s  errors {}{}",
                round + 1,
                opts.targets[i].name,
                r.rps(),
                r.errors,
                first(&r.first_error)
            );
            results[i].rounds.rps.push(r.rps());
            results[i].throughput.merge(r);
        }
    }
    eprintln!(
        "(b) fixed rate: {} req/s for {} s per target over {} connections",
        opts.rate, opts.rate_duration, opts.rate_conns
    );
    for round in 0..rounds {
        for i in order(round) {
            let r = fixed_rate(&opts.targets[i], opts, opts.rate_duration / rounds as f64).await;
            alive(&opts.targets[i], r.ok, &r.first_error);
            let (worst_ms, worst_at) = r
                .worst
                .map_or((f64::NAN, f64::NAN), |(d, at)| (d.as_secs_f64() * 1e3, at));
            eprintln!(
                "    round {}: {:<8} p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms at {:.1} s  errors {}{}",
                round + 1,
                opts.targets[i].name,
                r.latency.ms(0.50),
                r.latency.ms(0.99),
                worst_ms,
                worst_at,
                r.errors,
                first(&r.first_error)
            );
            results[i].rounds.p99.push(r.latency.ms(0.99));
            if let Some(path) = &opts.trace {
                use std::io::Write;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path);
                let mut file = file.unwrap_or_else(|e| fail(format!("cannot open {path}: {e}")));
                let mut text = String::new();
                for (at, us) in &r.timeline {
                    text.push_str(&format!(
                        "{},{},{at:.6},{us}\n",
                        opts.targets[i].name,
                        round + 1
                    ));
                }
                if let Err(e) = file.write_all(text.as_bytes()) {
                    fail(format!("cannot write {path}: {e}"));
                }
            }
            results[i].fixed_rate.merge(r);
        }
    }
    eprintln!(
        "(c) WebSocket round trips: {} × 1 KiB, {} × 64 KiB per target",
        opts.rtt_small, opts.rtt_large
    );
    for round in 0..rounds {
        for i in order(round) {
            let t = &opts.targets[i];
            let small = ws_round_trips(t, opts, 1024, per(opts.rtt_small)).await;
            alive(t, small.ok, &small.first_error);
            let large = ws_round_trips(t, opts, 64 * 1024, per(opts.rtt_large)).await;
            alive(t, large.ok, &large.first_error);
            eprintln!(
                "    round {}: {:<8} 1 KiB p99 {:.3} ms  64 KiB p99 {:.3} ms  errors {}",
                round + 1,
                t.name,
                small.latency.ms(0.99),
                large.latency.ms(0.99),
                small.errors + large.errors
            );
            results[i].rounds.rtt_small_p99.push(small.latency.ms(0.99));
            results[i].rounds.rtt_large_p99.push(large.latency.ms(0.99));
            results[i].rtt_small.merge(small);
            results[i].rtt_large.merge(large);
        }
    }
    eprintln!(
        "(d) {} concurrent WebSocket sessions × {} numbered messages, per round",
        opts.sessions, opts.messages
    );
    for round in 0..rounds {
        for i in order(round) {
            let r = ws_sessions(&opts.targets[i], opts).await;
            alive(&opts.targets[i], r.received, &r.first_error);
            eprintln!(
                "    round {}: {:<8} received {}/{}  lost {}  reordered {}  in {:.2} s",
                round + 1,
                opts.targets[i].name,
                r.received,
                r.sent,
                r.lost,
                r.reordered,
                r.secs
            );
            results[i].sessions.merge(r);
        }
    }
    eprintln!(
        "(e) uploads: {} POSTs of {} KiB per target, one connection",
        opts.uploads, opts.upload_kib
    );
    for round in 0..rounds {
        for i in order(round) {
            let t = &opts.targets[i];
            let r = uploads(t, opts, per(opts.uploads)).await;
            alive(t, r.ok, &r.first_error);
            eprintln!(
                "    round {}: {:<8} p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  errors {}{}",
                round + 1,
                t.name,
                r.latency.ms(0.5),
                r.latency.ms(0.99),
                r.latency.max_ms(),
                r.errors,
                first(&r.first_error)
            );
            results[i].rounds.upload_p99.push(r.latency.ms(0.99));
            results[i].uploads.merge(r);
        }
    }
    results
}

fn f(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "-".to_string()
    } else {
        format!("{v:.decimals$}")
    }
}

struct Verdict {
    name: String,
    pass: bool,
    detail: String,
}

fn verdicts(opts: &Opts, results: &[Results]) -> Vec<Verdict> {
    let idx = |name: &str| {
        opts.targets
            .iter()
            .position(|t| t.name == name)
            .expect("target")
    };
    let (ng, nb) = (&results[idx("nginx")], &results[idx("notebox")]);
    let mut out = Vec::new();
    let rounds = opts.rounds;
    let (a, b) = (median(&ng.rounds.rps), median(&nb.rounds.rps));
    let ratio = b / a;
    out.push(Verdict {
        name: format!("(a) throughput ≥ {MIN_THROUGHPUT_RATIO}× nginx"),
        pass: ratio >= MIN_THROUGHPUT_RATIO && nb.throughput.errors == 0,
        detail: format!(
            "{}× ({} vs {} req/s, median of {rounds} rounds; {} errors)",
            f(ratio, 2),
            f(b, 0),
            f(a, 0),
            nb.throughput.errors
        ),
    });
    let p99 = |name: String, a: &[f64], b: &[f64], errors: u64| {
        let (a, b) = (median(a), median(b));
        let diff = b - a;
        Verdict {
            name,
            pass: diff <= MAX_P99_EXTRA_MS && errors == 0,
            detail: format!(
                "{:+.3} ms ({} vs {} ms, median of {rounds} rounds' p99; {} errors)",
                diff,
                f(b, 3),
                f(a, 3),
                errors
            ),
        }
    };
    out.push(p99(
        format!(
            "(b) HTTP p99 at {} req/s ≤ nginx + {MAX_P99_EXTRA_MS} ms",
            opts.rate
        ),
        &ng.rounds.p99,
        &nb.rounds.p99,
        nb.fixed_rate.errors,
    ));
    out.push(p99(
        format!("(c) WS 1 KiB round-trip p99 ≤ nginx + {MAX_P99_EXTRA_MS} ms"),
        &ng.rounds.rtt_small_p99,
        &nb.rounds.rtt_small_p99,
        nb.rtt_small.errors,
    ));
    out.push(p99(
        format!("(c) WS 64 KiB round-trip p99 ≤ nginx + {MAX_P99_EXTRA_MS} ms"),
        &ng.rounds.rtt_large_p99,
        &nb.rounds.rtt_large_p99,
        nb.rtt_large.errors,
    ));
    out.push(p99(
        format!(
            "(e) upload ({} KiB POST) p99 ≤ nginx + {MAX_P99_EXTRA_MS} ms",
            opts.upload_kib
        ),
        &ng.rounds.upload_p99,
        &nb.rounds.upload_p99,
        nb.uploads.errors,
    ));
    let s = &nb.sessions;
    out.push(Verdict {
        name: "(d) no WS message lost, reordered or corrupted".to_string(),
        pass: s.clean(),
        detail: format!(
            "{}/{} echoed, lost {}, reordered {}, corrupt {}, failed sessions {}",
            s.received, s.sent, s.lost, s.reordered, s.corrupt, s.connect_failures
        ),
    });
    out
}

fn report(opts: &Opts, results: &[Results]) -> Vec<Verdict> {
    let names: Vec<&str> = opts.targets.iter().map(|t| t.name).collect();
    let ng = &results[names.iter().position(|n| *n == "nginx").expect("nginx")];
    let nb = &results[names.iter().position(|n| *n == "notebox").expect("notebox")];
    let mut rows: Vec<(String, Vec<String>, String)> = Vec::new();
    let mut row = |label: &str, get: &dyn Fn(&Results) -> f64, decimals: usize, cmp: Cmp| {
        let values: Vec<String> = results.iter().map(|r| f(get(r), decimals)).collect();
        let (a, b) = (get(ng), get(nb));
        let compare = match cmp {
            Cmp::Ratio => format!("{}×", f(b / a, 2)),
            Cmp::DiffMs => format!("{:+.3} ms", b - a),
            Cmp::None => String::new(),
        };
        rows.push((label.to_string(), values, compare));
    };
    let a = format!("(a) GET, {} conns", opts.conns);
    row(
        &format!("{a}: req/s *"),
        &|r| median(&r.rounds.rps),
        0,
        Cmp::Ratio,
    );
    row("    req/s, pooled", &|r| r.throughput.rps(), 0, Cmp::Ratio);
    row(
        "    closed-loop p50 ms",
        &|r| r.throughput.latency.ms(0.5),
        3,
        Cmp::DiffMs,
    );
    row(
        "    closed-loop p99 ms",
        &|r| r.throughput.latency.ms(0.99),
        3,
        Cmp::DiffMs,
    );
    row("    errors", &|r| r.throughput.errors as f64, 0, Cmp::None);
    row(
        "    reconnects (server closed)",
        &|r| r.throughput.reconnects as f64,
        0,
        Cmp::None,
    );
    row(
        "    proxy CPU µs/request",
        &|r| r.throughput.cpu_us_per_request(),
        1,
        Cmp::Ratio,
    );
    row(
        "    proxy CPU, cores busy",
        &|r| r.throughput.proxy_cpu.unwrap_or(f64::NAN) / r.throughput.secs,
        2,
        Cmp::None,
    );
    let b = format!("(b) {} req/s open loop", opts.rate);
    row(
        &format!("{b}: p50 ms"),
        &|r| r.fixed_rate.latency.ms(0.5),
        3,
        Cmp::DiffMs,
    );
    row(
        "    p90 ms",
        &|r| r.fixed_rate.latency.ms(0.9),
        3,
        Cmp::DiffMs,
    );
    row("    p99 ms *", &|r| median(&r.rounds.p99), 3, Cmp::DiffMs);
    row(
        "    p99 ms, pooled",
        &|r| r.fixed_rate.latency.ms(0.99),
        3,
        Cmp::DiffMs,
    );
    row(
        "    p99.9 ms",
        &|r| r.fixed_rate.latency.ms(0.999),
        3,
        Cmp::DiffMs,
    );
    row(
        "    max ms",
        &|r| r.fixed_rate.latency.max_ms(),
        3,
        Cmp::DiffMs,
    );
    row("    errors", &|r| r.fixed_rate.errors as f64, 0, Cmp::None);
    row(
        "    reconnects (server closed)",
        &|r| r.fixed_rate.reconnects as f64,
        0,
        Cmp::None,
    );
    row(
        "    generator send lag p99 ms",
        &|r| r.fixed_rate.send_lag.ms(0.99),
        3,
        Cmp::None,
    );
    row(
        "(c) WS 1 KiB RTT: p50 ms",
        &|r| r.rtt_small.latency.ms(0.5),
        3,
        Cmp::DiffMs,
    );
    row(
        "    p99 ms *",
        &|r| median(&r.rounds.rtt_small_p99),
        3,
        Cmp::DiffMs,
    );
    row(
        "    p99 ms, pooled",
        &|r| r.rtt_small.latency.ms(0.99),
        3,
        Cmp::DiffMs,
    );
    row(
        "    max ms",
        &|r| r.rtt_small.latency.max_ms(),
        3,
        Cmp::DiffMs,
    );
    row(
        "(c) WS 64 KiB RTT: p50 ms",
        &|r| r.rtt_large.latency.ms(0.5),
        3,
        Cmp::DiffMs,
    );
    row(
        "    p99 ms *",
        &|r| median(&r.rounds.rtt_large_p99),
        3,
        Cmp::DiffMs,
    );
    row(
        "    p99 ms, pooled",
        &|r| r.rtt_large.latency.ms(0.99),
        3,
        Cmp::DiffMs,
    );
    row(
        "    max ms",
        &|r| r.rtt_large.latency.max_ms(),
        3,
        Cmp::DiffMs,
    );
    row(
        "    errors",
        &|r| (r.rtt_small.errors + r.rtt_large.errors) as f64,
        0,
        Cmp::None,
    );
    let d = format!("(d) {} WS sessions", opts.sessions);
    row(
        &format!("{d}: sent"),
        &|r| r.sessions.sent as f64,
        0,
        Cmp::None,
    );
    row("    echoed", &|r| r.sessions.received as f64, 0, Cmp::None);
    row("    lost", &|r| r.sessions.lost as f64, 0, Cmp::None);
    row(
        "    reordered",
        &|r| r.sessions.reordered as f64,
        0,
        Cmp::None,
    );
    row("    corrupt", &|r| r.sessions.corrupt as f64, 0, Cmp::None);
    row(
        "    failed sessions",
        &|r| r.sessions.connect_failures as f64,
        0,
        Cmp::None,
    );
    row(
        "    echoes/s",
        &|r| r.sessions.received as f64 / r.sessions.secs,
        0,
        Cmp::Ratio,
    );
    let e = format!("(e) POST {} KiB", opts.upload_kib);
    row(
        &format!("{e}: p50 ms"),
        &|r| r.uploads.latency.ms(0.5),
        3,
        Cmp::DiffMs,
    );
    row(
        "    p99 ms *",
        &|r| median(&r.rounds.upload_p99),
        3,
        Cmp::DiffMs,
    );
    row(
        "    p99 ms, pooled",
        &|r| r.uploads.latency.ms(0.99),
        3,
        Cmp::DiffMs,
    );
    row(
        "    max ms",
        &|r| r.uploads.latency.max_ms(),
        3,
        Cmp::DiffMs,
    );
    row(
        "    over 20 ms",
        &|r| {
            r.uploads
                .latency
                .0
                .iter()
                .filter(|&&us| us > 20_000)
                .count() as f64
        },
        0,
        Cmp::None,
    );
    row("    errors", &|r| r.uploads.errors as f64, 0, Cmp::None);

    let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(10) + 2;
    let mut header = format!("{:<width$}", "");
    for n in &names {
        header.push_str(&format!("{n:>12}"));
    }
    header.push_str("   notebox vs nginx");
    println!();
    println!("{header}");
    println!("{}", "-".repeat(header.chars().count()));
    for (label, values, compare) in &rows {
        let mut line = format!("{label:<width$}");
        for v in values {
            line.push_str(&format!("{v:>12}"));
        }
        line.push_str(&format!("   {compare}"));
        println!("{}", line.trim_end());
    }
    println!(
        "* median over the {} rounds (the verdicts use these); pooled: all rounds' samples together",
        opts.rounds
    );
    println!();
    for (t, r) in opts.targets.iter().zip(results) {
        let errors = [
            &r.throughput.first_error,
            &r.fixed_rate.first_error,
            &r.rtt_small.first_error,
            &r.rtt_large.first_error,
            &r.sessions.first_error,
            &r.uploads.first_error,
        ];
        for e in errors.into_iter().flatten() {
            if !e.is_empty() {
                println!("{}: first error: {e}", t.name);
            }
        }
    }
    let verdicts = verdicts(opts, results);
    println!("Targets (Notebox against nginx on the same machine, same upstream):");
    for v in &verdicts {
        println!(
            "  {} {:<52} {}",
            if v.pass { "PASS" } else { "FAIL" },
            v.name,
            v.detail
        );
    }
    verdicts
}

enum Cmp {
    Ratio,
    DiffMs,
    None,
}

fn json(opts: &Opts, results: &[Results], verdicts: &[Verdict]) -> serde_json::Value {
    let lat = |s: &Samples| {
        serde_json::json!({
            "count": s.len(), "p50_ms": s.ms(0.5), "p90_ms": s.ms(0.9), "p99_ms": s.ms(0.99),
            "p999_ms": s.ms(0.999), "max_ms": s.max_ms()
        })
    };
    let targets: serde_json::Map<String, serde_json::Value> = opts
        .targets
        .iter()
        .zip(results)
        .map(|(t, r)| {
            (
                t.name.to_string(),
                serde_json::json!({
                    "url": format!("http://{}", t.authority),
                    "throughput": {"rps": r.throughput.rps(), "ok": r.throughput.ok,
                        "errors": r.throughput.errors, "reconnects": r.throughput.reconnects,
                        "latency": lat(&r.throughput.latency),
                        "proxy_cpu_s": r.throughput.proxy_cpu,
                        "proxy_cpu_us_per_request": r.throughput.cpu_us_per_request()},
                    "fixed_rate": {"scheduled": r.fixed_rate.scheduled, "ok": r.fixed_rate.ok,
                        "errors": r.fixed_rate.errors, "reconnects": r.fixed_rate.reconnects,
                        "latency": lat(&r.fixed_rate.latency),
                        "send_lag": lat(&r.fixed_rate.send_lag)},
                    "ws_rtt_1k": {"errors": r.rtt_small.errors, "latency": lat(&r.rtt_small.latency)},
                    "ws_rtt_64k": {"errors": r.rtt_large.errors, "latency": lat(&r.rtt_large.latency)},
                    "uploads": {"errors": r.uploads.errors, "latency": lat(&r.uploads.latency)},
                    "per_round": {"rps": r.rounds.rps, "p99_ms": r.rounds.p99,
                        "upload_p99_ms": r.rounds.upload_p99,
                        "ws_rtt_1k_p99_ms": r.rounds.rtt_small_p99,
                        "ws_rtt_64k_p99_ms": r.rounds.rtt_large_p99},
                    "ws_sessions": {"sessions": r.sessions.sessions, "sent": r.sessions.sent,
                        "received": r.sessions.received, "lost": r.sessions.lost,
                        "reordered": r.sessions.reordered, "corrupt": r.sessions.corrupt,
                        "failed_sessions": r.sessions.connect_failures, "secs": r.sessions.secs},
                }),
            )
        })
        .collect();
    serde_json::json!({
        "settings": {"conns": opts.conns, "duration_s": opts.duration, "rate": opts.rate,
            "rate_duration_s": opts.rate_duration, "rate_conns": opts.rate_conns,
            "rtt_small": opts.rtt_small, "rtt_large": opts.rtt_large,
            "sessions": opts.sessions, "messages": opts.messages, "rounds": opts.rounds,
            "uploads": opts.uploads, "upload_kib": opts.upload_kib,
            "threads": opts.threads},
        "targets": targets,
        "verdicts": verdicts.iter().map(|v| serde_json::json!({
            "target": v.name, "pass": v.pass, "detail": v.detail})).collect::<Vec<_>>(),
    })
}

/// `cargo test --all-targets` (tests/run-all.sh, CI) also runs this target, without
/// `--bench` and with the test harness's arguments: then only the pure helpers are checked
/// and nothing is measured.
fn under_cargo_test() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let asked = args
        .iter()
        .any(|a| a == "--bench" || a == "--help" || a == "-h" || a.starts_with("--nginx"))
        || std::env::var("BENCH_NGINX").is_ok_and(|v| !v.is_empty());
    !asked
}

fn self_test() {
    let mut s = Samples::default();
    for ms in 1..=100u64 {
        s.push(Duration::from_millis(ms));
    }
    assert_eq!(s.ms(0.5), 50.0);
    assert_eq!(s.ms(0.99), 99.0);
    assert_eq!(s.max_ms(), 100.0);
    assert!(Samples::default().ms(0.99).is_nan());
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    assert!(median(&[]).is_nan());
    for size in [1024, 64 * 1024] {
        let m = kernel_message(size, 7);
        assert_eq!(m.len(), size);
        assert!(
            serde_json::from_str::<serde_json::Value>(&m).is_ok(),
            "valid JSON"
        );
    }
    let m = numbered(42, 199);
    assert_eq!(seq_of(&m), Some((42, 199)));
    assert_eq!(seq_of("garbage"), None);
    let t = parse_target("nginx", "http://127.0.0.1:8080/");
    assert_eq!(t.authority, "127.0.0.1:8080");
    assert!(parse_target("direct", "http://172.18.0.2:8888")
        .addr
        .ip()
        .is_ipv4());
    println!(
        "proxy bench: helpers OK; nothing measured under `cargo test` (run benches/run-proxy.sh)"
    );
}

fn main() {
    if under_cargo_test() {
        self_test();
        return;
    }
    let opts = parse_opts();
    // A hard bound on the whole run, whatever happens to the targets.
    let limit = opts.max_seconds;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(limit));
        eprintln!("proxy bench: still running after {limit} s; giving up");
        std::process::exit(2);
    });
    let runtime = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    }
    .unwrap_or_else(|e| fail(format!("cannot start the runtime: {e}")));
    eprintln!(
        "targets: {}",
        opts.targets
            .iter()
            .map(|t| format!("{}=http://{}", t.name, t.authority))
            .collect::<Vec<_>>()
            .join("  ")
    );
    let started = std::time::Instant::now();
    let results = runtime.block_on(run(&opts));
    let verdicts = report(&opts, &results);
    println!(
        "\n{} round(s), target order alternating; load generator: {} thread(s); {:.0} s in all.",
        opts.rounds,
        opts.threads,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&json(&opts, &results, &verdicts))
            .expect("json serializes");
        if let Err(e) = std::fs::write(path, text + "\n") {
            fail(format!("cannot write {path}: {e}"));
        }
    }
    std::process::exit(if verdicts.iter().all(|v| v.pass) {
        0
    } else {
        1
    });
}
