//! Share links, the public gallery, reading a notebook's files safely, and fork.
//! Knows nothing of HTTP.

pub mod ansi;
pub mod highlight;
pub mod ipynb;
pub mod markdown;

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::auth::{secrets, User};
use crate::db::notebooks::{self as q, NewNotebook, NotebookRow};
use crate::db::shares::{self as sq, ShareRow};
use crate::db::DbError;
use crate::runtime::{Notebook, NotebookError, Runtime};

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("no such share")]
    NotFound,
    #[error("no such file in this share")]
    NoSuchFile,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Notebook(#[from] NotebookError),
    #[error("{0}")]
    Io(String),
}

impl From<DbError> for ShareError {
    fn from(e: DbError) -> ShareError {
        ShareError::Notebook(NotebookError::Db(e))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone with the link.
    Link,
    /// Anyone with the link, and listed on /gallery.
    Public,
}

impl Visibility {
    pub fn parse(s: &str) -> Result<Visibility, ShareError> {
        match s.trim() {
            "link" => Ok(Visibility::Link),
            "public" => Ok(Visibility::Public),
            other => Err(ShareError::Invalid(format!(
                "visibility must be \"link\" (anyone with the link) or \"public\" (also listed in the gallery), not \"{other}\""
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Link => "link",
            Visibility::Public => "public",
        }
    }
}

/// A share as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Share {
    pub token: String,
    pub visibility: String,
    pub url: String,
    pub created_at: String,
}

impl From<ShareRow> for Share {
    fn from(r: ShareRow) -> Share {
        Share {
            url: format!("/s/{}/", r.token),
            token: r.token,
            visibility: r.visibility,
            created_at: crate::runtime::notebooks::rfc3339(r.created_at),
        }
    }
}

/// A file of a shared notebook's /notebooks directory.
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// Relative, '/'-separated.
    pub path: String,
    pub size: u64,
    pub modified: i64,
}

/// The most files a share page lists.
const MAX_FILES: usize = 2000;

/// Resolves a relative path inside `root`, or None when it would leave it: `..`, absolute
/// paths, hidden names, backslashes, encoded separators and symlinks anywhere on the way.
pub fn resolve_inside(root: &Path, relative: &str) -> Option<PathBuf> {
    if relative.is_empty() || relative.len() > 1024 || relative.contains(['\\', '\0', '%']) {
        return None;
    }
    let mut path = root.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(name) => {
                let name = name.to_str()?;
                if name.starts_with('.') {
                    return None;
                }
                path.push(name);
                // No symlinks: not even one that points back inside.
                let meta = std::fs::symlink_metadata(&path).ok()?;
                if meta.file_type().is_symlink() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(path)
}

/// Every regular, non-hidden file under `root` (no symlinks followed), sorted.
pub fn list_files(root: &Path) -> Vec<FileEntry> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if meta.is_dir() {
                stack.push((entry.path(), rel));
            } else if meta.is_file() {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                out.push(FileEntry {
                    path: rel,
                    size: meta.len(),
                    modified,
                });
                if out.len() >= MAX_FILES {
                    out.sort_by(|a, b| a.path.cmp(&b.path));
                    return out;
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The notebook a share page shows first: the most recently modified `.ipynb` at the top
/// level, else anywhere.
pub fn main_notebook(files: &[FileEntry]) -> Option<&FileEntry> {
    let newest = |top_level_only: bool| {
        files
            .iter()
            .filter(|f| f.path.ends_with(".ipynb") && (!top_level_only || !f.path.contains('/')))
            .max_by_key(|f| (f.modified, std::cmp::Reverse(f.path.clone())))
    };
    newest(true).or_else(|| newest(false))
}

/// Copies a notebook directory (regular files and folders; symlinks are skipped), owned by
/// the container user. Blocking.
fn copy_tree(from: &Path, to: &Path, uid: u32, gid: u32) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    std::os::unix::fs::chown(to, Some(uid), Some(gid))?;
    let mut copied = 0;
    if !from.exists() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        let target = to.join(entry.file_name());
        if meta.is_dir() {
            copied += copy_tree(&entry.path(), &target, uid, gid)?;
        } else if meta.is_file() {
            copied += std::fs::copy(entry.path(), &target)?;
            std::os::unix::fs::chown(&target, Some(uid), Some(gid))?;
        }
    }
    Ok(copied)
}

/// A share and what it points at, for the share pages.
pub struct SharedNotebook {
    pub share: ShareRow,
    pub root: PathBuf,
}

impl Runtime {
    pub async fn create_share(
        &self,
        owner: &User,
        notebook_id: &str,
        visibility: Visibility,
    ) -> Result<Share, ShareError> {
        let row = self.notebook_row(owner, notebook_id).await?;
        let token = secrets::random_secret(24); // 192 bits
        let t = token.clone();
        let share = self
            .db()
            .call(move |c| {
                sq::insert(c, &t, &row.id, visibility.as_str())?;
                sq::by_token(c, &t)
            })
            .await?
            .ok_or(ShareError::NotFound)?;
        Ok(share.into())
    }

    pub async fn list_shares(
        &self,
        owner: &User,
        notebook_id: &str,
    ) -> Result<Vec<Share>, ShareError> {
        let row = self.notebook_row(owner, notebook_id).await?;
        let shares = self
            .db()
            .call(move |c| sq::for_notebook(c, &row.id))
            .await?;
        Ok(shares.into_iter().map(Share::from).collect())
    }

    pub async fn revoke_share(&self, owner: &User, token: &str) -> Result<(), ShareError> {
        let (token, owner_id) = (token.to_string(), owner.id);
        match self
            .db()
            .call(move |c| sq::delete(c, &token, owner_id))
            .await?
        {
            true => Ok(()),
            false => Err(ShareError::NotFound),
        }
    }

    /// The live share behind a token (anyone may call this: the token is the capability).
    pub async fn open_share(&self, token: &str) -> Result<SharedNotebook, ShareError> {
        if token.is_empty() || token.len() > 64 {
            return Err(ShareError::NotFound);
        }
        let t = token.to_string();
        let share = self
            .db()
            .call(move |c| sq::by_token(c, &t))
            .await?
            .ok_or(ShareError::NotFound)?;
        let root = self.notebook_dir(&share.notebook_id);
        Ok(SharedNotebook { share, root })
    }

    /// A regular file inside a share's notebook directory, resolved safely (see
    /// `resolve_inside`) on the blocking pool; anything else is "not found".
    pub async fn shared_file(
        &self,
        token: &str,
        relative: &str,
    ) -> Result<(SharedNotebook, PathBuf), ShareError> {
        let shared = self.open_share(token).await?;
        let (root, rel) = (shared.root.clone(), relative.to_string());
        let file = tokio::task::spawn_blocking(move || {
            resolve_inside(&root, &rel).filter(|p| p.is_file())
        })
        .await
        .map_err(|e| ShareError::Io(e.to_string()))?
        .ok_or(ShareError::NoSuchFile)?;
        Ok((shared, file))
    }

    pub async fn public_shares(&self, limit: i64) -> Result<Vec<ShareRow>, ShareError> {
        Ok(self.db().call(move |c| sq::public(c, limit)).await?)
    }

    /// Forks one of `user`'s own notebooks.
    pub async fn fork_own(&self, user: &User, notebook_id: &str) -> Result<Notebook, ShareError> {
        let source = self.notebook_row(user, notebook_id).await?;
        self.fork(user, source).await
    }

    /// Forks what a share link shows.
    pub async fn fork_shared(&self, user: &User, token: &str) -> Result<Notebook, ShareError> {
        let shared = self.open_share(token).await?;
        let id = shared.share.notebook_id.clone();
        let source = self
            .db()
            .call(move |c| q::by_id(c, &id))
            .await?
            .ok_or(ShareError::NotFound)?;
        self.fork(user, source).await
    }

    /// A new, stopped notebook of `user` with a copy of the source's /notebooks files, the
    /// same image and machine type. /storage is never copied.
    async fn fork(&self, user: &User, source: NotebookRow) -> Result<Notebook, ShareError> {
        let config = self.config().clone();
        let machine = config
            .machine(&source.machine_id)
            .or_else(|| config.machines.iter().find(|m| m.gpus == 0))
            .or(config.machines.first())
            .cloned()
            .ok_or_else(|| ShareError::Invalid("this Notebox has no machine types".into()))?;
        let id = crate::runtime::notebooks::new_notebook_id();
        let (from, to) = (self.notebook_dir(&source.id), self.notebook_dir(&id));
        let (uid, gid) = (config.storage.uid, config.storage.gid);
        let copy_to = to.clone();
        let copied = tokio::task::spawn_blocking(move || copy_tree(&from, &copy_to, uid, gid))
            .await
            .map_err(|e| ShareError::Io(e.to_string()))?;
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&to);
            return Err(ShareError::Io(format!(
                "could not copy the notebook's files: {e}"
            )));
        }
        let name = if source.owner_id == user.id {
            format!("{} (copy)", source.name)
        } else {
            source.name.clone()
        };
        let name: String = name.chars().take(100).collect();
        let detail = format!(
            "Forked from {}’s “{}”. Start it to run it.",
            source.owner, source.name
        );
        let owner_id = user.id;
        let token = secrets::random_secret(32);
        let (nid, src) = (id.clone(), source.clone());
        let inserted = self
            .db()
            .call(move |c| {
                q::insert(
                    c,
                    &NewNotebook {
                        id: &nid,
                        owner_id,
                        name: &name,
                        image_id: src.image_id.as_deref(),
                        image: &src.image,
                        launcher: &src.launcher,
                        command: &src.command,
                        machine_id: &machine.id,
                        cpus: machine.cpus,
                        memory_mib: machine.memory_mib as i64,
                        gpu_count: i64::from(machine.gpus),
                        jupyter_token: &token,
                        auto_shutdown_secs: src.auto_shutdown_secs,
                        forked_from: Some(&src.id),
                        desired_state: "stopped",
                        state: "stopped",
                        state_detail: &detail,
                    },
                )
            })
            .await;
        if let Err(e) = inserted {
            let _ = std::fs::remove_dir_all(&to);
            return Err(e.into());
        }
        tracing::info!(notebook = %id, from = %source.id, by = %user.username, "notebook forked");
        Ok(self.get_notebook(user, &id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("nb");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/a.txt"), "a").expect("write");
        std::fs::write(dir.path().join("secret.db"), "s").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.db"), root.join("link.db"))
            .expect("symlink");
        std::fs::write(root.join(".hidden"), "h").expect("write");
        assert!(resolve_inside(&root, "sub/a.txt").is_some());
        for bad in [
            "../secret.db",
            "/etc/passwd",
            "sub/../../secret.db",
            "..%2fsecret.db",
            "link.db",
            ".hidden",
            "sub\\..\\x",
            "",
        ] {
            assert!(
                resolve_inside(&root, bad).is_none(),
                "{bad} must not resolve"
            );
        }
        let files = list_files(&root);
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            vec!["sub/a.txt"]
        );
    }
}
