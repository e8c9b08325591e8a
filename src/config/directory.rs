//! Directory login and groups: `[auth.ldap]`, `[[auth.oidc]]`, `[[groups]]` and
//! `public_url` (DESIGN, "Directory login and groups"). The shapes here; their checks in
//! `validate.rs` (every message names the key).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[auth.ldap]`: log in with the lab's LDAP or Active Directory. Absent = off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://host[:port]`, or `ldap://` with `starttls = true` (or `insecure = true`).
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before anything is sent.
    #[serde(default)]
    pub starttls: bool,
    /// Allow a plain `ldap://` connection (passwords cross the network in clear).
    #[serde(default)]
    pub insecure: bool,
    /// An extra CA (PEM) for the directory's certificate; empty = the system's.
    #[serde(default)]
    pub ca_file: PathBuf,
    /// Service account for search-then-bind (and for the scheduled re-check); empty =
    /// anonymous search.
    #[serde(default)]
    pub bind_dn: String,
    /// File holding the service account's password (one line).
    #[serde(default)]
    pub bind_password_file: PathBuf,
    /// Where members are searched.
    #[serde(default)]
    pub user_base: String,
    /// Which entries are members; `{username}` is replaced (escaped).
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// Direct bind instead of a search: e.g. `uid={username},ou=people,dc=lab,dc=example`.
    #[serde(default)]
    pub bind_dn_template: String,
    #[serde(default = "default_username_attribute")]
    pub username_attribute: String,
    #[serde(default = "default_display_name_attribute")]
    pub display_name_attribute: String,
    #[serde(default = "default_email_attribute")]
    pub email_attribute: String,
    /// Where groups are searched; empty = read the member's `memberOf` attribute.
    #[serde(default)]
    pub group_base: String,
    /// Which groups hold the member; `{dn}` and `{username}` are replaced (escaped).
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    /// Group DNs (or names); empty = any directory member may log in.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Group DNs (or names) whose members are Notebox admins.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Connecting, binding and each search must answer within this.
    #[serde(default = "default_ldap_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_user_filter() -> String {
    "(uid={username})".into()
}
fn default_username_attribute() -> String {
    "uid".into()
}
fn default_display_name_attribute() -> String {
    "displayName".into()
}
fn default_email_attribute() -> String {
    "mail".into()
}
fn default_group_filter() -> String {
    "(member={dn})".into()
}
fn default_ldap_timeout() -> Duration {
    Duration::from_secs(5)
}

/// One `[[auth.oidc]]` provider: "Sign in with {name}".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// In URLs: `/login/oidc/{id}`, and the account source `oidc:{id}`.
    pub id: String,
    pub name: String,
    /// The issuer; discovery reads `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// File holding the client secret; empty = a public client (PKCE only).
    #[serde(default)]
    pub client_secret_file: PathBuf,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Group names as the claim gives them; empty = anyone the provider vouches for.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// An extra CA (PEM) for the provider's certificate; empty = the system's.
    #[serde(default)]
    pub ca_file: PathBuf,
    /// ID-token signature algorithms accepted.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups"]
        .map(String::from)
        .to_vec()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "PS256"].map(String::from).to_vec()
}

/// A group carries policy for its members (`[[groups]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub id: String,
    /// LDAP group DNs (or names) and OIDC group names mapped to this group.
    #[serde(default)]
    pub directory: Vec<String>,
    /// Local accounts in this group.
    #[serde(default)]
    pub members: Vec<String>,
    /// Machine types its members may use; empty = all.
    #[serde(default)]
    pub machines: Vec<String>,
    /// The most GPUs a member may hold or wait for; unset = the `[gpu]` default.
    #[serde(default)]
    pub max_gpus: Option<u32>,
    /// A member's default monthly GPU-hour budget; unset = none from this group.
    #[serde(default)]
    pub gpu_hours_budget: Option<f64>,
    /// Fair share weight of its members (`[gpu] queue_order = "fair_share"`); unset = 1.
    #[serde(default)]
    pub shares: Option<f64>,
    /// A member's storage soft quota ("200GiB"); unset = the `[storage]` default.
    #[serde(default, with = "super::values::optional_byte_size")]
    pub storage_quota: Option<u64>,
    /// A shared folder at `/shared/{id}`, read-write for the group's members.
    #[serde(default)]
    pub folder: bool,
    /// What everyone else sees of the folder.
    #[serde(default)]
    pub folder_others: FolderOthers,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FolderOthers {
    /// Not mounted in other members' notebooks.
    #[default]
    None,
    /// Mounted read-only in everyone else's notebooks.
    Read,
}

/// A failed check: the key (relative to the config's root) and what to fix.
pub(super) type Refusal = (String, String);

