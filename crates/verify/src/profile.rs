//! Issuer profiles: what a trusted issuer's tokens must look like. The profile, never the
//! token, decides the issuer strings, the keys, the algorithms and the audiences.

use crate::jwks::redacted;
use crate::keys::{Algorithm, KeySet};
use std::sync::Arc;

pub const GOOGLE_ISSUERS: [&str; 2] = ["accounts.google.com", "https://accounts.google.com"];
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
pub const GOOGLE_PEM_CERTS_URL: &str = "https://www.googleapis.com/oauth2/v1/certs";
pub const FIREBASE_ISSUER_PREFIX: &str = "https://securetoken.google.com/";
pub const FIREBASE_CERTS_URL: &str =
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com";
pub const IAP_ISSUER: &str = "https://cloud.google.com/iap";
pub const IAP_JWKS_URL: &str = "https://www.gstatic.com/iap/verify/public_key-jwk";

/// Where an issuer's keys come from.
#[derive(Clone)]
#[non_exhaustive]
pub enum KeySource {
    /// Keys known up front (tests, service-account keys, a pinned deployment).
    Static(Arc<KeySet>),
    /// A JWK set or kid -> PEM map at this URL, cached per its `Cache-Control`.
    Url(String),
    /// OIDC discovery: `{issuer}/.well-known/openid-configuration` names the `jwks_uri`.
    Discovery(String),
}

/// URLs shown without query, fragment or user-info, which may carry a key, as in logs.
impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Static(keys) => f.debug_tuple("Static").field(keys).finish(),
            KeySource::Url(url) => f.debug_tuple("Url").field(&redacted(url)).finish(),
            KeySource::Discovery(url) => f.debug_tuple("Discovery").field(&redacted(url)).finish(),
        }
    }
}

/// Extra rules a built-in issuer brings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileKind {
    Google,
    /// Firebase / Identity Platform: `sub` (the uid) 1–128 chars, `auth_time` in the past.
    Firebase {
        project: String,
    },
    Iap,
    Oidc,
}

#[derive(Debug, Clone)]
pub struct IssuerProfile {
    pub(crate) name: String,
    pub(crate) kind: ProfileKind,
    pub(crate) issuers: Vec<String>,
    pub(crate) keys: KeySource,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) audiences: Vec<String>,
    pub(crate) leeway: u64,
    pub(crate) max_token_bytes: usize,
    pub(crate) max_lifetime: Option<u64>,
    pub(crate) require_email_verified: bool,
    pub(crate) require_iat: bool,
    pub(crate) require_sub: bool,
}

/// A profile string from the command line or a config file could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown issuer profile {0:?}: use google, firebase:PROJECT, iap, oidc:ISSUER_URL or an issuer string"
)]
pub struct ProfileParseError(pub String);

pub const DEFAULT_LEEWAY: u64 = 60;
/// Google's and Firebase's ID tokens live an hour; google-auth-library-nodejs refuses one
/// expiring more than a day ahead (`maxExpiry`), and so does a profile of theirs here.
pub const GOOGLE_MAX_LIFETIME: u64 = 86_400;
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

impl IssuerProfile {
    fn base(name: String, kind: ProfileKind, issuers: Vec<String>, keys: KeySource) -> Self {
        IssuerProfile {
            name,
            kind,
            issuers,
            keys,
            algorithms: vec![Algorithm::RS256],
            audiences: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            max_lifetime: None,
            require_email_verified: false,
            require_iat: true,
            require_sub: true,
        }
    }

    /// Google-signed ID tokens (Sign-In, service accounts, the metadata server): RS256,
    /// `iss` exactly `accounts.google.com` or `https://accounts.google.com`.
    pub fn google() -> Self {
        let mut p = IssuerProfile::base(
            "google".into(),
            ProfileKind::Google,
            GOOGLE_ISSUERS.iter().map(|s| (*s).to_owned()).collect(),
            KeySource::Url(GOOGLE_JWKS_URL.into()),
        );
        p.max_lifetime = Some(GOOGLE_MAX_LIFETIME);
        p
    }

    /// Firebase Auth / Identity Platform ID tokens of `project`; the audience is the
    /// project id and is set here.
    pub fn firebase(project: &str) -> Self {
        let mut p = IssuerProfile::base(
            format!("firebase:{project}"),
            ProfileKind::Firebase {
                project: project.to_owned(),
            },
            vec![format!("{FIREBASE_ISSUER_PREFIX}{project}")],
            KeySource::Url(FIREBASE_CERTS_URL.into()),
        );
        p.audiences = vec![project.to_owned()];
        p.max_lifetime = Some(GOOGLE_MAX_LIFETIME);
        p
    }

