//! The verifier: profiles, their keys, the verified-token cache, and every claim check.

use crate::claims::Claims;
use crate::error::Error;
use crate::jwks::{CacheConfig, JwksCache};
use crate::jws::{self, Compact};
use crate::keys::{KeySet, PublicKey};
use crate::profile::{IssuerProfile, KeySource, ProfileKind};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::OnceCell;

/// A verified caller. Only [`Verifier::verify`] makes one; cloning is cheap.
#[derive(Clone)]
pub struct Identity(Arc<VerifiedToken>);

struct VerifiedToken {
    claims: Claims,
    profile: Arc<str>,
    kind: ProfileKind,
    /// The earliest time the token passes its `nbf` and `iat` checks (leeway included): a
    /// cache hit is judged at its own time, as a verification would be, were the clock
    /// stepped back or a caller's `now` earlier than the first.
    valid_from: u64,
    /// Which verifier made it: only that verifier's keys can say it still stands.
    verifier: u64,
    /// The fetched key that checked the signature, for the verified-token cache to ask
    /// whether it is still published; `None` for a profile's static keys.
    key: Option<KeyUsed>,
}

struct KeyUsed {
    /// Index of the profile in `Verifier::trusted`.
    trusted: usize,
    /// The key itself, not only its kid: an issuer publishing other material under the
    /// same kid has withdrawn this key.
    key: PublicKey,
    /// The key cache's generation last seen to hold the key.
    generation: AtomicU64,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("profile", &self.0.profile)
            .field("subject", &self.subject())
            .field("email", &self.email())
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn claims(&self) -> &Claims {
        &self.0.claims
    }
    /// The name of the issuer profile that admitted the token (`google`, `firebase:P`, ...).
    pub fn profile(&self) -> &str {
        &self.0.profile
    }
    pub fn profile_kind(&self) -> &ProfileKind {
        &self.0.kind
    }
    /// `sub`: the account id (Google), the uid (Firebase).
    pub fn subject(&self) -> &str {
        self.0.claims.subject().unwrap_or("")
    }
    pub fn email(&self) -> Option<&str> {
        self.0.claims.email()
    }
    /// Whether the email is one the issuer vouches for: `email_verified: true`, or IAP's
    /// `email`, which is always the account IAP signed in (see [`email_verified`]).
    pub fn email_verified(&self) -> bool {
        email_verified(&self.0.kind, &self.0.claims)
    }
    pub fn issuer(&self) -> &str {
        self.0.claims.issuer()
    }
    pub fn expires_at(&self) -> u64 {
        self.0.claims.expires_at()
    }
    /// Whether both are the one verification of a token: a verifier's cache hit returns
    /// the verification it keeps, a verification afresh a new one.
    pub fn same_verification(&self, other: &Identity) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
    /// Whether `at` is within the token's time (not before its `nbf`, `iat` or, from
    /// Firebase, `auth_time`, leeway given; before its `exp`).
    fn current_at(&self, at: u64) -> bool {
        self.0.valid_from <= at && at < self.expires_at()
    }
    /// A verified email that belongs to a Google service account.
    pub fn is_service_account(&self) -> bool {
        self.email_verified()
            && self
                .email()
                .is_some_and(|e| e.to_ascii_lowercase().ends_with(".gserviceaccount.com"))
    }
}

enum Keys {
    Static(Arc<KeySet>),
    Cache(Arc<JwksCache>),
    Discovery {
        issuer: String,
        cache: OnceCell<Arc<JwksCache>>,
        /// When discovery last failed and why: within `failure_backoff` of it, requests
        /// are refused without asking again (no fetch storm while the issuer is down).
        last_failure: parking_lot::Mutex<Option<(u64, String)>>,
    },
}

struct Trusted {
    profile: IssuerProfile,
    name: Arc<str>,
    keys: Keys,
}