/// Checks `public_url`, `[auth]`'s directory keys and `[[groups]]`.
pub(super) fn check(config: &super::Config) -> Result<(), Refusal> {
    check_public_url(&config.public_url)?;
    let refresh = config.auth.directory_refresh;
    if refresh < Duration::from_secs(1) || refresh > Duration::from_secs(86_400) {
        return Err(refusal(
            "auth.directory_refresh",
            "must be from 1s to 1d (e.g. \"15m\")",
        ));
    }
    if let Some(ldap) = &config.auth.ldap {
        check_ldap(ldap).map_err(|(k, m)| (format!("auth.ldap.{k}"), m))?;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in config.auth.oidc.iter().enumerate() {
        if !seen.insert(p.id.as_str()) {
            return Err(refusal(
                format!("auth.oidc[{i}].id"),
                format!("'{}' is used twice", p.id),
            ));
        }
        check_oidc(p).map_err(|(k, m)| (format!("auth.oidc[{i}].{k}"), m))?;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, g) in config.groups.iter().enumerate() {
        if !seen.insert(g.id.as_str()) {
            return Err(refusal(
                format!("groups[{i}].id"),
                format!("'{}' is used twice", g.id),
            ));
        }
        check_group(g, config).map_err(|(k, m)| (format!("groups[{i}].{k}"), m))?;
    }
    Ok(())
}

fn refusal(key: impl Into<String>, message: impl Into<String>) -> Refusal {
    (key.into(), message.into())
}

fn check_public_url(text: &str) -> Result<(), Refusal> {
    if text.is_empty() {
        return Ok(());
    }
    let bad = |m: &str| refusal("public_url", format!("'{text}' {m}"));
    let url = openidconnect::url::Url::parse(text).map_err(|e| {
        bad(&format!(
            "is not a URL ({e}); e.g. \"https://gpu.lab.example\""
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be an http:// or https:// address with a host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "must be just the address, with no path, e.g. \"https://gpu.lab.example\"",
        ));
    }
    Ok(())
}

/// An LDAP URL's scheme and host: "ldaps"/"ldap", with a host and no path.
pub fn parse_ldap_url(text: &str) -> Result<(bool, String), String> {
    let url = openidconnect::url::Url::parse(text)
        .map_err(|e| format!("'{text}' is not a URL ({e}); e.g. \"ldaps://ldap.lab.example\""))?;
    let tls = match url.scheme() {
        "ldaps" => true,
        "ldap" => false,
        other => {
            return Err(format!(
                "'{other}://' is not LDAP: use ldaps:// (or ldap:// with starttls = true)"
            ))
        }
    };
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(format!("'{text}' names no host"));
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(format!(
            "'{text}' must be just the server's address (no base DN or query; use user_base)"
        ));
    }
    Ok((tls, host.to_string()))
}

fn check_ldap(ldap: &LdapConfig) -> Result<(), Refusal> {
    let (tls, _) = parse_ldap_url(&ldap.url).map_err(|m| refusal("url", m))?;
    if tls && ldap.starttls {
        return Err(refusal(
            "starttls",
            "ldaps:// is TLS already; starttls applies to ldap:// only",
        ));
    }
    if !tls && !ldap.starttls && !ldap.insecure {
        return Err(refusal(
            "url",
            "ldap:// would send passwords in clear: use ldaps://, or set starttls = true \
             (or insecure = true if you really mean it)",
        ));
    }
    check_pem_file(&ldap.ca_file).map_err(|m| refusal("ca_file", m))?;
    if !ldap.bind_dn.is_empty() {
        check_secret_file(&ldap.bind_password_file, "the service account's password")
            .map_err(|m| refusal("bind_password_file", m))?;
    }
    if !ldap.bind_dn_template.is_empty() {
        if !ldap.bind_dn_template.contains("{username}") {
            return Err(refusal(
                "bind_dn_template",
                "must contain {username}, e.g. \"uid={username},ou=people,dc=lab,dc=example\"",
            ));
        }
    } else {
        if ldap.user_base.trim().is_empty() {
            return Err(refusal(
                "user_base",
                "is needed to search for members (or set bind_dn_template for a direct bind)",
            ));
        }
        if !ldap.user_filter.contains("{username}") {
            return Err(refusal(
                "user_filter",
                "must contain {username}, e.g. \"(uid={username})\"",
            ));
        }
    }
    check_filter(&ldap.user_filter).map_err(|m| refusal("user_filter", m))?;
    if !ldap.group_base.is_empty() {
        check_filter(&ldap.group_filter).map_err(|m| refusal("group_filter", m))?;
        if !ldap.group_filter.contains("{dn}") && !ldap.group_filter.contains("{username}") {
            return Err(refusal(
                "group_filter",
                "must contain {dn} or {username}, e.g. \"(member={dn})\"",
            ));
        }
    }
    for (key, value) in [
        ("username_attribute", &ldap.username_attribute),
        ("display_name_attribute", &ldap.display_name_attribute),
        ("email_attribute", &ldap.email_attribute),
    ] {
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(refusal(key, format!("'{value}' is not an attribute name")));
        }
    }
    for (key, groups) in [
        ("allowed_groups", &ldap.allowed_groups),
        ("admin_groups", &ldap.admin_groups),
    ] {
        if let Some(bare) = groups.iter().find(|g| !g.contains('=')) {
            return Err(refusal(
                key,
                format!(
                    "'{bare}' must be a group's full DN (e.g. \"cn={bare},ou=groups,dc=lab,dc=example\"): \
                     a bare name would match a group of that name anywhere in the directory"
                ),
            ));
        }
    }
    if ldap.timeout < Duration::from_millis(100) || ldap.timeout > Duration::from_secs(60) {
        return Err(refusal("timeout", "must be from 100ms to 60s"));
    }
    Ok(())
}

