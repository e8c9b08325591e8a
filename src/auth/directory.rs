//! Accounts from the lab's directory: made at the first login, kept in step at each login
//! and scheduled check, disabled when the directory no longer lets them in (sessions end,
//! tokens stop, notebooks stop), never taking over an account of another source.

use crate::db::directory::{self as dq, DirectoryState};
use crate::db::{sessions, users};
use crate::directory::{self, DirectoryError, Identity};

use super::{Accounts, AuthError, NewSession, User};

/// What a directory login would give someone, for the admin's "test a login".
#[derive(Debug, Clone)]
pub struct Preview {
    pub identity: Identity,
    pub decision: directory::Decision,
    /// The account as it is here, if there is one.
    pub account: Option<User>,
}

/// How a scheduled check went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    pub checked: usize,
    pub disabled: Vec<String>,
    pub enabled: Vec<String>,
}

impl From<DirectoryError> for AuthError {
    fn from(e: DirectoryError) -> AuthError {
        match e {
            DirectoryError::InvalidCredentials => AuthError::InvalidCredentials,
            DirectoryError::Unreachable(_) => AuthError::DirectoryUnreachable(e.to_string()),
            DirectoryError::Refused(m) => AuthError::Directory(m),
        }
    }
}

impl Accounts {
    pub fn ldap(&self) -> Option<&crate::directory::ldap::LdapDirectory> {
        self.ldap.as_ref()
    }

    /// A password login checked by LDAP. A wrong password leaves `reservation` counted as
    /// a failure; a directory that does not answer releases it (an outage must not lock
    /// members out).
    pub(super) async fn ldap_login(
        &self,
        username: &str,
        password: &str,
        address: &str,
        reservation: i64,
    ) -> Result<NewSession, AuthError> {
        let Some(ldap) = &self.ldap else {
            return Err(AuthError::InvalidCredentials);
        };
        let Ok(_slot) = self.directory_checks.clone().try_acquire_owned() else {
            self.db
                .call(move |c| sessions::release(c, reservation))
                .await?;
            return Err(AuthError::Busy);
        };
        match ldap.authenticate(username, password).await {
            Ok(identity) => {
                let clear = Some((username.to_string(), address.to_string()));
                self.directory_login(identity, clear).await
            }
            Err(DirectoryError::InvalidCredentials) => Err(AuthError::InvalidCredentials),
            Err(e) => {
                tracing::warn!(error = %e, "LDAP login could not be checked");
                self.db
                    .call(move |c| sessions::release(c, reservation))
                    .await?;
                Err(e.into())
            }
        }
    }

