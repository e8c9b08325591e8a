//! Start from a Git repository, and launch links (issue 24, item 5): a real Git server on
//! loopback (`git http-backend`, tests/git_server), public and behind HTTP Basic auth.
//! First the host-side fetch (`notebox::git`) on its own: hostile trees, limits, bad
//! input, credentials; then notebooks started from a repository, and the launch link
//! (tests/it/launch.rs's Docker and Chromium parts).

use crate::chromium;
use crate::common;
use crate::git_server;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use git_server::GitServer;
use notebox::git::{self, FetchProgress, GitCredential, GitError, GitRef, RepoLimits, RepoUrl};

fn url(s: &str) -> RepoUrl {
    RepoUrl::parse(s).expect("valid URL")
}

async fn fetch(
    server_url: &str,
    reference: Option<&str>,
    credential: Option<&GitCredential>,
    work: &std::path::Path,
) -> Result<git::Checkout, GitError> {
    let reference = reference.map(|r| GitRef::parse(r).expect("valid ref"));
    let mut seen = Vec::new();
    let result = git::fetch(
        &url(server_url),
        reference.as_ref(),
        credential,
        &RepoLimits::default(),
        work,
        &mut |p: &FetchProgress| seen.push(p.phase),
    )
    .await;
    assert_eq!(seen.first(), Some(&"Resolving"), "progress: {seen:?}");
    result
}

#[tokio::test]
async fn fetch_checks_out_the_commit_and_never_follows_links_out_of_the_tree() {
    let server = GitServer::start(None);
    let first = server.repo(
        "proj",
        &[
            ("README.md", b"# hello\n"),
            ("notebooks/intro.ipynb", b"{\"cells\": []}"),
        ],
        &[
            ("escape", "/etc/passwd"),
            ("dir", "../../"),
            ("notebooks/up", "../../../../root"),
        ],
    );
    let second = server.commit("proj", "main", &[("v2.txt", b"two")], Some("v2"));
    server.commit("proj", "feature/x", &[("x.txt", b"x")], None);
    let work = tempfile::tempdir().expect("work dir");

    // The default branch: its newest commit, with the files and the links as plain files.
    let co = fetch(&server.url("proj"), None, None, work.path())
        .await
        .expect("fetch main");
    assert_eq!(co.commit, second);
    assert!(co.dir.join("v2.txt").is_file());
    assert!(!co.dir.join(".git").exists(), "no .git in the tree");
    for (link, target) in [
        ("escape", "/etc/passwd"),
        ("dir", "../../"),
        ("notebooks/up", "../../../../root"),
    ] {
        let p = co.dir.join(link);
        let meta = std::fs::symlink_metadata(&p).expect("link entry");
        assert!(
            meta.file_type().is_file(),
            "{link} is a plain file, not a link"
        );
        assert_eq!(std::fs::read_to_string(&p).expect("read"), target);
    }
    assert_eq!(co.files, 6);
    let dir = co.dir.clone();
    drop(co);
    assert!(!dir.exists(), "the checkout is removed with its Checkout");

    // A tag, a branch with a slash, a commit by id.
    let co = fetch(&server.url("proj"), Some("v2"), None, work.path())
        .await
        .expect("tag");
    assert_eq!(co.commit, second);
    drop(co);
    let co = fetch(&server.url("proj"), Some("feature/x"), None, work.path())
        .await
        .expect("branch");
    assert!(co.dir.join("x.txt").is_file());
    drop(co);
    let co = fetch(&server.url("proj"), Some(&first), None, work.path())
        .await
        .expect("commit");
    assert_eq!(co.commit, first);
    assert!(!co.dir.join("v2.txt").exists(), "the older commit's tree");
    drop(co);

    // What the confirmation page shows.
    let resolved = git::resolve(&url(&server.url("proj")), None, None, work.path())
        .await
        .expect("resolve");
    assert_eq!(resolved.commit, second);
    assert!(resolved.what.contains("main"), "{}", resolved.what);

    // Names that are not there.
    let e = fetch(&server.url("proj"), Some("nope"), None, work.path())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "branch or tag 'nope' not found in the repository"
    );
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let e = fetch(&server.url("proj"), Some(missing), None, work.path())
        .await
        .unwrap_err();
    assert_eq!(e, GitError::CommitNotFound(missing.into()), "{e}");
    let e = fetch(&server.url("nothing"), None, None, work.path())
        .await
        .unwrap_err();
    assert_eq!(e, GitError::RepoNotFound, "{e}");
    let e = fetch("http://127.0.0.1:1/x.git", None, None, work.path())
        .await
        .unwrap_err();
    assert!(matches!(e, GitError::Unreachable(_)), "{e}");
    assert!(e.to_string().starts_with("could not reach host"), "{e}");
    assert_eq!(
        std::fs::read_dir(work.path()).expect("work dir").count(),
        0,
        "every fetch cleaned up after itself"
    );
}

