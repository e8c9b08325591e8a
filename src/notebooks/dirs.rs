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

    pub fn datasets_dir(&self) -> PathBuf {
        self.data_dir.join("datasets")
    }

    /// The member's storage, the notebook's folder and the datasets folder, made and
    /// owned by the container user. Blocking file system work.
    pub fn prepare(&self, owner: &str, notebook_id: &str) -> Result<NotebookDirs, String> {
        let dirs = NotebookDirs {
            storage: self.storage_dir(owner),
            notebooks: self.notebook_dir(notebook_id),
            datasets: self.datasets_dir(),
        };
        self.prepare_dir(&dirs.storage, false)?;
        self.prepare_dir(&dirs.notebooks, false)?;
        self.prepare_dir(&dirs.datasets, true)?;
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
