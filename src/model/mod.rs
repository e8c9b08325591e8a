//! The domain's vocabulary: the notebook state machine, launchers and share visibility as
//! types with their rules on them, and the wire objects of the HTTP contract (`wire`).
//!
//! Each enum is stored in SQLite and sent over JSON as the same lowercase string it always
//! was; a typo in a state no longer compiles.

pub mod gpu;
pub mod wire;

use std::fmt;

/// Implements the string form of a unit enum once: `as_str`, `parse`, `Display`, serde and
/// rusqlite's `ToSql`/`FromSql`, all from one table of (variant, wire string).
macro_rules! wire_enum {
    ($name:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The string stored in the database and sent in JSON.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value for its wire string, if it is one.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    let known: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    serde::de::Error::custom(format!(
                        "unknown {} \"{s}\"; expected one of: {}",
                        $what,
                        known.join(", ")
                    ))
                })
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<$name> {
                let s = value.as_str()?;
                $name::parse(s).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!("unknown {} {s:?} in the database", $what).into(),
                    )
                })
            }
        }
    };
}

/// What a notebook was last seen to be. The reconciler moves it along
/// `stopped → (queued →) (pulling →) starting → running → stopping → stopped`, or to
/// `failed` with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotebookState {
    Stopped,
    /// Waiting for GPUs.
    Queued,
    /// Its image is being pulled.
    Pulling,
    Starting,
    Running,
    Stopping,
    Failed,
}

wire_enum!(NotebookState, "notebook state", {
    Stopped => "stopped",
    Queued => "queued",
    Pulling => "pulling",
    Starting => "starting",
    Running => "running",
    Stopping => "stopping",
    Failed => "failed",
});

impl NotebookState {
    /// A member may start it (from here it goes to the queue or to starting).
    pub fn can_start(self) -> bool {
        matches!(self, NotebookState::Stopped | NotebookState::Failed)
    }

    /// It has, or is getting, a container: it holds its GPUs.
    pub fn holds_gpus(self) -> bool {
        matches!(
            self,
            NotebookState::Pulling
                | NotebookState::Starting
                | NotebookState::Running
                | NotebookState::Stopping
        )
    }

    /// On its way somewhere: the page keeps polling.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            NotebookState::Queued
                | NotebookState::Pulling
                | NotebookState::Starting
                | NotebookState::Stopping
        )
    }

    /// At rest without a container: GPUs are released when a notebook gets here.
    pub fn is_at_rest(self) -> bool {
        matches!(self, NotebookState::Stopped | NotebookState::Failed)
    }

    /// On its way up but not there yet (queued, pulling, starting).
    pub fn is_starting_up(self) -> bool {
        matches!(
            self,
            NotebookState::Queued | NotebookState::Pulling | NotebookState::Starting
        )
    }

    /// A start in progress that a stop or a restart interrupts.
    pub fn is_coming_up(self) -> bool {
        matches!(
            self,
            NotebookState::Pulling | NotebookState::Starting | NotebookState::Running
        )
    }

    /// The states a notebook may move to from this one.
    pub fn can_become(self, to: NotebookState) -> bool {
        use NotebookState::*;
        match (self, to) {
            (Failed, Failed) => false,
            (_, Failed) => true,
            (Stopped | Failed, Queued | Pulling | Starting) => true,
            (Queued, Pulling | Starting | Stopped) => true,
            (Pulling, Starting | Stopping | Stopped) => true,
            // Starting → pulling: the image is missing and is being pulled.
            (Starting, Pulling | Running | Stopping | Stopped) => true,
            (Running, Stopping | Stopped) => true,
            (Stopping, Stopped | Starting) => true,
            _ => false,
        }
    }
}

/// What a notebook should be; the reconciler drives Docker toward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DesiredState {
    Running,
    Stopped,
    /// Its container and files are being removed; it is gone for its owner already.
    Deleted,
}

wire_enum!(DesiredState, "desired state", {
    Running => "running",
    Stopped => "stopped",
    Deleted => "deleted",
});

/// Where a job is (DESIGN.md, "Jobs"): on its way (queued, starting), running, or ended
/// one of four ways. The ended ones are also what `jobs.outcome` stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Starting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

wire_enum!(JobState, "job state", {
    Queued => "queued",
    Starting => "starting",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
    TimedOut => "timed_out",
});

impl JobState {
    /// It ended (and will not change again).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }

    /// The job state of its row in `notebooks` while it is on its way or running.
    pub fn of_row(state: NotebookState) -> JobState {
        match state {
            NotebookState::Queued => JobState::Queued,
            NotebookState::Pulling | NotebookState::Starting => JobState::Starting,
            NotebookState::Running | NotebookState::Stopping => JobState::Running,
            // At rest without an outcome yet: the reconciler is writing it.
            NotebookState::Stopped | NotebookState::Failed => JobState::Running,
        }
    }

