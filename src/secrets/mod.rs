//! Members' variables and secrets, and private registries' credentials: what a member (or
//! an admin, for the whole lab) keeps for their notebooks. Every value is sealed by the
//! vault before it is stored; a secret's value and a registry's password are never shown
//! again after saving (not in the API, pages, logs, share pages, forks or metrics): they
//! leave Notebox only into a notebook's container environment (variables, at its start)
//! and into the engine's pull (a registry login).
//!
//! Knows nothing of HTTP: `web` turns `SecretsError` into statuses.

mod names;
mod registries;

use std::collections::BTreeMap;

use crate::auth::User;
use crate::containers::{PrivateEnv, RegistryAuth};
use crate::db::secrets::{self as q, VariableLimits, VariableRow, VariableWrite};
use crate::db::{Db, DbError};
use crate::model::Scope;
use crate::vault::Vault;

pub use names::{check_variable_name, check_variable_value, MAX_VALUE_BYTES};
pub use registries::{
    check_registry_password, check_registry_username, normalize_registry_host,
    pull_failure_message, registry_host_of, PullPlan,
};

/// At most this many variables per member, and as many lab-wide.
pub const MAX_VARIABLES: i64 = 100;
/// Their values together: the whole environment of a process must stay well inside the
/// kernel's limit on `execve` (a quarter of the stack limit, usually 2 MiB), or the
/// container cannot start.
pub const MAX_TOTAL_BYTES: i64 = 256 * 1024;
/// At most this many registry credentials per member, and as many lab-wide.
pub const MAX_REGISTRIES: i64 = 20;

const LIMITS: VariableLimits = VariableLimits {
    max_count: MAX_VARIABLES,
    max_total_bytes: MAX_TOTAL_BYTES,
};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Bad input: the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// Lab-wide values are for admins.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// Over a limit on how many there may be.
    #[error("{0}")]
    Limit(String),
    /// A stored value cannot be opened (the vault's key changed): named, never shown.
    #[error("{0}")]
    Unreadable(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A variable as its owner (and the API) may see it: a secret's value never.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableInfo {
    pub name: String,
    pub secret: bool,
    pub scope: Scope,
    /// Only for variables that are not secret.
    pub value: Option<String>,
    pub updated_at: i64,
}

/// A registry credential as the API may show it: never its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryInfo {
    pub host: String,
    pub username: String,
    pub scope: Scope,
    pub updated_at: i64,
}

/// A variable to save.
pub struct NewVariable<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub secret: bool,
    pub scope: Scope,
}

/// A registry credential to save.
pub struct NewRegistry<'a> {
    pub host: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub scope: Scope,
}

/// What a notebook's container gets from its member's (and the lab's) variables.
pub struct StartEnv {
    pub env: PrivateEnv,
    /// The change number the values stand at (see `db::secrets`).
    pub generation: i64,
}

/// The keeper of variables and registry credentials. Cheap to clone.
#[derive(Clone)]
pub struct Secrets {
    db: Db,
    vault: Vault,
}

/// The owner key in the database of what `user` asks for in `scope` (the lab's: admins).
fn owner_for(user: &User, scope: Scope, what: &str) -> Result<Option<i64>, SecretsError> {
    match scope {
        Scope::Member => Ok(Some(user.id)),
        Scope::Lab if user.is_admin => Ok(None),
        Scope::Lab => Err(SecretsError::Forbidden(format!(
            "Only admins can set lab-wide {what}; leave out scope (or use \"member\") for your own."
        ))),
    }
}

impl Secrets {
    pub fn new(db: Db, vault: Vault) -> Secrets {
        Secrets { db, vault }
    }

    // ---- variables ----

    /// The lab's variables and the member's own, each with its scope; values of those
    /// that are not secret.
    pub async fn list_variables(&self, user: &User) -> Result<Vec<VariableInfo>, SecretsError> {
        let uid = user.id;
        let (lab, own) = self
            .db
            .call(move |c| Ok((q::variables_of(c, None)?, q::variables_of(c, Some(uid))?)))
            .await?;
        let show = |row: VariableRow, scope: Scope| VariableInfo {
            value: match row.secret {
                true => None,
                false => self.vault.unseal_str(&row.value_sealed).ok(),
            },
            name: row.name,
            secret: row.secret,
            scope,
            updated_at: row.updated_at,
        };
        Ok(own
            .into_iter()
            .map(|r| show(r, Scope::Member))
            .chain(lab.into_iter().map(|r| show(r, Scope::Lab)))
            .collect())
    }

