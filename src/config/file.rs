//! Reading the TOML file into a `Config`.
//!
//! Most settings are typed in the file's own shape and parsed by serde (a bad duration is
//! reported with its line). The address and the webhook URL are read as text and parsed
//! right after, so that a bad one is reported under its key ("invalid setting `listen` in
//! /etc/notebox/config.toml: …"), as it always was.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    parse_listen, AuthConfig, Config, ConfigError, DockerConfig, EnvironmentsConfig, GpuConfig,
    GroupConfig, ImageSpec, JobsConfig, MachineType, MetricsConfig, NotebooksConfig, ShareConfig,
    StorageConfig, UsageConfig, WebhookConfig, WebhookUrl,
};

/// The config file as written: `Config` with `listen` and `webhook.url` still text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    listen: String,
    data_dir: PathBuf,
    auth: AuthConfig,
    notebooks: NotebooksConfig,
    storage: StorageConfig,
    gpu: GpuConfig,
    docker: DockerConfig,
    share: ShareConfig,
    webhook: WebhookFile,
    metrics: MetricsConfig,
    usage: UsageConfig,
    jobs: JobsConfig,
    reservations: super::ReservationsConfig,
    environments: EnvironmentsConfig,
    images: Vec<ImageSpec>,
    machines: Vec<MachineType>,
    groups: Vec<GroupConfig>,
    public_url: String,
}

/// `[webhook]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WebhookFile {
    /// Where events are POSTed as JSON; empty = no webhook.
    url: String,
}

impl Default for ConfigFile {
    fn default() -> Self {
        let c = Config::default();
        ConfigFile {
            listen: c.listen.to_string(),
            data_dir: c.data_dir,
            auth: c.auth,
            notebooks: c.notebooks,
            storage: c.storage,
            gpu: c.gpu,
            docker: c.docker,
            share: c.share,
            webhook: WebhookFile {
                url: c.webhook.url.map(|u| u.to_string()).unwrap_or_default(),
            },
            metrics: c.metrics,
            usage: c.usage,
            jobs: c.jobs,
            reservations: c.reservations,
            environments: c.environments,
            images: c.images,
            machines: c.machines,
            groups: c.groups,
            public_url: c.public_url,
        }
    }
}

impl ConfigFile {
    /// Parses what serde left as text; `source` names the file in messages.
    fn into_config(self, source: String) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            origin: source.clone(),
            message,
        };
        let listen = parse_listen(&self.listen).map_err(|e| invalid("listen", e))?;
        let url = match self.webhook.url.trim() {
            "" => None,
            text => Some(WebhookUrl::parse(text).map_err(|e| invalid("webhook.url", e))?),
        };
        Ok(Config {
            listen,
            data_dir: self.data_dir,
            auth: self.auth,
            notebooks: self.notebooks,
            storage: self.storage,
            gpu: self.gpu,
            docker: self.docker,
            share: self.share,
            webhook: WebhookConfig { url },
            metrics: self.metrics,
            usage: self.usage,
            jobs: self.jobs,
            reservations: self.reservations,
            environments: self.environments,
            images: self.images,
            machines: self.machines,
            groups: self.groups,
            public_url: self.public_url,
            source,
        })
    }
}

impl Config {
    /// Parses a config file's text; `path` names it in messages and becomes `source`.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str::<ConfigFile>(text)
            .map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: describe_toml_error(&e, text),
            })?
            .into_config(path.display().to_string())
    }
}

