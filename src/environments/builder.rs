//! The builder: takes queued builds in turn (at most `concurrent_builds` at once), runs
//! each on the engine under its limits, writes its log as it goes, and records how it
//! ended.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use super::source::{self, FoundFiles, StoredSource};
use super::{EnvironmentError, Environments};
use crate::containers::{BuildEvent, EngineError, ImageBuild, ImageDetails};
use crate::db::environments::{self as q, BuildEnd, BuildRow, EnvironmentRow};
use crate::git::{Checkout, FetchProgress, GitRef, RepoLimits, RepoUrl};
use crate::model::BuildState;

/// A build log is cut off past this size (the rest of the output is dropped, the end
/// of the build still noted).
const MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;
/// The Dockerfile's name in the build context: not a name a repository would use.
pub(super) const DOCKERFILE: &str = ".notebox.Dockerfile";
/// Bumped when the Dockerfile Notebox writes changes: old images are not reused then.
const GENERATOR: &[u8] = b"repo2docker-files-2";

pub(super) async fn run(envs: Environments) {
    sweep_work_dir(&envs);
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

/// Repository fetches a crash left in the work folder (an hour old: a fetch that runs
/// now, for a starting notebook, is younger).
fn sweep_work_dir(envs: &Environments) {
    let dir = envs.config().data_dir.join("environments").join("work");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a left-over fetch");
            }
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
pub(super) struct LogFile {
    file: Option<std::fs::File>,
    written: u64,
    cut: bool,
}

impl LogFile {
    pub(super) fn create(path: &Path) -> LogFile {
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

    pub(super) fn line(&mut self, text: &str) {
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
    pub(super) fn end(&mut self, text: &str) {
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
    let events = LogSink::create(&envs.log_path(&eid, version));
    let writer = start_progress_writer(envs, &eid, version, events.clone());
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
    if outcome.is_err() {
        clear_leftovers(envs, &key, &eid, version).await;
    }
    events.close();
    let _ = writer.await;
    let last_step = events.last_step();
    let secs = started.elapsed().as_secs_f64();
    let ending = events.with_log(|log| Ending::of(outcome, &last_step, secs, log));
    record_end(envs, &eid, version, ending, secs).await;
}

/// Where a build's events go: each line straight into the log file (which stops growing
/// at its cap), the step into a slot that `start_progress_writer` copies to the database
/// twice a second. Nothing queues, however fast a step prints; and only the engine's
/// next "Step N/M" counts as a step, not a line a step printed that looks like one.
#[derive(Clone)]
pub(super) struct LogSink(Arc<std::sync::Mutex<SinkState>>);

struct SinkState {
    log: LogFile,
    step: String,
    steps_seen: u32,
    /// The step changed since the database last heard of it.
    dirty: bool,
    closed: bool,
}

impl LogSink {
    pub(super) fn create(path: &Path) -> LogSink {
        LogSink(Arc::new(std::sync::Mutex::new(SinkState {
            log: LogFile::create(path),
            step: String::new(),
            steps_seen: 0,
            dirty: false,
            closed: false,
        })))
    }

    pub(super) fn send(&self, event: BuildEvent) {
        let Ok(mut st) = self.0.lock() else { return };
        match event {
            BuildEvent::Step(line) if is_next_step(&line, st.steps_seen) => {
                st.log.line(&line);
                st.step = line;
                st.steps_seen += 1;
                st.dirty = true;
            }
            BuildEvent::Step(line) | BuildEvent::Output(line) => st.log.line(&line),
        }
    }

    /// The step to tell the database, if it changed.
    fn take_changed(&self) -> (Option<String>, bool) {
        match self.0.lock() {
            Ok(mut st) => {
                let changed = std::mem::take(&mut st.dirty).then(|| st.step.clone());
                (changed, st.closed)
            }
            Err(_) => (None, true),
        }
    }

    fn close(&self) {
        if let Ok(mut st) = self.0.lock() {
            st.closed = true;
        }
    }

    fn last_step(&self) -> String {
        self.0.lock().map(|st| st.step.clone()).unwrap_or_default()
    }

    fn with_log<T>(&self, f: impl FnOnce(&mut LogFile) -> T) -> T {
        match self.0.lock() {
            Ok(mut st) => f(&mut st.log),
            Err(poisoned) => f(&mut poisoned.into_inner().log),
        }
    }
}

/// "Step 3/7 : …" is the next step after `seen` of them.
fn is_next_step(line: &str, seen: u32) -> bool {
    line.strip_prefix("Step ")
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n == seen + 1)
}

/// Copies the build's step to the database (for the pages) while it changes, until the
/// sink is closed.
fn start_progress_writer(
    envs: &Environments,
    eid: &str,
    version: i64,
    sink: LogSink,
) -> tokio::task::JoinHandle<()> {
    let db = envs.inner.db.clone();
    let eid = eid.to_string();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (changed, closed) = sink.take_changed();
            if let Some(step) = changed {
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
            if closed {
                return;
            }
        }
    })
}

/// A stopped build can leave containers and layers behind under its key.
async fn clear_leftovers(envs: &Environments, key: &str, eid: &str, version: i64) {
    match envs.inner.engine.remove_build_leftovers(key).await {
        Ok(n) if n > 0 => {
            tracing::info!(environment = %eid, version, removed = n, "cleared a stopped build's containers and layers")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(environment = %eid, version, error = %e, "could not clear a stopped build's leftovers")
        }
    }
}

/// How a build ended, as the database keeps it.
pub(super) struct Ending {
    pub(super) state: BuildState,
    pub(super) detail: String,
    pub(super) failed_step: Option<String>,
    pub(super) image: Option<String>,
    pub(super) size: Option<i64>,
}

impl Ending {
    /// The ending of an outcome, with its last line written to the log. A failure
    /// names the step it stopped in, else the last step the log saw.
    fn of(
        outcome: Result<(String, i64), Stop>,
        last_step: &str,
        secs: f64,
        log: &mut LogFile,
    ) -> Ending {
        match outcome {
            Ok((image, size)) => {
                log.end(&format!(
                    "Built {image} ({}) in {secs:.1} s",
                    human_size(size)
                ));
                Ending {
                    state: BuildState::Ready,
                    detail: format!("Built in {secs:.0} s"),
                    failed_step: None,
                    image: Some(image),
                    size: Some(size),
                }
            }
            Err(Stop::Cancelled) => {
                log.end("Cancelled.");
                Ending {
                    state: BuildState::Cancelled,
                    detail: "Cancelled".to_string(),
                    failed_step: None,
                    image: None,
                    size: None,
                }
            }
            Err(Stop::Failed {
                detail,
                failed_step,
            }) => {
                let step =
                    failed_step.or_else(|| (!last_step.is_empty()).then(|| last_step.to_string()));
                log.end(&format!("Failed: {detail}"));
                Ending {
                    state: BuildState::Failed,
                    detail,
                    failed_step: step,
                    image: None,
                    size: None,
                }
            }
        }
    }
}

/// Records how a build ended; a new ready version may let retention drop older ones.
async fn record_end(envs: &Environments, eid: &str, version: i64, ending: Ending, secs: f64) {
    let end_state = ending.state;
    let detail = ending.detail.clone();
    record_ending(envs, eid, version, ending).await;
    tracing::info!(environment = %eid, version, state = %end_state, %detail, seconds = secs, "build ended");
    if end_state == BuildState::Ready {
        super::retention::sweep(envs).await;
    }
}

/// Writes a version's ending (a build's, or a save's) to the database.
pub(super) async fn record_ending(envs: &Environments, eid: &str, version: i64, ending: Ending) {
    let e2 = eid.to_string();
    let image = ending.image.clone();
    let recorded = envs
        .inner
        .db
        .call(move |c| {
            q::finish(
                c,
                &e2,
                version,
                &BuildEnd {
                    state: ending.state,
                    state_detail: &ending.detail,
                    failed_step: ending.failed_step.as_deref(),
                    image: ending.image.as_deref(),
                    size_bytes: ending.size,
                },
            )
        })
        .await;
    match recorded {
        Ok(true) => {}
        // Ended meanwhile, or the environment is gone: an image nobody will find again
        // is not left behind.
        Ok(false) => {
            if let Some(image) = image.filter(|i| super::is_ours(i)) {
                let i2 = image.clone();
                let kept = envs.inner.db.call(move |c| q::image_is_kept(c, &i2)).await;
                if matches!(kept, Ok(false)) {
                    let _ = envs.inner.engine.remove_image(&image).await;
                }
            }
        }
        Err(e) => {
            tracing::warn!(environment = %eid, version, error = %e, "could not record how a version ended")
        }
    }
}

/// One build under way: what its steps share.
struct Run<'a> {
    envs: &'a Environments,
    build: &'a BuildRow,
    env: EnvironmentRow,
    events: &'a LogSink,
}

