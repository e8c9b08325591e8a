//! Git on the host side: fetch one commit of a member's repository with the `git` command
//! line, safely, and hand back its files.
//!
//! A repository is hostile input, and so is the server it comes from. Only `https://` and
//! `http://` URLs are taken (no `file://`, `ssh://`, `ext::` or other transports: git is
//! told `protocol.allow=never` but for http and https). Nothing from the repository runs:
//! no hooks, no submodules, no LFS or other filters, no system or user git config (an
//! empty `HOME`), no prompts. A credential travels as an `http.extraHeader` in the
//! environment (`GIT_CONFIG_COUNT`), never in the arguments, the URL or a log line.
//! Symbolic links are checked out as small files holding their target's text
//! (`core.symlinks=false`), so nothing in the tree points outside it. Only the wanted
//! commit is fetched (depth 1), the download is watched (its size on disk and its time),
//! and the tree's file count and sizes are checked from `git ls-tree` before a single
//! file is written.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// The longest repository URL taken.
pub const MAX_URL_LEN: usize = 2048;
/// The longest branch, tag or commit name taken.
pub const MAX_REF_LEN: usize = 255;
/// How long `git ls-remote` may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a running fetch's disk use is measured.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// At most this much of git's error output is kept.
const STDERR_CAP: usize = 64 * 1024;
/// At most this much of `git ls-remote`'s answer is read (a server's list of refs).
const REFS_CAP: usize = 16 * 1024 * 1024;

/// What a fetch may bring. The defaults are in docs (README, "Start from a repository").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoLimits {
    /// Files in the commit's tree.
    pub max_files: u64,
    /// The largest single file.
    pub max_file_bytes: u64,
    /// All files together.
    pub max_total_bytes: u64,
    /// What the download may take on disk while it runs (the compressed pack).
    pub max_download_bytes: u64,
    /// The whole fetch: resolving, downloading, checking and writing the files.
    pub timeout: Duration,
}