    /// In words, for pages.
    pub fn label(self) -> &'static str {
        match self {
            JobState::Queued => "Queued",
            JobState::Starting => "Starting",
            JobState::Running => "Running",
            JobState::Succeeded => "Succeeded",
            JobState::Failed => "Failed",
            JobState::Cancelled => "Cancelled",
            JobState::TimedOut => "Timed out",
        }
    }
}

/// How Jupyter is started in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Launcher {
    /// The Jupyter Docker Stacks' `start-notebook.sh`.
    DockerStacks,
    JupyterLab,
    JupyterServer,
    /// The catalog entry's own command, with `{port}`, `{base_url}`, `{root_dir}` filled.
    Command,
}

wire_enum!(Launcher, "launcher", {
    DockerStacks => "docker-stacks",
    JupyterLab => "jupyter-lab",
    JupyterServer => "jupyter-server",
    Command => "command",
});

/// Who may open a share link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Anyone with the link.
    Link,
    /// Anyone with the link, and listed on /gallery.
    Public,
}

wire_enum!(Visibility, "visibility", {
    Link => "link",
    Public => "public",
});

/// Whose a variable or a registry credential is: one member's, or the whole lab's (set by
/// an admin, given to every member; a member's own of the same name wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Member,
    Lab,
}

wire_enum!(Scope, "scope", {
    Member => "member",
    Lab => "lab",
});

/// A new id for a notebook or an environment: 12 characters from an alphabet without
/// look-alikes (no 0/o, 1/l), lower case (they also name Docker images).
pub fn new_id() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rand_core::UnwrapErr(rand::rngs::SysRng);
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// What an environment is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvironmentKind {
    /// A Git repository holding repo2docker files or a Dockerfile.
    Repo,
    /// repo2docker files sent with the request, on top of a catalog image.
    Files,
    /// A Dockerfile (who may send one is `environments.dockerfile`).
    Dockerfile,
    /// Running notebooks saved as images.
    Saved,
}

wire_enum!(EnvironmentKind, "source kind", {
    Repo => "repo",
    Files => "files",
    Dockerfile => "dockerfile",
    Saved => "saved",
});

/// Where one version (one build) of an environment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildState {
    Queued,
    Building,
    Ready,
    Failed,
    Cancelled,
    /// Its image was removed (retention); notebooks cannot start from it any more.
    Removed,
}

wire_enum!(BuildState, "build state", {
    Queued => "queued",
    Building => "building",
    Ready => "ready",
    Failed => "failed",
    Cancelled => "cancelled",
    Removed => "removed",
});

impl BuildState {
    /// Still to end (queued or building).
    pub fn is_open(self) -> bool {
        matches!(self, BuildState::Queued | BuildState::Building)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_round_trip_through_json() {
        for state in NotebookState::ALL {
            let json = serde_json::to_string(state).expect("json");
            assert_eq!(json, format!("\"{state}\""));
            assert_eq!(
                serde_json::from_str::<NotebookState>(&json).expect("back"),
                *state
            );
        }
        assert_eq!(Launcher::parse("jupyter-lab"), Some(Launcher::JupyterLab));
        assert_eq!(DesiredState::Deleted.as_str(), "deleted");
        let bad = serde_json::from_str::<Visibility>("\"secret\"").expect_err("refused");
        assert!(
            bad.to_string().contains("expected one of: link, public"),
            "{bad}"
        );
    }

    #[test]
    fn state_rules() {
        use NotebookState::*;
        assert!(Stopped.can_start() && Failed.can_start() && !Running.can_start());
        assert!(Running.holds_gpus() && Starting.holds_gpus() && !Queued.holds_gpus());
        assert!(!Stopped.holds_gpus() && !Failed.holds_gpus());
        assert!(Queued.is_transient() && !Running.is_transient() && !Stopped.is_transient());
        assert!(Stopped.can_become(Starting) && Running.can_become(Stopping));
        assert!(Starting.can_become(Pulling) && Pulling.can_become(Starting));
        assert!(!Stopped.can_become(Running) && !Queued.can_become(Running));
        assert!(Starting.can_become(Failed) && !Failed.can_become(Failed));
    }
}

/// An interval as reports read it.
#[derive(Debug, Clone)]
pub struct UsageInterval {
    pub id: i64,
    pub user_id: i64,
    pub member: String,
    pub notebook_id: String,
    pub gpu_uuid: Option<String>,
    pub cores: f64,
    pub started_at: i64,
    /// None while held.
    pub ended_at: Option<i64>,
    pub busy_seconds: f64,
    pub peak_memory_mib: i64,
}
