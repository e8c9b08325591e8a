//! Reading and copying a member-controlled directory tree (`notebooks/{id}`).
//!
//! A member's container can create, swap and symlink anything in that tree at any moment,
//! so nothing here checks a path and opens it later. Every name is opened relative to the
//! directory file descriptor of its parent, with `O_NOFOLLOW` (and `O_DIRECTORY` for
//! folders), and what was opened is measured with `fstat` on its own descriptor. A symlink
//! anywhere on the way — even one pointing back inside — makes the open fail. Hidden names
//! are never shown, copied or opened.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// The most entries (files and folders) one walk looks at: a stranger's request must stay
/// cheap whatever a member puts in a notebook.
pub const MAX_WALK_ENTRIES: usize = 5_000;
/// The deepest folder a walk enters (the root is depth 0).
pub const MAX_WALK_DEPTH: usize = 12;
/// The most files a walk lists.
pub const MAX_LISTED_FILES: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Missing, hidden, a symlink, not a regular file, or a name that is not allowed.
    #[error("no such file")]
    NotFound,
    #[error("the file is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A file of the tree, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative, '/'-separated.
    pub path: String,
    pub size: u64,
    pub modified: i64,
}

/// What a walk found; `truncated` says why it stopped early, for the page to show.
#[derive(Debug, Default)]
pub struct Listing {
    pub files: Vec<TreeFile>,
    pub truncated: Option<String>,
}

/// A regular file opened from the tree, measured on its descriptor.
pub struct OpenedFile {
    pub file: File,
    pub size: u64,
    pub modified: i64,
}

impl OpenedFile {
    /// The whole file, refused without reading when `fstat` says it is over `limit`, and
    /// never more than `limit` bytes read even if it grows meanwhile.
    pub fn read_capped(mut self, limit: u64) -> Result<Vec<u8>, TreeError> {
        if self.size > limit {
            return Err(TreeError::TooLarge {
                size: self.size,
                limit,
            });
        }
        let mut out = Vec::with_capacity(self.size as usize);
        (&mut self.file).take(limit + 1).read_to_end(&mut out)?;
        if out.len() as u64 > limit {
            return Err(TreeError::TooLarge {
                size: out.len() as u64,
                limit,
            });
        }
        Ok(out)
    }
}

/// A name Notebox will open inside a member's tree: one plain, visible component.
fn allowed_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
}

/// The components of a relative path, or None when any of them is not allowed.
fn components(relative: &str) -> Option<Vec<&str>> {
    if relative.is_empty() || relative.len() > 1024 || relative.contains('%') {
        return None;
    }
    let parts: Vec<&str> = relative.split('/').collect();
    parts.iter().all(|p| allowed_name(p)).then_some(parts)
}

/// Gives what Notebox created to the container user.
fn give_to(fd: impl AsFd, uid: u32, gid: u32) -> std::io::Result<()> {
    Ok(rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?)
}

fn open_dir_at(parent: impl AsFd, name: &str) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A member-controlled tree, opened once from its root directory.
pub struct MemberTree {
    root: OwnedFd,
    /// A top-level folder left out of listings, reads and copies (`jobs`, for shares and
    /// forks: a job's log and outputs are its member's, not the share's).
    private_top: Option<&'static str>,
}

/// The folder of a notebook where its jobs write (`jobs/{id}/`): never shared or forked.
pub const JOBS_FOLDER: &str = "jobs";

