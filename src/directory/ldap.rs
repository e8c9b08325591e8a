//! LDAP login: search-then-bind with a service account (or a direct bind from a DN
//! template), the member's attributes and groups, and a lookup without their password
//! for the scheduled re-check. The password is checked by the directory, never stored.
//!
//! A username reaches a filter or a DN only after `validate_username` (lowercase ASCII)
//! and escaping; the entry found must carry exactly that name (directories fold case,
//! width and spaces when matching, so "ALICE" or a full-width "ａｌｉｃｅ" would otherwise
//! log in as alice).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};

use super::{DirectoryError, Identity};
use crate::config::LdapConfig;

/// The account source of LDAP accounts.
pub const SOURCE: &str = "ldap";

/// How long the login page keeps saying the directory cannot be reached after a failure.
const HEALTH_MEMORY: Duration = Duration::from_secs(300);

/// LDAP result code for a wrong password (or no such DN).
const INVALID_CREDENTIALS: u32 = 49;

/// The configured directory; cheap to clone.
#[derive(Clone)]
pub struct LdapDirectory {
    config: Arc<LdapConfig>,
    tls: Arc<rustls::ClientConfig>,
    bind_password: Arc<String>,
    /// The last failure to reach the directory and when, for the login page.
    last_failure: Arc<Mutex<Option<(Instant, String)>>>,
}