/// Verifies tokens against one or more issuer profiles. Share it (`Arc`) across requests.
pub struct Verifier {
    /// Tells this verifier's identities from another's (see [`Verifier::still_stands`]).
    id: u64,
    trusted: Vec<Trusted>,
    http: reqwest::Client,
    cache_config: CacheConfig,
    tokens: Option<quick_cache::sync::Cache<Box<str>, Identity>>,
    max_token_bytes: usize,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "profiles",
                &self.trusted.iter().map(|t| &*t.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Builds a [`Verifier`].
#[derive(Debug)]
pub struct VerifierBuilder {
    profiles: Vec<IssuerProfile>,
    http: Option<reqwest::Client>,
    cache_config: CacheConfig,
    token_cache_capacity: usize,
}

/// The verifier could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("no issuer profile given")]
    NoProfiles,
    #[error("profile {0:?} accepts no audience; name at least one")]
    NoAudience(String),
    #[error("profiles {0:?} and {1:?} both claim issuer {2:?}")]
    AmbiguousIssuer(String, String, String),
    #[error("HTTP client could not be built: {0}")]
    Http(String),
}

impl VerifierBuilder {
    pub fn profile(mut self, profile: IssuerProfile) -> Self {
        self.profiles.push(profile);
        self
    }
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }
    pub fn cache_config(mut self, config: CacheConfig) -> Self {
        self.cache_config = config;
        self
    }
    /// Entries in the verified-token cache; 0 disables it.
    pub fn token_cache_capacity(mut self, entries: usize) -> Self {
        self.token_cache_capacity = entries;
        self
    }

    pub fn build(self) -> Result<Verifier, BuildError> {
        if self.profiles.is_empty() {
            return Err(BuildError::NoProfiles);
        }
        for (i, a) in self.profiles.iter().enumerate() {
            if a.audiences.is_empty() {
                return Err(BuildError::NoAudience(a.name.clone()));
            }
            for b in &self.profiles[i + 1..] {
                if let Some(iss) = a.issuers.iter().find(|iss| b.issuers.contains(iss)) {
                    return Err(BuildError::AmbiguousIssuer(
                        a.name.clone(),
                        b.name.clone(),
                        iss.clone(),
                    ));
                }
            }
        }
        let http = match self.http {
            Some(client) => client,
            None => reqwest::Client::builder()
                .user_agent(concat!("gatehouse-verify/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| BuildError::Http(e.to_string()))?,
        };
        let max_token_bytes = self
            .profiles
            .iter()
            .map(|p| p.max_token_bytes)
            .max()
            .unwrap_or(crate::profile::DEFAULT_MAX_TOKEN_BYTES);
        let trusted = self
            .profiles
            .into_iter()
            .map(|profile| {
                let keys = match &profile.keys {
                    KeySource::Static(set) => Keys::Static(set.clone()),
                    KeySource::Url(url) => Keys::Cache(Arc::new(JwksCache::new(
                        url.clone(),
                        http.clone(),
                        self.cache_config.clone(),
                    ))),
                    KeySource::Discovery(issuer) => Keys::Discovery {
                        issuer: issuer.clone(),
                        cache: OnceCell::new(),
                        last_failure: parking_lot::Mutex::new(None),
                    },
                };
                Trusted {
                    name: profile.name.as_str().into(),
                    profile,
                    keys,
                }
            })
            .collect();
        let tokens = (self.token_cache_capacity > 0)
            .then(|| quick_cache::sync::Cache::new(self.token_cache_capacity));
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Verifier {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            trusted,
            http,
            cache_config: self.cache_config,
            tokens,
            max_token_bytes,
        })
    }
}

pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 16_384;

impl Verifier {
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder {
            profiles: Vec::new(),
            http: None,
            cache_config: CacheConfig::default(),
            token_cache_capacity: DEFAULT_TOKEN_CACHE_ENTRIES,
        }
    }

    /// A verifier for one profile with default caches.
    pub fn new(profile: IssuerProfile) -> Result<Self, BuildError> {
        Verifier::builder().profile(profile).build()
    }

    /// The key caches this verifier fetches through (for metrics and tests).
    pub fn key_caches(&self) -> Vec<Arc<JwksCache>> {
        self.trusted
            .iter()
            .filter_map(|t| match &t.keys {
                Keys::Cache(c) => Some(c.clone()),
                Keys::Discovery { cache, .. } => cache.get().cloned(),
                Keys::Static(_) => None,
            })
            .collect()
    }

