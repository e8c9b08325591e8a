//! Registry hosts as image references name them, the credentials' checks, and what a
//! member reads when a pull fails.

use crate::containers::{PullFailure, RegistryAuth};
use crate::model::Scope;

/// Docker Hub, under the name image references give it.
const DOCKER_HUB: &str = "docker.io";
/// Other names of Docker Hub people copy from its documentation.
const DOCKER_HUB_ALIASES: &[&str] = &[
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];
const MAX_USERNAME: usize = 256;
/// Long enough for a cloud key file given as a password (e.g. Google's `_json_key`).
const MAX_PASSWORD: usize = 16 * 1024;

/// How a notebook's start pulls its image.
#[derive(Debug)]
pub struct PullPlan {
    /// The image's registry ("docker.io" for Docker Hub).
    pub host: String,
    /// The login sent with the pull, if there is one for that registry.
    pub auth: Option<RegistryAuth>,
    /// Whose login it is.
    pub source: Option<Scope>,
    /// Pull even if the engine has the image (see `Secrets::pull_plan`).
    pub recheck: bool,
}

/// The registry of an image reference, as Docker reads it: the part before the first
/// `/` when it looks like a host (has a dot or a port, or is `localhost`), else Docker Hub.
pub fn registry_host_of(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    match name.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            canonical(&first.to_ascii_lowercase())
        }
        _ => DOCKER_HUB.to_string(),
    }
}

fn canonical(host: &str) -> String {
    if DOCKER_HUB_ALIASES.contains(&host) {
        DOCKER_HUB.to_string()
    } else {
        host.to_string()
    }
}

/// A registry host as a member types it → the form stored and matched against image
/// references: lower case, with its port if it has one, Docker Hub as "docker.io".
pub fn normalize_registry_host(host: &str) -> Result<String, String> {
    let host = host.trim();
    let example = "e.g. registry.lab.example or 127.0.0.1:5000";
    if host.is_empty() {
        return Err(format!("Give the registry's host ({example})."));
    }
    if host.contains("://") || host.contains('/') {
        return Err(format!(
            "Give the registry's host only ({example}), without https:// or a path."
        ));
    }
    let host = host.to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host.as_str(), None),
    };
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) || port.starts_with('0') {
            return Err(format!(
                "The port in {host:?} is not a port number (1 to 65535); {example}."
            ));
        }
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{:?} is not a host name: use letters, digits, dots and hyphens ({example}).",
            host.chars().take(80).collect::<String>()
        ));
    }
    Ok(canonical(&host))
}

/// A username for HTTP basic authentication: no colon, no control characters.
pub fn check_registry_username(username: &str) -> Result<(), String> {
    if username.is_empty() {
        return Err("Give the username for the registry.".into());
    }
    if username.len() > MAX_USERNAME {
        return Err(format!(
            "The username is {} bytes long; at most {MAX_USERNAME} are allowed.",
            username.len()
        ));
    }
    if username.contains(':') || username.chars().any(char::is_control) {
        return Err(
            "The username cannot contain a colon or control characters (registries log in \
             with HTTP basic authentication)."
                .into(),
        );
    }
    Ok(())
}

/// A password or access token: not empty, at most 16 KiB, no NUL.
pub fn check_registry_password(password: &str) -> Result<(), String> {
    if password.is_empty() {
        return Err("Give the password (or access token) for the registry.".into());
    }
    if password.len() > MAX_PASSWORD {
        return Err(format!(
            "The password is {} bytes long; at most {MAX_PASSWORD} are allowed.",
            password.len()
        ));
    }
    if password.contains('\0') {
        return Err("The password contains a NUL character; paste it again.".into());
    }
    Ok(())
}

