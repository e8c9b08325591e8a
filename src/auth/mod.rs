//! Accounts, logins, sessions, CSRF and personal access tokens. Knows nothing of HTTP:
//! the web layer turns cookies and headers into the strings these functions take.

pub mod directory;
pub mod entry;
pub mod passwords;
pub mod secrets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::db::{self, grants, sessions, tokens, users, Db, DbError};

pub use db::tokens::TokenInfo;
pub use db::users::User;

/// Failed logins are counted over this window.
pub const THROTTLE_WINDOW_SECS: i64 = 15 * 60;
/// Password checks with the directory in flight at once; more get 429 at once.
const DIRECTORY_CHECKS: usize = 16;
/// Token strings start with this, so they are easy to recognise (and to scan for in leaks).
pub const TOKEN_PREFIX: &str = "nbx_";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("this account is disabled; ask an admin to enable it")]
    Disabled,
    #[error("too many failed logins {scope}; try again in {}", human_wait(*.retry_after_secs))]
    Throttled {
        scope: &'static str,
        retry_after_secs: u64,
    },
    #[error("Notebox is busy checking other logins; try again in a second")]
    Busy,
    #[error("{0}")]
    InvalidUsername(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("{0}")]
    InvalidTokenName(String),
    #[error("your current password is not right")]
    WrongCurrentPassword,
    #[error("the username '{0}' is taken")]
    UsernameTaken(String),
    #[error("no user named '{0}'")]
    NoSuchUser(String),
    #[error("no such token")]
    NoSuchToken,
    #[error("that would leave no enabled admin; make someone else an admin first")]
    LastAdmin,
    #[error("{0}")]
    DirectoryUnreachable(String),
    /// The directory knows them, but its groups do not let them in.
    #[error("{0}")]
    NotAllowed(String),
    #[error(
        "an account named '{username}' already exists here; a Notebox admin must link it to \
         {provider} before you can sign in this way"
    )]
    NameTaken { username: String, provider: String },
    /// The directory answered, but not as it should (settings, a refused token).
    #[error("{0}")]
    Directory(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

fn human_wait(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} seconds"),
        60..=119 => "a minute".to_string(),
        _ => format!("{} minutes", secs.div_ceil(60)),
    }
}

/// A successful login: the cookie value (shown to the browser once, stored hashed).
pub struct NewSession {
    pub cookie_value: String,
    pub user: User,
}

