//! Saving a running notebook as a version of the member's environment (Backend.AI's
//! "commit"): the container's files with the image's own configuration, never the
//! container's (its variables hold the member's secrets and Jupyter's token).

use std::collections::BTreeMap;

use super::builder::{record_ending, Ending, LogFile, DOCKERFILE};
use super::source::{self, StoredSource};
use super::{BuildView, EnvironmentError, EnvironmentView, Environments};
use crate::auth::User;
use crate::containers::{BuildEvent, ImageBuild, ImageDetails, LABEL_ENVIRONMENT};
use crate::db::environments::{self as q, BuildRow, EnvironmentRow, NewBuild, NewEnvironment};
use crate::db::notebooks::NotebookRow;
use crate::model::{BuildState, EnvironmentKind};

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
    envs.check_build_quota(user).await?;
    let env = find_or_make_saved_env(envs, user.id, notebook, &name).await?;
    let build = queue_save(envs, &env, notebook, user.id).await?;
    spawn_commit(
        envs,
        container_id.to_string(),
        notebook.image.clone(),
        env.id.clone(),
        build.version,
    );
    let view = envs.get(user, &env.id).await?;
    let build_view = view
        .versions
        .iter()
        .find(|b| b.version == build.version)
        .cloned()
        .unwrap_or_else(|| BuildView::from_row(&build));
    Ok((view, build_view))
}

/// The member's saved environment `name`, made from the notebook's image if it does
/// not exist; a built environment of that name is not saved over.
async fn find_or_make_saved_env(
    envs: &Environments,
    owner_id: i64,
    notebook: &NotebookRow,
    name: &str,
) -> Result<EnvironmentRow, EnvironmentError> {
    let n2 = name.to_string();
    let existing = envs
        .inner
        .db
        .call(move |c| q::by_owner_and_name(c, owner_id, &n2))
        .await?;
    match existing {
        Some(e) if e.kind == EnvironmentKind::Saved => Ok(e),
        Some(e) => Err(EnvironmentError::Conflict(format!(
            "Your environment '{}' is built from a {}; save the notebook under another name.",
            e.name, e.kind
        ))),
        None => make_saved_env(envs, owner_id, notebook, name).await,
    }
}

/// A new saved environment, private, with the notebook's image as its base and the
/// notebook's launcher and command.
async fn make_saved_env(
    envs: &Environments,
    owner_id: i64,
    notebook: &NotebookRow,
    name: &str,
) -> Result<EnvironmentRow, EnvironmentError> {
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
        name.to_string(),
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
    let n3 = name.to_string();
    envs.inner
        .db
        .call(move |c| q::by_owner_and_name(c, owner_id, &n3))
        .await?
        .ok_or_else(|| EnvironmentError::NotFound("the environment vanished".into()))
}

/// The save's version, taken at once (`building`): the builder's queue never runs it.
async fn queue_save(
    envs: &Environments,
    env: &EnvironmentRow,
    notebook: &NotebookRow,
    owner_id: i64,
) -> Result<BuildRow, EnvironmentError> {
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
    Ok(build)
}

/// The commit in the background, and how it ended recorded on the version.
fn spawn_commit(
    envs: &Environments,
    container: String,
    image: String,
    env_id: String,
    version: i64,
) {
    let this = envs.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut log = LogFile::create(&this.log_path(&env_id, version));
        let result = commit_steps(&this, &container, &image, &env_id, version, &mut log).await;
        match &result {
            Ok((tag, size)) => log.end(&format!(
                "Saved as {tag} ({}) in {:.1} s",
                super::human_size(*size),
                started.elapsed().as_secs_f64()
            )),
            Err(e) => log.end(&format!("Failed: {e}")),
        }
        let ending = match result {
            Ok((image, size)) => Ending {
                state: BuildState::Ready,
                detail: format!("Saved in {:.0} s", started.elapsed().as_secs_f64()),
                failed_step: None,
                image: Some(image),
                size: Some(size),
            },
            Err(e) => Ending {
                state: BuildState::Failed,
                detail: format!("Could not save the notebook: {e}"),
                failed_step: None,
                image: None,
                size: None,
            },
        };
        let (state, detail) = (ending.state, ending.detail.clone());
        record_ending(&this, &env_id, version, ending).await;
        tracing::info!(environment = %env_id, version, %state, %detail, "notebook saved");
        if state == BuildState::Ready {
            super::retention::sweep(&this).await;
        }
    });
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
    log: &mut LogFile,
) -> Result<(String, i64), String> {
    let engine = &envs.inner.engine;
    log.line(
        "Saving the notebook's container (its files outside /notebooks and /storage; it keeps running)",
    );
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
    log.line("Committed the container's files; clearing /tmp (Jupyter's runtime files) in a layer on top");
    // The clearing runs as the notebook's user (whose files they are), never as root:
    // everything in the image's PATH may be the member's own by now. Exec form, with a
    // PATH of the system's folders only.
    let storage = &envs.config().storage;
    let user = format!("{}:{}", storage.uid, storage.gid);
    let restore_user = if config.user.is_empty() || config.user == user {
        String::new()
    } else {
        format!("USER {}\n", config.user)
    };
    let dockerfile = format!(
        "FROM {committed}\nLABEL {}\nUSER {user}\n\
         RUN [\"/bin/sh\", \"-c\", \"PATH=/usr/bin:/bin; rm -rf /tmp/jupyter-runtime /tmp/* /tmp/.[!.]* 2>/dev/null; true\"]\n\
         {restore_user}",
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
        network: envs.config().docker.network.clone(),
        memory_bytes: i64::from(env_cfg.build_memory_mib) * 1024 * 1024,
        nano_cpus: (env_cfg.build_cpus * 1e9) as i64,
    };
    let mut forward = |e: BuildEvent| match e {
        BuildEvent::Step(line) | BuildEvent::Output(line) => log.line(&line),
    };
    let built = engine.build_image(request, &mut forward).await;
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
