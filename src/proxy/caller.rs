//! Who is calling: the one place where a credential a request carries (Notebox's session
//! cookie, a personal access token, a notebook's own cookie) becomes a user. Notebox's pages
//! (`web::extract`) and the proxy both ask `Credentials`; the proxy reuses an answer while
//! no credential changed, so its hot path stays off the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::HttpRequest;

use crate::auth::{secrets, Accounts, User};
use crate::error::WebError;
use crate::http::authorization_token;

use super::origin::{notebook_cookie_name, Site};
use super::request::{is_navigation, query_token};

/// A credential a request came with. The proxy keeps it with a WebSocket it relays, so the
/// relay can be closed when that credential stops being valid.
#[derive(Clone)]
pub enum Credential {
    /// A personal access token.
    Token(String),
    /// Notebox's session cookie.
    Session(String),
    /// A notebook's own cookie (`notebook id`, value): good for that notebook only.
    Grant(String, String),
}

/// An `Authorization` header that names no token.
#[derive(Debug)]
pub struct MalformedAuthorization;

/// The token of the request's `Authorization` header (`Bearer` or `token`): `Ok(None)`
/// without the header.
pub fn header_token(req: &HttpRequest) -> Result<Option<String>, MalformedAuthorization> {
    if !req.headers().contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    authorization_token(req)
        .map(Some)
        .ok_or(MalformedAuthorization)
}

/// The value of Notebox's session cookie, when the request carries one worth looking up.
pub fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.cookie(crate::http::session_cookie(req))
        .and_then(|c| cookie_value(c.value()))
}

/// A cookie value worth looking up: not empty, not longer than any Notebox issues.
fn cookie_value(value: &str) -> Option<String> {
    (!value.is_empty() && value.len() <= 128).then(|| value.to_string())
}

/// Longest a cached credential is reused even with no change event (sessions expire).
const CREDENTIAL_CACHE_MAX_AGE: Duration = Duration::from_secs(60);

/// The one credential resolver. Cheap to clone: clones share the cache.
#[derive(Clone)]
pub struct Credentials {
    accounts: Accounts,
    cache: Arc<UserCache>,
}

impl Credentials {
    pub fn new(accounts: Accounts) -> Credentials {
        Credentials {
            accounts,
            cache: Arc::default(),
        }
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Changes with every credential change (logout, password, disable, revoke).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.accounts.events().subscribe()
    }

    /// A session's user and its CSRF token, asked of the database now (pages render
    /// forms with the token).
    pub async fn session(&self, value: &str) -> Result<Option<(User, String)>, WebError> {
        Ok(self.accounts.session_user(value).await?)
    }

    /// The user behind a credential, asked of the database now.
    pub async fn lookup(&self, credential: &Credential) -> Result<Option<User>, WebError> {
        Ok(match credential {
            Credential::Token(t) => self.accounts.token_user(t).await?,
            Credential::Session(s) => self.session(s).await?.map(|(u, _)| u),
            Credential::Grant(nb, g) => self.accounts.grant_user(g, nb).await?,
        })
    }

    /// `lookup`, answered from the cache when nothing changed since it was asked: the
    /// proxy's hot path. Entries are voided by change, not by time (but for sessions'
    /// expiry: `CREDENTIAL_CACHE_MAX_AGE`).
    pub async fn lookup_cached(&self, credential: &Credential) -> Result<Option<User>, WebError> {
        let generation = self.accounts.events().generation();
        let key = match credential {
            Credential::Token(t) => format!("t:{}", secrets::hash_secret(t)),
            Credential::Session(s) => format!("s:{}", secrets::hash_secret(s)),
            Credential::Grant(nb, g) => format!("g:{nb}:{}", secrets::hash_secret(g)),
        };
        if let Some(user) = self.cache.get(&key, generation) {
            return Ok(Some(user));
        }
        let found = self.lookup(credential).await?;
        if let Some(user) = &found {
            self.cache.put(key, user.clone(), generation);
        }
        Ok(found)
    }

    /// Who is calling the proxy, from a token (header or `?token=`) or the cookie that
    /// counts where the request arrived.
    ///
    /// The notebook's own Jupyter token (`Arrival::jupyter_token`) is no Notebox credential:
    /// JupyterLab puts it in its page config and sends it back as `Authorization: token …`
    /// on every API call, so it is skipped and the cookie decides.
    ///
    /// A token in the URL is for clients without cookies (scripts, VS Code): sent together
    /// with a session cookie it is refused, so a link cannot make a member's browser act with
    /// somebody else's token. A header token for another user than the session's is refused
    /// too.
    pub async fn identify(
        &self,
        req: &HttpRequest,
        arrival: &Arrival<'_>,
    ) -> Result<Caller, WebError> {
        let offered = match Offered::read(req, arrival) {
            Ok(offered) => offered,
            Err(caller) => return Ok(caller),
        };
        if let Some(why) = offered.refusal(req, arrival.site) {
            return Ok(Caller::Refused(why));
        }
        let session =
            offered
                .cookie
                .as_deref()
                .and_then(cookie_value)
                .map(|v| match arrival.site {
                    Site::Notebook(id) => Credential::Grant(id.clone(), v),
                    Site::Main => Credential::Session(v),
                });
        let session_user = match &session {
            Some(s) => self.lookup_cached(s).await?,
            None => None,
        };
        if let Some(token) = offered.header_token.or(offered.url_token) {
            return self.token_caller(token, session_user).await;
        }
        Ok(match (session_user, session) {
            (Some(user), Some(s)) => Caller::User(Box::new(user), s),
            _ => Caller::Anonymous,
        })
    }