impl MemberTree {
    /// Opens the root itself. The root's own path is Notebox's (`{data_dir}/notebooks/{id}`),
    /// but it is opened with `O_NOFOLLOW` all the same.
    pub fn open(root: &Path) -> Result<MemberTree, TreeError> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                TreeError::NotFound
            }
            e => TreeError::Io(e.into()),
        })?;
        Ok(MemberTree {
            root: fd,
            private_top: None,
        })
    }

    /// Opens a notebook's folder as a share or a fork sees it: without its jobs' outputs.
    pub fn open_shared(root: &Path) -> Result<MemberTree, TreeError> {
        let mut tree = MemberTree::open(root)?;
        tree.private_top = Some(JOBS_FOLDER);
        Ok(tree)
    }

    fn is_private(&self, top: &str) -> bool {
        self.private_top == Some(top)
    }

    /// The folder at a relative path, as a tree of its own, opened one component at a
    /// time (a symlink anywhere on the way: not found).
    pub fn subtree(&self, relative: &str) -> Result<MemberTree, TreeError> {
        let parts = components(relative).ok_or(TreeError::NotFound)?;
        let mut dir: Option<OwnedFd> = None;
        for name in parts {
            let parent = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
            dir = Some(open_dir_at(parent, name).map_err(|_| TreeError::NotFound)?);
        }
        dir.map(|root| MemberTree {
            root,
            private_top: None,
        })
        .ok_or(TreeError::NotFound)
    }

    /// Opens a regular file by its relative path, one component at a time.
    pub fn open_file(&self, relative: &str) -> Result<OpenedFile, TreeError> {
        let parts = components(relative).ok_or(TreeError::NotFound)?;
        if parts.first().is_some_and(|top| self.is_private(top)) {
            return Err(TreeError::NotFound);
        }
        let (last, dirs) = parts.split_last().ok_or(TreeError::NotFound)?;
        let mut dir: Option<OwnedFd> = None;
        for name in dirs {
            let parent = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
            dir = Some(open_dir_at(parent, name).map_err(|_| TreeError::NotFound)?);
        }
        let parent = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
        // O_NONBLOCK: opening a FIFO the member planted must not hang the request.
        let fd = rustix::fs::openat(
            parent,
            *last,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|_| TreeError::NotFound)?;
        let stat = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(TreeError::NotFound);
        }
        Ok(OpenedFile {
            file: File::from(fd),
            size: stat.st_size.max(0) as u64,
            modified: stat.st_mtime,
        })
    }

    /// Every visible regular file, sorted by path; capped in entries looked at, depth and
    /// files listed (the listing says when a cap was reached).
    pub fn walk(&self) -> Listing {
        let mut listing = Listing::default();
        let mut seen = 0usize;
        // (the folder's parent, the folder's name, its relative path, its depth); folders
        // are opened only when their turn comes, so open descriptors stay few.
        let root = match self.root.try_clone() {
            Ok(fd) => Rc::new(fd),
            Err(e) => {
                listing.truncated = Some(format!("the folder cannot be read: {e}"));
                return listing;
            }
        };
        let mut pending: Vec<(Rc<OwnedFd>, Option<String>, String, usize)> =
            vec![(root, None, String::new(), 0)];
        'walk: while let Some((parent, name, prefix, depth)) = pending.pop() {
            let dir = match &name {
                None => parent,
                Some(name) => match open_dir_at(parent.as_fd(), name) {
                    Ok(fd) => Rc::new(fd),
                    Err(_) => continue, // swapped for something else meanwhile
                },
            };
            let Ok(entries) = rustix::fs::Dir::read_from(dir.as_fd()) else {
                continue;
            };
            for entry in entries {
                let Ok(entry) = entry else { break };
                let Ok(name) = entry.file_name().to_str() else {
                    continue;
                };
                if name == "." || name == ".." {
                    continue;
                }
                // Counted before anything is skipped: a million hidden names cost a walk
                // no more than a million visible ones.
                seen += 1;
                if seen > MAX_WALK_ENTRIES {
                    listing.truncated = Some(format!(
                        "Only the first {MAX_WALK_ENTRIES} entries of this notebook's folder were looked at."
                    ));
                    break 'walk;
                }
                if !allowed_name(name) || (depth == 0 && self.is_private(name)) {
                    continue;
                }
                let Ok(stat) = rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
                else {
                    continue;
                };
                let path = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}/{name}")
                };
                match FileType::from_raw_mode(stat.st_mode) {
                    FileType::Directory if depth < MAX_WALK_DEPTH => {
                        pending.push((dir.clone(), Some(name.to_string()), path, depth + 1));
                    }
                    FileType::Directory => {
                        listing.truncated = Some(format!(
                            "Folders nested deeper than {MAX_WALK_DEPTH} levels are not listed."
                        ));
                    }
                    FileType::RegularFile => {
                        listing.files.push(TreeFile {
                            path,
                            size: stat.st_size.max(0) as u64,
                            modified: stat.st_mtime,
                        });
                        if listing.files.len() >= MAX_LISTED_FILES {
                            listing.truncated = Some(format!(
                                "Only the first {MAX_LISTED_FILES} files are listed."
                            ));
                            break 'walk;
                        }
                    }
                    _ => {} // symlinks, devices, FIFOs, sockets: never shown
                }
            }
        }
        listing.files.sort_by(|a, b| a.path.cmp(&b.path));
        listing
    }

    /// Copies the tree's visible regular files and folders into `dest` (a new folder that
    /// must not exist yet), owned by `uid:gid`. Symlinks, hidden names and special files
    /// are skipped; nothing is followed. Returns the bytes copied. Blocking.
    pub fn copy_to(&self, dest: &Path, uid: u32, gid: u32) -> Result<u64, TreeError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o755).create(dest)?;
        let dest_fd = rustix::fs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        give_to(&dest_fd, uid, gid)?;
        let mut copied = 0u64;
        // (source folder, destination folder, depth)
        let mut pending = vec![(self.root.try_clone()?, dest_fd, 0usize)];
        while let Some((from, to, depth)) = pending.pop() {
            let entries = rustix::fs::Dir::read_from(from.as_fd()).map_err(std::io::Error::from)?;
            for entry in entries {
                let entry = entry.map_err(std::io::Error::from)?;
                let Ok(name) = entry.file_name().to_str() else {
                    continue;
                };
                if name == "." || name == ".." || !allowed_name(name) {
                    continue;
                }
                if depth == 0 && self.is_private(name) {
                    continue;
                }
                let name = name.to_string();
                let Ok(stat) =
                    rustix::fs::statat(from.as_fd(), name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                else {
                    continue;
                };
                match FileType::from_raw_mode(stat.st_mode) {
                    FileType::Directory if depth < 64 => {
                        let Ok(sub) = open_dir_at(from.as_fd(), &name) else {
                            continue; // swapped meanwhile: skipped, never followed
                        };
                        rustix::fs::mkdirat(to.as_fd(), name.as_str(), Mode::from_raw_mode(0o755))
                            .map_err(std::io::Error::from)?;
                        let sub_to = open_dir_at(to.as_fd(), &name)?;
                        give_to(&sub_to, uid, gid)?;
                        pending.push((sub, sub_to, depth + 1));
                    }
                    FileType::RegularFile => {
                        let Ok(src) = rustix::fs::openat(
                            from.as_fd(),
                            name.as_str(),
                            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                            Mode::empty(),
                        ) else {
                            continue;
                        };
                        let opened = rustix::fs::fstat(&src).map_err(std::io::Error::from)?;
                        if FileType::from_raw_mode(opened.st_mode) != FileType::RegularFile {
                            continue;
                        }
                        let out = rustix::fs::openat(
                            to.as_fd(),
                            name.as_str(),
                            OFlags::WRONLY
                                | OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_raw_mode(0o644),
                        )
                        .map_err(std::io::Error::from)?;
                        give_to(&out, uid, gid)?;
                        let (mut src, mut out) = (File::from(src), File::from(out));
                        copied += std::io::copy(&mut src, &mut out)?;
                    }
                    _ => {}
                }
            }
        }
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("nb");
        std::fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
        std::fs::write(root.join("a.ipynb"), "{}").expect("write");
        std::fs::write(root.join("sub/b.txt"), "bee").expect("write");
        std::fs::write(root.join("sub/deeper/c.txt"), "sea").expect("write");
        std::fs::write(dir.path().join("secret.db"), "secret").expect("write");
        std::fs::create_dir(dir.path().join("outside")).expect("mkdir");
        std::fs::write(dir.path().join("outside/notebox.db"), "db").expect("write");
        symlink(dir.path().join("secret.db"), root.join("link.db")).expect("symlink");
        symlink(dir.path().join("outside"), root.join("d")).expect("symlink");
        symlink(root.join("sub"), root.join("inside-link")).expect("symlink");
        std::fs::write(root.join(".env"), "KEY=1").expect("write");
        std::fs::create_dir(root.join(".git")).expect("mkdir");
        std::fs::write(root.join(".git/config"), "x").expect("write");
        (dir, root)
    }

    #[test]
    fn opens_only_regular_files_beneath_without_symlinks() {
        let (_dir, root) = tree();
        let t = MemberTree::open(&root).expect("open");
        let f = t.open_file("sub/deeper/c.txt").expect("regular file");
        assert_eq!(f.size, 3);
        assert_eq!(f.read_capped(10).expect("read"), b"sea");
        for bad in [
            "link.db",
            "d/notebox.db",
            "inside-link/b.txt",
            ".env",
            ".git/config",
            "../secret.db",
            "sub/../../secret.db",
            "/etc/passwd",
            "sub",
            "",
            "sub//b.txt",
            "a%2fb",
            "sub\\b.txt",
        ] {
            assert!(
                matches!(t.open_file(bad), Err(TreeError::NotFound)),
                "{bad} must not open"
            );
        }
    }

    #[test]
    fn reads_are_capped_by_fstat_before_reading() {
        let (_dir, root) = tree();
        let big = std::fs::File::create(root.join("sparse.ipynb")).expect("create");
        big.set_len(3 << 30).expect("sparse 3 GiB");
        let t = MemberTree::open(&root).expect("open");
        let f = t.open_file("sparse.ipynb").expect("open");
        assert!(matches!(
            f.read_capped(1 << 20),
            Err(TreeError::TooLarge { .. })
        ));
    }

    #[test]
    fn walk_lists_visible_regular_files_and_stops_at_its_caps() {
        let (_dir, root) = tree();
        let t = MemberTree::open(&root).expect("open");
        let listing = t.walk();
        let paths: Vec<_> = listing.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec!["a.ipynb", "sub/b.txt", "sub/deeper/c.txt"]);
        assert!(listing.truncated.is_none());
        for i in 0..(MAX_WALK_ENTRIES + 10) {
            std::fs::create_dir(root.join(format!("empty{i}"))).expect("mkdir");
        }
        let listing = MemberTree::open(&root).expect("open").walk();
        assert!(listing.truncated.is_some());
    }

    #[test]
    fn hidden_names_count_toward_the_walk_cap() {
        let (_dir, root) = tree();
        for i in 0..(MAX_WALK_ENTRIES + 10) {
            std::fs::write(root.join(format!(".hidden{i}")), "").expect("write");
        }
        let listing = MemberTree::open(&root).expect("open").walk();
        assert!(
            listing.truncated.is_some(),
            "hidden names are looked at too"
        );
    }

    #[test]
    fn shares_and_forks_leave_the_jobs_folder_out() {
        let (dir, root) = tree();
        std::fs::create_dir_all(root.join("jobs/j1")).expect("mkdir");
        std::fs::write(root.join("jobs/j1/log.txt"), "a job's log").expect("write");
        let shared = MemberTree::open_shared(&root).expect("open");
        assert!(!shared
            .walk()
            .files
            .iter()
            .any(|f| f.path.starts_with("jobs/")));
        assert!(matches!(
            shared.open_file("jobs/j1/log.txt"),
            Err(TreeError::NotFound)
        ));
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        shared
            .copy_to(&dir.path().join("fork"), uid, gid)
            .expect("copy");
        assert!(!dir.path().join("fork/jobs").exists());
        // The member's own view (the jobs API) still reads it.
        let own = MemberTree::open(&root).expect("open");
        assert!(own.open_file("jobs/j1/log.txt").is_ok());
    }

    #[test]
    fn copy_skips_symlinks_hidden_names_and_special_files() {
        let (dir, root) = tree();
        let dest = dir.path().join("copy");
        let t = MemberTree::open(&root).expect("open");
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        t.copy_to(&dest, uid, gid).expect("copy");
        let copied = MemberTree::open(&dest).expect("open").walk();
        let paths: Vec<_> = copied.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec!["a.ipynb", "sub/b.txt", "sub/deeper/c.txt"]);
        assert!(!dest.join("link.db").exists() && !dest.join("d").exists());
        assert!(!dest.join(".env").exists() && !dest.join(".git").exists());
        assert!(std::fs::symlink_metadata(dest.join("inside-link")).is_err());
    }
}
