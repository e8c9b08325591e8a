//! `NOTEBOX_*` environment variables: each overrides one setting, parsed as it is read.

use std::path::PathBuf;

use super::{
    parse_auto_shutdown, parse_duration, parse_listen, Config, ConfigError, GpuBackend, OriginMode,
    PortRange,
};

/// What the message for an unknown `NOTEBOX_*` variable lists.
const KNOWN: &str = "unknown setting; known ones are NOTEBOX_LISTEN, NOTEBOX_DATA_DIR, \
     NOTEBOX_ALLOW_CUSTOM_IMAGES, NOTEBOX_READY_TIMEOUT, \
     NOTEBOX_DEFAULT_AUTO_SHUTDOWN, NOTEBOX_GPU_BACKEND, NOTEBOX_GPU_QUEUE, \
     NOTEBOX_DOCKER_SOCKET, NOTEBOX_DOCKER_NETWORK, NOTEBOX_ORIGIN, \
     NOTEBOX_ORIGIN_PORTS, NOTEBOX_ORIGIN_DOMAIN";

impl Config {
    /// `NOTEBOX_LISTEN`, `NOTEBOX_DATA_DIR`, ... override single settings.
    pub fn apply_env(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("NOTEBOX_") else {
                continue;
            };
            self.apply_one(key, value)
                .map_err(|message| ConfigError::Invalid {
                    key: name.clone(),
                    origin: "the environment".into(),
                    message,
                })?;
        }
        Ok(())
    }

    /// One variable (`key` without its `NOTEBOX_` prefix); Err is the message.
    fn apply_one(&mut self, key: &str, value: String) -> Result<(), String> {
        let notebooks = &mut self.notebooks;
        match key {
            // Not settings: where the config is and how much to log.
            "CONFIG" | "LOG" => {}
            "LISTEN" => self.listen = parse_listen(&value)?,
            "DATA_DIR" => self.data_dir = PathBuf::from(value),
            "ALLOW_CUSTOM_IMAGES" => notebooks.allow_custom_images = parse_bool(&value)?,
            "READY_TIMEOUT" => notebooks.ready_timeout = parse_duration(&value)?,
            "DEFAULT_AUTO_SHUTDOWN" => {
                notebooks.default_auto_shutdown = parse_auto_shutdown(&value)?;
            }
            "GPU_BACKEND" => self.gpu.backend = GpuBackend::parse(&value)?,
            "GPU_QUEUE" => self.gpu.queue = parse_bool(&value)?,
            "DOCKER_SOCKET" => self.docker.socket = value,
            "DOCKER_NETWORK" => self.docker.network = value,
            "ORIGIN" => notebooks.origin = OriginMode::parse(&value)?,
            "ORIGIN_PORTS" => notebooks.origin_ports = PortRange::parse(&value)?,
            "ORIGIN_DOMAIN" => notebooks.origin_domain = value,
            "MAX_RUNNING_PER_USER" => {
                notebooks.max_running_per_user = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("'{value}' is not a whole number of notebooks"))?;
            }
            _ => return Err(KNOWN.into()),
        }
        Ok(())
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(format!("'{value}' is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn env_overrides() {
        let mut c = Config::default();
        c.apply_env(
            vec![
                ("NOTEBOX_LISTEN".to_string(), "0.0.0.0:9000".to_string()),
                ("NOTEBOX_DATA_DIR".to_string(), "/tmp/x".to_string()),
                ("PATH".to_string(), "/bin".to_string()),
            ]
            .into_iter(),
        )
        .expect("applies");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        let err = c
            .apply_env(vec![("NOTEBOX_LISTN".to_string(), "x".to_string())].into_iter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("NOTEBOX_LISTN"), "{err}");
    }

    #[test]
    fn each_override_is_parsed_and_a_bad_one_named() {
        let mut c = Config::default();
        c.apply_env(vars(&[
            ("NOTEBOX_ALLOW_CUSTOM_IMAGES", "yes"),
            ("NOTEBOX_READY_TIMEOUT", "90s"),
            ("NOTEBOX_DEFAULT_AUTO_SHUTDOWN", "never"),
            ("NOTEBOX_GPU_BACKEND", "simulated"),
            ("NOTEBOX_GPU_QUEUE", "0"),
            ("NOTEBOX_MAX_RUNNING_PER_USER", " 7 "),
            ("NOTEBOX_LOG", "debug"),
        ]))
        .expect("applies");
        assert!(c.notebooks.allow_custom_images && !c.gpu.queue);
        assert_eq!(c.notebooks.ready_timeout, Duration::from_secs(90));
        assert_eq!(c.notebooks.default_auto_shutdown, None);
        assert_eq!(c.gpu.backend, GpuBackend::Simulated);
        assert_eq!(c.notebooks.max_running_per_user, 7);
        for (name, value, says) in [
            ("NOTEBOX_LISTEN", "x", "not an address:port"),
            ("NOTEBOX_GPU_QUEUE", "maybe", "not true or false"),
            ("NOTEBOX_GPU_BACKEND", "cuda", "not a GPU backend"),
            ("NOTEBOX_READY_TIMEOUT", "soon", "not a duration"),
        ] {
            let e = c.apply_env(vars(&[(name, value)])).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{name}` in the environment")) && e.contains(says),
                "{e}"
            );
        }
    }
}