#[tokio::test]
async fn fetch_with_basic_auth_names_a_missing_or_wrong_credential() {
    let server = GitServer::start(Some("alice:s3cret-pw"));
    let commit = server.repo("private", &[("a.txt", b"a")], &[]);
    let work = tempfile::tempdir().expect("work dir");
    let right = GitCredential::new("alice", "s3cret-pw").expect("credential");
    let wrong = GitCredential::new("alice", "nope").expect("credential");
    let co = fetch(&server.url("private"), None, Some(&right), work.path())
        .await
        .expect("fetch with the credential");
    assert_eq!(co.commit, commit);
    let e = fetch(&server.url("private"), None, None, work.path())
        .await
        .unwrap_err();
    assert_eq!(e, GitError::AuthRequired, "{e}");
    assert!(e.to_string().contains("needs a credential"), "{e}");
    let e = fetch(&server.url("private"), None, Some(&wrong), work.path())
        .await
        .unwrap_err();
    assert_eq!(e, GitError::AuthFailed, "{e}");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(!format!("{right:?}").contains("s3cret"));
}

#[tokio::test]
async fn a_2_gib_file_is_refused_before_checkout_and_the_download_is_watched() {
    let server = GitServer::start(None);
    let made = Instant::now();
    server.repo_with_big_file("big", "zeros.bin", 2 << 30);
    eprintln!("2 GiB blob made in {:?}", made.elapsed());
    let work = tempfile::tempdir().expect("work dir");
    let began = Instant::now();
    let e = fetch(&server.url("big"), None, None, work.path())
        .await
        .unwrap_err();
    eprintln!("refused in {:?}", began.elapsed());
    assert_eq!(
        e.to_string(),
        "the file 'zeros.bin' is 2.0 GiB; Notebox takes files of at most 512.0 MiB"
    );
    assert_eq!(std::fs::read_dir(work.path()).expect("work").count(), 0);

    // A download bigger than allowed is stopped while it runs.
    let limits = RepoLimits {
        max_download_bytes: 64 * 1024,
        ..RepoLimits::default()
    };
    let e = git::fetch(
        &url(&server.url("big")),
        None,
        None,
        &limits,
        work.path(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(e, GitError::DownloadTooLarge { max: 64 * 1024 }, "{e}");
}

#[tokio::test]
async fn a_repository_of_100_000_files_is_refused_with_the_limit_named() {
    let server = GitServer::start(None);
    let made = Instant::now();
    server.repo_with_many_files("many", 100_000);
    eprintln!("100 000 files made in {:?}", made.elapsed());
    let work = tempfile::tempdir().expect("work dir");
    let began = Instant::now();
    let e = fetch(&server.url("many"), None, None, work.path())
        .await
        .unwrap_err();
    eprintln!("refused in {:?}", began.elapsed());
    assert_eq!(
        e.to_string(),
        "the repository has 100 000 files; Notebox takes at most 20 000"
    );
    assert!(began.elapsed() < Duration::from_secs(60));
    // Within the limit, the same shape is fetched.
    server.repo_with_many_files("some", 2_000);
    let co = fetch(&server.url("some"), None, None, work.path())
        .await
        .expect("2 000 files");
    assert_eq!(co.files, 2_000);
    assert!(
        co.dir
            .join("d001/f1999.txt")
            .metadata()
            .expect("file")
            .size()
            == 3
    );
}

#[test]
fn bad_urls_and_refs_say_what_to_fix() {
    for (bad, says) in [
        ("file:///etc/passwd", "'file://' URLs are not taken"),
        ("ssh://git@example.org/x.git", "'ssh://' URLs are not taken"),
        ("ext::sh -c touch% /tmp/pwned", "spaces"),
        ("-oProxyCommand=touch /tmp/x", "spaces"),
        ("-oProxyCommand=x", "must start with https://"),
        ("https://example.org/a b.git", "spaces"),
        ("https://alice:pw@example.org/x.git", "credential fields"),
        ("git://example.org/x.git", "'git://' URLs are not taken"),
        ("", "empty"),
    ] {
        let e = RepoUrl::parse(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
    let long = format!("https://example.org/{}.git", "a".repeat(5000));
    assert!(RepoUrl::parse(&long)
        .unwrap_err()
        .to_string()
        .contains("at most 2048"));
    for (bad, says) in [
        ("--upload-pack=touch /tmp/x", "cannot start with '-'"),
        ("a..b", "'..'"),
        ("..", "'..'"),
        ("main branch", "' '"),
        ("x;rm", "';'"),
    ] {
        let e = GitRef::parse(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}

// ---- launch links, end to end ----

/// A notebook file with one markdown cell saying `text`.
fn notebook_saying(text: &str) -> Vec<u8> {
    serde_json::json!({
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": [text], "id": "c1"}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5
    })
    .to_string()
    .into_bytes()
}

/// A launch link opened logged out: the login page, then the confirmation page naming
/// the repository, the commit, the image, the machine and the GPUs; nothing has started
/// until the click. The repository brings a postBuild, so the click builds its
/// environment first (the page follows the build's log live) and then starts the
/// notebook, which opens in JupyterLab at the linked file. Screenshots: launch-confirm.png,
/// environment-build-log.png, launch-jupyterlab.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_link_asks_after_login_and_opens_the_file_on_one_click() {
    if !chromium::available() {
        return;
    }
    let Some(image) = common::test_image() else {
        return;
    };
    let git = GitServer::start(None);
    let commit = git.repo(
        "demo",
        &[
            ("hello.ipynb", &notebook_saying("Hello from the launched repository")[..]),
            (
                "postBuild",
                b"#!/bin/sh\necho building the demo environment\nsleep 4\necho postBuild done > ~/postbuild.txt\n",
            ),
        ],
        &[],
    );
    let server = common::TestServer::start_with(|c| common::jupyterlab_config(c, &image)).await;
    let _containers = common::ContainerGuard(server.data_dir().to_path_buf());
    common::add_user(&server, "ada", "ada-password-1", false);
    let api = common::Api::new(&server.url, &common::token_for(&server, "ada"));

    let link = format!(
        "/launch?repo={}&machine=cpu&open=hello.ipynb",
        notebox::web::urlencode(&git.url("demo"))
    );
    let b = chromium::Browser::start(&server.url).await;
    b.goto(&link).await;
    b.wait_path("/login", chromium::SHORT).await;
    b.fill("input[name=username]", "ada").await;
    b.fill("input[name=password]", "ada-password-1").await;
    b.click("Log in").await;
    b.wait_path("/launch", chromium::SHORT).await;
    let plan = b
        .wait_css("#launch-plan", chromium::SHORT)
        .await
        .text()
        .await
        .expect("plan");
    for named in [
        git.url("demo").as_str(),
        commit.as_str(),
        "Test Jupyter",
        "CPU · 1 core · 1 GB",
        "hello.ipynb",
    ] {
        assert!(
            plan.contains(named),
            "the confirmation names {named:?}: {plan}"
        );
    }
    assert!(
        plan.contains("GPUs\nnone") || plan.contains("GPUs none"),
        "{plan}"
    );
    b.screenshot("launch-confirm.png").await;
    // The link (and the page) alone started nothing.
    let (_, list) = api.get("/api/v1/notebooks").await;
    assert_eq!(
        list["notebooks"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
    let (_, envs) = api.get("/api/v1/environments").await;
    assert_eq!(
        envs["environments"].as_array().map(Vec::len),
        Some(0),
        "{envs}"
    );

    b.click("Start").await;
    // The repository's environment builds first, its log live on the page.
    b.wait_css("#launch-form", chromium::SHORT).await;
    b.wait_text(
        "#build-log",
        "building the demo environment",
        Duration::from_secs(120),
    )
    .await;
    b.screenshot("environment-build-log.png").await;
    // Then the notebook starts by itself and JupyterLab opens the file.
    let opened = b
        .wait(
            "JupyterLab to show the linked notebook",
            Duration::from_secs(240),
            || async {
                let path = b.path().await;
                let text = b.page_text().await;
                (path.contains("/lab/tree/hello.ipynb")
                    && text.contains("Hello from the launched repository"))
                .then_some(path)
            },
        )
        .await;
    assert!(opened.contains("/lab/tree/hello.ipynb"), "{opened}");
    b.screenshot("launch-jupyterlab.png").await;

    let (_, list) = api.get("/api/v1/notebooks").await;
    let nb = &list["notebooks"][0];
    assert_eq!(
        list["notebooks"].as_array().map(Vec::len),
        Some(1),
        "one click, one notebook: {list}"
    );
    assert_eq!(nb["repo"]["commit"], commit.as_str(), "{nb}");
    assert_eq!(nb["state"], "running", "{nb}");
    let env_name = nb["environment"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(env_name.starts_with("repo-demo"), "{nb}");
    let container = common::container_of(nb["id"].as_str().expect("id"));
    let (ok, out) = common::docker_exec(
        &container,
        "cat ~/postbuild.txt; ls -l /notebooks/hello.ipynb",
    );
    assert!(
        ok && out.contains("postBuild done") && out.contains("hello.ipynb"),
        "{out}"
    );

    // The notebook's page saves it as an environment of ada's (a new version, built
    // while the notebook keeps running).
    let nb_id = nb["id"].as_str().expect("id").to_string();
    b.goto(&format!("/notebooks/{nb_id}")).await;
    b.fill(
        "#save-environment input[name=environment]",
        "launched setup",
    )
    .await;
    b.click("Save").await;
    b.wait_css("#build-log", chromium::SHORT).await;
    b.wait_text("#build-state", "ready", Duration::from_secs(180))
        .await;
    b.screenshot("environment-saved.png").await;
    let (_, envs) = api.get("/api/v1/environments").await;
    let saved = envs["environments"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "launched setup"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(saved["versions"][0]["state"], "ready", "{envs}");
    assert_eq!(
        saved["versions"][0]["from_notebook"],
        nb_id.as_str(),
        "{saved}"
    );
    let (_, still) = api.get(&format!("/api/v1/notebooks/{nb_id}")).await;
    assert_eq!(
        still["state"], "running",
        "saving does not stop the notebook: {still}"
    );
    b.close().await;
    // The environments' images go with the test (after the notebook's container).
    drop(_containers);
    for env in envs["environments"].as_array().cloned().unwrap_or_default() {
        let id = env["id"].as_str().unwrap_or_default();
        let images = std::process::Command::new("docker")
            .args([
                "images",
                "-q",
                "--filter",
                &format!("label=io.notebox.environment={id}"),
            ])
            .output()
            .expect("docker images");
        for image in String::from_utf8_lossy(&images.stdout).split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", image])
                .output();
        }
    }
}

/// What a link or a page can do without the member's click: nothing. A GET of the link
/// starts nothing; the confirming POST needs the page's CSRF token; a crafted
/// environment page with someone else's (or a made-up) launch key offers nothing to
/// submit; a pending key is the clicking member's alone. Bad links get a 400 that says
/// what to fix.
#[tokio::test]
async fn a_link_alone_starts_nothing_and_bad_links_say_what_to_fix() {
    if !common::docker_works() {
        return;
    }
    let Some(image) = common::test_image() else {
        return;
    };
    let git = GitServer::start(None);
    git.repo("plain", &[("notes.md", b"# notes\n")], &[]);
    let server = common::TestServer::start_with(|c| common::jupyterlab_config(c, &image)).await;
    let _containers = common::ContainerGuard(server.data_dir().to_path_buf());
    common::add_user(&server, "ada", "ada-password-1", false);
    common::add_user(&server, "bob", "bob-password-1", false);
    let api = common::Api::new(&server.url, &common::token_for(&server, "ada"));
    let ada = common::client();
    common::login_ok(&ada, &server.url, "ada", "ada-password-1").await;
    let repo = notebox::web::urlencode(&git.url("plain"));

    // Logged out: the login page, with the link kept as where to go next.
    let anon = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = anon
        .get(format!("{}/launch?repo={repo}", server.url))
        .send()
        .await
        .expect("get");
    assert!(r.status().is_redirection(), "{}", r.status());
    let to = r.headers()["location"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        to.starts_with("/login?next=") && to.contains("launch"),
        "{to}"
    );

    // Logged in, the GET shows the plan and starts nothing (twice, for good measure).
    for _ in 0..2 {
        let page = ada
            .get(format!("{}/launch?repo={repo}&open=notes.md", server.url))
            .send()
            .await
            .expect("get");
        assert_eq!(page.status(), 200);
        let text = page.text().await.expect("text");
        assert!(text.contains("id=\"launch-start\""), "{text}");
    }
    let (_, list) = api.get("/api/v1/notebooks").await;
    assert_eq!(
        list["notebooks"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );

    // The POST without the page's token is refused.
    let r = ada
        .post(format!("{}/launch", server.url))
        .form(&[("repo", git.url("plain").as_str()), ("image", "test")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403, "no CSRF token, no start");
    // A crafted environment page with a made-up launch key has no form to submit, and a
    // POST with such a key is refused.
    let html = ada
        .get(format!("{}/launch?repo={repo}", server.url))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    let csrf = common::csrf_from(&html);
    let r = ada
        .post(format!("{}/launch", server.url))
        .form(&[("csrf", csrf.as_str()), ("pending", "made-up-key")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let text = r.text().await.expect("text");
    assert!(text.contains("open the launch link again"), "{text}");
    let (_, list) = api.get("/api/v1/notebooks").await;
    assert_eq!(
        list["notebooks"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );

    // Bad links: each a 400 naming what to fix, never a 500.
    let long = format!("https://example.org/{}", "a".repeat(3000));
    for (query, says) in [
        ("".to_string(), "repo="),
        (
            "repo=ftp%3A%2F%2Fexample.org%2Fx.git".to_string(),
            "not taken",
        ),
        (
            "repo=https%3A%2F%2Fu%3Ap%40example.org%2Fx.git".to_string(),
            "credential",
        ),
        (
            format!("repo={}", notebox::web::urlencode(&long)),
            "characters long",
        ),
        (format!("repo={repo}&ref=--upload-pack%3Dx"), "ref"),
        (format!("repo={repo}&image=nope"), "not in this Notebox"),
        (format!("repo={repo}&image=test&environment=x"), "not both"),
        (format!("repo={repo}&machine=huge"), "not a machine type"),
        (
            format!("repo={repo}&open=..%2F..%2Fetc%2Fpasswd"),
            "inside the repository",
        ),
        (
            format!("repo={repo}&open=%2Fetc%2Fpasswd"),
            "inside the repository",
        ),
        (
            format!("repo={repo}&environment=nosuchenv"),
            "No environment",
        ),
        (
            format!(
                "repo={}&ref=main",
                notebox::web::urlencode(&git.url("missing"))
            ),
            "not found",
        ),
    ] {
        let r = ada
            .get(format!("{}/launch?{query}", server.url))
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        let text = r.text().await.expect("text");
        assert!((400..500).contains(&status), "{query}: {status}");
        assert!(
            text.contains(says),
            "{query}: expected {says:?} in the page: {text}"
        );
    }
    // The badge is a small SVG for anyone.
    let badge = anon
        .get(format!("{}/badge.svg", server.url))
        .send()
        .await
        .expect("badge");
    assert_eq!(badge.status(), 200);
    assert_eq!(badge.headers()["content-type"], "image/svg+xml");
}
