//! Prometheus metrics, built with the `prometheus-client` crate (the Prometheus project's
//! own Rust client): counters and histograms updated where things happen (the proxy, the
//! reconciler), and gauges read at scrape time from what Notebox already knows (GPU
//! telemetry, notebook states, the queue, the usage ledger, the process). Knows nothing
//! of HTTP: `/metrics` (web) asks for the text.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusClass {
    /// "2xx", "3xx", "4xx", "5xx".
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabels {
    pub gpu: String,
    pub uuid: String,
    pub name: String,
    /// The member holding it; empty when free.
    pub holder: String,
    /// The notebook holding it; empty when free.
    pub notebook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabel {
    pub member: String,
}

type HistogramFamily = Family<StatusClass, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Metrics updated as things happen; cheap to clone (shared counters).
#[derive(Clone)]
pub struct Metrics {
    proxy_requests: Family<StatusClass, Counter>,
    proxy_duration: HistogramFamily,
    reconcile_duration: Histogram,
    docker_errors: Family<Operation, Counter>,
    open_websockets: Gauge,
    requests_in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            proxy_requests: Family::default(),
            proxy_duration: Family::new_with_constructor(latency_histogram),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            docker_errors: Family::default(),
            open_websockets: Gauge::default(),
            requests_in_flight: Gauge::default(),
        }
    }
}

/// One GPU as a scrape sees it.
#[derive(Debug)]
pub struct GpuFigures {
    pub labels: GpuLabels,
    pub utilization_percent: Option<f64>,
    pub memory_used_bytes: f64,
    pub memory_total_bytes: f64,
    pub temperature_c: Option<f64>,
}

/// What a scrape reads from the rest of Notebox.
#[derive(Debug, Default)]
pub struct Scrape {
    pub gpus: Vec<GpuFigures>,
    pub notebooks_by_state: Vec<(String, i64)>,
    pub queue_length: i64,
    pub queue_oldest_wait_seconds: f64,
    /// (member, GPU-seconds held, GPU-seconds busy), all time.
    pub member_gpu_seconds: Vec<(String, f64, f64)>,
    pub resident_memory_bytes: f64,
    pub reconciler_passes: u64,
}

fn status_class(status: u16) -> String {
    format!("{}xx", status / 100)
}

impl Metrics {
    /// One proxied request (time to the response's head).
    pub fn proxy_request(&self, status: u16, seconds: f64) {
        let class = StatusClass {
            status: status_class(status),
        };
        self.proxy_requests.get_or_create(&class).inc();
        self.proxy_duration.get_or_create(&class).observe(seconds);
    }

    pub fn reconcile_pass(&self, seconds: f64) {
        self.reconcile_duration.observe(seconds);
    }

    pub fn docker_error(&self, operation: &str) {
        self.docker_errors
            .get_or_create(&Operation {
                operation: operation.to_string(),
            })
            .inc();
    }

    pub fn websocket_opened(&self) {
        self.open_websockets.inc();
    }

    pub fn websocket_closed(&self) {
        self.open_websockets.dec();
    }

    pub fn request_started(&self) {
        self.requests_in_flight.inc();
    }

    pub fn request_ended(&self) {
        self.requests_in_flight.dec();
    }

    /// The Prometheus text exposition of everything.
    pub fn encode(&self, scrape: Scrape) -> Result<String, std::fmt::Error> {
        let mut r = Registry::with_prefix("notebox");
        self.register_counters(&mut r);
        register_gpus(&mut r, &scrape.gpus);
        register_notebooks(&mut r, &scrape);
        register_usage_and_process(&mut r, &scrape);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r)?;
        Ok(text)
    }

    /// What Notebox counts as it goes (the proxy, the reconciler, requests).
    fn register_counters(&self, r: &mut Registry) {
        r.register(
            "proxy_requests",
            "Requests proxied to notebooks, by status class",
            self.proxy_requests.clone(),
        );
        r.register_with_unit(
            "proxy_request_duration",
            "Time from a proxied request to its response's head, by status class",
            Unit::Seconds,
            self.proxy_duration.clone(),
        );
        r.register_with_unit(
            "reconciler_pass_duration",
            "Duration of reconciler passes",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        r.register(
            "docker_errors",
            "Docker operations that failed, by operation",
            self.docker_errors.clone(),
        );
        r.register(
            "proxy_open_websockets",
            "WebSockets being relayed to notebooks now",
            self.open_websockets.clone(),
        );
        r.register(
            "http_requests_in_flight",
            "HTTP requests being served now",
            self.requests_in_flight.clone(),
        );
    }
}

