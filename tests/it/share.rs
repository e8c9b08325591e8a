//! Issue 6: share links, safe rendering, traversal, fork and the gallery — with notebooks
//! written by Jupyter itself in a real container.

use crate::chromium;
use crate::common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use serde_json::json;

const READY: Duration = Duration::from_secs(90);

/// alice's notebook holding notebooks written by Jupyter (tests/notebooks/generate.py),
/// plus a hostile one; stopped afterwards, since shares are read from disk.
async fn shared_setup(server: &TestServer) -> (Api, String) {
    add_user(server, "alice", "alice-password", false);
    let alice = Api::new(&server.url, &token_for(server, "alice"));
    let id = alice.create_notebook("Shared analysis").await;
    alice.wait_state(&id, "running", READY).await;
    let container = container_of(&id);
    let script = include_str!("../notebooks/generate.py").replace('\'', "'\"'\"'");
    let (ok, out) = docker_exec(&container, &format!("python3 -c '{script}'"));
    assert!(ok, "generating notebooks with Jupyter failed:\n{out}");
    let (ok, out) = docker_exec(
        &container,
        "echo private > /storage/alice-private.txt && echo hidden > /notebooks/.secret && ln -s ../../notebox.db /notebooks/db-link",
    );
    assert!(ok, "{out}");
    let dir = server.data_dir().join("notebooks").join(&id);
    std::fs::create_dir_all(dir.join("untrusted")).expect("mkdir");
    std::fs::write(dir.join("untrusted/hostile.ipynb"), hostile_notebook())
        .expect("hostile notebook");
    alice
        .post(&format!("/api/v1/notebooks/{id}/stop"), json!({}))
        .await;
    alice.wait_state(&id, "stopped", READY).await;
    (alice, id)
}

fn hostile_notebook() -> String {
    let svg = "<svg xmlns='http://www.w3.org/2000/svg' onload='window.__pwned=7'><script>window.__pwned=8</script><circle r='5'/></svg>";
    json!({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
        "cells": [
            {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": [
                "# Hostile\n",
                "<script>window.__pwned=1</script>\n",
                "<img src=x onerror=\"window.__pwned=2\">\n",
                "[click me](javascript:window.__pwned=3)\n",
                "<a href=\"javascript:window.__pwned=3\">or me</a> <iframe src=\"javascript:window.__pwned=9\"></iframe>"
            ]},
            {"cell_type": "code", "id": "c1", "execution_count": 1, "metadata": {},
             "source": "</code></pre><script>window.__pwned=10</script>", "outputs": [
                {"output_type": "display_data", "metadata": {}, "data": {"text/html": "<script>parent.__pwned=4</script><img src=x onerror=\"parent.__pwned=5\"><b>html output</b>"}},
                {"output_type": "display_data", "metadata": {}, "data": {"image/svg+xml": svg}},
                {"output_type": "display_data", "metadata": {}, "data": {"application/javascript": "window.__pwned=6"}},
                {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": "<script>window.__pwned=11</script>**md**"}},
                {"output_type": "stream", "name": "stdout", "text": "<script>window.__pwned=12</script>"}
            ]}
        ]
    })
    .to_string()
}

async fn make_share(alice: &Api, id: &str, visibility: &str) -> String {
    let (s, share) = alice
        .post(
            &format!("/api/v1/notebooks/{id}/shares"),
            json!({"visibility": visibility}),
        )
        .await;
    assert_eq!(s, 201, "{share}");
    assert_eq!(
        share["url"],
        format!("/s/{}/", share["token"].as_str().expect("token"))
    );
    share["token"].as_str().expect("token").to_string()
}

