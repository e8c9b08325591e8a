//! The rules for notebooks: names, images (the catalog, custom images), machine types,
//! auto-shutdown choices. Pure: they read the config, never the database or the engine.

use std::time::Duration;

use crate::config::{self, Config, Launcher, MachineType};
use crate::db::notebooks::NotebookRow;

use super::error::NotebookError;

/// The form's choice "until the next booking".
pub const UNTIL_BOOKING: &str = "until_booking";

/// How long a notebook runs before it is stopped for the next person.
#[derive(Debug, Clone, Copy)]
pub enum AutoShutdown {
    /// The config's `notebooks.default_auto_shutdown`.
    Default,
    Never,
    After(Duration),
    /// Until shortly before the next GPU booking of someone else starts (so the notebook
    /// may use GPUs booked from then).
    UntilBooking,
}

impl AutoShutdown {
    /// A member's choice: "1h", "6h", "12h", "1d", "1w" or "never".
    pub fn from_choice(choice: &str) -> Result<AutoShutdown, String> {
        if choice.trim() == UNTIL_BOOKING {
            return Ok(AutoShutdown::UntilBooking);
        }
        Ok(match config::parse_auto_shutdown(choice)? {
            None => AutoShutdown::Never,
            Some(d) => AutoShutdown::After(d),
        })
    }
}

pub struct CreateNotebook {
    pub name: String,
    /// A catalog id, or (when allowed) any image reference.
    pub image: String,
    pub machine: String,
    pub auto_shutdown: AutoShutdown,
    /// An environment's version to run instead of `image`.
    pub environment: Option<crate::environments::Runnable>,
    /// A repository whose files go into /notebooks at the first start.
    pub repo: Option<RepoRequest>,
}

/// Start from a repository: its URL, a branch, tag or commit, and a file to open.
#[derive(Debug, Clone, Default)]
pub struct RepoRequest {
    pub url: String,
    pub reference: Option<String>,
    pub open: Option<String>,
}

/// A checked `RepoRequest`: a URL git will take, a ref, a relative path to open.
pub fn check_repo(repo: &RepoRequest) -> Result<RepoRequest, NotebookError> {
    let url = crate::git::RepoUrl::parse(&repo.url)
        .map_err(|e| NotebookError::Invalid(format!("Repository: {e}")))?;
    let reference = match repo
        .reference
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        Some(r) => Some(
            crate::git::GitRef::parse(r)
                .map_err(|e| NotebookError::Invalid(format!("Repository: {e}")))?
                .as_str()
                .to_string(),
        ),
        None => None,
    };
    let open = match repo
        .open
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        Some(o) => {
            let o = o.trim_start_matches("./");
            if !crate::auth::entry::valid_path(o) || o.len() > 512 {
                return Err(NotebookError::Invalid(format!(
                    "The file to open ('{}') must be a path inside the repository, like analysis.ipynb or notebooks/intro.ipynb.",
                    o.chars().take(80).collect::<String>()
                )));
            }
            Some(o.to_string())
        }
        None => None,
    };
    Ok(RepoRequest {
        url: url.as_str().to_string(),
        reference,
        open,
    })
}

/// "6h", "1d", "never": the auto-shutdown choice closest to a number of seconds.
pub fn describe_auto_shutdown(secs: Option<i64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s % 604_800 == 0 => format!("{}w", s / 604_800),
        Some(s) if s % 86_400 == 0 => format!("{}d", s / 86_400),
        Some(s) if s % 3600 == 0 => format!("{}h", s / 3600),
        Some(s) if s % 60 == 0 => format!("{}m", s / 60),
        Some(s) => format!("{s}s"),
    }
}