/// Tells whoever holds credentials in memory (the proxy's caches, its open WebSockets)
/// that logins, passwords, tokens or accounts changed. Cheap to clone.
#[derive(Clone)]
pub struct CredentialEvents {
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for CredentialEvents {
    fn default() -> Self {
        CredentialEvents {
            generation: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl CredentialEvents {
    /// Changes with every credential change; a cache entry from an older generation is void.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
    pub fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Rules and storage for accounts; built from the config, cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    db: Db,
    session_lifetime: Duration,
    limits: Arc<sessions::FailureLimits>,
    /// Password checks in flight (argon2 takes 19 MiB each): bounded, the rest refused.
    password_checks: Arc<tokio::sync::Semaphore>,
    events: CredentialEvents,
    /// Codes that let a member into a notebook's own origin (30 s, single use).
    entry_codes: Arc<entry::EntryCodes>,
    /// Groups and directory rules.
    config: Arc<Config>,
    /// `[auth.ldap]`, when configured.
    ldap: Option<crate::directory::ldap::LdapDirectory>,
    /// Directory checks in flight (each waits on the directory, up to its timeout).
    directory_checks: Arc<tokio::sync::Semaphore>,
}

pub fn validate_username(name: &str) -> Result<(), AuthError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > 32 || !ok_chars || !first_ok {
        return Err(AuthError::InvalidUsername(format!(
            "'{name}' is not a valid username: use 1 to 32 lowercase letters, digits, '.', '-' \
             or '_', starting with a letter or digit"
        )));
    }
    Ok(())
}

pub fn validate_password(password: &str) -> Result<(), AuthError> {
    let n = password.chars().count();
    if n < 8 {
        return Err(AuthError::WeakPassword(
            "the password is too short: use at least 8 characters".into(),
        ));
    }
    if n > 1024 {
        return Err(AuthError::WeakPassword(
            "the password is too long: use at most 1024 characters".into(),
        ));
    }
    Ok(())
}

/// How many password checks may run at once by default: two per core.
fn default_password_checks() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

impl Accounts {
    pub fn new(db: Db, config: &Config) -> Accounts {
        let checks = match config.auth.max_concurrent_logins {
            0 => default_password_checks(),
            n => n as usize,
        };
        Accounts {
            db,
            session_lifetime: config.auth.session_lifetime,
            limits: Arc::new(sessions::FailureLimits {
                account_from_address: i64::from(config.auth.max_failures_per_account),
                account: i64::from(config.auth.max_failures_per_account_total),
                address: i64::from(config.auth.max_failures_per_address),
            }),
            password_checks: Arc::new(tokio::sync::Semaphore::new(checks)),
            events: CredentialEvents::default(),
            entry_codes: Arc::new(entry::EntryCodes::default()),
            config: Arc::new(config.clone()),
            ldap: None,
            directory_checks: Arc::new(tokio::sync::Semaphore::new(DIRECTORY_CHECKS)),
        }
    }

    /// Logins by password are also checked with this LDAP directory.
    pub fn with_ldap(mut self, ldap: Option<crate::directory::ldap::LdapDirectory>) -> Accounts {
        self.ldap = ldap;
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn events(&self) -> &CredentialEvents {
        &self.events
    }

    /// Hashes a new password, waiting for a free slot (callers are logged in).
    async fn hash_password(&self, password: String) -> Result<String, AuthError> {
        let _slot = self
            .password_checks
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || passwords::hash_password(&password))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?
            .map_err(AuthError::Internal)
    }

    /// Checks a password and opens a session. Throttled per account and address, per
    /// account and per address; the attempt is counted before the password is checked, and
    /// at most a few checks run at once (the rest are refused at once, not queued).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        address: &str,
    ) -> Result<NewSession, AuthError> {
        let username = username.trim().to_lowercase();
        if username.len() > 64 || password.len() > 4096 {
            return Err(AuthError::InvalidCredentials);
        }
        let slot = self
            .password_checks
            .clone()
            .try_acquire_owned()
            .map_err(|_| AuthError::Busy)?;
        let address = address.to_string();
        let since = crate::clock::now() - THROTTLE_WINDOW_SECS;
        let (name, addr, limits) = (username.clone(), address.clone(), self.limits.clone());
        let (reservation, creds) = self
            .db
            .call(move |c| {
                let reservation = sessions::reserve_attempt(c, &name, &addr, since, &limits)?;
                let creds = match reservation {
                    sessions::Reservation::Reserved(_) => users::credentials(c, &name)?,
                    sessions::Reservation::Throttled { .. } => None,
                };
                Ok((reservation, creds))
            })
            .await?;
        let reservation = match reservation {
            sessions::Reservation::Reserved(id) => id,
            sessions::Reservation::Throttled { scope, oldest } => {
                let until = oldest.unwrap_or_else(crate::clock::now) + THROTTLE_WINDOW_SECS;
                return Err(AuthError::Throttled {
                    scope,
                    retry_after_secs: (until - crate::clock::now()).max(1) as u64,
                });
            }
        };
        let ldap = self.ldap.is_some();
        // A failed check leaves the reservation as a failure. The directory's checks wait
        // on the network, not the CPU: they give the argon2 slot back and take one of
        // their own (a directory that hangs cannot starve local logins).
        let user = match creds {
            Some((user, hash)) if !user.from_directory() => {
                if !self.check_password(password, Some(hash)).await? {
                    drop(slot);
                    self.claimed_by_directory(&username, password).await?;
                    return Err(AuthError::InvalidCredentials);
                }
                user
            }
            // The same argon2 work as a local account's check first (the time of an answer
            // must not tell which local accounts exist), then the directory.
            Some((user, _)) if ldap && user.source == crate::directory::ldap::SOURCE => {
                self.check_password(password, None).await?;
                drop(slot);
                return self
                    .ldap_login(&username, password, &address, reservation)
                    .await;
            }
            None if ldap => {
                self.check_password(password, None).await?;
                drop(slot);
                return self
                    .ldap_login(&username, password, &address, reservation)
                    .await;
            }
            _ => {
                self.check_password(password, None).await?;
                return Err(AuthError::InvalidCredentials);
            }
        };
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        self.open_session(user, Some((username, address))).await
    }

    /// Checks a password against a hash (or a dummy hash, to take the same time).
    async fn check_password(
        &self,
        password: &str,
        hash: Option<String>,
    ) -> Result<bool, AuthError> {
        let password = password.to_string();
        tokio::task::spawn_blocking(move || match hash {
            Some(hash) => passwords::verify_password(&password, &hash),
            None => {
                passwords::verify_dummy(&password);
                false
            }
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Opens a session for `user`; `clear` (username, address) forgets that pair's failed
    /// logins.
    pub(crate) async fn open_session(
        &self,
        user: User,
        clear: Option<(String, String)>,
    ) -> Result<NewSession, AuthError> {
        let cookie_value = secrets::random_secret(32);
        let id_hash = secrets::hash_secret(&cookie_value);
        let csrf = secrets::random_secret(32);
        let expires_at = crate::clock::now() + self.session_lifetime.as_secs() as i64;
        let user_id = user.id;
        self.db
            .call(move |c| {
                if let Some((name, address)) = clear {
                    sessions::clear_failures(c, &name, &address)?;
                }
                sessions::insert(c, &id_hash, user_id, &csrf, expires_at)
            })
            .await?;
        Ok(NewSession { cookie_value, user })
    }

    /// The session's user and its CSRF token, if the session is live.
    pub async fn session_user(
        &self,
        cookie_value: &str,
    ) -> Result<Option<(User, String)>, AuthError> {
        let id_hash = secrets::hash_secret(cookie_value);
        Ok(self.db.call(move |c| sessions::lookup(c, &id_hash)).await?)
    }

    pub async fn logout(&self, cookie_value: &str) -> Result<(), AuthError> {
        let id_hash = secrets::hash_secret(cookie_value);
        self.db.call(move |c| sessions::delete(c, &id_hash)).await?;
        self.events.changed();
        Ok(())
    }

    /// A single-use code that lets the member of `session_cookie` into `notebook_id`'s own
    /// origin at `path` (the caller checked they own it).
    pub fn issue_entry(
        &self,
        user_id: i64,
        session_cookie: &str,
        notebook_id: &str,
        path: &str,
    ) -> String {
        self.entry_codes.issue(entry::Entry {
            user_id,
            session_hash: secrets::hash_secret(session_cookie),
            notebook_id: notebook_id.to_string(),
            path: path.to_string(),
        })
    }

    /// Exchanges an entry code, brought to `notebook_id`'s origin, for the value of that
    /// notebook's cookie and where to go. `None` when the code is unknown, used, expired,
    /// for another notebook, or its session ended meanwhile.
    pub async fn enter(
        &self,
        code: &str,
        notebook_id: &str,
    ) -> Result<Option<(String, entry::Entry)>, AuthError> {
        let Ok(entry) = self.entry_codes.redeem(code, notebook_id) else {
            return Ok(None);
        };
        let cookie_value = secrets::random_secret(32);
        let id_hash = secrets::hash_secret(&cookie_value);
        let e = entry.clone();
        let granted = self
            .db
            .call(move |c| grants::insert(c, &id_hash, &e.session_hash, &e.notebook_id, e.user_id))
            .await?;
        Ok(granted.then_some((cookie_value, entry)))
    }

    /// The user behind a notebook's own cookie, for that notebook only.
    pub async fn grant_user(
        &self,
        cookie_value: &str,
        notebook_id: &str,
    ) -> Result<Option<User>, AuthError> {
        if cookie_value.is_empty() || cookie_value.len() > 128 {
            return Ok(None);
        }
        let id_hash = secrets::hash_secret(cookie_value);
        let notebook_id = notebook_id.to_string();
        Ok(self
            .db
            .call(move |c| grants::lookup(c, &id_hash, &notebook_id))
            .await?)
    }

    /// The user a personal access token belongs to. Its last use is recorded in the
    /// background, off the request's path.
    pub async fn token_user(&self, token: &str) -> Result<Option<User>, AuthError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 200 {
            return Ok(None);
        }
        let hash = secrets::hash_secret(token);
        let Some((user, touch)) = self.db.call(move |c| tokens::lookup(c, &hash)).await? else {
            return Ok(None);
        };
        if let Some(token_id) = touch {
            let db = self.db.clone();
            tokio::spawn(async move {
                if let Err(e) = db.call(move |c| tokens::touch(c, token_id)).await {
                    tracing::debug!(error = %e, "cannot record token use");
                }
            });
        }
        Ok(Some(user))
    }

    /// Creates a token; the returned string is the only time it is seen.
    pub async fn create_token(
        &self,
        user_id: i64,
        name: &str,
    ) -> Result<(String, TokenInfo), AuthError> {
        let name = name.trim().to_string();
        let name = if name.is_empty() {
            "token".to_string()
        } else {
            name
        };
        if name.chars().count() > 64 {
            return Err(AuthError::InvalidTokenName(
                "the token name is too long: use at most 64 characters".into(),
            ));
        }
        let token = format!("{TOKEN_PREFIX}{}", secrets::random_secret(32));
        let prefix: String = token.chars().take(TOKEN_PREFIX.len() + 6).collect();
        let hash = secrets::hash_secret(&token);
        let info = self
            .db
            .call(move |c| {
                let id = tokens::insert(c, user_id, &name, &hash, &prefix)?;
                Ok(tokens::list_for_user(c, user_id)?
                    .into_iter()
                    .find(|t| t.id == id))
            })
            .await?
            .ok_or_else(|| AuthError::Internal("token vanished after insert".into()))?;
        Ok((token, info))
    }

    pub async fn list_tokens(&self, user_id: i64) -> Result<Vec<TokenInfo>, AuthError> {
        Ok(self
            .db
            .call(move |c| tokens::list_for_user(c, user_id))
            .await?)
    }

    pub async fn revoke_token(&self, user_id: i64, token_id: i64) -> Result<(), AuthError> {
        let found = self
            .db
            .call(move |c| tokens::delete(c, user_id, token_id))
            .await?;
        self.events.changed();
        match found {
            true => Ok(()),
            false => Err(AuthError::NoSuchToken),
        }
    }

    pub async fn add_user(
        &self,
        username: &str,
        password: &str,
        is_admin: bool,
    ) -> Result<User, AuthError> {
        let username = username.trim().to_string();
        validate_username(&username)?;
        validate_password(password)?;
        let hash = self.hash_password(password.to_string()).await?;
        let name = username.clone();
        self.db
            .call(move |c| users::insert(c, &name, &hash, is_admin))
            .await?
            .ok_or(AuthError::UsernameTaken(username))
    }

    pub async fn user_by_name(&self, username: &str) -> Result<User, AuthError> {
        let name = username.trim().to_lowercase();
        let found = {
            let name = name.clone();
            self.db.call(move |c| users::by_name(c, &name)).await?
        };
        found.ok_or(AuthError::NoSuchUser(name))
    }

    pub async fn user_by_id(&self, id: i64) -> Result<User, AuthError> {
        self.db
            .call(move |c| users::by_id(c, id))
            .await?
            .ok_or_else(|| AuthError::NoSuchUser(format!("#{id}")))
    }

    pub async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        Ok(self.db.call(|c| users::list(c)).await?)
    }

    /// Sets a new password and ends the user's sessions (except `keep_session`, the cookie of
    /// the person changing their own password).
    pub async fn set_password(
        &self,
        user_id: i64,
        password: &str,
        keep_session: Option<&str>,
    ) -> Result<(), AuthError> {
        validate_password(password)?;
        let hash = self.hash_password(password.to_string()).await?;
        let keep = keep_session.map(secrets::hash_secret);
        let found = self
            .db
            .call(move |c| {
                crate::db::accounts::replace_password(c, user_id, &hash, keep.as_deref())
            })
            .await?;
        self.events.changed();
        if !found {
            return Err(AuthError::NoSuchUser(format!("#{user_id}")));
        }
        Ok(())
    }

    /// A member changes their own password: the current one must be right. Other
    /// sessions end; `keep_session` (the member's own cookie) stays.
    pub async fn change_own_password(
        &self,
        user: &User,
        current: &str,
        new: &str,
        keep_session: &str,
    ) -> Result<(), AuthError> {
        let name = user.username.clone();
        let creds = self.db.call(move |c| users::credentials(c, &name)).await?;
        let current = current.to_string();
        let _slot = self
            .password_checks
            .clone()
            .try_acquire_owned()
            .map_err(|_| AuthError::Busy)?;
        let ok = tokio::task::spawn_blocking(move || {
            creds.is_some_and(|(_, hash)| passwords::verify_password(&current, &hash))
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?;
        if !ok {
            return Err(AuthError::WrongCurrentPassword);
        }
        drop(_slot);
        self.set_password(user.id, new, Some(keep_session)).await
    }

    /// Grants or removes admin; refuses to remove the last enabled admin.
    pub async fn set_admin(&self, user_id: i64, is_admin: bool) -> Result<(), AuthError> {
        let change = self
            .db
            .call(move |c| crate::db::accounts::change_admin(c, user_id, is_admin))
            .await?;
        self.account_changed(user_id, change)
    }

    /// Disables (ending their sessions) or re-enables an account.
    pub async fn set_disabled(&self, user_id: i64, disabled: bool) -> Result<(), AuthError> {
        let change = self
            .db
            .call(move |c| crate::db::accounts::change_disabled(c, user_id, disabled))
            .await?;
        self.account_changed(user_id, change)
    }

    /// Polls the credentials epoch that other processes (the CLI) bump, and passes a
    /// change on to this process's listeners. Runs for as long as the server does.
    pub async fn watch_other_processes(self, every: Duration) {
        let mut seen = None;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match self.db.call(|c| sessions::credentials_epoch(c)).await {
                Ok(epoch) => {
                    if seen.is_some_and(|s| s != epoch) {
                        self.events.changed();
                    }
                    seen = Some(epoch);
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the credentials epoch"),
            }
        }
    }

    pub async fn set_max_gpus(&self, user_id: i64, max_gpus: Option<i64>) -> Result<(), AuthError> {
        match self
            .db
            .call(move |c| users::set_max_gpus(c, user_id, max_gpus))
            .await?
        {
            true => Ok(()),
            false => Err(AuthError::NoSuchUser(format!("#{user_id}"))),
        }
    }

    /// Tells this process's listeners of a change to an account, or says why it failed.
    fn account_changed(
        &self,
        user_id: i64,
        change: crate::db::accounts::AccountChange,
    ) -> Result<(), AuthError> {
        match change {
            crate::db::accounts::AccountChange::Done => {
                self.events.changed();
                Ok(())
            }
            crate::db::accounts::AccountChange::NoSuchUser => {
                Err(AuthError::NoSuchUser(format!("#{user_id}")))
            }
            crate::db::accounts::AccountChange::LastAdmin => Err(AuthError::LastAdmin),
        }
    }

    /// Deletes expired sessions and old login failures.
    pub async fn prune(&self) -> Result<(), AuthError> {
        self.db
            .call(|c| {
                sessions::delete_expired(c)?;
                sessions::delete_failures_before(c, crate::clock::now() - THROTTLE_WINDOW_SECS)?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}

/// File that holds the first admin's password until it is changed.
pub fn initial_password_path(data_dir: &Path) -> PathBuf {
    data_dir.join("initial-admin-password")
}

/// On the first start with no users, creates `admin` with a random password written to
/// `{data_dir}/initial-admin-password` (mode 0600). Returns that path when it did.
/// Blocking (argon2 and SQLite): run before serving or on a blocking thread.
pub fn ensure_initial_admin(db: &Db, data_dir: &Path) -> Result<Option<PathBuf>, AuthError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    if db.with_conn(|c| users::count(c))? > 0 {
        return Ok(None);
    }
    let password = secrets::random_password();
    let hash = passwords::hash_password(&password).map_err(AuthError::Internal)?;
    let path = initial_password_path(data_dir);
    // Write the file first: an admin whose password nobody knows would lock everyone out.
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| AuthError::Internal(format!("cannot write {}: {e}", path.display())))?;
    writeln!(file, "{password}")
        .and_then(|_| file.sync_all())
        .map_err(|e| AuthError::Internal(format!("cannot write {}: {e}", path.display())))?;
    db.with_conn(|c| users::insert(c, "admin", &hash, true))?;
    Ok(Some(path))
}

/// Once the admin has chosen a password, the generated one is no longer needed on disk.
pub fn forget_initial_password(data_dir: &Path, username: &str) {
    if username == "admin" {
        let _ = std::fs::remove_file(initial_password_path(data_dir));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> (tempfile::TempDir, Accounts) {
        let (dir, db) = crate::db::test_db();
        (dir, Accounts::new(db, &Config::default()))
    }

    #[tokio::test]
    async fn login_throttles_after_five_failures() {
        let (_d, a) = accounts();
        a.add_user("alice", "password-1", false).await.expect("add");
        for _ in 0..5 {
            assert!(matches!(
                a.login("alice", "nope-nope", "1.2.3.4").await,
                Err(AuthError::InvalidCredentials)
            ));
        }
        match a.login("alice", "password-1", "1.2.3.4").await {
            Err(AuthError::Throttled {
                retry_after_secs, ..
            }) => assert!(retry_after_secs > 800),
            other => panic!("expected throttling, got {:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn sessions_and_tokens_round_trip() {
        let (_d, a) = accounts();
        let u = a.add_user("bob", "password-2", false).await.expect("add");
        let s = a.login("BOB", "password-2", "::1").await.expect("login");
        let (found, csrf) = a
            .session_user(&s.cookie_value)
            .await
            .expect("q")
            .expect("live");
        assert_eq!(found.username, "bob");
        assert!(csrf.len() >= 43);
        a.logout(&s.cookie_value).await.expect("logout");
        assert!(a.session_user(&s.cookie_value).await.expect("q").is_none());

        let (token, info) = a.create_token(u.id, "ci").await.expect("token");
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(
            a.token_user(&token).await.expect("q").expect("user").id,
            u.id
        );
        a.revoke_token(u.id, info.id).await.expect("revoke");
        assert!(a.token_user(&token).await.expect("q").is_none());
    }

    #[tokio::test]
    async fn last_admin_is_kept_and_bad_names_refused() {
        let (_d, a) = accounts();
        let admin = a.add_user("root", "password-3", true).await.expect("add");
        assert!(matches!(
            a.set_admin(admin.id, false).await,
            Err(AuthError::LastAdmin)
        ));
        assert!(matches!(
            a.set_disabled(admin.id, true).await,
            Err(AuthError::LastAdmin)
        ));
        assert!(a.user_by_id(admin.id).await.expect("u").is_admin);
        assert!(matches!(
            a.add_user("Bad Name", "password-3", false).await,
            Err(AuthError::InvalidUsername(_))
        ));
        assert!(matches!(
            a.add_user("ok", "short", false).await,
            Err(AuthError::WeakPassword(_))
        ));
        assert!(matches!(
            a.add_user("root", "password-3", false).await,
            Err(AuthError::UsernameTaken(_))
        ));
    }
}