/// A request line sent as-is (clients normalise `..` away; attackers do not).
fn raw_get(base: &str, target: &str) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_share_renders_jupyter_notebooks_and_revokes() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| docker_config(c, &image)).await;
    let (alice, id) = shared_setup(&server).await;
    let token = make_share(&alice, &id, "link").await;
    assert!(token.len() >= 22, "at least 128 bits");

    // Anyone, without a cookie, while the notebook is stopped.
    let anonymous = reqwest::Client::new();
    let r = anonymous
        .get(format!("{}/s/{token}/", server.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src 'self'"),
        "{csp}"
    );
    let page = r.text().await.expect("body");
    for expected in [
        "Shared analysis",
        "alice",
        "hello from the kernel",
        "In&nbsp;[",
        "data:image/png;base64,",
        "<td>2</td>",
        "ZeroDivisionError",
        "42",
        "$E = m_1 c^2$",
    ] {
        assert!(page.contains(expected), "share page lacks {expected:?}");
    }
    for listed in [
        "analysis.ipynb",
        "dot.png",
        "notes.md",
        "helper.py",
        "older/minor2.ipynb",
    ] {
        assert!(page.contains(listed), "file list lacks {listed}");
    }
    assert!(
        !page.contains(".secret") && !page.contains("db-link"),
        "hidden files and symlinks are not listed"
    );
    assert!(!page.contains("alice-private"), "/storage is never shared");

    // Every nbformat 4 minor version written by Jupyter renders.
    for minor in [0, 2, 4] {
        let r = anonymous
            .get(format!(
                "{}/s/{token}/view/older/minor{minor}.ipynb",
                server.url
            ))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
        let html = r.text().await.expect("body");
        assert!(
            html.contains("hello from the kernel") && html.contains("data:image/png;base64,"),
            "minor {minor}"
        );
    }
    let md = anonymous
        .get(format!("{}/s/{token}/view/notes.md", server.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(md.contains("<em>markdown</em>"));
    let py = anonymous
        .get(format!("{}/s/{token}/view/helper.py", server.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(py.contains("tok-keyword"));
    let png = anonymous
        .get(format!("{}/s/{token}/view/dot.png", server.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(png.contains("data:image/png;base64,"));

    // Raw download, byte for byte, never rendered inline.
    let r = anonymous
        .get(format!("{}/s/{token}/raw/analysis.ipynb", server.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"]
        .to_str()
        .expect("cd")
        .starts_with("attachment"));
    let raw = r.bytes().await.expect("bytes");
    let on_disk = std::fs::read(
        server
            .data_dir()
            .join("notebooks")
            .join(&id)
            .join("analysis.ipynb"),
    )
    .expect("file");
    assert_eq!(raw.as_ref(), on_disk.as_slice());

    // A malformed notebook gets a readable message, not a 500.
    std::fs::write(
        server
            .data_dir()
            .join("notebooks")
            .join(&id)
            .join("broken.ipynb"),
        "{ not json",
    )
    .expect("write");
    let r = anonymous
        .get(format!("{}/s/{token}/view/broken.ipynb", server.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("not a valid notebook"));

    // Revoked: the same URL is 404.
    let (s, _) = alice
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/shares/{token}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    for path in [
        format!("/s/{token}/"),
        format!("/s/{token}/raw/analysis.ipynb"),
    ] {
        assert_eq!(
            anonymous
                .get(format!("{}{path}", server.url))
                .send()
                .await
                .expect("GET")
                .status(),
            404,
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_attempts_get_404() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| docker_config(c, &image)).await;
    let (alice, id) = shared_setup(&server).await;
    let token = make_share(&alice, &id, "link").await;
    assert_eq!(
        raw_get(&server.url, &format!("/s/{token}/raw/analysis.ipynb")),
        200
    );
    for target in [
        format!("/s/{token}/..%2f..%2fnotebox.db"),
        format!("/s/{token}/raw/..%2f..%2fnotebox.db"),
        format!("/s/{token}/raw/..%2F..%2F..%2Fnotebox.db"),
        format!("/s/{token}/view/..%2f..%2fnotebox.db"),
        format!("/s/{token}/raw/../../notebox.db"),
        format!("/s/{token}/raw/%2e%2e/%2e%2e/notebox.db"),
        format!("/s/{token}/raw/%2e%2e%2f%2e%2e%2fnotebox.db"),
        format!("/s/{token}/raw//etc/passwd"),
        format!("/s/{token}/raw/db-link"),
        format!("/s/{token}/raw/.secret"),
        format!("/s/{token}/view/.secret"),
        format!("/s/{token}/raw/..\\..\\notebox.db"),
        format!("/s/{token}/raw/older"),
        "/s/not-a-token/".to_string(),
    ] {
        let status = raw_get(&server.url, &target);
        assert!(status == 404 || status == 400, "{target} answered {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_user_forks_the_share_without_storage_and_gallery_lists_public_only() {
    let Some(image) = test_image() else { return };
    let server = TestServer::start_with(|c| docker_config(c, &image)).await;
    let (alice, id) = shared_setup(&server).await;
    let link = make_share(&alice, &id, "link").await;
    add_user(&server, "bob", "bob-password", false);
    let bob = Api::new(&server.url, &token_for(&server, "bob"));

    let (s, fork) = bob
        .post(&format!("/api/v1/shares/{link}/fork"), json!({}))
        .await;
    assert_eq!(s, 201, "{fork}");
    assert_eq!(fork["state"], "stopped");
    assert_eq!(fork["owner"], "bob");
    assert_eq!(fork["forked_from"], id.as_str());
    let fork_id = fork["id"].as_str().expect("id").to_string();
    let (_, list) = bob.get("/api/v1/notebooks").await;
    assert!(list["notebooks"]
        .as_array()
        .expect("list")
        .iter()
        .any(|n| n["id"] == fork_id.as_str()));
    let (src, dst) = (
        server.data_dir().join("notebooks").join(&id),
        server.data_dir().join("notebooks").join(&fork_id),
    );
    for f in [
        "analysis.ipynb",
        "dot.png",
        "older/minor2.ipynb",
        "notes.md",
    ] {
        assert_eq!(
            std::fs::read(src.join(f)).expect("src"),
            std::fs::read(dst.join(f)).expect("copied"),
            "{f}"
        );
    }
    assert!(!dst.join("db-link").exists(), "symlinks are not copied");
    assert!(
        !server
            .data_dir()
            .join("storage/bob/alice-private.txt")
            .exists(),
        "/storage is never copied"
    );

    // The fork's page says where it came from; it starts and runs like any notebook.
    let browser = client();
    login_ok(&browser, &server.url, "bob", "bob-password").await;
    let page = browser
        .get(format!("{}/notebooks/{fork_id}", server.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains("Forked from") && page.contains("alice"),
        "fork page"
    );
    // Forking from the share page's button works too (with the session's CSRF token).
    let share_page = browser
        .get(format!("{}/s/{link}/", server.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    let csrf = csrf_from(&share_page);
    let r = browser
        .post(format!("{}/s/{link}/fork", server.url))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 303);
    let (_, list) = bob.get("/api/v1/notebooks").await;
    assert_eq!(list["notebooks"].as_array().map(Vec::len), Some(2));
    bob.post(&format!("/api/v1/notebooks/{fork_id}/start"), json!({}))
        .await;
    bob.wait_state(&fork_id, "running", READY).await;
    let (_, out) = docker_exec(&container_of(&fork_id), "ls /notebooks; ls -A /storage");
    assert!(
        out.contains("analysis.ipynb") && !out.contains("alice-private"),
        "{out}"
    );

    // Gallery: public shares only.
    let public = make_share(&alice, &id, "public").await;
    let gallery = reqwest::get(format!("{}/gallery", server.url))
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(
        gallery.contains(&format!("/s/{public}/")),
        "public share listed"
    );
    assert!(!gallery.contains(&link), "link share not listed");
    assert!(gallery.contains("Shared analysis") && gallery.contains("alice"));
    assert!(
        gallery.contains("A shared notebook, with math"),
        "preview of the first markdown cell"
    );
    let (s, e) = alice
        .post(
            &format!("/api/v1/notebooks/{id}/shares"),
            json!({"visibility": "everyone"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_notebook_runs_no_script_in_chromium() {
    let Some(image) = test_image() else { return };
    if !require(
        "chromium",
        chromium::available(),
        "chromium and chromedriver are needed",
    ) {
        return;
    }
    let server = TestServer::start_with(|c| docker_config(c, &image)).await;
    let (alice, id) = shared_setup(&server).await;
    let token = make_share(&alice, &id, "link").await;
    let browser = chromium::Browser::start(&server.url).await;
    for (path, text) in [
        (
            format!("/s/{token}/view/untrusted/hostile.ipynb"),
            "Hostile",
        ),
        (format!("/s/{token}/"), "hello from the kernel"),
    ] {
        browser.goto(&path).await;
        browser.wait_page_text(text, Duration::from_secs(15)).await;
        // Look once the page has loaded and every image has loaded or failed (an onerror
        // has had its chance). The output iframes are sandboxed without scripts: nothing in
        // them can run, lazily loaded or not.
        browser
            .wait(
                "the page, its images and its iframes to finish loading",
                Duration::from_secs(15),
                || async {
                    let done = browser
                        .client
                        .execute(
                            "return document.readyState === 'complete' \
                             && Array.from(document.images).every(i => i.complete)",
                            vec![],
                        )
                        .await
                        .ok()?;
                    (done == serde_json::Value::Bool(true)).then_some(())
                },
            )
            .await;
        let verdict = browser
            .client
            .execute(
                "return JSON.stringify({pwned: window.__pwned === undefined ? null : window.__pwned, scripts: document.scripts.length, title: document.title})",
                vec![],
            )
            .await
            .expect("no alert or script interfered with the page");
        let v: serde_json::Value =
            serde_json::from_str(verdict.as_str().expect("string")).expect("json");
        assert!(
            v["pwned"].is_null(),
            "{path}: a notebook script ran on Notebox's origin: {v}"
        );
        assert_eq!(
            v["scripts"], 0,
            "{path}: script elements on a share page: {v}"
        );
    }
    browser.screenshot("share.png").await;
    browser
        .goto(&format!("/s/{token}/view/untrusted/hostile.ipynb"))
        .await;
    browser.screenshot("share-hostile.png").await;
    browser.close().await;
}