    /// Verifies `token` at time `now` (Unix seconds): size, structure, header, the profile
    /// named by `iss`, signature with that profile's key, then every claim.
    ///
    /// One signing may verify as more than one token string (an ES256 signature `(r, s)`
    /// also verifies as `(r, n - s)`; RFC 7518 does not ask for low `s`): a token string is
    /// no replay key. Use its claims (`jti`, or `sub` with `iat`).
    pub async fn verify(&self, token: &str, now: u64) -> Result<Identity, Error> {
        if token.len() > self.max_token_bytes {
            return Err(Error::TooLarge {
                size: token.len(),
                max: self.max_token_bytes,
            });
        }
        if let Some(cache) = &self.tokens {
            if let Some(identity) = cache.get(token) {
                // An entry never outlives its token (past `exp` it is verified afresh, which
                // then applies the leeway, or refuses), nor its key: once the issuer no
                // longer publishes the key, or its keys are past their staleness bound, the
                // token is verified afresh, as an uncached one would be.
                if identity.current_at(now) && self.key_still_stands(&identity, now) {
                    return Ok(identity);
                }
            }
        }
        // Boxed: the uncached path (key fetches, discovery) is most of this future's size,
        // and a caller holding the future for every request in flight (a proxy) would
        // otherwise reserve it on every cache hit too.
        let identity = Box::pin(self.verify_uncached(token, now)).await?;
        if let Some(cache) = &self.tokens {
            if identity.current_at(now) {
                cache.insert(token.into(), identity.clone());
            }
        }
        Ok(identity)
    }

    /// Whether `identity`, which this verifier returned for a token, still stands at `now`
    /// as the cached verification of that token would: the token not expired, its key
    /// still published as the same key. For a caller that remembers the token it last saw
    /// (a connection, whose client sends the same token until it expires) and so can skip
    /// reading and looking it up again. False when this verifier keeps no verified tokens:
    /// then every token is verified afresh, as configured; false for another verifier's
    /// identity, whose profiles and keys are not this one's.
    pub fn still_stands(&self, identity: &Identity, now: u64) -> bool {
        self.tokens.is_some()
            && identity.0.verifier == self.id
            && identity.current_at(now)
            && self.key_still_stands(identity, now)
    }

    fn key_still_stands(&self, identity: &Identity, now: u64) -> bool {
        let Some(key) = &identity.0.key else {
            return true;
        };
        let cache = match self.trusted.get(key.trusted).map(|t| &t.keys) {
            Some(Keys::Static(_)) => return true,
            Some(Keys::Cache(cache)) => cache,
            Some(Keys::Discovery { cache, .. }) => match cache.get() {
                Some(cache) => cache,
                None => return false,
            },
            None => return false,
        };
        let seen = key.generation.load(Ordering::Relaxed);
        match cache.vouches(&key.key, seen, now) {
            Some(generation) => {
                if generation != seen {
                    key.generation.store(generation, Ordering::Relaxed);
                }
                true
            }
            None => false,
        }
    }

    async fn verify_uncached(&self, token: &str, now: u64) -> Result<Identity, Error> {
        let compact = Compact::split(token)?;
        let header = jws::parse_header(compact.header)?;
        // An ID token is a JWT; other typed JWS (`at+jwt` access tokens, logout tokens)
        // must not pass as one.
        if header
            .typ
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
        {
            return Err(crate::error::Malformed::HeaderShape.into());
        }
        let claims = jws::decode_claims(compact.payload)?;
        // `iss` only selects which profile's keys to try; it is trusted after the signature.
        let index = self
            .trusted
            .iter()
            .position(|t| t.profile.issuers.iter().any(|i| i == claims.issuer()))
            .ok_or_else(|| Error::WrongIssuer {
                iss: claims.issuer().chars().take(128).collect(),
            })?;
        let trusted = &self.trusted[index];
        let profile = &trusted.profile;
        if token.len() > profile.max_token_bytes {
            return Err(Error::TooLarge {
                size: token.len(),
                max: profile.max_token_bytes,
            });
        }
        if !profile.algorithms.contains(&header.alg) {
            return Err(Error::BadAlgorithm {
                alg: header.alg.jws_name().to_owned(),
            });
        }
        let kid = header.kid.as_deref().ok_or(Error::MissingKid)?;
        let (keys, generation) = self.keys_for(trusted, kid, now).await?;
        let key = jws::verify_signature(&compact, &header, &keys, &profile.algorithms)?;
        check_claims(profile, &claims, now)?;
        // Every time before which a fresh verification would refuse the token, so that a
        // cache hit at an earlier `now` (a clock stepped back) refuses it too: `nbf`, `iat`,
        // and Firebase's `auth_time`, which is checked for it alone.
        let auth_time = match profile.kind {
            ProfileKind::Firebase { .. } => claims.auth_time().and_then(Result::ok),
            _ => None,
        };
        let valid_from = claims
            .not_before()
            .max(claims.issued_at())
            .max(auth_time)
            .unwrap_or(0)
            .saturating_sub(profile.leeway);
        Ok(Identity(Arc::new(VerifiedToken {
            claims,
            profile: trusted.name.clone(),
            kind: profile.kind.clone(),
            valid_from,
            verifier: self.id,
            key: generation.map(|generation| KeyUsed {
                trusted: index,
                key: key.clone(),
                generation: AtomicU64::new(generation),
            }),
        })))
    }

