//! What an environment is built from, checked where it enters; and what a build sends to
//! the engine: a Dockerfile (written by Notebox for repo2docker's files, or the member's
//! own), the build context as a tar, and the hash of the inputs that names the image.
//! Pure: no engine, no database.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::EnvironmentError;

/// The files a `files` source may hold together, and a Dockerfile's size (under the
/// API's 256 KiB limit on a JSON body).
pub const MAX_FILES_BYTES: usize = 192 * 1024;
/// How many files a `files` source may hold.
pub const MAX_FILES: usize = 100;
/// The build context sent to the engine (a repository's folder) at most.
pub const MAX_CONTEXT_BYTES: u64 = 256 * 1024 * 1024;
/// Where the environment's files are in the image.
pub const ENV_DIR: &str = "/opt/notebox/environment";

/// repo2docker's files that Notebox acts on, in the order they are used.
pub const REPO2DOCKER_FILES: &[&str] = &[
    "apt.txt",
    "environment.yml",
    "requirements.txt",
    "postBuild",
    "start",
];

/// A source as stored (JSON in `environments.source`): never a credential.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredSource {
    Repo {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subdir: Option<String>,
        base: String,
    },
    Files {
        base: String,
        files: BTreeMap<String, String>,
    },
    Dockerfile {
        dockerfile: String,
        #[serde(default)]
        files: BTreeMap<String, String>,
        /// The catalog image whose way of starting Jupyter the notebooks use.
        base: String,
    },
    /// Versions saved from running notebooks (`base`: the image the first one ran).
    Saved { base: String },
}

impl StoredSource {
    pub fn base(&self) -> &str {
        match self {
            StoredSource::Repo { base, .. }
            | StoredSource::Files { base, .. }
            | StoredSource::Dockerfile { base, .. }
            | StoredSource::Saved { base } => base,
        }
    }
}

/// A name for an environment: 1–64 characters, letters, digits, space, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<String, EnvironmentError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(EnvironmentError::Invalid(
            "Give the environment a name.".into(),
        ));
    }
    if name.chars().count() > 64 {
        return Err(EnvironmentError::Invalid(
            "The name is too long: use at most 64 characters.".into(),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-')))
    {
        return Err(EnvironmentError::Invalid(format!(
            "The name cannot hold {c:?}: use letters, digits, spaces, '.', '_' and '-'."
        )));
    }
    Ok(name.to_string())
}

/// A relative path inside a tree: no `..`, not absolute, no empty or odd components.
pub fn check_relative_path(what: &str, path: &str) -> Result<String, EnvironmentError> {
    let path = path.trim().trim_matches('/');
    let bad = |why: &str| EnvironmentError::Invalid(format!("The {what} '{path}' {why}."));
    if path.len() > 1024 {
        return Err(EnvironmentError::Invalid(format!(
            "The {what} is too long: at most 1024 characters."
        )));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad("holds control characters or backslashes"));
    }
    for part in Path::new(path).components() {
        match part {
            Component::Normal(_) => {}
            Component::CurDir => {}
            _ => {
                return Err(bad(
                    "must stay inside the repository (no '..', not absolute)",
                ))
            }
        }
    }
    Ok(path.to_string())
}

/// The files of a `files` (or `dockerfile`) source: plain names or relative paths, text,
/// within the limits.
pub fn check_files(files: &BTreeMap<String, String>) -> Result<(), EnvironmentError> {
    if files.len() > MAX_FILES {
        return Err(EnvironmentError::Invalid(format!(
            "An environment takes at most {MAX_FILES} files; put more in a Git repository."
        )));
    }
    let mut total = 0usize;
    for (name, content) in files {
        let clean = check_relative_path("file name", name)?;
        let plain = name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
        if clean.is_empty() || clean != *name || !plain {
            return Err(EnvironmentError::Invalid(format!(
                "The file name '{name}' is not a plain relative path like requirements.txt or binder/postBuild."
            )));
        }
        total += content.len() + name.len();
    }
    if total > MAX_FILES_BYTES {
        return Err(EnvironmentError::Invalid(format!(
            "The files add up to {total} bytes; at most {MAX_FILES_BYTES} are taken (put larger files in a Git repository)."
        )));
    }
    Ok(())
}

/// apt.txt: one Debian package per line (comments with `#`); anything that is not a
/// package name is refused before it reaches a shell.
pub fn apt_packages(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        for word in line.split_whitespace() {
            let ok = word.len() <= 128
                && word.starts_with(|c: char| c.is_ascii_alphanumeric())
                && word.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '.' | '+' | '-' | ':' | '=' | '~' | '_')
                });
            if !ok {
                return Err(format!(
                    "apt.txt line {}: '{}' is not a Debian package name",
                    n + 1,
                    word.chars().take(64).collect::<String>()
                ));
            }
            out.push(word.to_string());
        }
    }
    Ok(out)
}

