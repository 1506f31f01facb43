//! The service-account key file source: parse a Google key file, self-sign a JWT exactly as
//! python google-auth's `service_account.IDTokenCredentials` does, and exchange it at the
//! key's `token_uri` with the jwt-bearer grant for `{"id_token": ...}`.

use crate::error::{Error, KeyFileError};
use crate::source::{IdToken, IdTokenSource};
use crate::transport::{self, success_body, unreachable};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use gatehouse_verify::{Algorithm, Clock, SigningKey, SystemClock};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The assertion's `aud`. google-auth hard-codes Google's token endpoint here, whatever
/// the key's `token_uri` says; so do we, and the emulator accepts it.
pub const GOOGLE_TOKEN_AUDIENCE: &str = "https://oauth2.googleapis.com/token";
/// RFC 7523's grant type.
pub const JWT_BEARER_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// google-auth's `_DEFAULT_TOKEN_LIFETIME_SECS`.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
const SERVICE: &str = "token endpoint";

/// A Google-format service-account key. `Debug` hides the private key.
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: String,
    pub token_uri: String,
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    private_key: String,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .field("client_id", &self.client_id)
            .field("private_key", &"<hidden>")
            .finish()
    }
}

impl ServiceAccountKey {
    /// Read and parse a key file.
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| KeyFileError::Read {
                path: shown.clone(),
                detail: e.to_string(),
            })?;
        ServiceAccountKey::from_json(&bytes, &shown)
    }

    /// Parse a key file's bytes; `origin` names it in errors. The fields python google-auth
    /// requires must be present; `type` must be `service_account`.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Self, KeyFileError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| KeyFileError::NotJson {
            path: origin.to_owned(),
            // serde_json's message holds a position, never the input.
            detail: e.to_string(),
        })?;
        let Value::Object(map) = value else {
            return Err(KeyFileError::NotJson {
                path: origin.to_owned(),
                detail: "expected a JSON object".into(),
            });
        };
        let fields = Fields { map: &map, origin };
        let kind = fields.required("type")?;
        if kind != "service_account" {
            return Err(fields.bad(
                "type",
                format!("is \"{kind}\"; only \"service_account\" keys can mint ID tokens"),
            ));
        }
        let client_email = fields.required("client_email")?;
        if !client_email.contains('@') {
            return Err(fields.bad("client_email", "is not an email address".into()));
        }
        let private_key_id = fields.required("private_key_id")?;
        let private_key = fields.required("private_key")?;
        if !private_key.contains("-----BEGIN PRIVATE KEY-----") {
            return Err(fields.bad(
                "private_key",
                "is not a PEM `-----BEGIN PRIVATE KEY-----` (PKCS#8) block".into(),
            ));
        }
        let token_uri = fields.required("token_uri")?;
        match url::Url::parse(&token_uri) {
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                // Shown in messages and logs ("via ..."): no credentials in it.
                return Err(fields.bad(
                    "token_uri",
                    "has user-info; credentials go in headers".into(),
                ));
            }
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(fields.bad("token_uri", "is not an http(s) URL".into())),
        }
        Ok(ServiceAccountKey {
            client_email,
            private_key_id,
            token_uri,
            project_id: fields.optional("project_id")?,
            client_id: fields.optional("client_id")?,
            private_key,
        })
    }

    /// The private key, ready to sign (RS256, `kid` = `private_key_id`).
    pub fn signing_key(&self, origin: &str) -> Result<SigningKey, KeyFileError> {
        SigningKey::from_pkcs8_pem(
            self.private_key_id.clone(),
            Algorithm::RS256,
            &self.private_key,
        )
        .map_err(|_| KeyFileError::BadField {
            path: origin.to_owned(),
            field: "private_key",
            problem: "is not an unencrypted PKCS#8 RSA private key".into(),
        })
    }
}

struct Fields<'a> {
    map: &'a Map<String, Value>,
    origin: &'a str,
}