    /// The keys to check `kid`'s signature with, and (for fetched keys) the key cache's
    /// generation read before them: were they fetched again meanwhile, the cache asks
    /// about `kid` again on its next hit rather than trust a set it has not seen.
    async fn keys_for(
        &self,
        trusted: &Trusted,
        kid: &str,
        now: u64,
    ) -> Result<(Arc<KeySet>, Option<u64>), Error> {
        let cache = match &trusted.keys {
            Keys::Static(set) => return Ok((set.clone(), None)),
            Keys::Cache(cache) => cache,
            Keys::Discovery {
                issuer,
                cache,
                last_failure,
            } => {
                // Checked inside the initialiser too: requests queued behind a failing
                // discovery must not each retry it.
                cache
                    .get_or_try_init(|| async {
                        let backoff = self.cache_config.failure_backoff;
                        if let Some((at, reason)) = last_failure.lock().as_ref() {
                            if now < at.saturating_add(backoff) {
                                return Err(Error::KeysUnavailable {
                                    reason: reason.clone(),
                                });
                            }
                        }
                        let result = self.discover(issuer).await;
                        if let Err(Error::KeysUnavailable { reason }) = &result {
                            *last_failure.lock() = Some((now, reason.clone()));
                        }
                        result
                    })
                    .await?
            }
        };
        let generation = cache.generation();
        let keys = cache.keys(now).await?;
        if keys.get(kid).is_some() {
            return Ok((keys, Some(generation)));
        }
        let keys = cache.keys_for_unknown_kid(kid, now).await?;
        Ok((keys, Some(generation)))
    }

    async fn discover(&self, issuer: &str) -> Result<Arc<JwksCache>, Error> {
        let unavailable = |reason: String| Error::KeysUnavailable { reason };
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let shown = crate::jwks::redacted(&url);
        let response = self
            .http
            .get(&url)
            .timeout(self.cache_config.fetch_timeout)
            .send()
            .await
            .map_err(|_| unavailable(format!("discovery at {shown} failed")))?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "discovery at {shown} answered {}",
                response.status()
            )));
        }
        let body = crate::jwks::read_bounded(response, self.cache_config.limits.max_document_bytes)
            .await
            .map_err(|e| match e {
                crate::jwks::ReadError::TooLarge => {
                    unavailable("discovery document too large".into())
                }
                crate::jwks::ReadError::Transport(_) => {
                    unavailable("discovery body unreadable".into())
                }
            })?;
        let doc = crate::json::parse_object(&body)
            .map_err(|_| unavailable("discovery document is not a JSON object".into()))?;
        // OIDC Discovery §4.3: the document's issuer must be exactly the one we asked.
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
            return Err(unavailable(
                "discovery document names another issuer".into(),
            ));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| unavailable("discovery document has no jwks_uri".into()))?;
        if !keys_url_allowed(issuer, jwks_uri) {
            return Err(unavailable(
                "discovery document names keys at a URL not https like the issuer".into(),
            ));
        }
        Ok(Arc::new(JwksCache::new(
            jwks_uri,
            self.http.clone(),
            self.cache_config.clone(),
        )))
    }
}

/// Whether an issuer's discovery document may name `jwks_uri` for its keys. The keys are
/// the root of trust: an issuer reached over TLS names keys reached over TLS; only an
/// `http://` issuer (a local emulator) may name `http://` keys. No other scheme.
fn keys_url_allowed(issuer: &str, jwks_uri: &str) -> bool {
    let scheme = |u: &str| reqwest::Url::parse(u).map(|u| u.scheme().to_owned()).ok();
    let keys = scheme(jwks_uri);
    match scheme(issuer).as_deref() {
        Some("https") => keys.as_deref() == Some("https"),
        _ => matches!(keys.as_deref(), Some("https" | "http")),
    }
}

