//! OpenID Connect login: discovery, the authorization code flow with PKCE, `state` and
//! `nonce`, and the ID token's checks (issuer, audience, expiry, signature, algorithm
//! allow-list) by the `openidconnect` crate. The claims Notebox reads beyond the standard
//! ones (the username and groups claims) come from the token once it has been verified.
//!
//! A sign-in in progress lives in memory, keyed by its `state`, bound to the browser that
//! started it (a cookie's hash) and used at most once; at most `MAX_PENDING` at a time,
//! each for `PENDING_FOR`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreTokenResponse,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadataWithLogout,
    RedirectUrl, Scope, TokenResponse,
};

use super::http::{describe, OidcHttp};
use super::{DirectoryError, Identity};
use crate::auth::secrets;
use crate::config::OidcConfig;

/// How long a sign-in may take at the provider.
const PENDING_FOR: Duration = Duration::from_secs(600);
/// Sign-ins in progress held at once (each a few hundred bytes).
const MAX_PENDING: usize = 10_000;
/// Discovery (endpoints and signing keys) is read again after this.
const METADATA_FOR: Duration = Duration::from_secs(600);
/// Each request to the provider must answer within this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed discovery, the last good one serves (or the failure is told) this long
/// before the provider is asked again.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Sign-ins in progress started from one client address.
const PENDING_PER_ADDRESS: usize = 20;
/// An ID token signed by a key discovery did not list makes Notebox read the keys again,
/// at most this often (the provider rotated them).
const KEYS_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// A client for a discovered provider (its authorization endpoint set, its token and
/// user-info endpoints as discovery gave them).
type ProviderClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// One configured provider.
struct Provider {
    config: OidcConfig,
    secret: Option<String>,
    http: OidcHttp,
    /// One discovery at a time; waiting callers get its answer.
    metadata: tokio::sync::Mutex<Discovered>,
}

#[derive(Default)]
struct Discovered {
    /// The last good discovery and when it was read.
    good: Option<(Instant, ProviderMetadataWithLogout)>,
    /// The last failure and why, when it came after the last good one.
    failed: Option<(Instant, String)>,
}

/// A sign-in started and not yet finished.
struct Pending {
    provider: String,
    /// The client address that started it (a few per address at a time).
    address: String,
    browser_hash: String,
    pkce_verifier: String,
    nonce: String,
    redirect_uri: String,
    next: String,
    started: Instant,
}

/// A sign-in to send the browser on with.
pub struct Started {
    /// The provider's authorization URL.
    pub url: String,
    /// The value of the cookie that binds the sign-in to this browser.
    pub browser_secret: String,
}

/// Every configured provider and the sign-ins in progress; cheap to clone.
#[derive(Clone, Default)]
pub struct OidcProviders {
    providers: Arc<Vec<Provider>>,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
}