impl Fields<'_> {
    fn bad(&self, field: &'static str, problem: String) -> KeyFileError {
        KeyFileError::BadField {
            path: self.origin.to_owned(),
            field,
            problem,
        }
    }

    fn optional(&self, field: &'static str) -> Result<Option<String>, KeyFileError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad(field, "is not a string".into())),
        }
    }

    fn required(&self, field: &'static str) -> Result<String, KeyFileError> {
        match self.optional(field)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(self.bad(field, "is empty".into())),
            None => Err(KeyFileError::MissingField {
                path: self.origin.to_owned(),
                field,
            }),
        }
    }
}

/// The assertion's claims, in google-auth's order: `iat`, `exp` = `iat` + 3600, `iss` =
/// the client email, `aud` = Google's token endpoint, `target_audience`. No `sub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssertionClaims<'a> {
    pub iat: u64,
    pub exp: u64,
    pub iss: &'a str,
    pub aud: &'a str,
    pub target_audience: &'a str,
}

/// Mints ID tokens from a service-account key file.
pub struct KeyFileSource {
    key: ServiceAccountKey,
    origin: String,
    signer: SigningKey,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for KeyFileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFileSource")
            .field("key", &self.key)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl KeyFileSource {
    /// A source for a parsed key; `origin` (usually the file's path) names it in errors.
    pub fn new(key: ServiceAccountKey, origin: impl Into<String>) -> Result<Self, Error> {
        let origin = origin.into();
        let signer = key.signing_key(&origin)?;
        // A token_uri on this machine (the emulator's) is reached directly; a remote one
        // (Google's) through the proxy the environment names, if any.
        let local = url::Url::parse(&key.token_uri).is_ok_and(|u| transport::is_local(&u));
        let http = if local {
            transport::direct_http_client()?
        } else {
            transport::default_http_client()?
        };
        Ok(KeyFileSource {
            key,
            origin,
            signer,
            http,
            clock: Arc::new(SystemClock),
        })
    }

    /// Read, parse and check the key file at `path`.
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let key = ServiceAccountKey::from_file(path).await?;
        KeyFileSource::new(key, path.display().to_string())
    }

    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// The clock that stamps `iat` (tests pin it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn key(&self) -> &ServiceAccountKey {
        &self.key
    }

    /// The claims of an assertion for `target_audience` made at `now`.
    pub fn assertion_claims<'a>(
        &'a self,
        target_audience: &'a str,
        now: u64,
    ) -> AssertionClaims<'a> {
        AssertionClaims {
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
            iss: &self.key.client_email,
            aud: GOOGLE_TOKEN_AUDIENCE,
            target_audience,
        }
    }

    /// The self-signed JWT google-auth would send: header `{"typ": "JWT", "alg": "RS256",
    /// "kid": private_key_id}` and [`AssertionClaims`].
    pub fn assertion(&self, target_audience: &str) -> Result<String, Error> {
        let claims = self.assertion_claims(target_audience, self.clock.now_unix());
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.key.private_key_id});
        self.signer
            .sign_jwt_with_header(&header, &claims)
            .map_err(Error::Sign)
    }

    async fn exchange(&self, audience: &str) -> Result<IdToken, Error> {
        let assertion = self.assertion(audience)?;
        let url = self.key.token_uri.as_str();
        let response = self
            .http
            .post(url)
            .form(&[
                ("grant_type", JWT_BEARER_GRANT_TYPE),
                ("assertion", &assertion),
            ])
            .send()
            .await
            .map_err(|e| unreachable(SERVICE, url, e))?;
        let body = success_body(SERVICE, url, response).await?;
        let bad = |detail: &str| Error::BadAnswer {
            service: SERVICE,
            url: url.to_owned(),
            detail: detail.to_owned(),
        };
        let answer: Value = serde_json::from_slice(&body).map_err(|_| bad("answer is not JSON"))?;
        let token = answer
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no `id_token` in the answer"))?;
        IdToken::from_minted(SERVICE, url, token)
    }
}

impl IdTokenSource for KeyFileSource {
    fn mint<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<IdToken, Error>> {
        self.exchange(audience).boxed()
    }

    fn describe(&self) -> String {
        format!(
            "service-account key {} ({}) via {}",
            self.origin, self.key.client_email, self.key.token_uri
        )
    }
}