    /// IAP's signed headers (`x-goog-iap-jwt-assertion`): ES256, 30 s leeway, at most
    /// 10 minutes of lifetime. Audiences (`/projects/NUM/...`) must be added.
    pub fn iap() -> Self {
        let mut p = IssuerProfile::base(
            "iap".into(),
            ProfileKind::Iap,
            vec![IAP_ISSUER.into()],
            KeySource::Url(IAP_JWKS_URL.into()),
        );
        p.algorithms = vec![Algorithm::ES256];
        p.leeway = 30;
        p.max_lifetime = Some(600);
        p
    }

    /// Any OpenID Connect issuer, its keys found by discovery. The key's own type decides
    /// between RS256 and ES256.
    pub fn oidc(issuer: &str) -> Self {
        let mut p = IssuerProfile::base(
            issuer.to_owned(),
            ProfileKind::Oidc,
            vec![issuer.to_owned()],
            KeySource::Discovery(issuer.to_owned()),
        );
        p.algorithms = vec![Algorithm::RS256, Algorithm::ES256];
        p
    }

    /// An issuer string with explicit keys (a JWKS / PEM map URL or static keys).
    pub fn literal(issuer: &str, keys: KeySource) -> Self {
        let mut p = IssuerProfile::oidc(issuer);
        p.keys = keys;
        p
    }

    /// Parses DESIGN §2's PROFILE: `google` | `firebase:PROJECT` | `iap` |
    /// `oidc:ISSUER_URL` | a literal issuer string (which then needs a key URL).
    pub fn parse(spec: &str, jwks_url: Option<&str>) -> Result<Self, ProfileParseError> {
        let mut profile = match spec {
            "google" => IssuerProfile::google(),
            "iap" => IssuerProfile::iap(),
            s if s.starts_with("firebase:") && s.len() > "firebase:".len() => {
                IssuerProfile::firebase(&s["firebase:".len()..])
            }
            s if s.starts_with("oidc:") && s.len() > "oidc:".len() => {
                IssuerProfile::oidc(&s["oidc:".len()..])
            }
            // A built-in prefix with nothing after it is a typo, not a literal issuer.
            s if !s.is_empty()
                && !s.contains(char::is_whitespace)
                && !matches!(s, "firebase:" | "oidc:") =>
            {
                match jwks_url {
                    Some(url) => IssuerProfile::literal(s, KeySource::Url(url.to_owned())),
                    None => IssuerProfile::oidc(s),
                }
            }
            s => return Err(ProfileParseError(s.to_owned())),
        };
        if let Some(url) = jwks_url {
            profile.keys = KeySource::Url(url.to_owned());
        }
        Ok(profile)
    }

    /// Accept tokens whose `aud` contains any of these (adds to what the profile has).
    pub fn with_audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for a in audiences {
            let a = a.into();
            if !self.audiences.contains(&a) {
                self.audiences.push(a);
            }
        }
        self
    }

    /// Take keys from here instead (e.g. the emulator's `/oauth2/v3/certs`).
    pub fn with_keys(mut self, keys: KeySource) -> Self {
        self.keys = keys;
        self
    }

    pub fn with_jwks_url(self, url: &str) -> Self {
        self.with_keys(KeySource::Url(url.to_owned()))
    }

    pub fn with_static_keys(self, keys: KeySet) -> Self {
        self.with_keys(KeySource::Static(Arc::new(keys)))
    }

    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    pub fn with_max_token_bytes(mut self, bytes: usize) -> Self {
        self.max_token_bytes = bytes;
        self
    }

    /// Refuse tokens whose `exp - iat` exceeds this (and tokens without `iat`).
    pub fn with_max_lifetime(mut self, secs: u64) -> Self {
        self.max_lifetime = Some(secs);
        self.require_iat = true;
        self
    }

    /// Refuse tokens whose `email_verified` is not true (and tokens without an email).
    pub fn require_email_verified(mut self, yes: bool) -> Self {
        self.require_email_verified = yes;
        self
    }

    /// Whether `sub` must be present (default yes).
    pub fn require_subject(mut self, yes: bool) -> Self {
        self.require_sub = yes;
        self
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn kind(&self) -> &ProfileKind {
        &self.kind
    }
    pub fn issuers(&self) -> &[String] {
        &self.issuers
    }
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }
    pub fn key_source(&self) -> &KeySource {
        &self.keys
    }
    pub fn leeway(&self) -> u64 {
        self.leeway
    }
}
