//! Share links, the public gallery, reading a notebook's files safely, and fork.
//! Knows nothing of HTTP.

pub mod ansi;
pub mod highlight;
pub mod ipynb;
pub mod markdown;
pub mod tree;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::auth::{secrets, User};
use crate::config::Config;
use crate::config::ShareConfig;
use crate::db::notebooks::{self as q, NewNotebook, NotebookRow};
use crate::db::shares::{self as sq, ShareRow};
use crate::db::Db;
use crate::db::DbError;
use crate::model::{DesiredState, NotebookState};
use crate::notebooks::{Dirs, Events, Notebook, NotebookError, NotebookEvent, Notebooks};

use tree::{Listing, MemberTree, TreeError};

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
    /// The notebook to share or fork is not the caller's (or not there).
    #[error("no such notebook")]
    NoSuchNotebook,
    #[error("{0}")]
    Invalid(String),
    /// The forker is past their storage quota: a fork is a new notebook (and a copy).
    #[error("{0}")]
    OverStorageQuota(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Io(String),
    /// The data dir's filesystem is full (a fork's copy); what was copied is removed.
    #[error(transparent)]
    DiskFull(crate::disk::DiskFull),
}

/// What the notebook service said, in the share service's terms.
impl From<NotebookError> for ShareError {
    fn from(e: NotebookError) -> ShareError {
        match e {
            NotebookError::NotFound => ShareError::NoSuchNotebook,
            NotebookError::Invalid(m) | NotebookError::Conflict(m) => ShareError::Invalid(m),
            NotebookError::Db(e) => ShareError::Db(e),
            NotebookError::OverStorageQuota(m) => ShareError::OverStorageQuota(m),
            other => ShareError::Io(other.to_string()),
        }
    }
}

pub use crate::model::wire::Share;
pub use crate::model::Visibility;

/// A visibility from a form or a request body.
pub fn parse_visibility(s: &str) -> Result<Visibility, ShareError> {
    Visibility::parse(s.trim()).ok_or_else(|| {
        ShareError::Invalid(format!(
            "visibility must be \"link\" (anyone with the link) or \"public\" (also listed in the gallery), not \"{}\"",
            s.trim()
        ))
    })
}

fn share_view(r: ShareRow) -> Share {
    Share {
        url: format!("/s/{}/", r.token),
        token: r.token,
        visibility: r.visibility,
        created_at: crate::clock::rfc3339(r.created_at),
    }
}

/// A file of a shared notebook's /notebooks directory.
pub type FileEntry = tree::TreeFile;

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

/// A share and what it points at, for the share pages.
pub struct SharedNotebook {
    pub share: ShareRow,
    pub root: PathBuf,
}

/// A share's overview: its files and its main notebook rendered (or why not).
pub struct ShareOverview {
    pub listing: Listing,
    pub main: Option<(String, Result<String, String>)>,
}

/// How one file of a share is shown on its view page.
pub enum FilePreview {
    /// Sanitized HTML (a notebook, a Markdown file).
    Html(String),
    Image {
        mime: &'static str,
        base64: String,
    },
    /// Highlighted, escaped text.
    Text(String),
    Unavailable(String),
}

const IMAGE_TYPES: [(&str, &str); 5] = [
    (".png", "image/png"),
    (".jpg", "image/jpeg"),
    (".jpeg", "image/jpeg"),
    (".gif", "image/gif"),
    (".svg", "image/svg+xml"),
];
const MAX_IMAGE_BYTES: u64 = 10 * 1024 * 1024;

/// Renders an opened notebook file: its size is checked on the descriptor before reading.
fn render_notebook_file(file: tree::OpenedFile, limit_mib: u64) -> Result<String, String> {
    let bytes = file.read_capped(limit_mib * 1024 * 1024).map_err(|e| match e {
        TreeError::TooLarge { size, .. } => format!(
            "this notebook is too large to show here ({:.1} MiB; the limit is {limit_mib} MiB); download it instead",
            size as f64 / 1_048_576.0
        ),
        e => format!("cannot read it: {e}"),
    })?;
    ipynb::render_ipynb(&bytes, limit_mib)
        .map(|r| r.html)
        .map_err(|e| e.to_string())
}