/// What the notebook's page says when its image could not be pulled: the cause in words,
/// and where to fix it. `engine` is the engine's own text (never holding the password).
pub fn pull_failure_message(
    image: &str,
    plan: &PullPlan,
    cause: PullFailure,
    engine: &str,
) -> String {
    let host = &plan.host;
    let fix = match plan.source {
        Some(Scope::Lab) => {
            "ask an admin to check the lab-wide credential under Settings → Registries"
        }
        _ => "check the username and password under Settings → Registries",
    };
    let why = match cause {
        PullFailure::NeedsLogin => format!(
            "the registry {host} needs a login, and there is no credential for it: add one \
             under Settings → Registries"
        ),
        PullFailure::CredentialRefused => {
            format!("the registry refused the credential for {host} — {fix}")
        }
        PullFailure::AccessDenied if plan.auth.is_some() => format!(
            "the registry {host} denied access: the repository does not exist, or the \
             credential may not pull it — check the image's name, or {fix}"
        ),
        PullFailure::AccessDenied => format!(
            "the registry {host} denied access: the repository does not exist, or it needs a \
             login — check the image's name, or add a credential under Settings → Registries"
        ),
        PullFailure::NotFound => format!(
            "the registry {host} has no such repository or tag — check the image's name and \
             tag ({engine})"
        ),
        PullFailure::Unreachable => format!("cannot reach the registry {host} ({engine})"),
        PullFailure::Other => engine.to_string(),
    };
    format!("Could not pull the image '{image}': {why}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_name_their_registry_as_docker_does() {
        for (image, host) in [
            ("jupyter/scipy-notebook:2024", "docker.io"),
            ("ubuntu", "docker.io"),
            ("127.0.0.1:5000/team/img:1", "127.0.0.1:5000"),
            ("Registry.Lab.Example/img", "registry.lab.example"),
            ("localhost/img:2", "localhost"),
            ("localhost:5000/img", "localhost:5000"),
            ("index.docker.io/library/ubuntu", "docker.io"),
            ("ghcr.io/org/img@sha256:abc", "ghcr.io"),
        ] {
            assert_eq!(registry_host_of(image), host, "{image}");
        }
    }

    #[test]
    fn hosts_are_normalized_or_refused_with_a_reason() {
        assert_eq!(
            normalize_registry_host(" 127.0.0.1:5000 ").as_deref(),
            Ok("127.0.0.1:5000")
        );
        assert_eq!(normalize_registry_host("GHCR.io").as_deref(), Ok("ghcr.io"));
        assert_eq!(
            normalize_registry_host("registry-1.docker.io").as_deref(),
            Ok("docker.io")
        );
        for bad in [
            "",
            "https://ghcr.io",
            "ghcr.io/org",
            "a:0",
            "a:70000",
            "a:x",
            "a:",
            "-a.b",
            "a..b",
            "a b",
            "[::1]:5000",
            "é.example",
            &"a".repeat(300),
        ] {
            assert!(normalize_registry_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usernames_and_passwords_are_checked() {
        assert!(check_registry_username("robot$ci").is_ok());
        assert!(check_registry_username("").is_err());
        assert!(check_registry_username("a:b").is_err());
        assert!(check_registry_username("a\nb").is_err());
        assert!(check_registry_password("{\n \"json\": 1\n}").is_ok());
        assert!(check_registry_password("").is_err());
        assert!(check_registry_password("a\0").is_err());
        assert!(check_registry_password(&"x".repeat(MAX_PASSWORD + 1)).is_err());
    }

    #[test]
    fn pull_failures_say_their_cause_and_where_to_fix_it() {
        let plan = |source: Option<Scope>| PullPlan {
            host: "127.0.0.1:5000".into(),
            auth: source.map(|_| RegistryAuth {
                server: "127.0.0.1:5000".into(),
                username: "u".into(),
                password: "p".into(),
            }),
            source,
            recheck: false,
        };
        let m = pull_failure_message(
            "127.0.0.1:5000/x:1",
            &plan(Some(Scope::Member)),
            PullFailure::CredentialRefused,
            "",
        );
        assert!(
            m.contains("refused the credential for 127.0.0.1:5000"),
            "{m}"
        );
        assert!(m.contains("Settings → Registries"), "{m}");
        let m = pull_failure_message(
            "127.0.0.1:5000/x:1",
            &plan(Some(Scope::Lab)),
            PullFailure::CredentialRefused,
            "",
        );
        assert!(m.contains("lab-wide credential"), "{m}");
        let m = pull_failure_message(
            "127.0.0.1:5000/x:1",
            &plan(None),
            PullFailure::NeedsLogin,
            "",
        );
        assert!(m.contains("needs a login"), "{m}");
        let m = pull_failure_message(
            "127.0.0.1:5000/x:1",
            &plan(None),
            PullFailure::NotFound,
            "manifest unknown",
        );
        assert!(m.contains("no such repository or tag"), "{m}");
        let m = pull_failure_message(
            "127.0.0.1:5000/x:1",
            &plan(None),
            PullFailure::Unreachable,
            "connection refused",
        );
        assert!(
            m.contains("cannot reach the registry 127.0.0.1:5000 (connection refused)"),
            "{m}"
        );
    }
}