impl OidcProviders {
    pub fn new(configs: &[OidcConfig]) -> Result<OidcProviders, String> {
        let providers = configs
            .iter()
            .map(|c| {
                let tls = super::tls::client_config(&c.ca_file)?;
                let secret = if c.client_secret_file.as_os_str().is_empty() {
                    None
                } else {
                    Some(crate::config::read_secret(&c.client_secret_file)?)
                };
                Ok(Provider {
                    config: c.clone(),
                    secret,
                    http: OidcHttp::new(tls, HTTP_TIMEOUT),
                    metadata: tokio::sync::Mutex::new(Discovered::default()),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(OidcProviders {
            providers: Arc::new(providers),
            pending: Arc::default(),
        })
    }

    /// (id, name) of each provider, in config order.
    pub fn list(&self) -> Vec<(String, String)> {
        self.providers
            .iter()
            .map(|p| (p.config.id.clone(), p.config.name.clone()))
            .collect()
    }

    fn provider(&self, id: &str) -> Result<&Provider, DirectoryError> {
        self.providers
            .iter()
            .find(|p| p.config.id == id)
            .ok_or_else(|| DirectoryError::Refused(format!("there is no sign-in provider '{id}'")))
    }

    /// Reads the provider's discovery document (and keys): what `notebox doctor` and the
    /// start-up check do.
    pub async fn check(&self, id: &str) -> Result<(), DirectoryError> {
        self.provider(id)?.metadata(true).await.map(|_| ())
    }

    /// Starts a sign-in: where to send the browser, and the cookie that binds it.
    pub async fn begin(
        &self,
        id: &str,
        redirect_uri: &str,
        next: &str,
        address: &str,
    ) -> Result<Started, DirectoryError> {
        let provider = self.provider(id)?;
        let client = provider.client(redirect_uri).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in provider.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let browser_secret = secrets::random_secret(32);
        self.hold(
            state.secret().clone(),
            Pending {
                provider: id.to_string(),
                address: address.to_string(),
                browser_hash: secrets::hash_secret(&browser_secret),
                pkce_verifier: verifier.secret().clone(),
                nonce: nonce.secret().clone(),
                redirect_uri: redirect_uri.to_string(),
                next: next.to_string(),
                started: Instant::now(),
            },
        )?;
        Ok(Started {
            url: url.to_string(),
            browser_secret,
        })
    }

    fn hold(&self, state: String, pending: Pending) -> Result<(), DirectoryError> {
        let mut all = self
            .pending
            .lock()
            .map_err(|_| DirectoryError::Refused("sign-in state is unavailable".into()))?;
        if all.len() >= MAX_PENDING / 2 {
            all.retain(|_, p| p.started.elapsed() < PENDING_FOR);
        }
        let from_here = all
            .values()
            .filter(|p| p.address == pending.address && p.started.elapsed() < PENDING_FOR)
            .count();
        if from_here >= PENDING_PER_ADDRESS {
            return Err(DirectoryError::Refused(
                "too many sign-ins were started from your address and not finished; finish \
                 one, or try again in a few minutes"
                    .into(),
            ));
        }
        if all.len() >= MAX_PENDING {
            // A flood of sign-ins never finished: the oldest tenth goes (a member is
            // refused only if a flood outpaces their own sign-in).
            let mut ages: Vec<(Instant, String)> =
                all.iter().map(|(k, p)| (p.started, k.clone())).collect();
            ages.sort();
            for (_, key) in ages.into_iter().take(MAX_PENDING / 10) {
                all.remove(&key);
            }
        }
        all.insert(state, pending);
        Ok(())
    }

    /// Takes the sign-in `state` names, once: a second use, another browser's, an expired
    /// one or one for another provider is refused.
    fn take(&self, id: &str, state: &str, browser_secret: &str) -> Result<Pending, DirectoryError> {
        let again = || {
            DirectoryError::Refused(
                "this sign-in has expired or was already used; please sign in again".into(),
            )
        };
        let pending = self
            .pending
            .lock()
            .map_err(|_| again())?
            .remove(state)
            .ok_or_else(again)?;
        let same_browser =
            secrets::constant_time_eq(&pending.browser_hash, &secrets::hash_secret(browser_secret));
        if pending.provider != id || !same_browser || pending.started.elapsed() > PENDING_FOR {
            return Err(again());
        }
        Ok(pending)
    }

    /// Finishes a sign-in from the provider's redirect: the identity and where to go next.
    pub async fn finish(
        &self,
        id: &str,
        state: &str,
        code: &str,
        browser_secret: &str,
    ) -> Result<(Identity, String), DirectoryError> {
        let pending = self.take(id, state, browser_secret)?;
        let provider = self.provider(id)?;
        let client = provider.client(&pending.redirect_uri).await?;
        let http = provider.http.clone();
        let send = move |request| {
            let http = http.clone();
            async move { http.send(request).await }
        };
        let token: CoreTokenResponse = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| {
                DirectoryError::Refused(format!("the provider has no token endpoint: {e}"))
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&send)
            .await
            .map_err(|e| {
                DirectoryError::Refused(format!("the provider refused the sign-in code: {e}"))
            })?;
        let _ = token.access_token();
        let id_token = token.id_token().ok_or_else(|| {
            DirectoryError::Refused("the provider's answer has no ID token".into())
        })?;
        let nonce = Nonce::new(pending.nonce);
        let verify = |client: &ProviderClient| {
            let verifier = client
                .id_token_verifier()
                .set_allowed_algs(provider.allowed_algorithms());
            id_token
                .claims(&verifier, &nonce)
                .map(|c| c.subject().as_str().to_string())
        };
        let subject = match verify(&client) {
            Ok(subject) => Ok(subject),
            // Signed by a key the last discovery did not list: the provider may have
            // rotated its keys; read them again (not too often) and check once more.
            Err(ClaimsVerificationError::SignatureVerification(_))
                if provider.reread_keys().await =>
            {
                verify(&provider.client(&pending.redirect_uri).await?)
            }
            Err(e) => Err(e),
        }
        .map_err(|e| {
            DirectoryError::Refused(format!("the provider's ID token was refused: {e}"))
        })?;
        let payload = verified_payload(&id_token.to_string())?;
        Ok((provider.identity(subject, &payload)?, pending.next))
    }

    /// The provider's end-session endpoint (with our client id, RP-Initiated Logout),
    /// when it has one.
    pub async fn end_session_url(&self, id: &str) -> Option<String> {
        let provider = self.provider(id).ok()?;
        let metadata = provider.metadata(false).await.ok()?;
        let mut url = metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()?
            .url()
            .clone();
        url.query_pairs_mut()
            .append_pair("client_id", &provider.config.client_id);
        Some(url.to_string())
    }
}

impl Provider {
    /// The provider's discovery (endpoints and keys): read again after `METADATA_FOR`, or
    /// now with `fresh`. When reading fails, the last good one serves for `RETRY_AFTER`
    /// before the provider is asked again (a provider down or slow costs one wait, not
    /// one per request).
    async fn metadata(&self, fresh: bool) -> Result<ProviderMetadataWithLogout, DirectoryError> {
        let mut cache = self.metadata.lock().await;
        let failed_lately = cache
            .failed
            .as_ref()
            .filter(|(at, _)| at.elapsed() < RETRY_AFTER)
            .map(|(_, why)| why.clone());
        if !fresh {
            if let Some((at, metadata)) = &cache.good {
                if at.elapsed() < METADATA_FOR || failed_lately.is_some() {
                    return Ok(metadata.clone());
                }
            }
            if let Some(why) = failed_lately {
                return Err(DirectoryError::Unreachable(why));
            }
        }
        match self.discover().await {
            Ok(metadata) => {
                cache.good = Some((Instant::now(), metadata.clone()));
                cache.failed = None;
                Ok(metadata)
            }
            Err(why) => {
                cache.failed = Some((Instant::now(), why.clone()));
                match &cache.good {
                    Some((_, metadata)) if !fresh => {
                        tracing::warn!(provider = %self.config.id, error = %why,
                            "discovery failed; the last good one serves");
                        Ok(metadata.clone())
                    }
                    _ => Err(DirectoryError::Unreachable(why)),
                }
            }
        }
    }

    async fn discover(&self) -> Result<ProviderMetadataWithLogout, String> {
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| format!("bad issuer URL: {e}"))?;
        let http = self.http.clone();
        let send = move |request| {
            let http = http.clone();
            async move { http.send(request).await }
        };
        ProviderMetadataWithLogout::discover_async(issuer, &send)
            .await
            .map_err(|e| {
                format!(
                    "{} ({}): {}",
                    self.config.name,
                    self.config.issuer,
                    describe(&e)
                )
            })
    }

    /// Reads the keys again if the last read is older than `KEYS_AGAIN_AFTER`; whether it
    /// did.
    async fn reread_keys(&self) -> bool {
        let old = {
            let cache = self.metadata.lock().await;
            cache
                .good
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() > KEYS_AGAIN_AFTER)
        };
        old && self.metadata(true).await.is_ok()
    }

    async fn client(&self, redirect_uri: &str) -> Result<ProviderClient, DirectoryError> {
        let metadata = self.metadata(false).await?;
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| DirectoryError::Refused(format!("bad redirect URL: {e}")))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    fn allowed_algorithms(&self) -> Vec<CoreJwsSigningAlgorithm> {
        self.config
            .algorithms
            .iter()
            .filter_map(|a| serde_json::from_value(serde_json::Value::String(a.clone())).ok())
            .collect()
    }

    /// The identity in a verified token's claims.
    fn identity(
        &self,
        subject: String,
        claims: &serde_json::Value,
    ) -> Result<Identity, DirectoryError> {
        let c = &self.config;
        let text = |claim: &str| claims.get(claim).and_then(|v| v.as_str()).unwrap_or("");
        let raw = text(&c.username_claim);
        // ASCII only, folded as ASCII: Unicode lowercasing makes "\u{212A}ate" kate.
        let username = raw.to_ascii_lowercase();
        if !raw.is_ascii() || crate::auth::validate_username(&username).is_err() {
            return Err(DirectoryError::Refused(format!(
                "{} gave '{}' as the username (claim {}), which is not a valid Notebox \
                 username; ask the lab's admin",
                c.name,
                raw.chars().take(64).collect::<String>(),
                c.username_claim
            )));
        }
        let groups = match claims.get(&c.groups_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str().map(String::from))
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            source: format!("oidc:{}", c.id),
            entry: subject.clone(),
            external_id: subject,
            username,
            display_name: text("name").chars().take(200).collect(),
            email: text("email").chars().take(200).collect(),
            groups,
        })
    }
}

/// The claims of a token the crate has verified (its signature covers this payload).
fn verified_payload(jwt: &str) -> Result<serde_json::Value, DirectoryError> {
    let bad = || DirectoryError::Refused("the provider's ID token cannot be read".into());
    let payload = jwt.split('.').nth(1).ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}