    /// A local account's password was wrong: if the directory vouches for that name and
    /// password, the member is told an admin must link the account, and the admin sees
    /// the request.
    pub(super) async fn claimed_by_directory(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(), AuthError> {
        let Some(ldap) = &self.ldap else {
            return Ok(());
        };
        let Ok(_slot) = self.directory_checks.clone().try_acquire_owned() else {
            return Ok(()); // the local answer stands
        };
        if let Ok(identity) = ldap.authenticate(username, password).await {
            return Err(self.refuse_taken(&identity).await);
        }
        Ok(())
    }

    /// Records a link request for the admin; the refusal to give the member.
    async fn refuse_taken(&self, identity: &Identity) -> AuthError {
        let i = identity.clone();
        let recorded = self
            .db
            .call(move |c| {
                dq::request_link(c, &i.username, &i.source, &i.external_id, &i.display_name)
            })
            .await;
        if let Err(e) = recorded {
            return e.into();
        }
        tracing::warn!(user = %identity.username, source = %identity.source,
            "directory login refused: an account of another source has that name");
        AuthError::NameTaken {
            username: identity.username.clone(),
            provider: source_name(&self.config, &identity.source),
        }
    }

    /// Opens a session for someone the directory vouched for: makes their account the
    /// first time, records their groups, refuses them if the directory's groups do not let
    /// them in (disabling an account they had), and never takes over an account of
    /// another source.
    pub async fn directory_login(
        &self,
        identity: Identity,
        clear: Option<(String, String)>,
    ) -> Result<NewSession, AuthError> {
        let decision = directory::decide(&self.config, &identity);
        let name = identity.username.clone();
        let existing = self.db.call(move |c| users::by_name(c, &name)).await?;
        let user = match existing {
            Some(user) if user.source != identity.source => {
                return Err(self.refuse_taken(&identity).await);
            }
            Some(user) if identity.source.starts_with("oidc:") => {
                let id = user.id;
                let known = self.db.call(move |c| dq::external_id(c, id)).await?;
                if known.is_some_and(|k| k != identity.external_id) {
                    return Err(self.refuse_taken(&identity).await);
                }
                user
            }
            Some(user) => user,
            None => {
                if let Err(why) = &decision.allowed {
                    return Err(AuthError::NotAllowed(why.clone()));
                }
                self.create_directory_account(&identity, &decision).await?
            }
        };
        if let Err(why) = &decision.allowed {
            self.disable_by_directory(&user, why).await?;
            return Err(AuthError::NotAllowed(why.clone()));
        }
        let user = self.sync_account(&user, &identity, &decision).await?;
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        tracing::info!(user = %user.username, source = %user.source, groups = ?user.directory_groups,
            "directory login");
        self.open_session(user, clear).await
    }

    async fn create_directory_account(
        &self,
        identity: &Identity,
        decision: &directory::Decision,
    ) -> Result<User, AuthError> {
        let budget =
            crate::groups::group_budget(&self.config, &identity.username, &decision.groups);
        let (i, d) = (identity.clone(), decision.clone());
        let made = self
            .db
            .call(move |c| {
                let state = state_of(&i, &d, budget);
                dq::insert(c, &i.username, &i.source, &state)
            })
            .await?;
        match made {
            Some(user) => {
                tracing::info!(user = %user.username, source = %user.source, "directory account made");
                Ok(user)
            }
            // Made by a login at the same moment.
            None => Err(AuthError::UsernameTaken(identity.username.clone())),
        }
    }

    async fn sync_account(
        &self,
        user: &User,
        identity: &Identity,
        decision: &directory::Decision,
    ) -> Result<User, AuthError> {
        let budget =
            crate::groups::group_budget(&self.config, &identity.username, &decision.groups);
        let (i, d, id) = (identity.clone(), decision.clone(), user.id);
        let updated = self
            .db
            .call(move |c| {
                dq::sync(c, id, &state_of(&i, &d, budget))?;
                users::by_id(c, id)
            })
            .await?
            .ok_or_else(|| AuthError::NoSuchUser(identity.username.clone()))?;
        if updated.is_admin != user.is_admin || updated.disabled != user.disabled {
            self.events.changed();
        }
        // A group folder their notebooks mount is no longer theirs: those notebooks stop
        // (a mount cannot be taken out of a running container).
        let before = crate::groups::folder_mounts(&self.config, user);
        let after = crate::groups::folder_mounts(&self.config, &updated);
        if let Some(lost) = before.iter().find(|m| !after.contains(m)) {
            tracing::warn!(user = %updated.username, group = %lost.group, "left a group with a shared folder");
            self.events.stop_notebooks_of(
                updated.id,
                &format!(
                    "Stopping: no longer in group {}, whose folder it mounted",
                    lost.group
                ),
            );
        }
        Ok(updated)
    }

    /// Disables an account because the directory no longer lets them in: their sessions,
    /// notebook cookies and tokens stop at once, and listeners stop their notebooks.
    async fn disable_by_directory(&self, user: &User, why: &str) -> Result<bool, AuthError> {
        let (id, why_owned) = (user.id, why.to_string());
        let done = self
            .db
            .call(move |c| dq::disable(c, id, &why_owned))
            .await?;
        if done {
            tracing::warn!(user = %user.username, reason = %why, "account disabled by the directory");
            self.events.changed();
            self.events.stop_notebooks_of(
                user.id,
                "Stopping: the directory no longer lets its member in",
            );
        }
        Ok(done)
    }

    /// Checks every LDAP account with the directory: gone or no longer allowed → disabled
    /// now; still allowed → groups and admin flag brought up to date (and enabled again if
    /// the directory had disabled them). Stops at the first unreachable answer (nobody is
    /// disabled because the directory is down).
    pub async fn refresh_directory(&self) -> Result<RefreshReport, AuthError> {
        let Some(ldap) = self.ldap.clone() else {
            return Ok(RefreshReport::default());
        };
        let accounts = self
            .db
            .call(|c| dq::accounts_of(c, crate::directory::ldap::SOURCE))
            .await?;
        let mut report = RefreshReport::default();
        for user in accounts {
            report.checked += 1;
            let identity = match ldap.lookup(&user.username).await {
                Ok(Some(identity)) => identity,
                Ok(None) => {
                    if self
                        .disable_by_directory(&user, "no longer in the directory")
                        .await?
                    {
                        report.disabled.push(user.username.clone());
                    }
                    continue;
                }
                Err(DirectoryError::Unreachable(why)) => {
                    return Err(AuthError::DirectoryUnreachable(why));
                }
                Err(e) => {
                    tracing::warn!(user = %user.username, error = %e, "directory check failed");
                    continue;
                }
            };
            let decision = directory::decide(&self.config, &identity);
            match &decision.allowed {
                Err(why) => {
                    if self.disable_by_directory(&user, why).await? {
                        report.disabled.push(user.username.clone());
                    }
                }
                Ok(()) => {
                    let after = self.sync_account(&user, &identity, &decision).await?;
                    if user.disabled && !after.disabled {
                        report.enabled.push(user.username.clone());
                    }
                }
            }
        }
        Ok(report)
    }

    /// Runs `refresh_directory` every `every`, for as long as the server does.
    pub async fn refresh_directory_every(self, every: std::time::Duration) {
        // The first tick is now: at start the config's groups may have changed.
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match self.refresh_directory().await {
                Ok(r) if !r.disabled.is_empty() || !r.enabled.is_empty() => {
                    tracing::info!(checked = r.checked, disabled = ?r.disabled, enabled = ?r.enabled,
                        "directory check");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "directory check skipped"),
            }
        }
    }

