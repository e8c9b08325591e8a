//! The lab's directory: LDAP and OpenID Connect providers say who someone is and which
//! groups they are in. Knows nothing of HTTP pages or of Notebox accounts (`auth` makes
//! accounts from an `Identity`).

mod http;
pub mod ldap;
pub mod oidc;
mod tls;

use crate::config::Config;

/// Someone a directory vouched for.
#[derive(Debug, Clone)]
pub struct Identity {
    /// "ldap" or "oidc:{id}".
    pub source: String,
    /// What the account is tied to: the LDAP entry's entryUUID (objectGUID, else DN), or
    /// the provider's subject.
    pub external_id: String,
    /// The LDAP entry's DN, or the provider's subject (to show).
    pub entry: String,
    /// A valid Notebox username (lowercase ASCII).
    pub username: String,
    pub display_name: String,
    pub email: String,
    /// The directory's groups: LDAP group DNs, or the provider's group names.
    pub groups: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("wrong username or password")]
    InvalidCredentials,
    /// The why is for the log and the admin (it names addresses and errors).
    #[error("cannot reach the lab directory right now; local accounts can still log in")]
    Unreachable(String),
    /// The directory answered, but not as expected (its settings, or a refused token).
    #[error("{0}")]
    Refused(String),
}

/// What the directory's groups mean for an identity under the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Err: why they may not log in.
    pub allowed: Result<(), String>,
    /// Whether they are an admin, when the directory decides it (admin groups set).
    pub admin: Option<bool>,
    /// The Notebox groups (`[[groups]]` ids) their directory groups map to.
    pub groups: Vec<String>,
}

/// The configured directories, reached once at start.
#[derive(Clone, Default)]
pub struct Directories {
    pub ldap: Option<ldap::LdapDirectory>,
    pub oidc: oidc::OidcProviders,
}

/// Builds the directories of the config and checks that each answers (LDAP: the service
/// account binds; OIDC: discovery reads). Err: the key to fix and why.
pub async fn connect(config: &Config) -> Result<Directories, (String, String)> {
    let ldap = match &config.auth.ldap {
        None => None,
        Some(c) => {
            let ldap = ldap::LdapDirectory::new(c).map_err(|m| ("auth.ldap".to_string(), m))?;
            match ldap.check().await {
                Ok(()) => {}
                Err(DirectoryError::Unreachable(why)) => {
                    return Err((
                        "auth.ldap.url".into(),
                        format!("cannot reach the directory: {why}"),
                    ))
                }
                Err(e) => return Err(("auth.ldap.bind_dn".into(), e.to_string())),
            }
            Some(ldap)
        }
    };
    let oidc =
        oidc::OidcProviders::new(&config.auth.oidc).map_err(|m| ("auth.oidc".to_string(), m))?;
    for (i, p) in config.auth.oidc.iter().enumerate() {
        if let Err(e) = oidc.check(&p.id).await {
            return Err((
                format!("auth.oidc[{i}].issuer"),
                format!("discovery failed: {e}"),
            ));
        }
    }
    Ok(Directories { ldap, oidc })
}

/// Applies the login and admin groups of the identity's source and maps its groups.
pub fn decide(config: &Config, identity: &Identity) -> Decision {
    let (allowed, admin): (&[String], &[String]) = match identity.source.strip_prefix("oidc:") {
        Some(id) => config
            .auth
            .oidc
            .iter()
            .find(|p| p.id == id)
            .map_or((&[], &[]), |p| (&p.allowed_groups, &p.admin_groups)),
        None => config
            .auth
            .ldap
            .as_ref()
            .map_or((&[], &[]), |l| (&l.allowed_groups, &l.admin_groups)),
    };
    let ldap = identity.source == ldap::SOURCE;
    let in_any = |wanted: &[String]| {
        wanted
            .iter()
            .any(|w| identity.groups.iter().any(|g| group_matches(ldap, w, g)))
    };
    let allowed = if allowed.is_empty() || in_any(allowed) {
        Ok(())
    } else {
        Err(format!(
            "{} is not in a group allowed to use Notebox ({}); ask the lab's admin",
            identity.username,
            allowed.join(", ")
        ))
    };
    Decision {
        allowed,
        admin: (!admin.is_empty()).then(|| in_any(admin)),
        groups: mapped_groups(config, ldap, &identity.groups),
    }
}

/// The `[[groups]]` whose `directory` entries name one of `directory_groups` (LDAP DNs
/// when `ldap`, else a provider's group names).
pub fn mapped_groups(config: &Config, ldap: bool, directory_groups: &[String]) -> Vec<String> {
    config
        .groups
        .iter()
        .filter(|g| {
            g.directory
                .iter()
                .any(|w| directory_groups.iter().any(|d| group_matches(ldap, w, d)))
        })
        .map(|g| g.id.clone())
        .collect()
}

/// Whether a configured group names a directory's group. A provider's group names compare
/// exactly. LDAP DNs compare without case or spaces after separators, and a bare name
/// matches a DN's first value ("phd" names "cn=phd,ou=groups,dc=lab,dc=example"; the
/// login and admin groups must be full DNs, see `config`).
pub fn group_matches(ldap: bool, configured: &str, directory: &str) -> bool {
    if !ldap {
        return configured == directory;
    }
    let (c, d) = (normalize_dn(configured), normalize_dn(directory));
    if c == d {
        return true;
    }
    if c.contains('=') {
        return false;
    }
    first_rdn_value(&d).is_some_and(|v| v == c)
}

fn normalize_dn(text: &str) -> String {
    text.split(',')
        .map(|part| part.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

fn first_rdn_value(dn: &str) -> Option<&str> {
    let first = dn.split(',').next()?;
    first.split_once('=').map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_match_by_dn_or_name() {
        let dn = "cn=phd,ou=groups,dc=lab,dc=example";
        assert!(group_matches(
            true,
            "CN=PhD, ou=groups, dc=lab, dc=example",
            dn
        ));
        assert!(group_matches(true, "phd", dn));
        assert!(group_matches(true, "phd", "phd"));
        assert!(!group_matches(true, "ph", dn));
        assert!(!group_matches(
            true,
            "cn=phd,ou=other,dc=lab,dc=example",
            dn
        ));
        assert!(!group_matches(true, "groups", dn));
        // A provider's names are names: exact.
        assert!(group_matches(false, "phd", "phd"));
        assert!(!group_matches(false, "phd", "PhD"));
        assert!(!group_matches(false, "admins", "x=admins"));
        assert!(!group_matches(false, "phd", dn));
    }
}
