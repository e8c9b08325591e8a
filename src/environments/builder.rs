//! The builder: takes queued builds in turn (at most `concurrent_builds` at once), runs
//! each on the engine under its limits, writes its log as it goes, and records how it
//! ended; and saving a running notebook's container as a version.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};

use super::source::{self, FoundFiles, StoredSource};
use super::{BuildView, EnvironmentError, EnvironmentView, Environments};
use crate::auth::User;
use crate::containers::{BuildEvent, EngineError, ImageBuild, ImageDetails, LABEL_ENVIRONMENT};
use crate::db::environments::{
    self as q, BuildEnd, BuildRow, EnvironmentRow, NewBuild, NewEnvironment,
};
use crate::db::notebooks::NotebookRow;
use crate::git::{FetchProgress, GitRef, RepoLimits, RepoUrl};
use crate::model::{BuildState, EnvironmentKind};

/// A build log is cut off past this size (the rest of the output is dropped, the end
/// of the build still noted).
const MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;
/// The Dockerfile's name in the build context: not a name a repository would use.
const DOCKERFILE: &str = ".notebox.Dockerfile";
/// Bumped when the Dockerfile Notebox writes changes: old images are not reused then.
const GENERATOR: &[u8] = b"repo2docker-files-2";

pub(super) async fn run(envs: Environments) {
    match envs.inner.db.call(|c| q::fail_interrupted(c)).await {
        Ok(n) if n > 0 => {
            tracing::warn!(builds = n, "builds interrupted by a restart marked failed")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not look for interrupted builds"),
    }
    let slots = Arc::new(Semaphore::new(
        envs.config().environments.concurrent_builds as usize,
    ));
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            let next = envs.inner.db.call(|c| q::next_queued(c)).await;
            let build = match next {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the build queue");
                    break;
                }
            };
            let (eid, version) = (build.environment_id.clone(), build.version);
            let taken = envs
                .inner
                .db
                .call(move |c| q::set_building(c, &eid, version))
                .await
                .unwrap_or(false);
            if !taken {
                continue;
            }
            let this = envs.clone();
            tokio::spawn(async move {
                run_one(&this, build).await;
                drop(permit);
                this.wake();
            });
        }
        if last_sweep.elapsed() > Duration::from_secs(600) {
            super::retention::sweep(&envs).await;
            last_sweep = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = envs.inner.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Why a build stopped before its end.
enum Stop {
    Cancelled,
    Failed {
        detail: String,
        failed_step: Option<String>,
    },
}

impl Stop {
    fn failed(detail: impl Into<String>) -> Stop {
        Stop::Failed {
            detail: detail.into(),
            failed_step: None,
        }
    }
}

/// A build's log file, written as the output comes.
struct LogFile {
    file: Option<std::fs::File>,
    written: u64,
    cut: bool,
}

impl LogFile {
    fn create(path: &Path) -> LogFile {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)
            .map_err(
                |e| tracing::warn!(path = %path.display(), error = %e, "cannot write a build log"),
            )
            .ok();
        LogFile {
            file,
            written: 0,
            cut: false,
        }
    }

    fn line(&mut self, text: &str) {
        let Some(f) = self.file.as_mut() else { return };
        if self.written + text.len() as u64 + 1 > MAX_LOG_BYTES {
            if !self.cut {
                self.cut = true;
                let _ = f.write_all(b"... (the log is cut here: it grew past 8 MiB)\n");
            }
            return;
        }
        self.written += text.len() as u64 + 1;
        let _ = f.write_all(text.as_bytes());
        let _ = f.write_all(b"\n");
    }

    /// The last lines, always written (past the cut too).
    fn end(&mut self, text: &str) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.write_all(text.as_bytes());
            let _ = f.write_all(b"\n");
        }
    }
}