/// How a file looks on its view page. Blocking; reads at most the configured limits.
fn preview_file(file: tree::OpenedFile, name: &str, limits: &ShareConfig) -> FilePreview {
    use base64::Engine;
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".ipynb") {
        return match render_notebook_file(file, limits.max_render_mib) {
            Ok(html) => FilePreview::Html(format!("<div class=\"notebook\">{html}</div>")),
            Err(e) => FilePreview::Unavailable(format!("This notebook cannot be shown: {e}.")),
        };
    }
    if let Some((_, mime)) = IMAGE_TYPES.iter().find(|(ext, _)| lower.ends_with(ext)) {
        return match file.read_capped(MAX_IMAGE_BYTES) {
            Ok(bytes) => FilePreview::Image {
                mime,
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
            Err(TreeError::TooLarge { .. }) => FilePreview::Unavailable(
                "This image is too large to show here; download it.".into(),
            ),
            Err(e) => FilePreview::Unavailable(format!("Cannot read the file: {e}.")),
        };
    }
    let bytes = match file.read_capped(limits.max_text_kib * 1024) {
        Ok(b) => b,
        Err(TreeError::TooLarge { .. }) => {
            return FilePreview::Unavailable(
                "This file is too large to show here; download it.".into(),
            )
        }
        Err(e) => return FilePreview::Unavailable(format!("Cannot read the file: {e}.")),
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return FilePreview::Unavailable("This file is not text; download it.".into());
    };
    if lower.ends_with(".md") || lower.ends_with(".markdown") {
        return FilePreview::Html(format!(
            "<div class=\"markdown-file\">{}</div>",
            markdown::render_markdown(&text)
        ));
    }
    let language = if lower.ends_with(".py") { "python" } else { "" };
    FilePreview::Text(highlight::highlight(&text, language))
}

/// The gallery's preview of a notebook folder: the first Markdown cell of its main
/// notebook, as plain text. Blocking; computed when a share is made or the notebook stops.
pub fn compute_preview(root: &Path, limit_mib: u64) -> String {
    let Ok(tree) = MemberTree::open_shared(root) else {
        return String::new();
    };
    let listing = tree.walk();
    main_notebook(&listing.files)
        .and_then(|f| tree.open_file(&f.path).ok())
        .and_then(|f| f.read_capped(limit_mib * 1024 * 1024).ok())
        .and_then(|b| ipynb::first_markdown_preview(&b, limit_mib, 220))
        .unwrap_or_default()
}

/// How many share-page file jobs (listing, reading, rendering) run at once.
const SHARE_WORKERS: usize = 4;

/// Share links, the share pages' reads of notebook folders, the gallery, and fork. Asks
/// the notebook service whose notebook is whose.
#[derive(Clone)]
pub struct Shares {
    db: Db,
    config: Arc<Config>,
    dirs: Dirs,
    events: Events,
    notebooks: Notebooks,
    /// Share pages' blocking file work runs a few at a time: a burst of anonymous requests
    /// queues instead of each holding a rendered notebook in memory at once.
    slots: Arc<tokio::sync::Semaphore>,
}

impl Shares {
    pub fn new(db: Db, config: Arc<Config>, events: Events, notebooks: Notebooks) -> Shares {
        Shares {
            dirs: Dirs::new(&config),
            db,
            config,
            events,
            notebooks,
            slots: Arc::new(tokio::sync::Semaphore::new(SHARE_WORKERS)),
        }
    }

    /// Runs blocking file work on the blocking pool, at most `SHARE_WORKERS` at a time.
    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ShareError> {
        let _slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ShareError::Io(e.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ShareError::Io(e.to_string()))
    }