/// Each GPU's telemetry, labelled with who holds it.
fn register_gpus(r: &mut Registry, gpus: &[GpuFigures]) {
    let util = Family::<GpuLabels, Gauge<f64, AtomicU64>>::default();
    let mem_used = Family::<GpuLabels, Gauge<f64, AtomicU64>>::default();
    let mem_total = Family::<GpuLabels, Gauge<f64, AtomicU64>>::default();
    let temp = Family::<GpuLabels, Gauge<f64, AtomicU64>>::default();
    for g in gpus {
        if let Some(u) = g.utilization_percent {
            util.get_or_create(&g.labels).set(u);
        }
        mem_used.get_or_create(&g.labels).set(g.memory_used_bytes);
        mem_total.get_or_create(&g.labels).set(g.memory_total_bytes);
        if let Some(t) = g.temperature_c {
            temp.get_or_create(&g.labels).set(t);
        }
    }
    r.register(
        "gpu_utilization_percent",
        "GPU utilization (percent), with the member and notebook holding it",
        util,
    );
    r.register_with_unit(
        "gpu_memory_used",
        "GPU memory in use",
        Unit::Bytes,
        mem_used,
    );
    r.register_with_unit(
        "gpu_memory_total",
        "GPU memory in all",
        Unit::Bytes,
        mem_total,
    );
    r.register_with_unit("gpu_temperature", "GPU temperature", Unit::Celsius, temp);
}

/// Notebooks by state, and the GPU queue.
fn register_notebooks(r: &mut Registry, scrape: &Scrape) {
    let states = Family::<StateLabel, Gauge>::default();
    for (state, n) in &scrape.notebooks_by_state {
        states
            .get_or_create(&StateLabel {
                state: state.clone(),
            })
            .set(*n);
    }
    r.register("notebooks", "Notebooks by state", states);
    let queue = Gauge::<i64>::default();
    queue.set(scrape.queue_length);
    r.register("gpu_queue_length", "Notebooks waiting for GPUs", queue);
    let wait = Gauge::<f64, AtomicU64>::default();
    wait.set(scrape.queue_oldest_wait_seconds);
    r.register_with_unit(
        "gpu_queue_oldest_wait",
        "How long the first notebook in the GPU queue has waited",
        Unit::Seconds,
        wait,
    );
}

/// GPU time per member (the ledger), the process's memory, reconciler passes.
fn register_usage_and_process(r: &mut Registry, scrape: &Scrape) {
    let held = Family::<MemberLabel, Counter<f64, AtomicU64>>::default();
    let busy = Family::<MemberLabel, Counter<f64, AtomicU64>>::default();
    for (member, h, b) in &scrape.member_gpu_seconds {
        let label = MemberLabel {
            member: member.clone(),
        };
        held.get_or_create(&label).inc_by(*h);
        busy.get_or_create(&label).inc_by(*b);
    }
    r.register_with_unit(
        "gpu_held",
        "GPU time held, per member (from the usage ledger)",
        Unit::Seconds,
        held,
    );
    r.register_with_unit(
        "gpu_busy",
        "GPU time held while computing, per member (from the usage ledger)",
        Unit::Seconds,
        busy,
    );

    let rss = Gauge::<f64, AtomicU64>::default();
    rss.set(scrape.resident_memory_bytes);
    r.register_with_unit(
        "process_resident_memory",
        "Resident memory of the notebox process",
        Unit::Bytes,
        rss,
    );
    let passes = Counter::<u64>::default();
    passes.inc_by(scrape.reconciler_passes);
    r.register("reconciler_passes", "Reconciler passes since start", passes);
}

/// The process's resident memory, from /proc/self/statm (Linux).
pub fn resident_memory_bytes() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    pages * rustix::param::page_size() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_every_family_and_label() {
        let m = Metrics::default();
        m.proxy_request(200, 0.002);
        m.proxy_request(404, 0.001);
        m.docker_error("list");
        let text = m
            .encode(Scrape {
                gpus: vec![GpuFigures {
                    labels: GpuLabels {
                        gpu: "0".into(),
                        uuid: "GPU-x".into(),
                        name: "Sim".into(),
                        holder: "ada".into(),
                        notebook: "abc".into(),
                    },
                    utilization_percent: Some(90.0),
                    memory_used_bytes: 1024.0,
                    memory_total_bytes: 2048.0,
                    temperature_c: None,
                }],
                notebooks_by_state: vec![("running".into(), 2)],
                queue_length: 1,
                member_gpu_seconds: vec![("ada".into(), 120.0, 60.0)],
                ..Scrape::default()
            })
            .expect("encodes");
        for needle in [
            r#"notebox_gpu_utilization_percent{gpu="0",uuid="GPU-x",name="Sim",holder="ada",notebook="abc"} 90.0"#,
            r#"notebox_notebooks{state="running"} 2"#,
            r#"notebox_proxy_requests_total{status="2xx"} 1"#,
            r#"notebox_proxy_request_duration_seconds_count{status="4xx"} 1"#,
            r#"notebox_docker_errors_total{operation="list"} 1"#,
            r#"notebox_gpu_held_seconds_total{member="ada"} 120.0"#,
            "notebox_gpu_queue_length 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
