//! Images on Docker: building an environment's image (the engine's classic builder, its
//! output followed line by line), saving a container as an image, and finding, sizing and
//! removing our images. bollard's types stay in this file and `docker.rs`.

use std::collections::{BTreeMap, HashMap};

use bollard::models::ContainerConfig;
use bollard::query_parameters::{
    BuildImageOptions, CommitContainerOptionsBuilder, ListContainersOptions, ListImagesOptions,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;

use super::docker::DockerClient;
use super::{
    BuildEvent, EngineError, ImageBuild, ImageDetails, ImageEntry, LABEL_BUILD, LABEL_NOTEBOOK,
};

/// The longest line of build output kept (a step printing a megabyte without a newline).
const MAX_LINE: usize = 4096;

impl DockerClient {
    pub(super) async fn build_image(
        &self,
        build: ImageBuild,
        events: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<String, EngineError> {
        // The API's memory fields are 32-bit: the config keeps the limit under 2 GiB.
        let memory = i32::try_from(build.memory_bytes).unwrap_or(i32::MAX);
        let period: i32 = 100_000;
        let quota = ((build.nano_cpus as f64 / 1e9) * f64::from(period)) as i64;
        let options = BuildImageOptions {
            dockerfile: build.dockerfile.clone(),
            t: Some(build.tag.clone()),
            rm: true,
            forcerm: true,
            // The base is already here (a catalog image, pulled by a notebook or the admin).
            pull: None,
            memory: Some(memory),
            memswap: Some(memory),
            cpuperiod: Some(period),
            cpuquota: Some(i32::try_from(quota).unwrap_or(i32::MAX).max(1000)),
            labels: (!build.labels.is_empty())
                .then(|| build.labels.clone().into_iter().collect::<HashMap<_, _>>()),
            ..Default::default()
        };
        let body = bollard::body_full(build.context.into());
        let mut stream = self.docker.build_image(options, None, Some(body));
        let mut image_id: Option<String> = None;
        let mut pending = String::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(e) => {
                    flush(&mut pending, events);
                    return Err(match EngineError::from(e) {
                        EngineError::Other(message) => EngineError::Build {
                            message,
                            code: None,
                        },
                        other => other,
                    });
                }
            };
            if let Some(text) = info.stream.as_deref() {
                pending.push_str(text);
                while let Some(end) = pending.find('\n') {
                    let line: String = pending[..end].trim_end_matches('\r').to_string();
                    pending.drain(..=end);
                    emit(&line, events);
                }
                if pending.len() > MAX_LINE {
                    flush(&mut pending, events);
                }
            }
            if let Some(status) = info.status.as_deref() {
                if !status.trim().is_empty() {
                    events(BuildEvent::Output(cap(status.trim())));
                }
            }
            if let Some(detail) = info.error_detail {
                flush(&mut pending, events);
                return Err(EngineError::Build {
                    message: detail.message.unwrap_or_else(|| "the build failed".into()),
                    code: detail.code,
                });
            }
            if let Some(id) = info.aux.and_then(|a| a.id) {
                image_id = Some(id);
            }
        }
        flush(&mut pending, events);
        match image_id {
            Some(id) => Ok(id),
            // Older engines do not send the id: ask for the tag.
            None => match self.image_details(&build.tag).await? {
                Some(details) => Ok(details.id),
                None => Err(EngineError::Build {
                    message: "the engine ended the build without an image".into(),
                    code: None,
                }),
            },
        }
    }

    pub(super) async fn remove_build_leftovers(&self, key: &str) -> Result<usize, EngineError> {
        let label = format!("{LABEL_BUILD}={key}");
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_string(), vec![label.clone()])])),
                ..Default::default()
            }))
            .await?;
        let mut removed = 0;
        for c in containers {
            // A notebook's container never: only a build step's.
            if c.labels
                .as_ref()
                .is_some_and(|l| l.contains_key(LABEL_NOTEBOOK))
            {
                continue;
            }
            let Some(id) = c.id else { continue };
            let options = RemoveContainerOptionsBuilder::new().force(true).build();
            match self.docker.remove_container(&id, Some(options)).await {
                Ok(()) => removed += 1,
                Err(e) => match EngineError::from(e) {
                    EngineError::NotFound(_) => {}
                    other => return Err(other),
                },
            }
        }
        let images = self
            .docker
            .list_images(Some(ListImagesOptions {
                all: true,
                filters: Some(HashMap::from([
                    ("label".to_string(), vec![label]),
                    ("dangling".to_string(), vec!["true".to_string()]),
                ])),
                ..Default::default()
            }))
            .await?;
        for image in images {
            let options = RemoveImageOptionsBuilder::new().force(true).build();
            match self
                .docker
                .remove_image(&image.id, Some(options), None)
                .await
            {
                Ok(_) => removed += 1,
                Err(e) => match EngineError::from(e) {
                    // Removed with its child already, or still a parent of another.
                    EngineError::NotFound(_) | EngineError::Conflict(_) => {}
                    other => return Err(other),
                },
            }
        }
        Ok(removed)
    }

    pub(super) async fn commit(
        &self,
        container: &str,
        tag: &str,
        config: &ImageDetails,
    ) -> Result<String, EngineError> {
        let (repo, tag) = super::docker::split_image(tag);
        let options = CommitContainerOptionsBuilder::new()
            .container(container)
            .repo(repo)
            .tag(tag)
            .comment("saved by Notebox")
            // Not paused: a commit on a slow storage driver takes many seconds, and the
            // member's kernels keep running meanwhile (a file written during the save may
            // be caught half-written; the page says to save when nothing is running).
            .pause(false)
            .build();
        // The engine merges the container's own configuration into the image's: every
        // variable and label the container has (Jupyter's token, the member's secrets,
        // the notebook's labels) that the image should not is named here with an empty
        // value, so that no value of it reaches the image.
        let own = self
            .docker
            .inspect_container(
                container,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await?
            .config
            .unwrap_or_default();
        let mut env = config.env.clone();
        let key = |e: &str| e.split('=').next().unwrap_or_default().to_string();
        let keys: std::collections::HashSet<String> = env.iter().map(|e| key(e)).collect();
        for e in own.env.unwrap_or_default() {
            let k = key(&e);
            if !keys.contains(&k) {
                env.push(format!("{k}="));
            }
        }
        let mut labels = config.labels.clone();
        for k in own.labels.unwrap_or_default().into_keys() {
            labels.entry(k).or_default();
        }
        let body = ContainerConfig {
            env: Some(env),
            cmd: Some(config.cmd.clone()),
            entrypoint: Some(config.entrypoint.clone()),
            user: Some(config.user.clone()),
            working_dir: Some(config.working_dir.clone()),
            labels: Some(labels.into_iter().collect()),
            ..Default::default()
        };
        let answer = self.docker.commit_container(options, body).await?;
        Ok(answer.id)
    }

    pub(super) async fn image_details(
        &self,
        image: &str,
    ) -> Result<Option<ImageDetails>, EngineError> {
        let inspect = match self.docker.inspect_image(image).await {
            Ok(i) => i,
            Err(e) => {
                return match EngineError::from(e) {
                    EngineError::NotFound(_) => Ok(None),
                    other => Err(other),
                }
            }
        };
        let config = inspect.config.unwrap_or_default();
        Ok(Some(ImageDetails {
            id: inspect.id.unwrap_or_default(),
            size_bytes: inspect.size.unwrap_or(0),
            env: config.env.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
            entrypoint: config.entrypoint.unwrap_or_default(),
            user: config.user.unwrap_or_default(),
            working_dir: config.working_dir.unwrap_or_default(),
            labels: config
                .labels
                .unwrap_or_default()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        }))
    }

    pub(super) async fn remove_image(&self, image: &str) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::new().build();
        match self.docker.remove_image(image, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    pub(super) async fn images_labelled(
        &self,
        label: &str,
    ) -> Result<Vec<ImageEntry>, EngineError> {
        let images = self
            .docker
            .list_images(Some(ListImagesOptions {
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![label.to_string()],
                )])),
                ..Default::default()
            }))
            .await?;
        Ok(images
            .into_iter()
            .map(|i| ImageEntry {
                id: i.id,
                tags: i.repo_tags,
                size_bytes: i.size,
                labels: i.labels.into_iter().collect(),
            })
            .collect())
    }
}

/// A line of the classic builder's output: its "Step 3/7 : RUN …" lines begin steps.
fn emit(line: &str, events: &mut (dyn FnMut(BuildEvent) + Send)) {
    let line = cap(line);
    if line.starts_with("Step ") && line.contains(" : ") {
        events(BuildEvent::Step(line));
    } else {
        events(BuildEvent::Output(line));
    }
}

fn flush(pending: &mut String, events: &mut (dyn FnMut(BuildEvent) + Send)) {
    if !pending.is_empty() {
        let line = std::mem::take(pending);
        emit(line.trim_end(), events);
    }
}

fn cap(line: &str) -> String {
    if line.len() <= MAX_LINE {
        return line.to_string();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes more)", &line[..end], line.len() - end)
}
