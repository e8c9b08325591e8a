//! Start from a Git repository, and launch links (issue 24, item 5): a real Git server on
//! loopback (`git http-backend`, tests/git_server), public and behind HTTP Basic auth.
//! First the host-side fetch (`notebox::git`) on its own: hostile trees, limits, bad
//! input, credentials; then notebooks started from a repository, and the launch link
//! (tests/launch.rs's Docker and Chromium parts).

mod common;
mod git_server;

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
