//! A real Git server for the tests: `git http-backend` behind a small Python HTTP server
//! (`serve.py`) on 127.0.0.1, serving bare repositories the test makes, public or behind
//! HTTP Basic auth. And the repositories: ordinary ones from files, and odd ones made
//! without writing their files (a 2 GiB blob, 100 000 files).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct GitServer {
    pub root: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

impl GitServer {
    /// Serves the repositories under a new temporary folder; `auth`: "user:password".
    pub fn start(auth: Option<&str>) -> GitServer {
        let root = tempfile::tempdir().expect("git server root");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/git_server/serve.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg(root.path());
        if let Some(a) = auth {
            cmd.arg("--auth").arg(a);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the git server (python3)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("git server port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("git server said {line:?}"));
        GitServer { root, child, port }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}.git", self.port)
    }

    pub fn bare(&self, repo: &str) -> PathBuf {
        self.root.path().join(format!("{repo}.git"))
    }

    /// A repository with these files (path → content) and symbolic links (path →
    /// target), one commit on `main`; returns the commit.
    pub fn repo(&self, name: &str, files: &[(&str, &[u8])], links: &[(&str, &str)]) -> String {
        let work = tempfile::tempdir().expect("work tree");
        git(work.path(), &["init", "-q", "-b", "main"]);
        for (path, content) in files {
            let p = work.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
        }
        for (path, target) in links {
            let p = work.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::os::unix::fs::symlink(target, &p).expect("symlink");
        }
        git(work.path(), &["add", "-A"]);
        git(work.path(), &["commit", "-q", "-m", "first"]);
        let bare = self.bare(name);
        git(
            work.path(),
            &["clone", "-q", "--bare", ".", &bare.to_string_lossy()],
        );
        rev_parse(&bare, "main")
    }

    /// Adds a commit with `files` on `branch` of an existing repository (made by
    /// `repo`), and an annotated tag when given; returns the commit.
    pub fn commit(
        &self,
        name: &str,
        branch: &str,
        files: &[(&str, &[u8])],
        tag: Option<&str>,
    ) -> String {
        let work = tempfile::tempdir().expect("work tree");
        let bare = self.bare(name);
        git(work.path(), &["clone", "-q", &bare.to_string_lossy(), "w"]);
        let w = work.path().join("w");
        git(&w, &["checkout", "-q", "-B", branch]);
        for (path, content) in files {
            let p = w.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
        }
        git(&w, &["add", "-A"]);
        git(&w, &["commit", "-q", "-m", "more"]);
        if let Some(t) = tag {
            git(&w, &["tag", "-a", "-m", "tag", t]);
            git(&w, &["push", "-q", "origin", t]);
        }
        git(&w, &["push", "-q", "origin", branch]);
        rev_parse(&bare, branch)
    }

    /// A bare repository whose `main` holds one file of `size` zero bytes, made without
    /// writing it (/dev/zero streamed into `git fast-import`: a few MB in a pack, which
    /// the server sends as it is).
    pub fn repo_with_big_file(&self, name: &str, path: &str, size: u64) -> String {
        let bare = self.bare(name);
        git(
            self.root.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &bare.to_string_lossy(),
            ],
        );
        let script = format!(
            "{{ printf 'blob\\nmark :1\\ndata {size}\\n'; head -c {size} /dev/zero; \
               printf '\\ncommit refs/heads/main\\ncommitter T <t@example.org> 1700000000 +0000\\ndata 4\\nbig\\nM 100644 :1 {path}\\n\\n'; }} \
             | git -c pack.compression=1 --git-dir='{}' fast-import --quiet",
            bare.display()
        );
        let status = Command::new("sh")
            .arg("-c")
            .arg(script)
            .status()
            .expect("fast-import");
        assert!(status.success(), "fast-import of the big file failed");
        rev_parse(&bare, "main")
    }

    /// A bare repository whose `main` holds `count` small files (in folders of 1000),
    /// made with `git fast-import`: one blob, `count` tree entries.
    pub fn repo_with_many_files(&self, name: &str, count: usize) -> String {
        let bare = self.bare(name);
        git(
            self.root.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &bare.to_string_lossy(),
            ],
        );
        let mut stream = Vec::new();
        stream.extend_from_slice(b"blob\nmark :1\ndata 3\nhi\n\n");
        stream.extend_from_slice(
            b"commit refs/heads/main\ncommitter T <t@example.org> 1700000000 +0000\ndata 5\nmany\n",
        );
        for i in 0..count {
            writeln!(stream, "M 100644 :1 d{:03}/f{i}.txt", i / 1000).expect("write");
        }
        stream.push(b'\n');
        git_stdin(&bare, &["fast-import", "--quiet"], &stream);
        rev_parse(&bare, "main")
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.org",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn git_stdin(bare: &Path, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run git");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("feed git");
    let out = child.wait_with_output().expect("git output");
    assert!(out.status.success(), "git {args:?} failed");
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn rev_parse(bare: &Path, rev: &str) -> String {
    git(bare, &["rev-parse", rev]).trim().to_string()
}