/// Every claim rule of the profile, at `now`.
pub(crate) fn check_claims(
    profile: &IssuerProfile,
    claims: &Claims,
    now: u64,
) -> Result<(), Error> {
    let leeway = profile.leeway;
    if !profile.issuers.iter().any(|i| i == claims.issuer()) {
        return Err(Error::WrongIssuer {
            iss: claims.issuer().chars().take(128).collect(),
        });
    }
    // OIDC Core 3.1.3.7: the token must name this client, and no audience it does not
    // trust (a token for ["their-client", "ours"] is theirs to replay). Google's libraries
    // refuse any array; one of accepted audiences only is as strict and spec-conformant.
    if !claims
        .audiences()
        .iter()
        .all(|a| profile.audiences.iter().any(|ok| ok == a))
    {
        return Err(Error::WrongAudience);
    }
    let exp = claims.expires_at();
    if now >= exp.saturating_add(leeway) {
        return Err(Error::Expired { now, exp, leeway });
    }
    if let Some(nbf) = claims.not_before() {
        if nbf > now.saturating_add(leeway) {
            return Err(Error::NotYetValid { now, nbf, leeway });
        }
    }
    match claims.issued_at() {
        Some(iat) if iat > now.saturating_add(leeway) => {
            return Err(Error::IssuedInFuture { now, iat, leeway });
        }
        None if profile.require_iat => return Err(Error::MissingClaim { claim: "iat" }),
        _ => {}
    }
    if let (Some(max), Some(iat)) = (profile.max_lifetime, claims.issued_at()) {
        let lifetime = exp.saturating_sub(iat);
        if lifetime > max {
            return Err(Error::LifetimeTooLong { lifetime, max });
        }
    }
    if profile.require_sub && claims.subject().is_none_or(str::is_empty) {
        return Err(Error::MissingClaim { claim: "sub" });
    }
    if let ProfileKind::Firebase { .. } = &profile.kind {
        let sub = claims.subject().unwrap_or("");
        // Characters, not bytes, as firebase-admin counts them.
        if sub.is_empty() || sub.chars().count() > 128 {
            return Err(Error::InvalidClaim {
                claim: "sub",
                why: "Firebase uid must be 1 to 128 characters",
            });
        }
        match claims.auth_time() {
            None => return Err(Error::MissingClaim { claim: "auth_time" }),
            Some(v) => {
                let auth_time = v.map_err(|()| Error::InvalidClaim {
                    claim: "auth_time",
                    why: "not a NumericDate",
                })?;
                if auth_time > now.saturating_add(leeway) {
                    return Err(Error::InvalidClaim {
                        claim: "auth_time",
                        why: "in the future",
                    });
                }
            }
        }
    }
    if profile.require_email_verified
        && !(claims.email().is_some() && email_verified(&profile.kind, claims))
    {
        return Err(Error::EmailUnverified);
    }
    Ok(())
}

/// Whether the issuer vouches for the token's email. IAP's assertion has no
/// `email_verified`: its `email` is the Google account IAP signed in, verified by Google,
/// unless the identity came from Identity Platform (a `gcip` claim), whose own
/// `email_verified` then says.
fn email_verified(kind: &ProfileKind, claims: &Claims) -> bool {
    if claims.email_verified() {
        return true;
    }
    match kind {
        ProfileKind::Iap => match claims.get("gcip") {
            None => claims.email().is_some(),
            Some(gcip) => gcip.get("email_verified") == Some(&serde_json::Value::Bool(true)),
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::keys_url_allowed;

    #[test]
    fn an_https_issuer_names_https_keys_only() {
        let issuer = "https://op.example";
        assert!(keys_url_allowed(issuer, "https://keys.op.example/jwks"));
        for keys in [
            "http://keys.op.example/jwks",
            "file:///etc/jwks.json",
            "ftp://keys.op.example/jwks",
            "//keys.op.example/jwks",
            "not a url",
        ] {
            assert!(!keys_url_allowed(issuer, keys), "{keys}");
        }
        // A plain-HTTP issuer (the emulator) may name plain-HTTP keys, never a file.
        assert!(keys_url_allowed(
            "http://127.0.0.1:9099",
            "http://127.0.0.1:9099/jwks"
        ));
        assert!(!keys_url_allowed(
            "http://127.0.0.1:9099",
            "file:///etc/jwks.json"
        ));
    }
}