    /// Follows the notebooks' events: when a notebook stops, its shares' gallery previews
    /// are recomputed (its files are at rest). Runs for as long as the server does.
    pub async fn follow_stops(self) {
        let mut events = self.events.subscribe();
        loop {
            match events.recv().await {
                Ok(NotebookEvent::Stopped { notebook_id }) => {
                    if let Err(e) = self.refresh_share_previews(&notebook_id).await {
                        tracing::warn!(notebook = %notebook_id, error = %e, "cannot refresh share previews");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "share previews fell behind the notebooks' events"
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    pub async fn create_share(
        &self,
        owner: &User,
        notebook_id: &str,
        visibility: Visibility,
    ) -> Result<Share, ShareError> {
        let row = self.notebooks.notebook_row(owner, notebook_id).await?;
        let (root, limit) = (
            self.dirs.notebook_dir(&row.id),
            self.config.share.max_render_mib,
        );
        let preview = self.on_pool(move || compute_preview(&root, limit)).await?;
        let token = secrets::random_secret(24); // 192 bits
        let t = token.clone();
        let share = self
            .db
            .call(move |c| {
                sq::insert(c, &t, &row.id, visibility)?;
                sq::set_previews(c, &row.id, &preview)?;
                sq::by_token(c, &t)
            })
            .await?
            .ok_or(ShareError::NotFound)?;
        Ok(share_view(share))
    }

    /// Recomputes the gallery previews of a notebook's shares (after it stopped: its files
    /// are at rest). Does nothing for a notebook that has no share.
    pub async fn refresh_share_previews(&self, notebook_id: &str) -> Result<(), ShareError> {
        let id = notebook_id.to_string();
        let shares = self.db.call(move |c| sq::for_notebook(c, &id)).await?;
        if shares.is_empty() {
            return Ok(());
        }
        let (root, limit) = (
            self.dirs.notebook_dir(notebook_id),
            self.config.share.max_render_mib,
        );
        let preview = self.on_pool(move || compute_preview(&root, limit)).await?;
        let id = notebook_id.to_string();
        self.db
            .call(move |c| sq::set_previews(c, &id, &preview))
            .await?;
        Ok(())
    }

    pub async fn list_shares(
        &self,
        owner: &User,
        notebook_id: &str,
    ) -> Result<Vec<Share>, ShareError> {
        let row = self.notebooks.notebook_row(owner, notebook_id).await?;
        let shares = self.db.call(move |c| sq::for_notebook(c, &row.id)).await?;
        Ok(shares.into_iter().map(share_view).collect())
    }

    pub async fn revoke_share(&self, owner: &User, token: &str) -> Result<(), ShareError> {
        let (token, owner_id) = (token.to_string(), owner.id);
        match self
            .db
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
            .db
            .call(move |c| sq::by_token(c, &t))
            .await?
            .ok_or(ShareError::NotFound)?;
        let root = self.dirs.notebook_dir(&share.notebook_id);
        Ok(SharedNotebook { share, root })
    }

    /// A share's file list and its main notebook, rendered (anonymous; bounded cost).
    pub async fn share_overview(
        &self,
        token: &str,
    ) -> Result<(SharedNotebook, ShareOverview), ShareError> {
        let shared = self.open_share(token).await?;
        let (root, limit) = (shared.root.clone(), self.config.share.max_render_mib);
        let overview = self
            .on_pool(move || {
                let Ok(tree) = MemberTree::open_shared(&root) else {
                    return ShareOverview {
                        listing: Listing::default(),
                        main: None,
                    };
                };
                let listing = tree.walk();
                let main = main_notebook(&listing.files).map(|f| {
                    let rendered = tree
                        .open_file(&f.path)
                        .map_err(|e| format!("cannot read it: {e}"))
                        .and_then(|file| render_notebook_file(file, limit));
                    (f.path.clone(), rendered)
                });
                ShareOverview { listing, main }
            })
            .await?;
        Ok((shared, overview))
    }

    /// One file of a share as its view page shows it, with the share's file list.
    pub async fn shared_file_preview(
        &self,
        token: &str,
        relative: &str,
    ) -> Result<(SharedNotebook, Listing, FilePreview), ShareError> {
        let shared = self.open_share(token).await?;
        let (root, rel) = (shared.root.clone(), relative.to_string());
        let limits = self.config.share.clone();
        let (listing, preview) = self
            .on_pool(move || {
                let tree = MemberTree::open_shared(&root).map_err(|_| ShareError::NoSuchFile)?;
                let file = tree.open_file(&rel).map_err(|_| ShareError::NoSuchFile)?;
                let name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
                let preview = preview_file(file, &name, &limits);
                Ok::<_, ShareError>((tree.walk(), preview))
            })
            .await??;
        Ok((shared, listing, preview))
    }

    /// A regular file of a share, opened safely (see `tree`); anything else is "not found".
    pub async fn shared_file(
        &self,
        token: &str,
        relative: &str,
    ) -> Result<(SharedNotebook, tree::OpenedFile), ShareError> {
        let shared = self.open_share(token).await?;
        let (root, rel) = (shared.root.clone(), relative.to_string());
        let file = tokio::task::spawn_blocking(move || {
            MemberTree::open_shared(&root).and_then(|t| t.open_file(&rel))
        })
        .await
        .map_err(|e| ShareError::Io(e.to_string()))?
        .map_err(|_| ShareError::NoSuchFile)?;
        Ok((shared, file))
    }

    pub async fn public_shares(&self, limit: i64) -> Result<Vec<ShareRow>, ShareError> {
        Ok(self.db.call(move |c| sq::public(c, limit)).await?)
    }

    /// Forks one of `user`'s own notebooks.
    pub async fn fork_own(&self, user: &User, notebook_id: &str) -> Result<Notebook, ShareError> {
        let source = self.notebooks.notebook_row(user, notebook_id).await?;
        self.fork(user, source).await
    }

    /// Forks what a share link shows.
    pub async fn fork_shared(&self, user: &User, token: &str) -> Result<Notebook, ShareError> {
        let shared = self.open_share(token).await?;
        let id = shared.share.notebook_id.clone();
        let source = self
            .db
            .call(move |c| q::by_id(c, &id))
            .await?
            .ok_or(ShareError::NotFound)?;
        self.fork(user, source).await
    }

    /// The source as `user` may fork it: an environment they may not use (another
    /// member's, not shared) stays its owner's, and the copy runs the first catalog image
    /// instead, naming nothing of it.
    async fn without_hidden_environment(
        &self,
        user: &User,
        mut source: NotebookRow,
        config: &crate::config::Config,
    ) -> Result<NotebookRow, ShareError> {
        let Some(env) = source.environment.clone() else {
            return Ok(source);
        };
        let (eid, forker) = (env.id.clone(), user.id);
        let usable = self
            .db
            .call(move |c| {
                Ok(crate::db::environments::by_id(c, &eid)?
                    .is_some_and(|e| e.owner_id == forker || e.shared))
            })
            .await?;
        if !usable {
            let first = config
                .images
                .first()
                .ok_or_else(|| ShareError::Invalid("this Notebox has no catalog image".into()))?;
            source.environment = None;
            source.image_id = Some(first.id.clone());
            source.image = first.image.clone();
        }
        Ok(source)
    }

    /// A new, stopped notebook of `user` with a copy of the source's /notebooks files, the
    /// same image and machine type. /storage is never copied.
    async fn fork(&self, user: &User, source: NotebookRow) -> Result<Notebook, ShareError> {
        self.notebooks.check_storage_quota(user).await?;
        let config = (*self.config).clone();
        crate::notebooks::rules::check_image_allowed(&config, &source)?;
        let source = self
            .without_hidden_environment(user, source, &config)
            .await?;
        // A catalog image is forked as the catalog describes it today.
        let (image, launcher, command) =
            match source.image_id.as_deref().and_then(|i| config.image(i)) {
                Some(spec) => (spec.image.clone(), spec.launcher, spec.command.clone()),
                None => (
                    source.image.clone(),
                    source.launcher,
                    source.command.clone(),
                ),
            };
        // The source's machine type if the forker's groups allow it, else a CPU one they
        // may use, else the first they may use.
        let policy = crate::groups::policy(&config, user);
        let allowed =
            |m: &&crate::config::MachineType| policy.check_machine(&m.id, &m.name).is_ok();
        let machine = config
            .machine(&source.machine_id)
            .filter(allowed)
            .or_else(|| config.machines.iter().filter(allowed).find(|m| m.gpus == 0))
            .or_else(|| config.machines.iter().find(allowed))
            .cloned()
            .ok_or_else(|| ShareError::Invalid("your groups allow no machine type here".into()))?;
        let id = crate::notebooks::rules::new_notebook_id();
        let to = self.copy_files(&source.id, &id).await?;
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
            .db
            .call(move |c| {
                q::insert(
                    c,
                    &NewNotebook {
                        id: &nid,
                        owner_id,
                        name: &name,
                        image_id: src.image_id.as_deref(),
                        image: &image,
                        launcher,
                        command: &command,
                        machine_id: &machine.id,
                        cpus: machine.cpus,
                        memory_mib: machine.memory_mib as i64,
                        gpu_count: i64::from(machine.gpus),
                        jupyter_token: &token,
                        auto_shutdown_secs: src.auto_shutdown_secs,
                        forked_from: Some(&src.id),
                        desired_state: DesiredState::Stopped,
                        state: NotebookState::Stopped,
                        state_detail: &detail,
                        environment: src.environment.as_ref().map(|e| (e.id.as_str(), e.version)),
                        repo: None,
                    },
                )
            })
            .await;
        if let Err(e) = inserted {
            remove_partial_copy(&to).await;
            return Err(e.into());
        }
        tracing::info!(notebook = %id, from = %source.id, by = %user.username, "notebook forked");
        Ok(self.notebooks.get_notebook(user, &id).await?)
    }
}

impl Shares {
    /// Copies a notebook's /notebooks files into a new notebook's folder (owned by the
    /// container user), read from the source's folder without following its links.
    /// Returns the new folder; a failed copy leaves nothing behind.
    async fn copy_files(&self, source_id: &str, new_id: &str) -> Result<PathBuf, ShareError> {
        let (from, to) = (
            self.dirs.notebook_dir(source_id),
            self.dirs.notebook_dir(new_id),
        );
        let (uid, gid) = (self.config.storage.uid, self.config.storage.gid);
        let copy_to = to.clone();
        let copied = tokio::task::spawn_blocking(move || match MemberTree::open_shared(&from) {
            Ok(tree) => tree.copy_to(&copy_to, uid, gid),
            // A notebook that never ran has no folder yet: the fork starts empty.
            Err(TreeError::NotFound) => {
                std::fs::create_dir_all(&copy_to)?;
                std::os::unix::fs::chown(&copy_to, Some(uid), Some(gid))?;
                Ok(0)
            }
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| ShareError::Io(e.to_string()))?;
        if let Err(e) = copied {
            remove_partial_copy(&to).await;
            if let TreeError::Io(io) = &e {
                if crate::disk::is_full_io(io) {
                    let full = crate::disk::DiskFull::noticed_on(&self.config.data_dir);
                    return Err(ShareError::DiskFull(full));
                }
            }
            return Err(ShareError::Io(format!(
                "could not copy the notebook's files: {e}"
            )));
        }
        Ok(to)
    }
}

/// Removes what a failed fork copied (std's `remove_dir_all` does not follow symlinks).
async fn remove_partial_copy(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a failed fork's files");
        }
    }
}
