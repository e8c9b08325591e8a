//! Accounts from the lab's directory: made at the first login, kept in step at each login
//! and scheduled check, disabled when the directory no longer lets them in (sessions end,
//! tokens stop, notebooks stop), never taking over an account of another source.

use crate::db::directory::{self as dq, DirectoryState};
use crate::db::{lifecycle, sessions, users};
use crate::directory::{self, DirectoryError, Identity};

use super::{Accounts, AuthError, NewSession, User};

/// What a directory login would give someone, for the admin's "test a login".
#[derive(Debug, Clone)]
pub struct Preview {
    pub identity: Identity,
    pub decision: directory::Decision,
    /// The account as it is here, if there is one.
    pub account: Option<User>,
    /// Their policy as if they had just logged in.
    pub policy: crate::groups::Policy,
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
                let why = match &e {
                    DirectoryError::Unreachable(why) => why.clone(),
                    other => other.to_string(),
                };
                tracing::warn!(error = %why, "LDAP login could not be checked");
                self.db
                    .call(move |c| sessions::release(c, reservation))
                    .await?;
                // The login page is anonymous: the details are for the log.
                Err(match e {
                    DirectoryError::Refused(_) => AuthError::Directory(
                        "the lab directory cannot check logins right now; tell the lab's admin \
                         (Notebox's log says why)"
                            .into(),
                    ),
                    other => other.into(),
                })
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
        let request = dq::LinkRequest {
            username: identity.username.clone(),
            source: identity.source.clone(),
            external_id: identity.external_id.clone(),
            entry: identity.entry.clone(),
            display_name: identity.display_name.clone(),
            requested_at: 0,
        };
        let recorded = self.db.call(move |c| dq::request_link(c, &request)).await;
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
            // The account is tied to one directory entry (OIDC subject, LDAP entryUUID):
            // a name given to someone else later is not this account.
            Some(user) => {
                let id = user.id;
                let known = self.db.call(move |c| dq::external_id(c, id)).await?;
                if known.is_some_and(|k| k != identity.external_id) {
                    return Err(self.refuse_taken(&identity).await);
                }
                user
            }
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
        if let Some(user) = made {
            tracing::info!(user = %user.username, source = %user.source, "directory account made");
            return Ok(user);
        }
        // Made at the same moment by another login: theirs if it is the same entry.
        let (name, i) = (identity.username.clone(), identity.clone());
        let found = self
            .db
            .call(move |c| {
                let user = users::by_name(c, &name)?;
                let known = match &user {
                    Some(u) => dq::external_id(c, u.id)?,
                    None => None,
                };
                Ok(user.filter(|u| {
                    u.source == i.source && known.as_deref() == Some(i.external_id.as_str())
                }))
            })
            .await?;
        match found {
            Some(user) => Ok(user),
            None => Err(self.refuse_taken(identity).await),
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
        self.stop_what_groups_no_longer_allow(user, &updated)
            .await?;
        Ok(updated)
    }

    /// After a member's groups changed: a group folder their notebooks mount is no longer
    /// theirs (a mount cannot leave a running container), or a machine type no longer
    /// allowed → those notebooks stop.
    async fn stop_what_groups_no_longer_allow(
        &self,
        before: &User,
        after: &User,
    ) -> Result<(), AuthError> {
        let config = &self.config;
        let had = crate::groups::folder_mounts(config, before);
        let has = crate::groups::folder_mounts(config, after);
        let (why, keep) = if let Some(lost) = had.iter().find(|m| !has.contains(m)) {
            let why = format!(
                "Stopping: no longer in group {}, whose folder it mounted",
                lost.group
            );
            (why, None)
        } else {
            let allowed = crate::groups::policy(config, after).machines;
            let was = crate::groups::policy(config, before).machines;
            match allowed {
                Some(keep) if was.as_ref() != Some(&keep) => (
                    "Stopping: its machine type is no longer allowed by your groups".to_string(),
                    Some(keep),
                ),
                _ => return Ok(()),
            }
        };
        let id = after.id;
        let stopped = self
            .db
            .call(move |c| lifecycle::request_stop_of_owner(c, id, &why, keep.as_deref()))
            .await?;
        if stopped > 0 {
            tracing::warn!(user = %after.username, stopped, "groups changed: notebooks stopped");
            self.events.changed(); // wakes the reconciler
        }
        Ok(())
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
            self.events.changed(); // proxies look again; the reconciler stops the notebooks
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
        // Everyone is looked up first; only then is anything changed.
        let mut found = Vec::with_capacity(accounts.len());
        for (user, known) in accounts {
            let identity = match ldap.lookup(&user.username).await {
                Ok(Some(identity)) if known.as_ref().is_none_or(|k| *k == identity.external_id) => {
                    Some(identity)
                }
                Ok(_) => None, // gone, or the name is someone else's entry now
                Err(DirectoryError::Unreachable(why)) => {
                    return Err(AuthError::DirectoryUnreachable(why))
                }
                Err(e) => return Err(e.into()), // the settings: the same for everyone
            };
            found.push((user, identity));
        }
        let gone = found.iter().filter(|(_, i)| i.is_none()).count();
        if gone > 2 && gone * 2 > found.len() {
            // A base renamed, a replica catching up: not half the lab leaving at once.
            return Err(AuthError::Directory(format!(
                "the directory did not find {gone} of {} accounts; nobody was disabled (check \
                 [auth.ldap] user_base and user_filter)",
                found.len()
            )));
        }
        let mut report = RefreshReport::default();
        for (user, identity) in found {
            report.checked += 1;
            let Some(identity) = identity else {
                if self
                    .disable_by_directory(&user, "no longer in the directory")
                    .await?
                {
                    report.disabled.push(user.username.clone());
                }
                continue;
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
        let mut as_user = account.clone().unwrap_or_else(|| User {
            id: 0,
            username: identity.username.clone(),
            is_admin: false,
            disabled: false,
            max_gpus: None,
            created_at: 0,
            source: identity.source.clone(),
            display_name: identity.display_name.clone(),
            directory_groups: Vec::new(),
        });
        as_user.directory_groups = decision.groups.clone();
        let policy = crate::groups::policy(&self.config, &as_user);
        Ok(Some(Preview {
            identity,
            decision,
            account,
            policy,
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

    /// The admin links the account named `username` to the directory entry `external_id`
    /// of `source` (the request they saw), or dismisses the request.
    pub async fn answer_link(
        &self,
        username: &str,
        source: &str,
        external_id: &str,
        link: bool,
    ) -> Result<(), AuthError> {
        let (name, src, ext) = (
            username.to_string(),
            source.to_string(),
            external_id.to_string(),
        );
        let found = self
            .db
            .call(move |c| match link {
                true => dq::link(c, &name, &src, &ext),
                false => dq::dismiss_link(c, &name, &src),
            })
            .await?;
        if !found {
            return Err(AuthError::Directory(format!(
                "the request for '{username}' changed or went since the page was shown (another \
                 sign-in under that name, or another admin answered it); look at it again"
            )));
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
