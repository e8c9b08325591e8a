//! Issue 27: sharing one box fairly — the fair-share queue order and GPU bookings, with
//! simulated GPUs, real containers, a real Chromium for the calendar.

use crate::chromium;
use crate::common;

use std::time::Duration;

use common::*;
use notebox::config::{GpuBackend, MachineType, QueueOrderName, SimulatedGpu};
use serde_json::json;

const READY: Duration = Duration::from_secs(90);

fn sim_uuid(i: usize) -> String {
    format!("GPU-27000000-0000-0000-0000-00000000000{i}")
}

fn gpu_config(c: &mut notebox::Config, image: &str, gpus: usize) {
    docker_config(c, image);
    c.gpu.backend = GpuBackend::Simulated;
    c.gpu.simulated = (0..gpus)
        .map(|i| SimulatedGpu {
            uuid: sim_uuid(i),
            name: "Simulated A100".into(),
            memory_mib: 40960,
            utilization_file: None,
        })
        .collect();
    for (id, n) in [("gpu1", 1), ("gpu2", 2)] {
        c.machines.push(MachineType {
            id: id.into(),
            name: format!("{n} GPU"),
            cpus: 0.5,
            memory_mib: 768,
            gpus: n,
            idle_timeout: None,
            reclaim: None,
        });
    }
}

async fn create(api: &Api, name: &str, machine: &str, minutes: i64) -> serde_json::Value {
    let (s, nb) = api
        .post(
            "/api/v1/notebooks",
            json!({"name": name, "image": "test", "machine": machine, "auto_shutdown_minutes": minutes}),
        )
        .await;
    assert_eq!(s, 201, "create {name}: {nb}");
    nb
}

/// A page's HTML as a logged-in browser gets it.
async fn page(browser: &reqwest::Client, base: &str, path: &str) -> String {
    let r = browser
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect(path);
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.expect("html")
}

fn id(nb: &serde_json::Value) -> String {
    nb["id"].as_str().expect("id").to_string()
}

/// `hours` GPU-hours of past use for `member` in the ledger (ended an hour ago), written
/// beside the running server as the accounting would have.
fn seed_usage(server: &TestServer, member: &str, hours: i64) {
    let conn = rusqlite::Connection::open(server.config.data_dir.join("notebox.db")).expect("db");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    let end = notebox::clock::now() - 3600;
    conn.execute(
        "INSERT INTO usage_intervals (user_id, member, notebook_id, notebook_name, machine_id,
            gpu_uuid, cores, started_at, ended_at)
         SELECT id, username, 'past', 'past', 'gpu1', ?2, 1, ?3, ?4 FROM users WHERE username = ?1",
        rusqlite::params![member, sim_uuid(0), end - hours * 3600, end],
    )
    .expect("seed the ledger");
}

