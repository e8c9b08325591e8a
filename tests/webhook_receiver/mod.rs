//! A webhook receiver for the tests that follow Notebox's outgoing events.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::wait_for;

/// A webhook receiver on loopback: records each JSON event; the first `fail_first`
/// deliveries are answered 500 (Notebox must retry).
pub struct Receiver {
    pub url: String,
    pub events: Arc<Mutex<Vec<Value>>>,
    pub attempts: Arc<Mutex<usize>>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/hooks/notebox",
            listener.local_addr().expect("addr")
        );
        let events = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(0usize));
        let (ev, at) = (events.clone(), attempts.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (ev, at) = (ev.clone(), at.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let body = loop {
                        let Ok(n) = conn.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            assert!(head.starts_with("post /hooks/notebox "), "{head}");
                            assert!(head.contains("content-type: application/json"), "{head}");
                            break buf[end + 4..end + 4 + length].to_vec();
                        }
                    };
                    let fail = {
                        let mut a = at.lock().expect("lock");
                        *a += 1;
                        *a <= fail_first
                    };
                    let status = if fail {
                        "500 Internal Server Error"
                    } else {
                        let v: Value = serde_json::from_slice(&body).expect("JSON event");
                        ev.lock().expect("lock").push(v);
                        "204 No Content"
                    };
                    let _ = conn
                        .write_all(
                            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .as_bytes(),
                        )
                        .await;
                });
            }
        });
        Receiver {
            url,
            events,
            attempts,
        }
    }

    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect()
    }

    pub async fn wait_event(&self, kind: &str, count: usize, timeout: Duration) -> Vec<Value> {
        wait_for(
            &format!("{count} webhook event(s) {kind}"),
            timeout,
            || async {
                let found = self.events(kind);
                (found.len() >= count).then_some(found)
            },
        )
        .await
    }
}