impl Default for RepoLimits {
    fn default() -> RepoLimits {
        RepoLimits {
            max_files: 20_000,
            max_file_bytes: 512 * MIB,
            max_total_bytes: 1024 * MIB,
            max_download_bytes: 1024 * MIB,
            timeout: Duration::from_secs(300),
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// A repository URL that passed the checks: `https://` or `http://`, a host, no
/// credential, no spaces or control characters, no query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl(String);

impl RepoUrl {
    pub fn parse(input: &str) -> Result<RepoUrl, GitError> {
        let bad = |why: &str| GitError::InvalidUrl(why.to_string());
        let url = input.trim();
        if url.is_empty() {
            return Err(bad("the repository URL is empty"));
        }
        if url.len() > MAX_URL_LEN {
            return Err(GitError::InvalidUrl(format!(
                "the repository URL is {} characters long; at most {MAX_URL_LEN} are taken",
                url.len()
            )));
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(
                "the repository URL contains spaces or control characters; percent-encode them",
            ));
        }
        if !url.is_ascii() {
            return Err(bad(
                "the repository URL contains non-ASCII characters; percent-encode them",
            ));
        }
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme == "https" || scheme == "http" => rest,
            Some((scheme, _)) => {
                return Err(GitError::InvalidUrl(format!(
                    "'{}://' URLs are not taken; use an https:// (or http://) URL of the repository",
                    scheme.chars().take(20).collect::<String>()
                )))
            }
            None => {
                return Err(bad(
                    "the repository URL must start with https:// (or http://), like https://example.org/lab/project.git",
                ))
            }
        };
        if url.contains(['?', '#']) {
            return Err(bad(
                "the repository URL must not have a query (?…) or fragment (#…)",
            ));
        }
        if url.contains(['"', '<', '>', '\\', '^', '`', '{', '|', '}']) {
            return Err(bad(
                "the repository URL contains characters a URL cannot hold (\" < > \\ ^ ` { | }); percent-encode them",
            ));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(bad(
                "put the username and password in the credential fields, not in the URL",
            ));
        }
        check_authority(authority)?;
        Ok(RepoUrl(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `host`, `host:port` or `[v6]:port`.
fn check_authority(authority: &str) -> Result<(), GitError> {
    let bad = |why: &str| Err(GitError::InvalidUrl(why.to_string()));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, rest)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => {
                (addr, rest.strip_prefix(':'))
            }
            _ => return bad("the repository URL's host is not a valid IPv6 address"),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return bad("the repository URL has no host name");
    }
    let host_ok = host.starts_with(|c: char| c.is_ascii_alphanumeric())
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !authority.starts_with('[') && !host_ok {
        return bad("the repository URL's host name may hold only letters, digits, '-' and '.'");
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return bad("the repository URL's port must be a number");
        }
        if p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535) {
            return bad("the repository URL's port must be between 1 and 65535");
        }
    }
    Ok(())
}

/// A branch, tag or commit (40 or 64 hexadecimal digits) as a member writes it; the
/// names `git check-ref-format` accepts, and never one that could read as an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef(String);

impl GitRef {
    pub fn parse(input: &str) -> Result<GitRef, GitError> {
        let bad = |why: String| Err(GitError::InvalidRef(why));
        let r = input.trim();
        if r.is_empty() {
            return bad("the branch, tag or commit is empty".into());
        }
        if r.len() > MAX_REF_LEN {
            return bad(format!(
                "the branch, tag or commit is {} characters long; at most {MAX_REF_LEN} are taken",
                r.len()
            ));
        }
        if r.starts_with('-') {
            return bad("a branch, tag or commit cannot start with '-'".into());
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._/-+=,@".contains(c);
        if let Some(c) = r.chars().find(|c| !allowed(*c)) {
            return bad(format!(
                "'{}' cannot be in a branch, tag or commit name; use letters, digits and . _ / - + = , @",
                c.escape_default()
            ));
        }
        if r.contains("..") || r.contains("//") || r.contains("@{") || r == "@" {
            return bad("a branch, tag or commit name cannot contain '..', '//' or '@{'".into());
        }
        if r.starts_with('/') || r.ends_with('/') || r.ends_with('.') || r.ends_with(".lock") {
            return bad(
                "a branch or tag name cannot start or end with '/', or end with '.' or '.lock'"
                    .into(),
            );
        }
        if r.split('/').any(|part| part.starts_with('.')) {
            return bad("no part of a branch or tag name may start with '.'".into());
        }
        Ok(GitRef(r.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A full commit id (SHA-1 or SHA-256), which the server is asked for directly.
    pub fn as_commit(&self) -> Option<&str> {
        let r = self.0.as_str();
        ((r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())).then_some(r)
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A username and password (or token) for an HTTP Basic login to the Git server. Never
/// printed: `Debug` shows the username only.
#[derive(Clone, PartialEq, Eq)]
pub struct GitCredential {
    username: String,
    password: String,
}

impl GitCredential {
    pub fn new(username: &str, password: &str) -> Result<GitCredential, GitError> {
        let bad = |why: &str| Err(GitError::InvalidCredential(why.to_string()));
        if username.is_empty() && password.is_empty() {
            return bad("the credential has neither a username nor a password");
        }
        if username.len() > 256 || password.len() > 4096 {
            return bad("the username may have at most 256 characters, the password 4096");
        }
        if username.contains(':') {
            return bad("the username cannot contain ':'");
        }
        if username
            .chars()
            .chain(password.chars())
            .any(char::is_control)
        {
            return bad(
                "the username and password cannot contain control characters or line breaks",
            );
        }
        Ok(GitCredential {
            username: username.to_string(),
            password: password.to_string(),
        })
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    fn header(&self) -> String {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password));
        format!("Authorization: Basic {basic}")
    }
}

impl fmt::Debug for GitCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A commit's files on disk, in a temporary folder removed when this is dropped (move
/// `dir`'s contents elsewhere first to keep them). The tree has no `.git`.
#[derive(Debug)]
pub struct Checkout {
    /// The commit, 40 (or 64) hexadecimal digits.
    pub commit: String,
    /// The files of the commit.
    pub dir: PathBuf,
    /// How many files, and their size together.
    pub files: u64,
    pub bytes: u64,
    _scratch: tempfile::TempDir,
}

impl Checkout {
    /// The environment files (repo2docker's names, and a Dockerfile) the checkout has in
    /// its root, `binder/` or `.binder/`: the seam where a notebook started from a
    /// repository gets its environment built.
    pub fn environment_files(&self) -> Vec<String> {
        environment_files(&self.dir)
    }
}

/// The repo2docker file names (and `Dockerfile`) present in `dir`, `dir/binder` or
/// `dir/.binder`, as paths relative to `dir`. Symbolic links are not followed.
pub fn environment_files(dir: &Path) -> Vec<String> {
    const NAMES: &[&str] = &[
        "requirements.txt",
        "environment.yml",
        "apt.txt",
        "postBuild",
        "start",
        "runtime.txt",
        "install.R",
        "Project.toml",
        "setup.py",
        "Dockerfile",
    ];
    let mut found = Vec::new();
    for sub in ["", "binder", ".binder"] {
        for name in NAMES {
            let rel = if sub.is_empty() {
                (*name).to_string()
            } else {
                format!("{sub}/{name}")
            };
            if std::fs::symlink_metadata(dir.join(&rel)).is_ok_and(|m| m.is_file()) {
                found.push(rel);
            }
        }
    }
    found
}

/// What the server says a ref is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The commit, 40 (or 64) hexadecimal digits.
    pub commit: String,
    /// What was resolved: "branch 'main'", "tag 'v1'", "commit …", "the default branch".
    pub what: String,
}

/// How far a fetch has come, for a progress line on the page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchProgress {
    /// "Resolving", "Downloading", "Checking", "Writing files".
    pub phase: &'static str,
    /// Git's own last progress line ("Receiving objects:  45% (450/1000)"), if any.
    pub detail: String,
    /// Bytes of the download on disk so far.
    pub downloaded: u64,
}

/// Why a repository could not be fetched, in words a member can act on.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum GitError {
    #[error("{0}")]
    InvalidUrl(String),
    #[error("{0}")]
    InvalidRef(String),
    #[error("{0}")]
    InvalidCredential(String),
    #[error("branch or tag '{0}' not found in the repository")]
    RefNotFound(String),
    #[error("commit {0} not found in the repository")]
    CommitNotFound(String),
    #[error("the repository has no default branch; name a branch, tag or commit")]
    NoDefaultBranch,
    #[error("repository not found: check the URL (a private repository also needs a credential)")]
    RepoNotFound,
    #[error("the repository needs a credential (username and password or token)")]
    AuthRequired,
    #[error("authentication failed: the server refused the credential")]
    AuthFailed,
    #[error("could not reach host '{0}'")]
    Unreachable(String),
    #[error("the server's TLS certificate could not be verified")]
    Tls,
    #[error("{0}")]
    NotGitServer(String),
    #[error("the repository has {} files; Notebox takes at most {}", group(*.files), group(*.max))]
    TooManyFiles { files: u64, max: u64 },
    #[error("the file '{path}' is {}; Notebox takes files of at most {}", bytes(*.size), bytes(*.max))]
    FileTooLarge { path: String, size: u64, max: u64 },
    #[error("the repository's files add up to {}; Notebox takes at most {}", bytes(*.total), bytes(*.max))]
    TooLarge { total: u64, max: u64 },
    #[error("the download grew past {}; Notebox stopped it", bytes(*.max))]
    DownloadTooLarge { max: u64 },
    #[error("fetching the repository took longer than {}; Notebox stopped it", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("git failed: {0}")]
    Failed(String),
    #[error("cannot run git on this machine: {0}")]
    Local(String),
}

impl GitError {
    /// Whether the member can fix it (bad input, a missing ref, a refused credential, a
    /// repository over the limits) rather than the server or this machine failing.
    pub fn is_member_error(&self) -> bool {
        !matches!(
            self,
            GitError::Unreachable(_)
                | GitError::Tls
                | GitError::NotGitServer(_)
                | GitError::TimedOut(_)
                | GitError::Failed(_)
                | GitError::Local(_)
        )
    }
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    if n >= 1024 * MIB {
        format!("{:.1} GiB", n as f64 / (1024 * MIB) as f64)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// Asks the server which commit `reference` (a branch, a tag, a commit; none: the
/// default branch) is, without fetching anything (`git ls-remote`). A full commit id is
/// taken as it is: only the fetch can tell whether the server has it.
pub async fn resolve(
    url: &RepoUrl,
    reference: Option<&GitRef>,
    credential: Option<&GitCredential>,
    work_dir: &Path,
) -> Result<Resolved, GitError> {
    let scratch = Scratch::new(work_dir)?;
    let git = Git::new(&scratch, credential);
    resolve_with(&git, url, reference, Instant::now() + RESOLVE_TIMEOUT).await
}

/// Fetches one commit of the repository into a new temporary folder under `work_dir`
/// and checks it out there, within `limits`. `progress` is called as it goes.
pub async fn fetch(
    url: &RepoUrl,
    reference: Option<&GitRef>,
    credential: Option<&GitCredential>,
    limits: &RepoLimits,
    work_dir: &Path,
    progress: &mut (dyn FnMut(&FetchProgress) + Send),
) -> Result<Checkout, GitError> {
    let scratch = Scratch::new(work_dir)?;
    let git = Git::new(&scratch, credential);
    let (commit, files, bytes) = fetch_steps(&git, url, reference, limits, progress)
        .await
        .map_err(|e| timed_out_as(e, limits.timeout))?;
    Ok(Checkout {
        commit,
        dir: scratch.tree_dir(),
        files,
        bytes,
        _scratch: scratch.dir,
    })
}

async fn fetch_steps(
    git: &Git<'_>,
    url: &RepoUrl,
    reference: Option<&GitRef>,
    limits: &RepoLimits,
    progress: &mut (dyn FnMut(&FetchProgress) + Send),
) -> Result<(String, u64, u64), GitError> {
    let deadline = Instant::now() + limits.timeout;
    let mut report = FetchProgress {
        phase: "Resolving",
        ..FetchProgress::default()
    };
    progress(&report);
    let resolve_by = deadline.min(Instant::now() + RESOLVE_TIMEOUT);
    let resolved = resolve_with(git, url, reference, resolve_by).await?;
    git.run(&["init", "--quiet", "--bare", "--template="], deadline)
        .await?;

    report.phase = "Downloading";
    progress(&report);
    download(
        git,
        url,
        &resolved.commit,
        limits,
        deadline,
        &mut |detail, downloaded| {
            report.detail = detail.to_string();
            report.downloaded = downloaded;
            progress(&report);
        },
    )
    .await
    .map_err(|e| match e {
        GitError::Failed(m)
            if reference.and_then(GitRef::as_commit).is_some() && not_our_ref(&m) =>
        {
            GitError::CommitNotFound(resolved.commit.clone())
        }
        other => other,
    })?;

    report.phase = "Checking";
    report.detail.clear();
    progress(&report);
    let (files, total) = measure_tree(git, &resolved.commit, limits, deadline).await?;

    report.phase = "Writing files";
    progress(&report);
    let tree = git.scratch.tree_dir();
    std::fs::create_dir(&tree)
        .map_err(|e| GitError::Local(format!("cannot create {}: {e}", tree.display())))?;
    let work_tree = format!("--work-tree={}", tree.display());
    let commit = resolved.commit.as_str();
    git.run(
        &[&work_tree, "read-tree", "--reset", "-u", commit],
        deadline,
    )
    .await?;
    Ok((resolved.commit, files, total))
}

/// The commit alone (depth 1), its disk use watched as it arrives.
async fn download(
    git: &Git<'_>,
    url: &RepoUrl,
    commit: &str,
    limits: &RepoLimits,
    deadline: Instant,
    progress: &mut (dyn FnMut(&str, u64) + Send),
) -> Result<(), GitError> {
    let args = [
        "fetch",
        "--quiet",
        "--progress",
        "--depth=1",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        "--end-of-options",
        url.as_str(),
        commit,
    ];
    let watch = Watch {
        dir: git.scratch.git_dir(),
        max_bytes: limits.max_download_bytes,
    };
    git.run_watched(&args, deadline, &watch, progress)
        .await
        .map(drop)
}

fn timed_out_as(e: GitError, limit: Duration) -> GitError {
    match e {
        GitError::TimedOut(_) => GitError::TimedOut(limit),
        other => other,
    }
}

fn not_our_ref(stderr: &str) -> bool {
    stderr.contains("not our ref")
        || stderr.contains("unadvertised object")
        || stderr.contains("couldn't find remote ref")
        || stderr.contains("no such remote ref")
}

async fn resolve_with(
    git: &Git<'_>,
    url: &RepoUrl,
    reference: Option<&GitRef>,
    deadline: Instant,
) -> Result<Resolved, GitError> {
    if let Some(commit) = reference.and_then(GitRef::as_commit) {
        return Ok(Resolved {
            commit: commit.to_ascii_lowercase(),
            what: format!("commit {}", commit.to_ascii_lowercase()),
        });
    }
    let out = git
        .run(
            &["ls-remote", "--symref", "--end-of-options", url.as_str()],
            deadline,
        )
        .await?;
    let refs = String::from_utf8_lossy(&out);
    let find = |name: &str| {
        refs.lines().find_map(|line| {
            let (oid, refname) = line.split_once('\t')?;
            (refname == name && is_oid(oid)).then(|| oid.to_string())
        })
    };
    let Some(reference) = reference else {
        return match find("HEAD") {
            Some(commit) => {
                let branch = refs.lines().find_map(|l| {
                    l.strip_prefix("ref: refs/heads/")?
                        .strip_suffix("\tHEAD")
                        .map(str::to_string)
                });
                Ok(Resolved {
                    commit,
                    what: match branch {
                        Some(b) => format!("branch '{b}' (the default)"),
                        None => "the default branch".to_string(),
                    },
                })
            }
            None => Err(GitError::NoDefaultBranch),
        };
    };
    let r = reference.as_str();
    let candidates = [
        (format!("refs/heads/{r}"), format!("branch '{r}'")),
        (format!("refs/tags/{r}^{{}}"), format!("tag '{r}'")),
        (format!("refs/tags/{r}"), format!("tag '{r}'")),
        (r.to_string(), r.to_string()),
    ];
    for (name, what) in candidates {
        if let Some(commit) = find(&name) {
            return Ok(Resolved { commit, what });
        }
    }
    Err(GitError::RefNotFound(r.to_string()))
}

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Counts and sizes the commit's files from `git ls-tree -r -l` (streamed, nothing
/// kept), refusing the commit when it is over a limit.
async fn measure_tree(
    git: &Git<'_>,
    commit: &str,
    limits: &RepoLimits,
    deadline: Instant,
) -> Result<(u64, u64), GitError> {
    let mut child = git.spawn(&["ls-tree", "-r", "-l", "-z", "--full-tree", commit])?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| GitError::Local("no output from git ls-tree".into()))?;
    let pgid = child.id();
    let read = async {
        let mut lines = BufReader::new(stdout);
        let mut entry = Vec::new();
        let (mut files, mut total, mut largest) = (0u64, 0u64, None::<(u64, String)>);
        loop {
            entry.clear();
            let n = lines
                .read_until(0, &mut entry)
                .await
                .map_err(|e| GitError::Local(format!("cannot read git ls-tree: {e}")))?;
            if n == 0 {
                break;
            }
            // "<mode> <type> <oid> <size>\t<path>\0"; submodules ("commit", size "-") are
            // not files and are not fetched.
            let line = String::from_utf8_lossy(&entry);
            let Some((meta, path)) = line.trim_end_matches('\0').split_once('\t') else {
                continue;
            };
            let mut fields = meta.split_whitespace();
            let (_mode, kind, _oid, size) =
                (fields.next(), fields.next(), fields.next(), fields.next());
            if kind != Some("blob") {
                continue;
            }
            let size = size.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            files += 1;
            total = total.saturating_add(size);
            if largest.as_ref().is_none_or(|(s, _)| size > *s) {
                largest = Some((size, path.to_string()));
            }
        }
        Ok::<_, GitError>((files, total, largest))
    };
    let result = tokio::time::timeout_at(deadline.into(), read).await;
    let (files, total, largest) = match result {
        Ok(r) => r.inspect_err(|_| kill_group(pgid))?,
        Err(_) => {
            kill_group(pgid);
            return Err(GitError::TimedOut(Duration::ZERO));
        }
    };
    let status = child
        .wait()
        .await
        .map_err(|e| GitError::Local(format!("git ls-tree: {e}")))?;
    if !status.success() {
        return Err(GitError::Failed(
            "git ls-tree could not read the commit's tree".into(),
        ));
    }
    if files > limits.max_files {
        return Err(GitError::TooManyFiles {
            files,
            max: limits.max_files,
        });
    }
    if let Some((size, path)) = largest.filter(|(s, _)| *s > limits.max_file_bytes) {
        return Err(GitError::FileTooLarge {
            path: printable(&path, 200),
            size,
            max: limits.max_file_bytes,
        });
    }
    if total > limits.max_total_bytes {
        return Err(GitError::TooLarge {
            total,
            max: limits.max_total_bytes,
        });
    }
    Ok((files, total))
}

/// The temporary folder of one fetch: `home/` (git's empty HOME), `git/` (the bare
/// repository), `tree/` (the checked-out files).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(work_dir: &Path) -> Result<Scratch, GitError> {
        let local = |e: std::io::Error| {
            GitError::Local(format!(
                "cannot make a folder in {}: {e}",
                work_dir.display()
            ))
        };
        std::fs::create_dir_all(work_dir).map_err(local)?;
        let dir = tempfile::Builder::new()
            .prefix("git-")
            .tempdir_in(work_dir)
            .map_err(local)?;
        std::fs::create_dir(dir.path().join("home")).map_err(local)?;
        Ok(Scratch { dir })
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn git_dir(&self) -> PathBuf {
        self.dir.path().join("git")
    }

    fn tree_dir(&self) -> PathBuf {
        self.dir.path().join("tree")
    }
}

/// A limit on a running command's disk use.
struct Watch {
    dir: PathBuf,
    max_bytes: u64,
}

/// Runs git with a clean, locked-down environment.
struct Git<'a> {
    scratch: &'a Scratch,
    credential: Option<&'a GitCredential>,
}

/// Configuration every git command gets (through `GIT_CONFIG_COUNT`, which outranks
/// every config file): only http(s), nothing of the repository's runs, no prompts.
const LOCKED_CONFIG: &[(&str, &str)] = &[
    ("protocol.allow", "never"),
    ("protocol.http.allow", "always"),
    ("protocol.https.allow", "always"),
    ("core.hooksPath", "/dev/null"),
    ("core.symlinks", "false"),
    ("core.fsmonitor", "false"),
    ("core.askPass", ""),
    ("credential.helper", ""),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("fetch.unpackLimit", "1"),
    ("transfer.fsckObjects", "true"),
    ("http.followRedirects", "initial"),
    ("http.lowSpeedLimit", "1000"),
    ("http.lowSpeedTime", "30"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("advice.detachedHead", "false"),
    ("init.defaultBranch", "main"),
];

/// Environment variables passed on to git from Notebox's own (an outgoing proxy, CAs).
const PASSED_ENV: &[&str] = &[
    "PATH",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

impl<'a> Git<'a> {
    fn new(scratch: &'a Scratch, credential: Option<&'a GitCredential>) -> Git<'a> {
        Git {
            scratch,
            credential,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear();
        for name in PASSED_ENV {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        }
        let mut config: Vec<(String, String)> = LOCKED_CONFIG
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        if let Some(c) = self.credential {
            config.push(("http.extraHeader".into(), c.header()));
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (k, v)) in config.into_iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k);
            cmd.env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        cmd.env("HOME", self.scratch.home())
            .env("XDG_CONFIG_HOME", self.scratch.home())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", "http:https")
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("GIT_DIR", self.scratch.git_dir())
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("GIT_LFS_SKIP_SMUDGE", "1")
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .current_dir(self.scratch.dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that a kill reaches git-remote-http and
            // index-pack too.
            .process_group(0);
        cmd
    }

    fn spawn(&self, args: &[&str]) -> Result<Child, GitError> {
        self.command(args)
            .spawn()
            .map_err(|e| GitError::Local(format!("cannot start git: {e}")))
    }

    /// Runs git to its end (or the deadline); its output, or why it failed.
    async fn run(&self, args: &[&str], deadline: Instant) -> Result<Vec<u8>, GitError> {
        self.run_inner(args, deadline, None, &mut |_, _| {}).await
    }

    /// Runs git, measuring `watch.dir` as it goes and stopping it over `watch.max_bytes`.
    async fn run_watched(
        &self,
        args: &[&str],
        deadline: Instant,
        watch: &Watch,
        progress: &mut (dyn FnMut(&str, u64) + Send),
    ) -> Result<Vec<u8>, GitError> {
        self.run_inner(args, deadline, Some(watch), progress).await
    }

    async fn run_inner(
        &self,
        args: &[&str],
        deadline: Instant,
        watch: Option<&Watch>,
        progress: &mut (dyn FnMut(&str, u64) + Send),
    ) -> Result<Vec<u8>, GitError> {
        let mut child = self.spawn(args)?;
        let pgid = child.id();
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            kill_group(pgid);
            return Err(GitError::Local("git's output could not be read".into()));
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut out_open, mut err_open) = (true, true);
        let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 4096]);
        let mut tick = tokio::time::interval(WATCH_EVERY);
        let mut downloaded = 0u64;
        let stop = |why: GitError| {
            kill_group(pgid);
            Err(why)
        };
        while out_open || err_open {
            tokio::select! {
                n = stdout.read(&mut out_buf), if out_open => match n {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => {
                        if out.len() + n > REFS_CAP {
                            return stop(GitError::NotGitServer(
                                "the server's answer is too large for a Git repository".into(),
                            ));
                        }
                        out.extend_from_slice(&out_buf[..n]);
                    }
                },
                n = stderr.read(&mut err_buf), if err_open => match n {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => {
                        err.extend_from_slice(&err_buf[..n]);
                        if err.len() > STDERR_CAP {
                            err.drain(..err.len() - STDERR_CAP);
                        }
                        if let Some(line) = last_progress_line(&err) {
                            progress(&line, downloaded);
                        }
                    }
                },
                _ = tick.tick(), if watch.is_some() => {
                    if let Some(w) = watch {
                        let dir = w.dir.clone();
                        downloaded = tokio::task::spawn_blocking(move || disk_use(&dir))
                            .await
                            .unwrap_or(0);
                        if downloaded > w.max_bytes {
                            return stop(GitError::DownloadTooLarge { max: w.max_bytes });
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    return stop(GitError::TimedOut(Duration::ZERO));
                }
            }
        }
        let status = tokio::time::timeout_at(deadline.into(), child.wait()).await;
        let status = match status {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(GitError::Local(format!("git: {e}"))),
            Err(_) => return stop(GitError::TimedOut(Duration::ZERO)),
        };
        if status.success() {
            Ok(out)
        } else {
            Err(classify(
                &String::from_utf8_lossy(&err),
                self.credential.is_some(),
            ))
        }
    }
}

fn kill_group(pid: Option<u32>) {
    let pid = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // Gone already is fine: there is nothing left to stop.
        let _gone = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Bytes under `dir` (not following symbolic links).
fn disk_use(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total = total.saturating_add(m.len()),
                Err(_) => {}
            }
        }
    }
    total
}

/// Git's latest progress line ("Receiving objects:  45% (450/1000), 1.2 MiB | …").
fn last_progress_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .split(['\r', '\n'])
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())?;
    let line = line.strip_prefix("remote: ").unwrap_or(line);
    Some(printable(line, 160))
}