    /// Adds or replaces a variable.
    pub async fn put_variable(
        &self,
        user: &User,
        new: NewVariable<'_>,
    ) -> Result<VariableInfo, SecretsError> {
        check_variable_name(new.name).map_err(SecretsError::Invalid)?;
        check_variable_value(new.value).map_err(SecretsError::Invalid)?;
        let owner = owner_for(user, new.scope, "variables")?;
        let sealed = self.vault.seal_str(new.value);
        let (name, secret, bytes) = (new.name.to_string(), new.secret, new.value.len() as i64);
        let n = name.clone();
        let written = self
            .db
            .call(move |c| q::put_variable(c, owner, &n, secret, &sealed, bytes, LIMITS))
            .await?;
        match written {
            VariableWrite::Saved => {}
            VariableWrite::TooMany { max } => {
                return Err(SecretsError::Limit(format!(
                    "There are already {max} variables{}: delete one you no longer need first.",
                    scope_words(new.scope)
                )))
            }
            VariableWrite::TooLarge { total, max } => {
                return Err(SecretsError::Invalid(format!(
                    "The values of the variables{} would add up to {total} bytes, over the \
                     limit of {max} bytes (a notebook's whole environment must stay small): \
                     shorten this value or delete others; put large things in a file under \
                     /storage instead.",
                    scope_words(new.scope)
                )))
            }
        }
        tracing::info!(
            by = %user.username, variable = %name, secret, scope = %new.scope,
            "variable saved"
        );
        Ok(VariableInfo {
            value: (!secret).then(|| new.value.to_string()),
            name,
            secret,
            scope: new.scope,
            updated_at: crate::clock::now(),
        })
    }

    /// Deletes a variable.
    pub async fn delete_variable(
        &self,
        user: &User,
        name: &str,
        scope: Scope,
    ) -> Result<(), SecretsError> {
        check_variable_name(name).map_err(SecretsError::Invalid)?;
        let owner = owner_for(user, scope, "variables")?;
        let n = name.to_string();
        if !self
            .db
            .call(move |c| q::delete_variable(c, owner, &n))
            .await?
        {
            return Err(SecretsError::NotFound(format!(
                "There is no variable named {name}{}.",
                scope_words(scope)
            )));
        }
        tracing::info!(by = %user.username, variable = %name, scope = %scope, "variable deleted");
        Ok(())
    }

    /// The member's running notebooks that got their variables before the last change:
    /// (id, name). They get the new values when they next start.
    pub async fn notebooks_with_older_variables(
        &self,
        user: &User,
    ) -> Result<Vec<(String, String)>, SecretsError> {
        let uid = user.id;
        Ok(self
            .db
            .call(move |c| q::notebooks_with_older_variables(c, uid))
            .await?)
    }

    /// The environment a notebook of `owner` starts with: the lab's variables, the
    /// member's own over them (a name both have is the member's).
    pub async fn start_env(&self, owner: i64) -> Result<StartEnv, SecretsError> {
        let (lab, own, generation) = self
            .db
            .call(move |c| q::variables_for_start(c, owner))
            .await?;
        let mut merged = BTreeMap::new();
        for row in lab.into_iter().chain(own) {
            let value = self.vault.unseal_str(&row.value_sealed).map_err(|_| {
                SecretsError::Unreadable(format!(
                    "The stored value of the variable {} cannot be opened (was the vault's key \
                     file replaced?): set it again under Settings → Variables & secrets.",
                    row.name
                ))
            })?;
            merged.insert(row.name, value);
        }
        Ok(StartEnv {
            env: PrivateEnv(merged.into_iter().collect()),
            generation,
        })
    }

    /// Records that a notebook's new container got the variables at `generation`.
    pub async fn record_given(&self, notebook_id: &str, generation: i64) -> Result<(), DbError> {
        let id = notebook_id.to_string();
        self.db
            .call(move |c| q::record_variables_given(c, &id, generation))
            .await
    }

    // ---- registries ----