impl LdapDirectory {
    pub fn new(config: &LdapConfig) -> Result<LdapDirectory, String> {
        let tls = super::tls::client_config(&config.ca_file)?;
        let bind_password = if config.bind_dn.is_empty() {
            String::new()
        } else {
            crate::config::read_secret(&config.bind_password_file)?
        };
        Ok(LdapDirectory {
            config: Arc::new(config.clone()),
            tls,
            bind_password: Arc::new(bind_password),
            last_failure: Arc::new(Mutex::new(None)),
        })
    }

    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    /// Why the directory could not be reached lately (for the login page), if it could not.
    pub fn recent_failure(&self) -> Option<String> {
        let last = self.last_failure.lock().ok()?;
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < HEALTH_MEMORY)
            .map(|(_, why)| why.clone())
    }

    fn note(&self, result: &Result<impl Sized, DirectoryError>) {
        let Ok(mut last) = self.last_failure.lock() else {
            return;
        };
        match result {
            Err(DirectoryError::Unreachable(why)) => *last = Some((Instant::now(), why.clone())),
            _ => *last = None,
        }
    }

    /// Checks `username`'s password with the directory; their identity when it is right.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Identity, DirectoryError> {
        // An empty password would be an unauthenticated bind, which "succeeds".
        if password.is_empty() || crate::auth::validate_username(username).is_err() {
            return Err(DirectoryError::InvalidCredentials);
        }
        let result = self.authenticate_now(username, password).await;
        self.note(&result);
        result
    }

    async fn authenticate_now(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Identity, DirectoryError> {
        let mut search = self.connect().await?;
        self.bind_service(&mut search).await?;
        let mut own = self.connect().await?;
        let identity = match self.template_dn(username) {
            // Direct bind on a connection of its own; the entry (through `user_filter`)
            // and groups are read by the service account when there is one (as the
            // scheduled check reads them), else by the member's own bind.
            Some(dn) => {
                self.bind(&mut own, &dn, password).await?;
                let reader = if self.config.bind_dn.is_empty() {
                    &mut own
                } else {
                    &mut search
                };
                match self.read_entry(reader, &dn, username).await? {
                    Some(entry) => self.identity(reader, username, entry).await,
                    None => Err(DirectoryError::InvalidCredentials),
                }
            }
            None => {
                let entry = self
                    .find_user(&mut search, username)
                    .await?
                    .ok_or(DirectoryError::InvalidCredentials)?;
                self.bind(&mut own, &entry.dn, password).await?;
                self.identity(&mut search, username, entry).await
            }
        };
        let _ = own.unbind().await;
        let _ = search.unbind().await;
        identity
    }

    /// The member as the directory has them now, without their password; `Ok(None)` when
    /// the directory has no such member (any more).
    pub async fn lookup(&self, username: &str) -> Result<Option<Identity>, DirectoryError> {
        if crate::auth::validate_username(username).is_err() {
            return Ok(None);
        }
        let result = self.lookup_now(username).await;
        self.note(&result);
        result
    }

    async fn lookup_now(&self, username: &str) -> Result<Option<Identity>, DirectoryError> {
        let template = self.template_dn(username);
        if template.is_some() && self.config.bind_dn.is_empty() {
            // Anonymously, an entry hidden by the directory's rules would look gone.
            return Err(DirectoryError::Refused(
                "with bind_dn_template, members can be looked up only with a service account \
                 (auth.ldap.bind_dn)"
                    .into(),
            ));
        }
        let mut search = self.connect().await?;
        self.bind_service(&mut search).await?;
        let entry = match template {
            Some(dn) => self.read_entry(&mut search, &dn, username).await?,
            None => self.find_user(&mut search, username).await?,
        };
        let identity = match entry {
            Some(entry) => Some(self.identity(&mut search, username, entry).await?),
            None => None,
        };
        let _ = search.unbind().await;
        Ok(identity)
    }

    /// Connects and binds the service account: what `notebox doctor` checks.
    pub async fn check(&self) -> Result<(), DirectoryError> {
        let result = async {
            let mut ldap = self.connect().await?;
            self.bind_service(&mut ldap).await?;
            let _ = ldap.unbind().await;
            Ok(())
        }
        .await;
        self.note(&result);
        result
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let c = &self.config;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(c.timeout)
            .set_starttls(c.starttls)
            .set_config(self.tls.clone());
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &c.url)
            .await
            .map_err(|e| DirectoryError::Unreachable(format!("{}: {e}", c.url)))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    async fn bind_service(&self, ldap: &mut Ldap) -> Result<(), DirectoryError> {
        if self.config.bind_dn.is_empty() {
            return Ok(()); // anonymous search
        }
        self.bind(
            ldap,
            &self.config.bind_dn.clone(),
            &self.bind_password.clone(),
        )
        .await
        .map_err(|e| match e {
            DirectoryError::InvalidCredentials => DirectoryError::Refused(
                "the directory refused the service account (auth.ldap.bind_dn and its \
                     password file)"
                    .into(),
            ),
            other => other,
        })
    }

    async fn bind(&self, ldap: &mut Ldap, dn: &str, password: &str) -> Result<(), DirectoryError> {
        if password.is_empty() {
            return Err(DirectoryError::InvalidCredentials);
        }
        let result = ldap
            .with_timeout(self.config.timeout)
            .simple_bind(dn, password)
            .await
            .map_err(|e| self.classify(e))?;
        match result.rc {
            0 => Ok(()),
            INVALID_CREDENTIALS => Err(DirectoryError::InvalidCredentials),
            _ => Err(DirectoryError::Refused(format!(
                "the directory refused the bind: {} ({})",
                result.text, result.rc
            ))),
        }
    }

    fn classify(&self, e: LdapError) -> DirectoryError {
        match e {
            LdapError::LdapResult { result } if result.rc == INVALID_CREDENTIALS => {
                DirectoryError::InvalidCredentials
            }
            LdapError::LdapResult { result } => DirectoryError::Refused(format!(
                "the directory answered {} ({})",
                result.text, result.rc
            )),
            other => DirectoryError::Unreachable(format!("{}: {other}", self.config.url)),
        }
    }

    fn template_dn(&self, username: &str) -> Option<String> {
        let template = &self.config.bind_dn_template;
        (!template.is_empty()).then(|| template.replace("{username}", &ldap3::dn_escape(username)))
    }

    fn attributes(&self) -> Vec<String> {
        let c = &self.config;
        let mut attrs = vec![
            c.username_attribute.clone(),
            c.display_name_attribute.clone(),
            c.email_attribute.clone(),
        ];
        if c.group_base.is_empty() {
            attrs.push("memberOf".into());
        }
        // A stable id that outlives a rename (OpenLDAP, Active Directory).
        attrs.push("entryUUID".into());
        attrs.push("objectGUID".into());
        attrs
    }

    /// The entries found; `None` when the base does not exist (LDAP result 32).
    async fn search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<String>,
    ) -> Result<Option<Vec<SearchEntry>>, DirectoryError> {
        let result = ldap
            .with_timeout(self.config.timeout)
            .search(base, scope, filter, attrs)
            .await
            .map_err(|e| self.classify(e))?;
        if result.1.rc == 32 {
            return Ok(None);
        }
        let (entries, _) = result.success().map_err(|e| self.classify(e))?;
        Ok(Some(
            entries.into_iter().map(SearchEntry::construct).collect(),
        ))
    }

    /// A search under a configured base, which must exist: a missing base is the
    /// settings' fault (or a replica's), never "nobody is there".
    async fn search_under(
        &self,
        ldap: &mut Ldap,
        base: &str,
        filter: &str,
        attrs: Vec<String>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        self.search(ldap, base, Scope::Subtree, filter, attrs)
            .await?
            .ok_or_else(|| {
                DirectoryError::Refused(format!(
                    "the directory has no entry {base} (check the base DNs in [auth.ldap])"
                ))
            })
    }

    fn user_filter(&self, username: &str) -> String {
        self.config
            .user_filter
            .replace("{username}", &ldap3::ldap_escape(username))
    }

    async fn find_user(
        &self,
        ldap: &mut Ldap,
        username: &str,
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        let filter = self.user_filter(username);
        let base = self.config.user_base.clone();
        let mut found = self
            .search_under(ldap, &base, &filter, self.attributes())
            .await?;
        // Two entries for one name: refuse rather than pick one.
        if found.len() != 1 {
            return Ok(None);
        }
        Ok(found.pop())
    }

    /// The entry at `dn` if `user_filter` lets it in (a direct bind's entry).
    async fn read_entry(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        username: &str,
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        let filter = self.user_filter(username);
        let found = self
            .search(ldap, dn, Scope::Base, &filter, self.attributes())
            .await?;
        Ok(found.and_then(|mut f| f.pop()))
    }

    /// The identity in `entry`, which must carry `username` (ASCII case aside: "Alice" in
    /// the directory is alice here; no other folding).
    async fn identity(
        &self,
        ldap: &mut Ldap,
        username: &str,
        entry: SearchEntry,
    ) -> Result<Identity, DirectoryError> {
        let c = &self.config;
        let first = |attr: &str| {
            entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(attr))
                .and_then(|(_, v)| v.first().cloned())
                .unwrap_or_default()
        };
        let named = entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&c.username_attribute))
            .is_some_and(|(_, values)| values.iter().any(|v| v.eq_ignore_ascii_case(username)));
        if !named {
            return Err(DirectoryError::InvalidCredentials);
        }
        let groups = if c.group_base.is_empty() {
            entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("memberOf"))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        } else {
            let filter = c
                .group_filter
                .replace("{dn}", &ldap3::ldap_escape(&entry.dn))
                .replace("{username}", &ldap3::ldap_escape(username));
            let base = c.group_base.clone();
            self.search_under(ldap, &base, &filter, vec!["1.1".into()])
                .await?
                .into_iter()
                .map(|g| g.dn)
                .collect()
        };
        Ok(Identity {
            source: SOURCE.to_string(),
            external_id: stable_id(&entry),
            entry: entry.dn.clone(),
            username: username.to_string(),
            display_name: first(&c.display_name_attribute),
            email: first(&c.email_attribute),
            groups,
        })
    }
}

/// The entry's stable id: `entryUUID` (OpenLDAP and most), `objectGUID` (Active
/// Directory, binary), else its DN. An account is tied to it: a name given to someone
/// else later is not the same account.
fn stable_id(entry: &SearchEntry) -> String {
    let text = entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("entryUUID"))
        .and_then(|(_, v)| v.first().cloned());
    let binary = || {
        entry
            .bin_attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("objectGUID"))
            .and_then(|(_, v)| v.first())
            .map(|b| format!("guid:{}", hex::encode(b)))
    };
    text.map(|u| format!("uuid:{u}"))
        .or_else(binary)
        .unwrap_or_else(|| format!("dn:{}", entry.dn))
}