/// What a repo2docker-style build uses, found in the environment's folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundFiles {
    /// The folder holding them, relative to the context root ("" or "binder").
    pub dir: String,
    /// Which of `REPO2DOCKER_FILES` are there.
    pub names: Vec<String>,
    pub dockerfile: bool,
    /// apt.txt's packages (checked).
    pub apt: Vec<String>,
}

/// The Dockerfile Notebox writes for repo2docker's files, on top of `base` (an image id).
/// Root only for apt.txt's packages; the member's steps run as the notebook's user.
/// Few instructions: each is a layer the engine commits (seconds each on a slow driver).
pub fn repo2docker_dockerfile(
    base: &str,
    labels: &str,
    found: &FoundFiles,
    user: &str,
    base_user: &str,
    base_entrypoint: &[String],
) -> String {
    let dir = if found.dir.is_empty() {
        String::new()
    } else {
        format!("{}/", found.dir)
    };
    let has = |n: &str| found.names.iter().any(|x| x == n);
    let pip_env = "PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1";
    let mut d = String::new();
    d.push_str(&format!("FROM {base}\n"));
    d.push_str(&format!("LABEL {labels}\n"));
    let mut current_user = base_user.to_string();
    if !found.apt.is_empty() {
        d.push_str("USER root\n");
        current_user = "root".into();
        d.push_str(&format!(
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {} && rm -rf /var/lib/apt/lists/*\n",
            found.apt.join(" ")
        ));
    }
    d.push_str(&format!("COPY --chown={user} . {ENV_DIR}/\n"));
    let member_steps =
        has("environment.yml") || has("requirements.txt") || has("postBuild") || has("start");
    if member_steps && current_user != user {
        d.push_str(&format!("USER {user}\n"));
        current_user = user.to_string();
    }
    if has("environment.yml") {
        d.push_str(&format!(
            "RUN cd {ENV_DIR} && if command -v mamba >/dev/null; then mamba env update -n base -f {dir}environment.yml; \
             elif command -v conda >/dev/null; then conda env update -n base -f {dir}environment.yml; \
             else echo 'environment.yml needs a base image with conda or mamba; choose one, or use requirements.txt' >&2; exit 1; fi\n"
        ));
    }
    if has("requirements.txt") {
        d.push_str(&format!(
            "RUN cd {ENV_DIR} && env {pip_env} python3 -m pip install --user -r {dir}requirements.txt\n"
        ));
    }
    if has("postBuild") {
        d.push_str(&format!(
            "RUN cd {ENV_DIR} && chmod +x {dir}postBuild && env {pip_env} ./{dir}postBuild\n"
        ));
    }
    if has("start") {
        let mut entry = vec![format!("{ENV_DIR}/{dir}start")];
        entry.extend(base_entrypoint.iter().cloned());
        d.push_str(&format!("RUN chmod +x {ENV_DIR}/{dir}start\n"));
        d.push_str(&format!(
            "ENTRYPOINT {}\n",
            serde_json::to_string(&entry).unwrap_or_else(|_| "[]".into())
        ));
    }
    if !base_user.is_empty() && current_user != base_user {
        d.push_str(&format!("USER {base_user}\n"));
    }
    d
}

/// The LABEL line's text for a build: its key (what a stopped build left is found by)
/// and the environment it belongs to.
pub fn build_labels(build_key: &str, environment_id: &str) -> String {
    format!(
        "{}={build_key} {}={environment_id}",
        crate::containers::LABEL_BUILD,
        crate::containers::LABEL_ENVIRONMENT
    )
}

/// A member's Dockerfile with the build's labels after each `FROM` (so every layer and
/// step container of the build can be found by them).
pub fn label_dockerfile(text: &str, labels: &str) -> String {
    let mut out = String::new();
    let mut continued = false;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        let is_from = !continued
            && line
                .trim_start()
                .get(..5)
                .is_some_and(|w| w.eq_ignore_ascii_case("from "));
        continued = line.trim_end().ends_with('\\');
        if is_from && !continued {
            out.push_str(&format!("LABEL {labels}\n"));
        }
    }
    out
}

/// A tar of a folder (regular files and folders only; a symbolic link is refused) plus
/// extra files (the Dockerfile), at most `MAX_CONTEXT_BYTES`.
pub fn context_tar(
    root: Option<&Path>,
    extra: &BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<Vec<u8>, String> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut total: u64 = 0;
    if let Some(root) = root {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let rel = path
                    .strip_prefix(root)
                    .map_err(|e| e.to_string())?
                    .to_path_buf();
                let meta = std::fs::symlink_metadata(&path)
                    .map_err(|e| format!("cannot read {}: {e}", rel.display()))?;
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() {
                    total += meta.len();
                    if total > MAX_CONTEXT_BYTES {
                        return Err(format!(
                            "the environment's files add up to more than {} MiB, the most a build takes",
                            MAX_CONTEXT_BYTES >> 20
                        ));
                    }
                    let mut header = tar::Header::new_gnu();
                    header.set_size(meta.len());
                    let exec = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111;
                    header.set_mode(if exec != 0 { 0o755 } else { 0o644 });
                    header.set_mtime(0);
                    let file = std::fs::File::open(&path)
                        .map_err(|e| format!("cannot read {}: {e}", rel.display()))?;
                    builder
                        .append_data(&mut header, &rel, file)
                        .map_err(|e| format!("cannot pack {}: {e}", rel.display()))?;
                }
                // Anything else (a link, a device) stays out of the image.
            }
        }
    }
    for (name, (content, mode)) in extra {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        builder
            .append_data(&mut header, name, content.as_slice())
            .map_err(|e| format!("cannot pack {name}: {e}"))?;
    }
    builder.into_inner().map_err(|e| e.to_string())
}

/// The hash naming a build's inputs: same inputs, same hash, same image.
pub fn input_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(b"notebox-environment-1\0");
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The hash of a `files` or `dockerfile` source's own text.
pub fn files_hash(files: &BTreeMap<String, String>) -> Vec<u8> {
    let mut h = Sha256::new();
    for (name, content) in files {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((content.len() as u64).to_le_bytes());
        h.update(content.as_bytes());
    }
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_checked() {
        assert_eq!(check_name("  my env-1.0 ").unwrap(), "my env-1.0");
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_relative_path("subdir", "../etc").is_err());
        assert!(check_relative_path("subdir", "/etc").is_ok_and(|p| p == "etc"));
        assert!(check_relative_path("subdir", "a/../../b").is_err());
        let mut files = BTreeMap::new();
        files.insert("../x".to_string(), String::new());
        assert!(check_files(&files).is_err());
        let mut files = BTreeMap::new();
        files.insert("binder/postBuild".to_string(), "echo".to_string());
        assert!(check_files(&files).is_ok());
        for odd in ["./postBuild", "binder//postBuild", "binder/./x"] {
            let files = BTreeMap::from([(odd.to_string(), String::new())]);
            assert!(check_files(&files).is_err(), "{odd}");
        }
    }

    #[test]
    fn apt_txt_takes_package_names_only() {
        assert_eq!(
            apt_packages("# tools\ncurl\nlibxml2-dev  git=1:2.39\n").unwrap(),
            vec!["curl", "libxml2-dev", "git=1:2.39"]
        );
        let e = apt_packages("curl\nx;rm -rf /\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn dockerfiles_get_the_build_label() {
        let d = label_dockerfile("FROM a AS b\nRUN x\nfrom c\n", "io.notebox.build=k1");
        assert_eq!(
            d,
            "FROM a AS b\nLABEL io.notebox.build=k1\nRUN x\nfrom c\nLABEL io.notebox.build=k1\n"
        );
        let found = FoundFiles {
            dir: "binder".into(),
            names: vec!["requirements.txt".into(), "postBuild".into()],
            dockerfile: false,
            apt: vec!["curl".into()],
        };
        let d = repo2docker_dockerfile(
            "sha256:abc",
            &build_labels("k2", "e1"),
            &found,
            "1000:100",
            "1000:100",
            &[],
        );
        assert!(
            d.starts_with("FROM sha256:abc\nLABEL io.notebox.build=k2 io.notebox.environment=e1\n"),
            "{d}"
        );
        assert!(
            d.contains("apt-get install -y --no-install-recommends curl"),
            "{d}"
        );
        assert!(
            d.contains("pip install --user -r binder/requirements.txt"),
            "{d}"
        );
        assert!(d.contains("./binder/postBuild"), "{d}");
        assert!(
            d.contains("USER root\n") && d.ends_with("USER 1000:100\n"),
            "{d}"
        );
    }

    #[test]
    fn hashes_follow_the_inputs() {
        assert_eq!(input_hash(&[b"a", b"b"]), input_hash(&[b"a", b"b"]));
        assert_ne!(input_hash(&[b"ab"]), input_hash(&[b"a", b"b"]));
    }
}