/// Alice (40 GPU-hours this week) and bob (1) queue for the last GPU, alice first. With
/// fair share bob starts first and the pages say why; first come first served, alice does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_share_puts_the_light_user_first_and_fifo_the_first_to_come() {
    let Some(image) = test_image() else { return };
    for order in [QueueOrderName::FairShare, QueueOrderName::Fifo] {
        let server = TestServer::start_with(|c| {
            gpu_config(c, &image, 1);
            c.gpu.queue_order = order;
        })
        .await;
        for name in ["alice", "bob", "carol"] {
            add_user(&server, name, &format!("{name}-password"), false);
        }
        seed_usage(&server, "alice", 40);
        seed_usage(&server, "bob", 1);
        let api = |name: &str| Api::new(&server.url, &token_for(&server, name));
        let (alice, bob, carol) = (api("alice"), api("bob"), api("carol"));
        let held = id(&create(&carol, "holder", "gpu1", 0).await);
        carol.wait_state(&held, "running", READY).await;
        let a = create(&alice, "alice's run", "gpu1", 0).await;
        assert_eq!(
            (a["state"].as_str(), a["queue_position"].as_i64()),
            (Some("queued"), Some(1)),
            "{a}"
        );
        let b = create(&bob, "bob's run", "gpu1", 0).await;
        let (a, b) = (id(&a), id(&b));
        let (_, a_now) = alice.get(&format!("/api/v1/notebooks/{a}")).await;
        let (_, b_now) = bob.get(&format!("/api/v1/notebooks/{b}")).await;
        if order == QueueOrderName::FairShare {
            assert_eq!(b_now["queue_position"], 1, "bob goes first: {b_now}");
            assert_eq!(a_now["queue_position"], 2, "{a_now}");
            let why = a_now["queue_reason"].as_str().expect("a reason");
            assert!(
                why.starts_with(
                    "Ahead of you: bob (1.0 GPU-hours recently). You used 36.7 GPU-hours recently."
                ),
                "{why}"
            );
            // The notebook page and the GPUs page say it in words.
            let browser = client();
            login_ok(&browser, &server.url, "alice", "alice-password").await;
            let html = page(&browser, &server.url, &format!("/notebooks/{a}")).await;
            assert!(
                html.contains("Number 2 in the GPU queue. Ahead of you: bob"),
                "notebook page"
            );
            let html = page(&browser, &server.url, "/gpus").await;
            assert!(
                html.contains("Waiting for GPUs")
                    && html.contains("Fair share: who used fewer GPU-hours recently goes first")
            );
        } else {
            assert_eq!(
                (
                    a_now["queue_position"].as_i64(),
                    b_now["queue_position"].as_i64()
                ),
                (Some(1), Some(2))
            );
        }
        let (s, _) = carol
            .post(&format!("/api/v1/notebooks/{held}/stop"), json!({}))
            .await;
        assert_eq!(s, 202);
        let (first, second) = if order == QueueOrderName::FairShare {
            ((&bob, &b), (&alice, &a))
        } else {
            ((&alice, &a), (&bob, &b))
        };
        first.0.wait_state(first.1, "running", READY).await;
        let (_, waiting) = second
            .0
            .get(&format!("/api/v1/notebooks/{}", second.1))
            .await;
        assert_eq!(waiting["state"], "queued", "{order:?}: {waiting}");
        assert_eq!(waiting["queue_position"], 1);
    }
}