/// Runs one build that was just taken from the queue.
async fn run_one(envs: &Environments, build: BuildRow) {
    let (eid, version) = (build.environment_id.clone(), build.version);
    let key = format!(
        "{eid}-{version}-{}",
        crate::auth::secrets::random_secret(6).to_lowercase()
    );
    let (switch, mut cancelled) = watch::channel(false);
    if let Ok(mut running) = envs.inner.running.lock() {
        running.insert((eid.clone(), version), switch);
    }
    let log_path = envs.log_path(&eid, version);
    let (events, mut rx) = mpsc::unbounded_channel::<BuildEvent>();
    // The log writer: lines to the file, steps to the database (for the pages).
    let writer = {
        let db = envs.inner.db.clone();
        let (eid, path) = (eid.clone(), log_path.clone());
        tokio::spawn(async move {
            let mut log = LogFile::create(&path);
            let mut last_step = String::new();
            while let Some(event) = rx.recv().await {
                match event {
                    BuildEvent::Step(step) => {
                        log.line(&step);
                        last_step = step.clone();
                        let n = step
                            .strip_prefix("Step ")
                            .and_then(|r| r.split(" : ").next())
                            .unwrap_or("")
                            .replace('/', " of ");
                        let (eid, detail) = (eid.clone(), format!("Building: step {n}"));
                        let _ = db
                            .call(move |c| q::set_progress(c, &eid, version, &step, &detail))
                            .await;
                    }
                    BuildEvent::Output(line) => log.line(&line),
                }
            }
            (log, last_step)
        })
    };
    let timeout = envs.config().environments.build_timeout;
    let started = std::time::Instant::now();
    let outcome = tokio::select! {
        r = build_steps(envs, &build, &key, events.clone()) => r,
        _ = cancelled.changed() => Err(Stop::Cancelled),
        _ = tokio::time::sleep(timeout) => Err(Stop::failed(format!(
            "Stopped: over the build time limit ({})",
            humantime::format_duration(timeout)
        ))),
    };
    if let Ok(mut running) = envs.inner.running.lock() {
        running.remove(&(eid.clone(), version));
    }
    drop(events);
    if !matches!(outcome, Ok(_)) {
        match envs.inner.engine.remove_build_leftovers(&key).await {
            Ok(n) if n > 0 => {
                tracing::info!(environment = %eid, version, removed = n, "cleared a stopped build's containers and layers")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(environment = %eid, version, error = %e, "could not clear a stopped build's leftovers")
            }
        }
    }
    let (mut log, last_step) = writer
        .await
        .unwrap_or_else(|_| (LogFile::create(&log_path), String::new()));
    let secs = started.elapsed().as_secs_f64();
    let (end_state, detail, failed_step, image, size) = match outcome {
        Ok((image, size)) => {
            log.end(&format!(
                "Built {image} ({}) in {secs:.1} s",
                human_size(size)
            ));
            (
                BuildState::Ready,
                format!("Built in {secs:.0} s"),
                None,
                Some(image),
                Some(size),
            )
        }
        Err(Stop::Cancelled) => {
            log.end("Cancelled.");
            (
                BuildState::Cancelled,
                "Cancelled".to_string(),
                None,
                None,
                None,
            )
        }
        Err(Stop::Failed {
            detail,
            failed_step,
        }) => {
            let step = failed_step.or_else(|| (!last_step.is_empty()).then(|| last_step.clone()));
            log.end(&format!("Failed: {detail}"));
            (BuildState::Failed, detail, step, None, None)
        }
    };
    let (e2, d2, f2, i2) = (
        eid.clone(),
        detail.clone(),
        failed_step.clone(),
        image.clone(),
    );
    let recorded = envs
        .inner
        .db
        .call(move |c| {
            q::finish(
                c,
                &e2,
                version,
                &BuildEnd {
                    state: end_state,
                    state_detail: &d2,
                    failed_step: f2.as_deref(),
                    image: i2.as_deref(),
                    size_bytes: size,
                },
            )
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(environment = %eid, version, error = %e, "could not record how a build ended");
    }
    tracing::info!(environment = %eid, version, state = %end_state, %detail, seconds = secs, "build ended");
    if end_state == BuildState::Ready {
        super::retention::sweep(envs).await;
    }
}

/// Everything a build does until the image is there: the base, the repository, the
/// context, the engine's build.
async fn build_steps(
    envs: &Environments,
    build: &BuildRow,
    key: &str,
    events: mpsc::UnboundedSender<BuildEvent>,
) -> Result<(String, i64), Stop> {
    let say = |line: String| {
        let _ = events.send(BuildEvent::Output(line));
    };
    let eid = build.environment_id.clone();
    let env = envs
        .inner
        .db
        .call(move |c| q::by_id(c, &eid))
        .await
        .map_err(|e| Stop::failed(e.to_string()))?
        .ok_or_else(|| Stop::failed("the environment was deleted"))?;
    let stored: StoredSource = serde_json::from_str(&env.source)
        .map_err(|e| Stop::failed(format!("the stored source does not read: {e}")))?;
    let config = envs.config();
    let base_spec = config.image(stored.base()).cloned().ok_or_else(|| {
        Stop::failed(format!(
            "the base image '{}' is no longer in the catalog",
            stored.base()
        ))
    })?;
    let engine = &envs.inner.engine;
    let base = match engine
        .image_details(&base_spec.image)
        .await
        .map_err(engine_stop)?
    {
        Some(d) => d,
        None => {
            say(format!("Pulling the base image {}", base_spec.image));
            let mut ignore = |_: &crate::containers::PullProgress| {};
            engine
                .pull_image(&base_spec.image, None, &mut ignore)
                .await
                .map_err(|e| {
                    Stop::failed(format!(
                        "cannot pull the base image {}: {e}",
                        base_spec.image
                    ))
                })?;
            engine
                .image_details(&base_spec.image)
                .await
                .map_err(engine_stop)?
                .ok_or_else(|| Stop::failed("the base image is not there after its pull"))?
        }
    };
    say(format!(
        "Base image {} ({})",
        base_spec.image,
        short_id(&base.id)
    ));

    // The context: a repository's folder, or the files sent; and the Dockerfile.
    let mut extra: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
    let mut commit = None;
    let mut checkout = None;
    let user = format!("{}:{}", config.storage.uid, config.storage.gid);
    let labels = source::build_labels(key, &env.id);
    let dockerfile = match &stored {
        StoredSource::Files { files, .. } => {
            for (name, content) in files {
                let mode = if is_script(name) { 0o755 } else { 0o644 };
                extra.insert(name.clone(), (content.as_bytes().to_vec(), mode));
            }
            let found = find_in_files(files).map_err(Stop::failed)?;
            source::repo2docker_dockerfile(
                &base.id,
                &labels,
                &found,
                &user,
                &base.user,
                &base.entrypoint,
            )
        }
        StoredSource::Dockerfile {
            dockerfile, files, ..
        } => {
            for (name, content) in files {
                extra.insert(name.clone(), (content.as_bytes().to_vec(), 0o644));
            }
            source::label_dockerfile(dockerfile, &labels)
        }
        StoredSource::Repo { url, subdir, .. } => {
            let url = RepoUrl::parse(url).map_err(|e| Stop::failed(e.to_string()))?;
            let reference = build
                .requested_ref
                .as_deref()
                .map(GitRef::parse)
                .transpose()
                .map_err(|e| Stop::failed(e.to_string()))?;
            let credential = envs
                .credential_of(&env)
                .map_err(|e| Stop::failed(e.to_string()))?;
            let work = envs.work_dir().map_err(|e| Stop::failed(e.to_string()))?;
            say(format!(
                "Fetching {url}{}",
                reference
                    .as_ref()
                    .map(|r| format!(" at {}", r.as_str()))
                    .unwrap_or_default()
            ));
            let mut last = std::time::Instant::now();
            let mut progress = |p: &FetchProgress| {
                if last.elapsed() > Duration::from_millis(500) || p.phase != "Downloading" {
                    last = std::time::Instant::now();
                    let _ = events.send(BuildEvent::Output(format!(
                        "{}{}",
                        p.phase,
                        if p.detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", p.detail)
                        }
                    )));
                }
            };
            let fetched = crate::git::fetch(
                &url,
                reference.as_ref(),
                credential.as_ref(),
                &RepoLimits::default(),
                &work,
                &mut progress,
            )
            .await
            .map_err(|e| Stop::Failed {
                detail: e.to_string(),
                failed_step: Some("Fetching the repository".into()),
            })?;
            say(format!(
                "Commit {} ({} files, {})",
                fetched.commit,
                fetched.files,
                human_size(fetched.bytes as i64)
            ));
            commit = Some(fetched.commit.clone());
            let root = match subdir {
                Some(s) => fetched.dir.join(s),
                None => fetched.dir.clone(),
            };
            if !std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()) {
                return Err(Stop::failed(format!(
                    "the repository has no folder '{}' at commit {}",
                    subdir.as_deref().unwrap_or(""),
                    fetched.commit
                )));
            }
            let found = find_in_dir(&root).map_err(Stop::failed)?;
            let text = if found.dockerfile {
                let allowed = dockerfile_allowed_for(envs, env.owner_id).await;
                if let Err(e) = allowed {
                    return Err(Stop::failed(e.to_string()));
                }
                let path = root.join(&found.dir).join("Dockerfile");
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Stop::failed(format!("cannot read the repository's Dockerfile: {e}"))
                })?;
                say("Building the repository's Dockerfile".into());
                source::label_dockerfile(&text, &labels)
            } else if found.names.is_empty() {
                // Nothing to install: the catalog image as it is (the files come into
                // /notebooks when a notebook starts from the repository).
                say("No environment files (requirements.txt, environment.yml, apt.txt, postBuild, start): the base image as it is, nothing to build".into());
                return Ok((base_spec.image.clone(), base.size_bytes));
            } else {
                source::repo2docker_dockerfile(
                    &base.id,
                    &labels,
                    &found,
                    &user,
                    &base.user,
                    &base.entrypoint,
                )
            };
            checkout = Some((fetched, root));
            text
        }
        StoredSource::Saved { .. } => {
            return Err(Stop::failed(
                "saved environments are not built: save a running notebook instead",
            ))
        }
    };
    extra.insert(
        DOCKERFILE.to_string(),
        (dockerfile.clone().into_bytes(), 0o644),
    );

    let hash = inputs_hash(config, &env.id, &stored, &base.id, commit.as_deref());
    {
        let (eid, version, c2, h2) = (env.id.clone(), build.version, commit.clone(), hash.clone());
        let _ = envs
            .inner
            .db
            .call(move |c| q::set_inputs(c, &eid, version, c2.as_deref(), &h2))
            .await;
    }
    let tag = format!("notebox-env/{}:{}", env.id, &hash[..16]);
    if let Some(existing) = engine.image_details(&tag).await.map_err(engine_stop)? {
        say(format!(
            "Same inputs as an earlier version: its image {tag}, nothing to build"
        ));
        return Ok((tag, existing.size_bytes));
    }
    say(format!("Image {tag}"));
    for line in dockerfile.lines() {
        say(format!("  | {line}"));
    }
    let root = checkout.as_ref().map(|(_, root)| root.clone());
    let context = tokio::task::spawn_blocking(move || source::context_tar(root.as_deref(), &extra))
        .await
        .map_err(|e| Stop::failed(e.to_string()))?
        .map_err(Stop::failed)?;
    let env_cfg = &config.environments;
    let request = ImageBuild {
        context,
        dockerfile: DOCKERFILE.into(),
        tag: tag.clone(),
        labels: BTreeMap::new(),
        memory_bytes: i64::from(env_cfg.build_memory_mib) * 1024 * 1024,
        nano_cpus: (env_cfg.build_cpus * 1e9) as i64,
    };
    let mut forward = |e: BuildEvent| {
        let _ = events.send(e);
    };
    match engine.build_image(request, &mut forward).await {
        Ok(_) => {}
        Err(EngineError::Build { message, code }) => {
            let code = code.or_else(|| exit_code_of(&message));
            let what = step_name(&message);
            let detail = match code {
                Some(137) => format!(
                    "Stopped: over the build memory limit ({} MiB); {what} was killed (exit code 137)",
                    env_cfg.build_memory_mib
                ),
                Some(c) => format!("{what} failed: exited with code {c} (its output is at the end of the log)"),
                None => format!("The build failed: {message}"),
            };
            say(message);
            return Err(Stop::Failed {
                detail,
                failed_step: None,
            });
        }
        Err(e) => return Err(engine_stop(e)),
    }
    drop(checkout);
    let size = engine
        .image_details(&tag)
        .await
        .map_err(engine_stop)?
        .map(|d| d.size_bytes)
        .unwrap_or(0);
    Ok((tag, size))
}