fn check_filter(filter: &str) -> Result<(), String> {
    let balanced = filter.chars().try_fold(0i32, |depth, c| match c {
        '(' => Some(depth + 1),
        ')' if depth > 0 => Some(depth - 1),
        ')' => None,
        _ => Some(depth),
    });
    if !filter.starts_with('(') || balanced != Some(0) {
        return Err(format!(
            "'{filter}' is not an LDAP filter (it must be in balanced parentheses)"
        ));
    }
    Ok(())
}

/// The ID-token algorithms that may be allowed: asymmetric only (a shared-secret HS256
/// token could be made by anyone holding the client secret; `none` by anyone).
pub const OIDC_ALGORITHMS: [&str; 8] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
];

fn check_oidc(p: &OidcConfig) -> Result<(), Refusal> {
    if !super::validate::valid_id(&p.id) {
        return Err(refusal(
            "id",
            format!("'{}' must be 1-40 characters of a-z, 0-9, '-', '_'", p.id),
        ));
    }
    if p.name.trim().is_empty() || p.name.chars().count() > 60 {
        return Err(refusal(
            "name",
            "must be 1 to 60 characters (it reads \"Sign in with {name}\")",
        ));
    }
    check_issuer(&p.issuer).map_err(|m| refusal("issuer", m))?;
    if p.client_id.trim().is_empty() {
        return Err(refusal(
            "client_id",
            "must be the client id registered with the provider",
        ));
    }
    if !p.client_secret_file.as_os_str().is_empty() {
        check_secret_file(&p.client_secret_file, "the client secret")
            .map_err(|m| refusal("client_secret_file", m))?;
    }
    if !p.scopes.iter().any(|s| s == "openid") {
        return Err(refusal("scopes", "must include \"openid\""));
    }
    if p.username_claim.is_empty() {
        return Err(refusal(
            "username_claim",
            "must name a claim, e.g. \"preferred_username\"",
        ));
    }
    if p.algorithms.is_empty() {
        return Err(refusal(
            "algorithms",
            "must allow at least one algorithm, e.g. [\"RS256\"]",
        ));
    }
    if let Some(bad) = p
        .algorithms
        .iter()
        .find(|a| !OIDC_ALGORITHMS.contains(&a.as_str()))
    {
        return Err(refusal(
            "algorithms",
            format!(
                "'{bad}' is not allowed: use some of {}",
                OIDC_ALGORITHMS.join(", ")
            ),
        ));
    }
    check_pem_file(&p.ca_file).map_err(|m| refusal("ca_file", m))
}

/// https, or http to this machine only (a provider on loopback).
fn check_issuer(text: &str) -> Result<(), String> {
    let url =
        openidconnect::url::Url::parse(text).map_err(|e| format!("'{text}' is not a URL ({e})"))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "'{text}' must be an https:// address (http:// only on this machine)"
        )),
    }
}

fn check_group(g: &GroupConfig, config: &super::Config) -> Result<(), Refusal> {
    if !super::validate::valid_id(&g.id) {
        return Err(refusal(
            "id",
            format!("'{}' must be 1-40 characters of a-z, 0-9, '-', '_'", g.id),
        ));
    }
    if let Some(m) = g.machines.iter().find(|m| config.machine(m).is_none()) {
        return Err(refusal(
            "machines",
            format!("'{m}' is not a machine type in [[machines]]"),
        ));
    }
    if let Some(bad) = g
        .members
        .iter()
        .find(|m| crate::auth::validate_username(m).is_err())
    {
        return Err(refusal("members", format!("'{bad}' is not a username")));
    }
    if g.max_gpus.is_some_and(|n| n > 1024) {
        return Err(refusal("max_gpus", "must be from 0 to 1024"));
    }
    if g.gpu_hours_budget
        .is_some_and(|b| !(b.is_finite() && (0.0..=1e7).contains(&b)))
    {
        return Err(refusal(
            "gpu_hours_budget",
            "must be a number of hours from 0",
        ));
    }
    if g.folder_others == FolderOthers::Read && !g.folder {
        return Err(refusal("folder_others", "applies only with folder = true"));
    }
    Ok(())
}

fn check_secret_file(path: &std::path::Path, what: &str) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err(format!("must name the file holding {what}"));
    }
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(()),
        Ok(_) => Err(format!("{} is empty; it must hold {what}", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn check_pem_file(path: &std::path::Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    use rustls_pki_types::pem::PemObject;
    let found = rustls_pki_types::CertificateDer::pem_slice_iter(&text)
        .filter(Result::is_ok)
        .count();
    if found == 0 {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(())
}

/// Reads a secret file's first line (the validated config names a readable one).
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().next().unwrap_or_default().trim_end().to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}