    /// A caller with a token, and maybe a session cookie beside it.
    async fn token_caller(
        &self,
        token: String,
        session_user: Option<User>,
    ) -> Result<Caller, WebError> {
        let credential = Credential::Token(token);
        Ok(match self.lookup_cached(&credential).await? {
            Some(user) if session_user.as_ref().is_some_and(|s| s.id != user.id) => {
                Caller::Refused(
                    "The access token belongs to another user than this browser's session.",
                )
            }
            Some(user) => Caller::User(Box::new(user), credential),
            None => Caller::BadCredentials,
        })
    }
}

/// Where a proxied request arrived, and what that makes of the credentials it carries.
pub struct Arrival<'a> {
    pub site: &'a Site,
    /// Notebooks live on origins of their own (`Origins::isolated`).
    pub isolated: bool,
    /// The notebook's own Jupyter token, when the notebook is known.
    pub jupyter_token: Option<&'a str>,
    /// Whether the cookie of this origin counts for this URL (see the path key).
    pub cookie_counts: bool,
}

/// Who is calling the proxy.
pub enum Caller {
    User(Box<User>, Credential),
    /// Credentials were sent but are not valid.
    BadCredentials,
    /// Credentials that must not be used together (a browser session with a token for
    /// someone else, or with a token in the URL that a link could carry).
    Refused(&'static str),
    Anonymous,
}

/// The credentials a proxied request offers where it arrived, before any is looked up.
struct Offered {
    header_token: Option<String>,
    url_token: Option<String>,
    /// The cookie that counts on this origin, as sent.
    cookie: Option<String>,
}

impl Offered {
    fn read(req: &HttpRequest, arrival: &Arrival<'_>) -> Result<Offered, Caller> {
        let not_jupyters = |t: &String| {
            !arrival
                .jupyter_token
                .is_some_and(|j| secrets::constant_time_eq(t, j))
        };
        let header_token = header_token(req)
            .map_err(|MalformedAuthorization| Caller::BadCredentials)?
            .filter(not_jupyters);
        let isolated_main = *arrival.site == Site::Main && arrival.isolated;
        let url_token = query_token(req)
            .filter(not_jupyters)
            .filter(|_| !isolated_main);
        // The cookie that counts on this origin: Notebox's session on its own origin (only
        // with origin = "same"), the notebook's own cookie on the notebook's origin.
        let cookie_name = match arrival.site {
            Site::Main if isolated_main => None,
            Site::Main => Some(crate::http::session_cookie(req).to_string()),
            Site::Notebook(id) => Some(notebook_cookie_name(id, crate::http::is_https(req))),
        };
        let cookie = cookie_name
            .as_deref()
            .filter(|_| arrival.cookie_counts)
            .and_then(|name| req.cookie(name))
            .map(|c| c.value().to_string());
        Ok(Offered {
            header_token,
            url_token,
            cookie,
        })
    }

    /// Why these credentials must not be used together, if they must not.
    fn refusal(&self, req: &HttpRequest, site: &Site) -> Option<&'static str> {
        // A page opened with a token in its URL shows the token to every script of the page
        // (`location.href`), and the notebook's scripts are not to be trusted with it.
        if self.url_token.is_some() && matches!(site, Site::Notebook(_)) && is_navigation(req) {
            return Some(
                "A token in the URL is not accepted for a page in the browser (the notebook's \
                 scripts could read it from the address bar); open the notebook from Notebox, or \
                 send the token in an Authorization header.",
            );
        }
        if self.url_token.is_some() && self.cookie.is_some() {
            return Some(
                "A token in the URL is not accepted from a browser that is logged in to Notebox; \
                 open the notebook from Notebox instead.",
            );
        }
        None
    }
}

#[derive(Clone)]
struct CachedUser {
    user: User,
    /// The credentials generation it was looked up in: any change voids it.
    generation: u64,
    at: Instant,
}

/// Users by (hashed) credential.
#[derive(Default)]
struct UserCache {
    users: Mutex<HashMap<String, CachedUser>>,
}

impl UserCache {
    fn get(&self, key: &str, generation: u64) -> Option<User> {
        let map = self.users.lock().ok()?;
        map.get(key)
            .filter(|c| c.generation == generation && c.at.elapsed() < CREDENTIAL_CACHE_MAX_AGE)
            .map(|c| c.user.clone())
    }

    fn put(&self, key: String, user: User, generation: u64) {
        if let Ok(mut map) = self.users.lock() {
            if map.len() > 10_000 {
                map.clear();
            }
            map.retain(|_, c| c.generation == generation);
            map.insert(
                key,
                CachedUser {
                    user,
                    generation,
                    at: Instant::now(),
                },
            );
        }
    }
}