fn engine_stop(e: EngineError) -> Stop {
    Stop::failed(format!("Docker: {e}"))
}

/// "returned a non-zero code: 3" → 3.
fn exit_code_of(message: &str) -> Option<i64> {
    message
        .rsplit_once("non-zero code: ")
        .and_then(|(_, n)| n.trim().parse().ok())
}

/// Which of the member's files a failed step ran, in their words.
fn step_name(message: &str) -> String {
    if message.contains("postBuild") {
        "postBuild".into()
    } else if message.contains("pip install") {
        "Installing requirements.txt".into()
    } else if message.contains("apt-get") {
        "Installing apt.txt's packages".into()
    } else if message.contains("env update") || message.contains("environment.yml") {
        "Installing environment.yml".into()
    } else {
        "The step".into()
    }
}

fn is_script(name: &str) -> bool {
    name.ends_with("postBuild") || name.ends_with("start")
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

pub fn human_size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

/// The folder repo2docker would read: `binder/` or `.binder/` if there is one, else the
/// root; and what is in it.
fn find_in_dir(root: &Path) -> Result<FoundFiles, String> {
    let is_dir = |p: PathBuf| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let dir = ["binder", ".binder"]
        .into_iter()
        .find(|d| is_dir(root.join(d)))
        .unwrap_or("")
        .to_string();
    let folder = root.join(&dir);
    let is_file = |n: &str| std::fs::symlink_metadata(folder.join(n)).is_ok_and(|m| m.is_file());
    let names: Vec<String> = source::REPO2DOCKER_FILES
        .iter()
        .filter(|n| is_file(n))
        .map(|n| n.to_string())
        .collect();
    let apt = if names.iter().any(|n| n == "apt.txt") {
        let text = std::fs::read_to_string(folder.join("apt.txt"))
            .map_err(|e| format!("cannot read apt.txt: {e}"))?;
        source::apt_packages(&text)?
    } else {
        Vec::new()
    };
    Ok(FoundFiles {
        dockerfile: is_file("Dockerfile"),
        dir,
        names,
        apt,
    })
}

/// The same for a `files` source.
fn find_in_files(files: &BTreeMap<String, String>) -> Result<FoundFiles, String> {
    let dir = if files.keys().any(|k| k.starts_with("binder/")) {
        "binder"
    } else {
        ""
    };
    let path = |n: &str| {
        if dir.is_empty() {
            n.to_string()
        } else {
            format!("{dir}/{n}")
        }
    };
    let names: Vec<String> = source::REPO2DOCKER_FILES
        .iter()
        .filter(|n| files.contains_key(&path(n)))
        .map(|n| n.to_string())
        .collect();
    let apt = match files.get(&path("apt.txt")) {
        Some(text) => source::apt_packages(text)?,
        None => Vec::new(),
    };
    Ok(FoundFiles {
        dir: dir.to_string(),
        names,
        dockerfile: false,
        apt,
    })
}

async fn dockerfile_allowed_for(
    envs: &Environments,
    owner_id: i64,
) -> Result<(), EnvironmentError> {
    let owner = envs
        .inner
        .db
        .call(move |c| crate::db::users::by_id(c, owner_id))
        .await?
        .ok_or_else(|| EnvironmentError::NotFound("the environment's owner is gone".into()))?;
    envs.check_dockerfile_allowed(&owner)
        .map_err(|e| EnvironmentError::Forbidden(format!("The repository has a Dockerfile. {e}")))
}

/// The hash naming a build's inputs. A repository's files are named by their commit (and
/// folder); sent files and Dockerfiles by their text; all by the base image's id and the
/// user the steps run as.
pub(super) fn inputs_hash(
    config: &crate::config::Config,
    environment_id: &str,
    stored: &StoredSource,
    base_id: &str,
    commit: Option<&str>,
) -> String {
    let user = format!("{}:{}", config.storage.uid, config.storage.gid);
    let described = match stored {
        StoredSource::Repo { url, subdir, .. } => format!(
            "repo\0{url}\0{}\0{}",
            subdir.as_deref().unwrap_or(""),
            commit.unwrap_or("")
        ),
        other => serde_json::to_string(other).unwrap_or_default(),
    };
    source::input_hash(&[
        GENERATOR,
        environment_id.as_bytes(),
        described.as_bytes(),
        base_id.as_bytes(),
        user.as_bytes(),
    ])
}

/// Saves a running notebook's container as a new version of the member's environment
/// `name` (made if it does not exist). The commit runs in the background; the version
/// is `building` until it is done.
pub async fn save_notebook(
    envs: &Environments,
    user: &User,
    notebook: &NotebookRow,
    container_id: &str,
    name: &str,
) -> Result<(EnvironmentView, BuildView), EnvironmentError> {
    let name = source::check_name(name)?;
    let owner_id = user.id;
    let n2 = name.clone();
    let existing = envs
        .inner
        .db
        .call(move |c| q::by_owner_and_name(c, owner_id, &n2))
        .await?;
    let env: EnvironmentRow = match existing {
        Some(e) if e.kind == EnvironmentKind::Saved => e,
        Some(e) => {
            return Err(EnvironmentError::Conflict(format!(
                "Your environment '{}' is built from a {}; save the notebook under another name.",
                e.name, e.kind
            )))
        }
        None => {
            let stored = StoredSource::Saved {
                base: notebook
                    .image_id
                    .clone()
                    .unwrap_or_else(|| notebook.image.clone()),
            };
            let source_json = serde_json::to_string(&stored).unwrap_or_default();
            let id = super::new_id();
            let (i2, n2, launcher, command) = (
                id.clone(),
                name.clone(),
                notebook.launcher,
                notebook.command.clone(),
            );
            envs.inner
                .db
                .call(move |c| {
                    q::insert(
                        c,
                        &NewEnvironment {
                            id: &i2,
                            owner_id,
                            name: &n2,
                            shared: false,
                            kind: EnvironmentKind::Saved,
                            source: &source_json,
                            credential_sealed: None,
                            launcher,
                            command: &command,
                        },
                    )
                })
                .await?;
            let n3 = name.clone();
            envs.inner
                .db
                .call(move |c| q::by_owner_and_name(c, owner_id, &n3))
                .await?
                .ok_or_else(|| EnvironmentError::NotFound("the environment vanished".into()))?
        }
    };
    let (eid, nid) = (env.id.clone(), notebook.id.clone());
    let build = envs
        .inner
        .db
        .call(move |c| {
            let b = q::add_build(
                c,
                &NewBuild {
                    environment_id: &eid,
                    state: BuildState::Queued,
                    state_detail: "Saving the notebook's container",
                    requested_ref: None,
                    from_notebook: Some(&nid),
                    created_by: Some(owner_id),
                },
            )?;
            q::set_building(c, &eid, b.version)?;
            Ok(b)
        })
        .await?;
    let this = envs.clone();
    let (container, image, env_id, version) = (
        container_id.to_string(),
        notebook.image.clone(),
        env.id.clone(),
        build.version,
    );
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let result = commit_steps(&this, &container, &image, &env_id, version).await;
        let (state, detail, image, size) = match result {
            Ok((image, size)) => (
                BuildState::Ready,
                format!("Saved in {:.0} s", started.elapsed().as_secs_f64()),
                Some(image),
                Some(size),
            ),
            Err(e) => (
                BuildState::Failed,
                format!("Could not save the notebook: {e}"),
                None,
                None,
            ),
        };
        let (e2, d2) = (env_id.clone(), detail.clone());
        let _ = this
            .inner
            .db
            .call(move |c| {
                q::finish(
                    c,
                    &e2,
                    version,
                    &BuildEnd {
                        state,
                        state_detail: &d2,
                        failed_step: None,
                        image: image.as_deref(),
                        size_bytes: size,
                    },
                )
            })
            .await;
        tracing::info!(environment = %env_id, version, %state, %detail, "notebook saved");
        if state == BuildState::Ready {
            super::retention::sweep(&this).await;
        }
    });
    let view = envs.get(user, &env.id).await?;
    let build_view = view
        .versions
        .iter()
        .find(|b| b.version == build.version)
        .cloned()
        .unwrap_or_else(|| BuildView::from_row(&build));
    Ok((view, build_view))
}