impl Run<'_> {
    /// A line for the build's log.
    fn say(&self, line: String) {
        self.events.send(BuildEvent::Output(line));
    }

    /// The user the steps run as: the owner of the notebooks' files.
    fn user(&self) -> String {
        let config = self.envs.config();
        format!("{}:{}", config.storage.uid, config.storage.gid)
    }
}

/// What the engine builds from: the files and the Dockerfile; a repository's checkout
/// (kept until the build is done) and its commit.
struct Context {
    extra: BTreeMap<String, (Vec<u8>, u32)>,
    dockerfile: String,
    commit: Option<String>,
    checkout: Option<(Checkout, PathBuf)>,
}

impl Context {
    /// The Dockerfile alone; the other fields are filled in by the source's kind.
    fn of_dockerfile(dockerfile: String) -> Context {
        Context {
            extra: BTreeMap::new(),
            dockerfile,
            commit: None,
            checkout: None,
        }
    }
}

/// Everything a build does until the image is there: the base, the repository, the
/// context, the engine's build.
async fn build_steps(
    envs: &Environments,
    build: &BuildRow,
    key: &str,
    events: LogSink,
) -> Result<(String, i64), Stop> {
    let (env, stored) = load_environment(envs, build).await?;
    let run = Run {
        envs,
        build,
        env,
        events: &events,
    };
    let (base_image, base) = prepare_base(&run, &stored).await?;
    let labels = source::build_labels(key, &run.env.id);
    let context = match prepare_context(&run, &stored, &base, &labels).await? {
        Some(context) => context,
        None => return Ok((base_image, base.size_bytes)),
    };
    build_from_context(&run, &stored, &base, context).await
}

