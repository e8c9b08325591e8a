//! What Notebox reports to and runs under: systemd (readiness, watchdog, memory), the
//! Prometheus metrics (`metrics`, with what a scrape reads in `scrape`), and the outgoing
//! webhook. Knows nothing of HTTP.

pub mod metrics;
pub mod scrape;
pub mod systemd;
pub mod webhook;