    /// The member's own registry credentials and the lab's (never their passwords).
    pub async fn list_registries(&self, user: &User) -> Result<Vec<RegistryInfo>, SecretsError> {
        let uid = user.id;
        let (own, lab) = self
            .db
            .call(move |c| Ok((q::registries_of(c, Some(uid))?, q::registries_of(c, None)?)))
            .await?;
        let info = |r: q::RegistryRow, scope| RegistryInfo {
            host: r.host,
            username: r.username,
            scope,
            updated_at: r.updated_at,
        };
        Ok(own
            .into_iter()
            .map(|r| info(r, Scope::Member))
            .chain(lab.into_iter().map(|r| info(r, Scope::Lab)))
            .collect())
    }

    /// Adds (or replaces) a credential for a registry.
    pub async fn add_registry(
        &self,
        user: &User,
        new: NewRegistry<'_>,
    ) -> Result<RegistryInfo, SecretsError> {
        let host = normalize_registry_host(new.host).map_err(SecretsError::Invalid)?;
        check_registry_username(new.username).map_err(SecretsError::Invalid)?;
        check_registry_password(new.password).map_err(SecretsError::Invalid)?;
        let owner = owner_for(user, new.scope, "registry credentials")?;
        let sealed = self.vault.seal_str(new.password);
        let (h, username) = (host.clone(), new.username.to_string());
        let u = username.clone();
        let written = self
            .db
            .call(move |c| q::put_registry(c, owner, &h, &u, &sealed, MAX_REGISTRIES))
            .await?;
        if let q::RegistryWrite::TooMany { max } = written {
            return Err(SecretsError::Limit(format!(
                "There are already {max} registry credentials{}: remove one first.",
                scope_words(new.scope)
            )));
        }
        tracing::info!(by = %user.username, registry = %host, scope = %new.scope, "registry credential saved");
        Ok(RegistryInfo {
            host,
            username,
            scope: new.scope,
            updated_at: crate::clock::now(),
        })
    }

    /// Removes a credential.
    pub async fn remove_registry(
        &self,
        user: &User,
        host: &str,
        scope: Scope,
    ) -> Result<(), SecretsError> {
        let host = normalize_registry_host(host).map_err(SecretsError::Invalid)?;
        let owner = owner_for(user, scope, "registry credentials")?;
        let h = host.clone();
        if !self
            .db
            .call(move |c| q::delete_registry(c, owner, &h))
            .await?
        {
            return Err(SecretsError::NotFound(format!(
                "There is no credential for the registry {host}{}.",
                scope_words(scope)
            )));
        }
        tracing::info!(by = %user.username, registry = %host, scope = %scope, "registry credential removed");
        Ok(())
    }

    /// How a notebook of `owner` pulls `image`: with which login (the member's own for
    /// the image's registry, else the lab's; catalog images only ever use the lab's),
    /// and whether it must be pulled even when the engine has it already: an image from
    /// a registry only some members hold a credential for is pulled again at each start
    /// with the starter's credential, so that a member without access cannot use what
    /// another member pulled.
    pub async fn pull_plan(
        &self,
        owner: i64,
        image: &str,
        catalog: bool,
    ) -> Result<PullPlan, SecretsError> {
        let host = registry_host_of(image);
        let h = host.clone();
        let (own, lab, private) = self
            .db
            .call(move |c| {
                let own = match catalog {
                    true => None,
                    false => q::registry_credential(c, Some(owner), &h)?,
                };
                let lab = q::registry_credential(c, None, &h)?;
                let private = q::members_have_credential_for(c, &h)?;
                Ok((own, lab, private))
            })
            .await?;
        let recheck = !catalog && lab.is_none() && private;
        let (chosen, source) = match (own, lab) {
            (Some(own), _) => (Some(own), Some(Scope::Member)),
            (None, Some(lab)) => (Some(lab), Some(Scope::Lab)),
            (None, None) => (None, None),
        };
        let auth = match chosen {
            None => None,
            Some((username, sealed)) => {
                let password = self.vault.unseal_str(&sealed).map_err(|_| {
                    SecretsError::Unreadable(format!(
                        "The stored password for the registry {host} cannot be opened (was the \
                         vault's key file replaced?): enter it again under Settings → Registries."
                    ))
                })?;
                Some(RegistryAuth {
                    server: host.clone(),
                    username,
                    password,
                })
            }
        };
        Ok(PullPlan {
            host,
            auth,
            source,
            recheck,
        })
    }
}

fn scope_words(scope: Scope) -> &'static str {
    match scope {
        Scope::Member => " of yours",
        Scope::Lab => " for the whole lab",
    }
}