pub fn validate_name(name: &str) -> Result<String, NotebookError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(NotebookError::Invalid("Give the notebook a name.".into()));
    }
    if name.chars().count() > 100 {
        return Err(NotebookError::Invalid(
            "The name is too long: use at most 100 characters.".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(NotebookError::Invalid(
            "The name cannot contain control characters.".into(),
        ));
    }
    Ok(name.to_string())
}

/// A plausible Docker image reference: no spaces or shell characters.
fn valid_image_reference(image: &str) -> bool {
    !image.is_empty()
        && image.len() <= 255
        && !image.starts_with(['-', '.', '/', ':'])
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'))
}

pub fn new_notebook_id() -> String {
    crate::model::new_id()
}

/// The image a new notebook runs: a catalog entry's, or (when allowed) any image
/// reference. (catalog id, image, launcher, command)
pub fn resolve_image(
    config: &Config,
    image_ref: &str,
) -> Result<(Option<String>, String, Launcher, Vec<String>), NotebookError> {
    let image_ref = image_ref.trim();
    let catalog_ids = config.image_ids();
    match config.image(image_ref) {
        Some(spec) => Ok((
            Some(spec.id.clone()),
            spec.image.clone(),
            spec.launcher,
            spec.command.clone(),
        )),
        None if image_ref.is_empty() => Err(NotebookError::Invalid(format!(
            "Choose an image: one of {catalog_ids}."
        ))),
        None if !config.notebooks.allow_custom_images => Err(NotebookError::Invalid(format!(
            "'{image_ref}' is not in this Notebox's image catalog, and custom images are not \
             allowed here; choose one of {catalog_ids}."
        ))),
        None if !valid_image_reference(image_ref) => Err(NotebookError::Invalid(format!(
            "'{image_ref}' is not a Docker image reference (like registry/name:tag)."
        ))),
        None => Ok((
            None,
            image_ref.to_string(),
            Launcher::DockerStacks,
            Vec::new(),
        )),
    }
}

/// The machine type a new notebook gets.
pub fn resolve_machine<'c>(
    config: &'c Config,
    machine: &str,
) -> Result<&'c MachineType, NotebookError> {
    config.machine(machine.trim()).ok_or_else(|| {
        let ids = config
            .machines
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        NotebookError::Invalid(format!(
            "'{}' is not a machine type here; choose one of {ids}.",
            machine.trim()
        ))
    })
}

/// Seconds until auto-shutdown for a member's choice (`Default`: the config's).
pub fn auto_shutdown_secs(config: &Config, choice: AutoShutdown) -> Option<i64> {
    match choice {
        // Resolved against the bookings by the service before it gets here.
        AutoShutdown::Never | AutoShutdown::UntilBooking => None,
        AutoShutdown::After(d) => Some(d.as_secs() as i64),
        AutoShutdown::Default => config
            .notebooks
            .default_auto_shutdown
            .map(|d| d.as_secs() as i64),
    }
}

/// Whether a notebook's image may still run under the catalog rules of the moment: a
/// catalog image that is still in the catalog, or a custom image while custom images are
/// allowed. Checked on start, restart and fork, not only on create.
pub fn check_image_allowed(
    config: &config::Config,
    row: &NotebookRow,
) -> Result<(), NotebookError> {
    // An environment's version: checked at start (its image is there or it is gone).
    if row.environment.is_some() {
        return Ok(());
    }
    if row
        .image_id
        .as_deref()
        .is_some_and(|id| config.image(id).is_some())
    {
        return Ok(());
    }
    let catalog_ids = config.image_ids();
    if let Some(id) = row.image_id.as_deref() {
        if !config.notebooks.allow_custom_images {
            return Err(NotebookError::Invalid(format!(
                "This notebook's image '{id}' was removed from the catalog, and custom images are \
                 not allowed here; create a new notebook with one of {catalog_ids}."
            )));
        }
    } else if !config.notebooks.allow_custom_images {
        return Err(NotebookError::Invalid(format!(
            "This notebook uses the custom image '{}', and custom images are no longer allowed \
             here; create a new notebook with one of {catalog_ids}.",
            row.image
        )));
    }
    if !valid_image_reference(&row.image) {
        return Err(NotebookError::Invalid(format!(
            "'{}' is not a Docker image reference (like registry/name:tag).",
            row.image
        )));
    }
    Ok(())
}