/// toml's message names the key (`unknown field `lisen``); add the line for humans.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            // The offending line names the key (and its section header the table).
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            if source.is_empty() || source.len() > 120 {
                format!("line {line}: {message}")
            } else {
                format!("line {line} `{source}`: {message}")
            }
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{auto_shutdown_name, Reclaim};

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::from_toml(
            "listen = \"0.0.0.0:1\"\nlisen = 3\n",
            Path::new("/x/c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("/x/c.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn storage_quotas_parse_and_a_bad_one_is_named() {
        let c = Config::from_toml(
            "[storage]\nsoft_quota = \"100GiB\"\nmeasure_interval = \"1s\"\n[[groups]]\nid = \"phd\"\nstorage_quota = \"1TiB\"\n[[groups]]\nid = \"ms\"\n",
            Path::new("c.toml"),
        )
        .expect("parses");
        assert_eq!(c.storage.soft_quota, Some(100 << 30));
        assert_eq!(c.groups[0].storage_quota, Some(1 << 40));
        assert_eq!(c.groups[1].storage_quota, None);
        assert!(c.validate().is_ok());
        let c = Config::from_toml("[storage]\nsoft_quota = \"\"\n", Path::new("c.toml"))
            .expect("empty");
        assert_eq!(c.storage.soft_quota, None, "empty = no quota");
        let e = Config::from_toml("[storage]\nsoft_quota = \"lots\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("soft_quota") && e.contains("not a size like 200GiB"),
            "{e}"
        );
        let c = Config::from_toml(
            "[storage]\nmeasure_interval = \"0s\"\n",
            Path::new("c.toml"),
        )
        .expect("parses");
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("storage.measure_interval") && e.contains("at least 1s"),
            "{e}"
        );
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let err = Config::from_toml("[gpu]\nqueu = true\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("queu"), "{err}");
        let err = Config::from_toml("[webhook]\nurll = \"\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn listen_and_webhook_url_are_parsed_at_load_and_named() {
        let c = Config::from_toml(
            "listen = \"0.0.0.0:9000\"\n[webhook]\nurl = \" https://chat.example/h \"\n",
            Path::new("c.toml"),
        )
        .expect("parses");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(
            c.webhook.url.as_ref().map(|u| u.uri().host()),
            Some(Some("chat.example"))
        );
        assert_eq!(c.source, "c.toml");
        let c = Config::from_toml("[webhook]\nurl = \"\"\n", Path::new("c.toml")).expect("empty");
        assert!(c.webhook.url.is_none(), "empty = no webhook");
        let e = Config::from_toml("listen = \"nonsense\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid setting `listen` in c.toml: 'nonsense' is not an address:port like 127.0.0.1:8080"
        );
        let e = Config::from_toml("[webhook]\nurl = \"ftp://x\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid setting `webhook.url` in c.toml: 'ftp://x' must start with http:// or https://"
        );
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
listen = "127.0.0.1:8080"
data_dir = "./notebox-data"
[notebooks]
default_auto_shutdown = "6h"
ready_timeout = "120s"
allow_custom_images = false
activity_interval = "5s"
[webhook]
url = ""
[storage]
uid = 1000
gid = 100
[gpu]
backend = "auto"
queue = true
max_gpus_per_user = 8
[[gpu.simulated]]
uuid = "GPU-00000000-0000-0000-0000-000000000000"
name = "Simulated RTX A6000"
memory_mib = 49152
utilization_file = ""
[[images]]
id = "scipy"
name = "SciPy"
image = "quay.io/jupyter/scipy-notebook:latest"
description = "NumPy, pandas, matplotlib, scikit-learn"
gpu = false
launcher = "docker-stacks"
[[machines]]
id = "cpu"
name = "CPU · 2 cores · 4 GB"
cpus = 2.0
memory_mib = 4096
gpus = 0
idle_timeout = "4h"
reclaim = "always"
"#;
        let c = Config::from_toml(text, Path::new("c.toml")).expect("parses");
        c.validate().expect("validates");
        assert_eq!(c.images.len(), 1);
        assert_eq!(c.machines.len(), 1);
        assert_eq!(c.gpu.simulated.len(), 1);
        assert_eq!(
            c.machines[0].idle_timeout(),
            Some(Duration::from_secs(4 * 3600))
        );
        assert_eq!(c.machines[0].reclaim(), Reclaim::Always);
    }

    #[test]
    fn the_packaged_config_loads() {
        let text = include_str!("../../packaging/config.toml");
        let c = Config::from_toml(text, Path::new("packaging/config.toml")).expect("parses");
        c.validate().expect("validates");
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::from_toml("listen = \"nonsense\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`listen`"), "{e}");
        let e = Config::from_toml(
            "[notebooks]\ndefault_auto_shutdown = \"3h\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("default_auto_shutdown") && e.contains("c.toml"),
            "{e}"
        );
        assert!(
            e.contains("3h") && e.contains("1h, 6h, 12h, 1d, 1w, never"),
            "{e}"
        );
        let e = Config::from_toml(
            "[notebooks]\nready_timeout = \"soon\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ready_timeout") && e.contains("line 2"), "{e}");
        let ok = Config::from_toml(
            "[notebooks]\nready_timeout = \"90s\"\ndefault_auto_shutdown = \"never\"\n",
            Path::new("c.toml"),
        )
        .expect("durations parse once");
        assert_eq!(ok.notebooks.ready_timeout, Duration::from_secs(90));
        assert_eq!(ok.notebooks.default_auto_shutdown, None);
        assert_eq!(auto_shutdown_name(Some(Duration::from_secs(86_400))), "1d");
        let e = Config::from_toml("[gpu]\nbackend = \"cuda\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cuda"), "{e}");
    }

    #[test]
    fn fair_share_and_booking_keys_parse_and_bad_ones_are_named() {
        let c = Config::from_toml(
            "[gpu]\nqueue_order = \"fair_share\"\nfair_share_half_life = \"3d\"\nfair_share_max_wait = \"2h\"\n\
             [gpu.shares]\nalice = 2.5\n[reservations]\nmax_length = \"4h\"\nmax_ahead = \"7d\"\n\
             max_gpu_hours_per_week = 0\n[[groups]]\nid = \"phd\"\nshares = 3\n",
            Path::new("c.toml"),
        )
        .expect("parses");
        c.validate().expect("validates");
        assert_eq!(c.gpu.queue_order, super::super::QueueOrderName::FairShare);
        assert_eq!(c.gpu.fair_share_half_life, Duration::from_secs(3 * 86400));
        assert_eq!(c.gpu.shares.get("alice"), Some(&2.5));
        assert_eq!(c.groups[0].shares, Some(3.0));
        assert_eq!(c.reservations.max_length, Duration::from_secs(4 * 3600));
        let e = Config::from_toml("[gpu]\nqueue_order = \"lottery\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lottery"), "{e}");
        for (toml, key) in [
            ("[gpu.shares]\nbob = 0\n", "gpu.shares.bob"),
            (
                "[gpu]\nfair_share_half_life = \"1s\"\n",
                "gpu.fair_share_half_life",
            ),
            (
                "[reservations]\nmax_length = \"2d\"\nmax_ahead = \"1d\"\n",
                "reservations.max_ahead",
            ),
            (
                "[reservations]\nmax_gpu_hours_per_week = -1\n",
                "reservations.max_gpu_hours_per_week",
            ),
        ] {
            let c = Config::from_toml(toml, Path::new("c.toml")).expect("parses");
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }
}