/// Alice books 2 of 3 GPUs for a window just ahead. Bob's 6-hour notebook gets the
/// unbooked GPU, his second waits and is told why (or may run "until the booking");
/// overlapping bookings beyond capacity are refused; at the window's start alice's
/// notebook starts at once although bob's waits before it; at its end bob gets the GPUs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_holds_its_gpus_for_its_member_during_its_window() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| gpu_config(c, &image, 3)).await;
    add_user(&server, "alice", "alice-password", false);
    add_user(&server, "bob", "bob-password", false);
    let alice = Api::new(&server.url, &token_for(&server, "alice"));
    let bob = Api::new(&server.url, &token_for(&server, "bob"));
    let now = notebox::clock::now();
    let (start, end) = (now + 25, now + 55);
    let rfc = notebox::clock::rfc3339;
    // Bad input is a 400 that says what to fix.
    let (s, e) = alice
        .post(
            "/api/v1/reservations",
            json!({"gpus": 2, "start": "thursday", "end": rfc(end)}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("RFC 3339"),
        "{e}"
    );
    let (s, e) = alice
        .post(
            "/api/v1/reservations",
            json!({"gpus": 2, "start": rfc(end), "end": rfc(start)}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    let (s, booking) = alice
        .post(
            "/api/v1/reservations",
            json!({"gpus": 2, "start": rfc(start), "end": rfc(end), "purpose": "paper"}),
        )
        .await;
    assert_eq!(s, 201, "{booking}");
    let booked: Vec<String> = booking["gpu_uuids"]
        .as_array()
        .expect("gpu_uuids")
        .iter()
        .filter_map(|g| g.as_str().map(String::from))
        .collect();
    assert_eq!(booked.len(), 2);
    // Beyond capacity in an overlapping window: refused with the reason.
    let (s, e) = bob
        .post(
            "/api/v1/reservations",
            json!({"gpus": 2, "start": rfc(start + 10), "end": rfc(end + 60)}),
        )
        .await;
    assert_eq!(s, 409, "{e}");
    let why = e["error"]["message"].as_str().unwrap_or("");
    assert!(why.contains("1 of the 3") && why.contains("alice"), "{why}");
    // Members see everyone's bookings; the member's own feed is iCalendar.
    let (_, listed) = bob.get("/api/v1/reservations").await;
    assert_eq!(listed["reservations"][0]["member"], "alice", "{listed}");
    let (_, feed) = alice.get("/api/v1/reservations/calendar.ics").await;
    assert!(
        feed.as_str()
            .is_some_and(|f| f.contains("SUMMARY:2 GPUs booked: paper")),
        "{feed}"
    );

    // Bob's 6-hour notebook goes to the one GPU nobody booked.
    let b1 = create(&bob, "bob long", "gpu1", 360).await;
    assert_eq!(b1["state"], "starting", "{b1}");
    let b1_gpus = b1["gpus"].as_array().expect("gpus").clone();
    assert!(
        !booked.contains(&b1_gpus[0].as_str().unwrap_or("").to_string()),
        "{b1}"
    );
    // His second cannot outlast the booking's start on a booked GPU: it waits, told why.
    let b2 = create(&bob, "bob second", "gpu1", 360).await;
    assert_eq!(b2["state"], "queued", "{b2}");
    let detail = b2["state_detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("booked by alice") && detail.contains("until the booking"),
        "{detail}"
    );
    // The create form offers "until the booking".
    let browser = client();
    login_ok(&browser, &server.url, "bob", "bob-password").await;
    let html = page(&browser, &server.url, "/notebooks/new").await;
    assert!(
        html.contains("2 GPUs are booked by alice from")
            && html.contains("value=\"until_booking\""),
        "the form names the booking"
    );

    // At the window's start alice's notebook starts at once, ahead of bob's waiting one.
    wait_for("the booking's start", Duration::from_secs(40), || async {
        (notebox::clock::now() >= start).then_some(())
    })
    .await;
    let a1 = create(&alice, "alice paper", "gpu2", 0).await;
    assert_ne!(a1["state"], "queued", "{a1}");
    let mut a1_gpus: Vec<String> = a1["gpus"]
        .as_array()
        .expect("gpus")
        .iter()
        .filter_map(|g| g.as_str().map(String::from))
        .collect();
    a1_gpus.sort();
    let mut expected = booked.clone();
    expected.sort();
    assert_eq!(a1_gpus, expected, "alice runs on her booked GPUs");
    let a1 = id(&a1);
    alice.wait_state(&a1, "running", READY).await;
    let b2 = id(&b2);
    assert_eq!(
        bob.get(&format!("/api/v1/notebooks/{b2}")).await.1["state"],
        "queued"
    );

    // The calendar renders (Chromium), with a booking of bob's two days ahead and an
    // admin's for maintenance (admins book for anyone, beyond the members' limits).
    let hour = |t: i64| t - t % 3600;
    let (s, e) = bob
        .post("/api/v1/reservations", json!({"gpus": 1, "start": rfc(hour(now) + 2 * 86400 + 3600), "end": rfc(hour(now) + 2 * 86400 + 7 * 3600), "purpose": "ablations"}))
        .await;
    assert_eq!(s, 201, "{e}");
    let admin = Api::new(&server.url, &token_for(&server, "admin"));
    let (s, e) = admin
        .post("/api/v1/reservations", json!({"gpus": 3, "member": "maintenance", "start": rfc(hour(now) + 4 * 86400), "end": rfc(hour(now) + 4 * 86400 + 10 * 3600), "purpose": "driver update"}))
        .await;
    assert_eq!(s, 201, "{e}");
    let (s, e) = bob
        .post("/api/v1/reservations", json!({"gpus": 1, "member": "alice", "start": rfc(now + 3 * 86400), "end": rfc(now + 3 * 86400 + 60)}))
        .await;
    assert_eq!(s, 403, "only admins book for others: {e}");
    let (s, e) = bob
        .post("/api/v1/reservations", json!({"gpus": 1, "start": rfc(now + 3 * 86400), "end": rfc(now + 3 * 86400 + 9 * 3600)}))
        .await;
    assert_eq!(s, 400, "longer than reservations.max_length: {e}");
    if require(
        "chromium",
        chromium::available(),
        "chromium and chromedriver are needed",
    ) {
        let b = chromium::Browser::start(&server.url).await;
        b.login("alice", "alice-password").await;
        b.goto("/reservations").await;
        b.wait_page_text("booked now by alice", Duration::from_secs(15))
            .await;
        b.screenshot("reservations.png").await;
        b.close().await;
    }

    // At the end of the booking, alice's notebook stops and bob's waiting one gets a GPU.
    let b2_now = bob
        .wait_state(&b2, "running", Duration::from_secs(60) + READY)
        .await;
    assert!(
        notebox::clock::now() >= end,
        "started before the booking ended"
    );
    assert_eq!(b2_now["gpus"].as_array().map(Vec::len), Some(1));
    let a1_now = alice.wait_state(&a1, "stopped", READY).await;
    assert!(
        a1_now["state_detail"]
            .as_str()
            .unwrap_or("")
            .contains("booking of its GPUs ended"),
        "{a1_now}"
    );
}