/// Commits the container with the image's own configuration (not the container's: its
/// environment holds the member's secrets and Jupyter's token), then clears /tmp (where
/// Jupyter's runtime files, with its token, are) in a layer on top.
async fn commit_steps(
    envs: &Environments,
    container: &str,
    image: &str,
    env_id: &str,
    version: i64,
) -> Result<(String, i64), String> {
    let engine = &envs.inner.engine;
    let mut config: ImageDetails = engine
        .image_details(image)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the notebook's image {image} is gone"))?;
    config
        .labels
        .insert(LABEL_ENVIRONMENT.to_string(), env_id.to_string());
    let raw_tag = format!("notebox-env/{env_id}:saving-{version}");
    let committed = engine
        .commit(container, &raw_tag, &config)
        .await
        .map_err(|e| e.to_string())?;
    let restore_user = if config.user.is_empty() {
        String::new()
    } else {
        format!("USER {}\n", config.user)
    };
    let dockerfile = format!(
        "FROM {committed}\nLABEL {}\nUSER root\nRUN rm -rf /tmp/jupyter-runtime /tmp/* /tmp/.[!.]* 2>/dev/null; true\n{restore_user}",
        source::build_labels(&format!("{env_id}-{version}-save"), env_id)
    );
    let mut extra = BTreeMap::new();
    extra.insert(DOCKERFILE.to_string(), (dockerfile.into_bytes(), 0o644));
    let context = source::context_tar(None, &extra)?;
    let tag = format!("notebox-env/{env_id}:saved-{version}");
    let env_cfg = &envs.config().environments;
    let request = ImageBuild {
        context,
        dockerfile: DOCKERFILE.into(),
        tag: tag.clone(),
        labels: BTreeMap::new(),
        memory_bytes: i64::from(env_cfg.build_memory_mib) * 1024 * 1024,
        nano_cpus: (env_cfg.build_cpus * 1e9) as i64,
    };
    let mut ignore = |_: BuildEvent| {};
    let built = engine.build_image(request, &mut ignore).await;
    // The raw commit stays as the new image's parent layer; only its tag goes.
    let _ = engine.remove_image(&raw_tag).await;
    built.map_err(|e| e.to_string())?;
    let size = engine
        .image_details(&tag)
        .await
        .map_err(|e| e.to_string())?
        .map(|d| d.size_bytes)
        .unwrap_or(0);
    Ok((tag, size))
}