    /// What a login of `username` would give them now, asked of the directory without their
    /// password (the admin's "test a login").
    pub async fn preview_login(&self, username: &str) -> Result<Option<Preview>, AuthError> {
        let Some(ldap) = &self.ldap else {
            return Err(AuthError::Directory(
                "no LDAP directory is configured ([auth.ldap])".into(),
            ));
        };
        let username = username.trim().to_lowercase();
        super::validate_username(&username)?;
        let Some(identity) = ldap.lookup(&username).await? else {
            return Ok(None);
        };
        let decision = directory::decide(&self.config, &identity);
        let name = username.clone();
        let account = self.db.call(move |c| users::by_name(c, &name)).await?;
        Ok(Some(Preview {
            identity,
            decision,
            account,
        }))
    }

    /// Why the directory disabled each account it disabled, by account id.
    pub async fn directory_disabled(
        &self,
    ) -> Result<std::collections::HashMap<i64, String>, AuthError> {
        Ok(self.db.call(|c| dq::disabled_reasons(c)).await?)
    }

    /// Link requests waiting for an admin.
    pub async fn link_requests(&self) -> Result<Vec<dq::LinkRequest>, AuthError> {
        Ok(self.db.call(|c| dq::link_requests(c)).await?)
    }

    /// The admin links the account named `username` to `source`, or dismisses the request.
    pub async fn answer_link(
        &self,
        username: &str,
        source: &str,
        link: bool,
    ) -> Result<(), AuthError> {
        let (name, src) = (username.to_string(), source.to_string());
        let found = self
            .db
            .call(move |c| match link {
                true => dq::link(c, &name, &src),
                false => dq::dismiss_link(c, &name, &src),
            })
            .await?;
        if !found {
            return Err(AuthError::NoSuchUser(username.to_string()));
        }
        if link {
            self.events.changed();
        }
        Ok(())
    }

    /// Brings every account's group budget in step with `[[groups]]` (run at start).
    pub async fn sync_group_budgets(&self) -> Result<(), AuthError> {
        let config = self.config.clone();
        self.db
            .call(move |c| {
                for user in users::list(c)? {
                    let budget = crate::groups::group_budget(
                        &config,
                        &user.username,
                        &user.directory_groups,
                    );
                    dq::set_group_budget(c, user.id, budget)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}

fn state_of<'a>(
    identity: &'a Identity,
    decision: &'a directory::Decision,
    group_budget: Option<f64>,
) -> DirectoryState<'a> {
    DirectoryState {
        external_id: &identity.external_id,
        display_name: &identity.display_name,
        email: &identity.email,
        groups: &decision.groups,
        admin: decision.admin,
        group_budget,
    }
}

/// "the lab directory (LDAP)" or the provider's name, for messages.
pub fn source_name(config: &crate::config::Config, source: &str) -> String {
    match source.strip_prefix("oidc:") {
        Some(id) => config
            .auth
            .oidc
            .iter()
            .find(|p| p.id == id)
            .map_or_else(|| source.to_string(), |p| p.name.clone()),
        None if source == "ldap" => "the lab directory (LDAP)".to_string(),
        None => "a local account".to_string(),
    }
}