/// The environment of a build and its stored source.
async fn load_environment(
    envs: &Environments,
    build: &BuildRow,
) -> Result<(EnvironmentRow, StoredSource), Stop> {
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
    Ok((env, stored))
}

/// The catalog's base image, pulled if the engine does not have it: its name and details.
async fn prepare_base(
    run: &Run<'_>,
    stored: &StoredSource,
) -> Result<(String, ImageDetails), Stop> {
    let base_spec = run
        .envs
        .config()
        .image(stored.base())
        .cloned()
        .ok_or_else(|| {
            Stop::failed(format!(
                "the base image '{}' is no longer in the catalog",
                stored.base()
            ))
        })?;
    let engine = &run.envs.inner.engine;
    let base = match engine
        .image_details(&base_spec.image)
        .await
        .map_err(engine_stop)?
    {
        Some(d) => d,
        None => {
            run.say(format!("Pulling the base image {}", base_spec.image));
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
    run.say(format!(
        "Base image {} ({})",
        base_spec.image,
        short_id(&base.id)
    ));
    Ok((base_spec.image, base))
}

/// The context for each kind of source; `None` when a repository has nothing to
/// install (the base image is the environment).
async fn prepare_context(
    run: &Run<'_>,
    stored: &StoredSource,
    base: &ImageDetails,
    labels: &str,
) -> Result<Option<Context>, Stop> {
    match stored {
        StoredSource::Files { files, .. } => context_of_files(run, files, base, labels).map(Some),
        StoredSource::Dockerfile {
            dockerfile, files, ..
        } => {
            let mut context = Context::of_dockerfile(source::label_dockerfile(dockerfile, labels));
            for (name, content) in files {
                context
                    .extra
                    .insert(name.clone(), (content.as_bytes().to_vec(), 0o644));
            }
            Ok(Some(context))
        }
        StoredSource::Repo { url, subdir, .. } => {
            context_of_repo(run, url, subdir.as_deref(), base, labels).await
        }
        StoredSource::Saved { .. } => Err(Stop::failed(
            "saved environments are not built: save a running notebook instead",
        )),
    }
}

/// Sent files: repo2docker's steps over them (scripts kept executable).
fn context_of_files(
    run: &Run<'_>,
    files: &BTreeMap<String, String>,
    base: &ImageDetails,
    labels: &str,
) -> Result<Context, Stop> {
    let mut extra = BTreeMap::new();
    for (name, content) in files {
        let mode = if is_script(name) { 0o755 } else { 0o644 };
        extra.insert(name.clone(), (content.as_bytes().to_vec(), mode));
    }
    let found = find_in_files(files).map_err(Stop::failed)?;
    let dockerfile = source::repo2docker_dockerfile(
        &base.id,
        labels,
        &found,
        &run.user(),
        &base.user,
        &base.entrypoint,
    );
    Ok(Context {
        extra,
        ..Context::of_dockerfile(dockerfile)
    })
}

/// A repository: its own Dockerfile (if its owner may), repo2docker's steps over its
/// files, or `None` when it has no environment files.
async fn context_of_repo(
    run: &Run<'_>,
    url: &str,
    subdir: Option<&str>,
    base: &ImageDetails,
    labels: &str,
) -> Result<Option<Context>, Stop> {
    let fetched = fetch_repo(run, url).await?;
    let root = match subdir {
        Some(s) => fetched.dir.join(s),
        None => fetched.dir.clone(),
    };
    if !std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()) {
        return Err(Stop::failed(format!(
            "the repository has no folder '{}' at commit {}",
            subdir.unwrap_or(""),
            fetched.commit
        )));
    }
    let found = find_in_dir(&root).map_err(Stop::failed)?;
    let dockerfile = if found.dockerfile {
        let allowed = dockerfile_allowed_for(run.envs, run.env.owner_id).await;
        if let Err(e) = allowed {
            return Err(Stop::failed(e.to_string()));
        }
        let path = root.join(&found.dir).join("Dockerfile");
        let size = std::fs::symlink_metadata(&path)
            .map(|m| m.len())
            .unwrap_or(0);
        if size > source::MAX_FILES_BYTES as u64 {
            return Err(Stop::failed(format!(
                "the repository's Dockerfile is {size} bytes; at most {} are taken",
                source::MAX_FILES_BYTES
            )));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Stop::failed(format!("cannot read the repository's Dockerfile: {e}")))?;
        run.say("Building the repository's Dockerfile".into());
        source::label_dockerfile(&text, labels)
    } else if found.names.is_empty() {
        // Nothing to install: the catalog image as it is (the files come into
        // /notebooks when a notebook starts from the repository).
        run.say("No environment files (requirements.txt, environment.yml, apt.txt, postBuild, start): the base image as it is, nothing to build".into());
        return Ok(None);
    } else {
        source::repo2docker_dockerfile(
            &base.id,
            labels,
            &found,
            &run.user(),
            &base.user,
            &base.entrypoint,
        )
    };
    Ok(Some(Context {
        commit: Some(fetched.commit.clone()),
        checkout: Some((fetched, root)),
        ..Context::of_dockerfile(dockerfile)
    }))
}

/// Fetches the repository at the build's requested ref, its progress into the log.
async fn fetch_repo(run: &Run<'_>, url: &str) -> Result<Checkout, Stop> {
    let url = RepoUrl::parse(url).map_err(|e| Stop::failed(e.to_string()))?;
    let reference = run
        .build
        .requested_ref
        .as_deref()
        .map(GitRef::parse)
        .transpose()
        .map_err(|e| Stop::failed(e.to_string()))?;
    let credential = run
        .envs
        .credential_of(&run.env)
        .map_err(|e| Stop::failed(e.to_string()))?;
    let work = run
        .envs
        .work_dir()
        .map_err(|e| Stop::failed(e.to_string()))?;
    run.say(format!(
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
            run.events.send(BuildEvent::Output(format!(
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
    run.say(format!(
        "Commit {} ({} files, {})",
        fetched.commit,
        fetched.files,
        human_size(fetched.bytes as i64)
    ));
    Ok(fetched)
}

/// From the context to the image: the image of an earlier version with the same
/// inputs if there is one, else the engine's build.
async fn build_from_context(
    run: &Run<'_>,
    stored: &StoredSource,
    base: &ImageDetails,
    context: Context,
) -> Result<(String, i64), Stop> {
    let Context {
        mut extra,
        dockerfile,
        commit,
        checkout,
    } = context;
    extra.insert(
        DOCKERFILE.to_string(),
        (dockerfile.clone().into_bytes(), 0o644),
    );
    let envs = run.envs;
    let hash = inputs_hash(
        envs.config(),
        &run.env.id,
        stored,
        &base.id,
        commit.as_deref(),
    );
    {
        let (eid, version, c2, h2) = (
            run.env.id.clone(),
            run.build.version,
            commit.clone(),
            hash.clone(),
        );
        let _ = envs
            .inner
            .db
            .call(move |c| q::set_inputs(c, &eid, version, c2.as_deref(), &h2))
            .await;
    }
    let engine = &envs.inner.engine;
    let tag = format!("notebox-env/{}:{}", run.env.id, &hash[..16]);
    if let Some(existing) = engine.image_details(&tag).await.map_err(engine_stop)? {
        run.say(format!(
            "Same inputs as an earlier version: its image {tag}, nothing to build"
        ));
        return Ok((tag, existing.size_bytes));
    }
    run.say(format!("Image {tag}"));
    for line in dockerfile.lines() {
        run.say(format!("  | {line}"));
    }
    let root = checkout.as_ref().map(|(_, root)| root.clone());
    let tar = tokio::task::spawn_blocking(move || source::context_tar(root.as_deref(), &extra))
        .await
        .map_err(|e| Stop::failed(e.to_string()))?
        .map_err(Stop::failed)?;
    run_engine_build(run, tar, &tag).await?;
    drop(checkout);
    let size = engine
        .image_details(&tag)
        .await
        .map_err(engine_stop)?
        .map(|d| d.size_bytes)
        .unwrap_or(0);
    Ok((tag, size))
}

/// The engine's build under the configured limits; a failed step is named in the
/// member's words, with its exit code.
async fn run_engine_build(run: &Run<'_>, context: Vec<u8>, tag: &str) -> Result<(), Stop> {
    let env_cfg = &run.envs.config().environments;
    // The steps run on the notebooks' own network (no traffic between containers, the
    // package's firewall rule): a build reaches no more than a notebook does.
    let network = &run.envs.config().docker.network;
    run.envs
        .inner
        .engine
        .ensure_network(network)
        .await
        .map_err(engine_stop)?;
    let request = ImageBuild {
        context,
        dockerfile: DOCKERFILE.into(),
        tag: tag.to_string(),
        labels: BTreeMap::new(),
        network: run.envs.config().docker.network.clone(),
        memory_bytes: i64::from(env_cfg.build_memory_mib) * 1024 * 1024,
        nano_cpus: (env_cfg.build_cpus * 1e9) as i64,
    };
    let mut forward = |e: BuildEvent| run.events.send(e);
    match run
        .envs
        .inner
        .engine
        .build_image(request, &mut forward)
        .await
    {
        Ok(_) => Ok(()),
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
            run.say(message);
            Err(Stop::Failed {
                detail,
                failed_step: None,
            })
        }
        Err(e) => Err(engine_stop(e)),
    }
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
