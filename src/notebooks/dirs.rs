//! The host directories a notebook's container mounts: its member's storage, the
//! notebook's own folder, and the lab's datasets.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// The data directory's notebook folders, and who owns them inside containers.
#[derive(Debug, Clone)]
pub struct Dirs {
    data_dir: PathBuf,
    uid: u32,
    gid: u32,
}

/// Host directories mounted into one notebook.
#[derive(Debug, Clone)]
pub struct NotebookDirs {
    pub storage: PathBuf,
    pub notebooks: PathBuf,
    pub datasets: PathBuf,
    /// Group folders: (host folder, group id, read-only).
    pub group_folders: Vec<(PathBuf, String, bool)>,
}

impl Dirs {
    pub fn new(config: &Config) -> Dirs {
        Dirs {
            data_dir: config.data_dir.clone(),
            uid: config.storage.uid,
            gid: config.storage.gid,
        }
    }

    pub fn storage_dir(&self, username: &str) -> PathBuf {
        self.data_dir.join("storage").join(username)
    }

    pub fn notebook_dir(&self, notebook_id: &str) -> PathBuf {
        self.data_dir.join("notebooks").join(notebook_id)
    }

    /// A job's own files (the runner, its definition, the notebook as submitted): Notebox's,
    /// read-only in the job's container.
    pub fn job_dir(&self, job_id: &str) -> PathBuf {
        self.data_dir.join("jobs").join(job_id)
    }

    pub fn datasets_dir(&self) -> PathBuf {
        self.data_dir.join("datasets")
    }

    /// A group's shared folder (`[[groups]] folder = true`).
    pub fn group_dir(&self, group: &str) -> PathBuf {
        self.data_dir.join("groups").join(group)
    }

    /// The member's storage, the notebook's folder and the datasets folder, made and
    /// owned by the container user. Blocking file system work.
    pub fn prepare(
        &self,
        owner: &str,
        notebook_id: &str,
        folders: &[crate::groups::FolderMount],
    ) -> Result<NotebookDirs, String> {
        let dirs = NotebookDirs {
            storage: self.storage_dir(owner),
            notebooks: self.notebook_dir(notebook_id),
            datasets: self.datasets_dir(),
            group_folders: folders
                .iter()
                .map(|f| (self.group_dir(&f.group), f.group.clone(), f.read_only))
                .collect(),
        };
        self.prepare_dir(&dirs.storage, false)?;
        self.prepare_dir(&dirs.notebooks, false)?;
        self.prepare_dir(&dirs.datasets, true)?;
        for (dir, _, _) in &dirs.group_folders {
            // Written by the group's members: theirs like /storage (one container user).
            self.prepare_dir(dir, false)?;
        }
        Ok(dirs)
    }

    /// Creates a host directory for the container user (uid:gid from the config).
    pub fn prepare_dir(&self, dir: &Path, read_only_for_user: bool) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if !read_only_for_user {
            std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid)).map_err(|e| {
                format!(
                    "cannot give {} to uid {}:{} ({e}); notebox needs to run as root or with CAP_CHOWN",
                    dir.display(),
                    self.uid,
                    self.gid
                )
            })?;
        }
        let mode = if read_only_for_user { 0o755 } else { 0o750 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))
    }
}

/// Copies a repository's checkout into a notebook's folder, owned by the container user:
/// folders and regular files only, never over an existing file and never through a
/// symbolic link (files are created with O_CREAT|O_EXCL|O_NOFOLLOW; a folder that exists
/// as anything but a real folder is skipped with what is under it).
pub fn copy_tree(from: &Path, to: &Path, uid: u32, gid: u32) -> Result<u64, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut copied = 0u64;
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src, dst)) = stack.pop() {
        let entries =
            std::fs::read_dir(&src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let meta = std::fs::symlink_metadata(entry.path()).map_err(|e| e.to_string())?;
            let target = dst.join(entry.file_name());
            if meta.is_dir() {
                match std::fs::create_dir(&target) {
                    Ok(()) => {
                        std::os::unix::fs::lchown(&target, Some(uid), Some(gid)).map_err(|e| {
                            format!("cannot give {} to the notebook user: {e}", target.display())
                        })?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        if !std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                            continue;
                        }
                    }
                    Err(e) => return Err(format!("cannot make {}: {e}", target.display())),
                }
                stack.push((entry.path(), target));
            } else if meta.is_file() {
                let mut out = match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(
                        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
                        {
                            0o755
                        } else {
                            0o644
                        },
                    )
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(format!("cannot write {}: {e}", target.display())),
                };
                let mut input = std::fs::File::open(entry.path()).map_err(|e| e.to_string())?;
                std::io::copy(&mut input, &mut out)
                    .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
                std::os::unix::fs::fchown(&out, Some(uid), Some(gid)).map_err(|e| {
                    format!("cannot give {} to the notebook user: {e}", target.display())
                })?;
                copied += 1;
            }
        }
    }
    Ok(copied)
}