/// At most `max` printable characters of `s`.
fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Turns git's error output into what the member reads.
fn classify(stderr: &str, had_credential: bool) -> GitError {
    let has = |s: &str| stderr.contains(s);
    if has("could not read Username")
        || has("could not read Password")
        || has("terminal prompts disabled")
    {
        return if had_credential {
            GitError::AuthFailed
        } else {
            GitError::AuthRequired
        };
    }
    if has("Authentication failed") || has("returned error: 401") || has("returned error: 403") {
        return if had_credential {
            GitError::AuthFailed
        } else {
            GitError::AuthRequired
        };
    }
    if has("returned error: 404") || (has("repository '") && has("' not found")) {
        return GitError::RepoNotFound;
    }
    if let Some(host) = stderr
        .split("Could not resolve host: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
    {
        return GitError::Unreachable(printable(host, 200));
    }
    if has("Failed to connect")
        || has("Couldn't connect")
        || has("Connection refused")
        || has("Connection timed out")
        || has("Operation timed out")
        || has("Could not connect")
        || has("Empty reply from server")
        || has("Connection reset")
    {
        let host = stderr
            .split("Failed to connect to ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("the Git server");
        return GitError::Unreachable(printable(host, 200));
    }
    if has("SSL") || has("certificate") {
        return GitError::Tls;
    }
    if has("not valid: is this a git repository?")
        || has("returned error: 5")
        || has("dumb http transport")
    {
        return GitError::NotGitServer(
            "the server did not answer as a Git server: check the repository URL".into(),
        );
    }
    let last = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message");
    GitError::Failed(printable(last.strip_prefix("fatal: ").unwrap_or(last), 300))
}

/// A command's arguments (for tests of the command line).
#[cfg(test)]
fn command_args(cmd: &Command) -> Vec<std::ffi::OsString> {
    cmd.as_std().get_args().map(|a| a.to_os_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_only_http_and_https() {
        assert!(RepoUrl::parse("https://example.org/lab/p.git").is_ok());
        assert!(RepoUrl::parse("http://127.0.0.1:8080/repo.git").is_ok());
        assert!(RepoUrl::parse("http://[::1]:8080/repo.git").is_ok());
        for bad in [
            "file:///etc",
            "ssh://git@host/x",
            "ext::sh -c x",
            "git://host/x",
            "-oProxyCommand=x",
            "--upload-pack=x",
            "https://host/a b",
            "https://user:pw@host/x",
            "https:///x",
            "https://ho_st/x",
            "https://host:99999/x",
            "https://host/x?y",
            "https://host/x\ny",
            "",
        ] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad} accepted");
        }
        let long = format!("https://example.org/{}", "a".repeat(5000));
        assert!(RepoUrl::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("2048"));
    }

    #[test]
    fn refs_are_names_never_options() {
        for good in [
            "main",
            "v1.0",
            "feature/x",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(GitRef::parse(good).is_ok(), "{good} refused");
        }
        for bad in [
            "--upload-pack=x",
            "-x",
            "a..b",
            "..",
            "a b",
            "a~1",
            "a^",
            "x:y",
            ".hidden",
            "a/",
            "a.lock",
            "@{1}",
            "a\\b",
        ] {
            assert!(GitRef::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            GitRef::parse("0123456789ABCDEF0123456789abcdef01234567")
                .unwrap()
                .as_commit(),
            Some("0123456789ABCDEF0123456789abcdef01234567")
        );
        assert_eq!(GitRef::parse("main").unwrap().as_commit(), None);
    }

    #[test]
    fn credential_never_printed_nor_in_arguments() {
        let c = GitCredential::new("alice", "s3cret-token").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(GitCredential::new("a", "x\r\nHost: evil").is_err());
        assert!(GitCredential::new("a:b", "x").is_err());
        let tmp = tempfile::tempdir().unwrap();
        let scratch = Scratch::new(tmp.path()).unwrap();
        let git = Git::new(&scratch, Some(&c));
        let cmd = git.command(&["ls-remote", "https://example.org/x.git"]);
        let args = command_args(&cmd);
        assert!(args.iter().all(|a| !a.to_string_lossy().contains("s3cret")));
        assert!(args
            .iter()
            .all(|a| !a.to_string_lossy().contains("YWxpY2U6czNjcmV0LXRva2Vu")));
    }

    #[test]
    fn messages_name_the_cause() {
        assert_eq!(
            classify(
                "fatal: could not read Username for 'http://h': terminal prompts disabled",
                false
            ),
            GitError::AuthRequired
        );
        assert_eq!(
            classify("fatal: Authentication failed for 'http://h/x/'", true),
            GitError::AuthFailed
        );
        assert_eq!(
            classify(
                "fatal: unable to access 'http://nohost/': Could not resolve host: nohost\n",
                false
            ),
            GitError::Unreachable("nohost".into())
        );
        assert_eq!(
            GitError::TooManyFiles {
                files: 100_000,
                max: 20_000
            }
            .to_string(),
            "the repository has 100 000 files; Notebox takes at most 20 000"
        );
        assert_eq!(
            GitError::FileTooLarge {
                path: "big.bin".into(),
                size: 2 * 1024 * MIB,
                max: 512 * MIB
            }
            .to_string(),
            "the file 'big.bin' is 2.0 GiB; Notebox takes files of at most 512.0 MiB"
        );
    }
}
