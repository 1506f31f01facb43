//! IAP-shaped assertions (`X-Goog-Iap-Jwt-Assertion`): ES256 JWTs saying who the gateway
//! admitted, so IAP-style backends work unchanged. One ES256 signature per identity and
//! route per lifetime, not per request: assertions are cached until shortly before expiry.

use crate::headers::ACCOUNTS_PREFIX;
use gatehouse_verify::sign::{SignError, SigningKey};
use gatehouse_verify::verifier::Identity;
use http::HeaderValue;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// An assertion is reissued once less than this many seconds of it remain, so a backend
/// with a little clock skew never sees one that is about to expire.
const REISSUE_MARGIN: u64 = 60;
/// Cached assertions (identity x route); the cache evicts beyond this.
const CACHE_ENTRIES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionKeyError {
    #[error("cannot read assertion key file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("assertion key: {0}")]
    Key(#[from] SignError),
}

/// Why a verified caller's identity headers could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionError {
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("the caller's {0} cannot be sent in a header")]
    NotAHeaderValue(&'static str),
}

/// Audience, issuer, subject and (verified) email: two issuers' subjects are two people.
type CacheKey = (Arc<str>, String, String, String);

/// Signs and caches assertions; publishes its public key as a JWK set.
pub struct AssertionSigner {
    key: SigningKey,
    issuer: String,
    lifetime: u64,
    cache: quick_cache::sync::Cache<CacheKey, IdentityHeaders>,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("kid", &self.key.kid())
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// A signer with a fresh P-256 key (its kid derived from the key), or the PKCS#8 PEM
    /// key in `key_file` so that several gateways publish the same key.
    pub fn new(
        issuer: &str,
        lifetime: u64,
        key_file: Option<&Path>,
    ) -> Result<Self, AssertionKeyError> {
        let key = match key_file {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| AssertionKeyError::Read(path.display().to_string(), e))?;
                let probe =
                    SigningKey::from_pkcs8_pem("probe", gatehouse_verify::Algorithm::ES256, &pem)?;
                SigningKey::from_pkcs8_pem(
                    kid_for(&probe)?,
                    gatehouse_verify::Algorithm::ES256,
                    &pem,
                )?
            }
            None => {
                let probe = SigningKey::generate_es256("probe")?;
                let der = probe.to_pkcs8_der()?;
                SigningKey::from_pkcs8_der(
                    kid_for(&probe)?,
                    gatehouse_verify::Algorithm::ES256,
                    &der,
                )?
            }
        };
        Ok(AssertionSigner {
            key,
            issuer: issuer.to_owned(),
            lifetime,
            cache: quick_cache::sync::Cache::new(CACHE_ENTRIES),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `{"keys": [the public JWK]}`, served at `/_gatehouse/public_key-jwk`.
    pub fn jwk_set(&self) -> Result<Value, SignError> {
        Ok(json!({ "keys": [self.key.public_jwk()?] }))
    }

    /// The identity headers for `identity` on the route whose assertion audience is
    /// `audience`: built once per identity, route and assertion lifetime, so a request costs
    /// a cache look-up (with borrowed keys) and reference-count clones.
    pub(crate) fn identity_headers(
        &self,
        audience: &Arc<str>,
        identity: &Identity,
        now: u64,
    ) -> Result<IdentityHeaders, AssertionError> {
        // Only an email the issuer vouches for is asserted: IAP asserts the account it
        // signed in, and apps behind it trust the header and the claim as such.
        let email = crate::stack::verified_email(identity).unwrap_or_default();
        let lookup = KeyRef(audience, identity.issuer(), identity.subject(), email);
        if let Some(cached) = self.cache.get(&lookup) {
            if now.saturating_add(REISSUE_MARGIN) < cached.exp {
                return Ok(cached);
            }
        }
        let exp = now + self.lifetime;
        let user_id = user_id(identity);
        let mut claims = json!({
            "iss": self.issuer,
            "aud": &**audience,
            "sub": user_id,
            "iat": now,
            "exp": exp,
        });
        if let Some(map) = claims.as_object_mut() {
            if !email.is_empty() {
                map.insert("email".into(), Value::String(email.to_owned()));
            }
            if let Some(hd) = identity.claims().hosted_domain() {
                map.insert("hd".into(), Value::String(hd.to_owned()));
            }
            // Where the identity came from, as IAP's `identity_source`-like detail.
            map.insert(
                "gatehouse".into(),
                json!({"issuer": identity.issuer(), "profile": identity.profile()}),
            );
        }
        let assertion = header_value(self.key.sign_jwt(&claims)?, "assertion")?;
        let email_header = if email.is_empty() {
            None
        } else {
            Some(header_value(format!("{ACCOUNTS_PREFIX}{email}"), "email")?)
        };
        let headers = IdentityHeaders {
            email: email_header,
            user_id: header_value(user_id, "subject")?,
            assertion,
            exp,
        };
        self.cache.insert(
            (
                audience.clone(),
                identity.issuer().to_owned(),
                identity.subject().to_owned(),
                email.to_owned(),
            ),
            headers.clone(),
        );
        Ok(headers)
    }
}

/// The headers the gateway adds for a verified caller (their values, ready to insert).
#[derive(Debug, Clone)]
pub(crate) struct IdentityHeaders {
    /// `accounts.google.com:EMAIL`, when the caller has an email.
    pub email: Option<HeaderValue>,
    /// `accounts.google.com:SUB`, or the issuer's own namespace (see [`user_id`]).
    pub user_id: HeaderValue,
    /// The IAP-shaped ES256 assertion.
    pub assertion: HeaderValue,
    exp: u64,
}

/// The caller's id as IAP writes it (`X-Goog-Authenticated-User-Id`, the assertion's `sub`):
/// `accounts.google.com:SUB` for a Google account, and for any other issuer its name without
/// the scheme in place of `accounts.google.com` (`securetoken.google.com/PROJECT:UID`, as
/// IAP names Identity Platform users). A `sub` is unique only within its issuer: were every
/// issuer's written as Google's, a route trusting two issuers would give an app one id for
/// two people, one of whom the other issuer may let choose it.
fn user_id(identity: &Identity) -> String {
    let issuer = identity.issuer();
    let namespace = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .unwrap_or(issuer)
        .trim_end_matches('/');
    format!("{namespace}:{}", identity.subject())
}

/// A header value from text the gateway built: a claim with a control character in it
/// cannot become a header, and no identity headers are sent for it.
fn header_value(text: String, what: &'static str) -> Result<HeaderValue, AssertionError> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .map_err(|_| AssertionError::NotAHeaderValue(what))
}

/// A borrowed cache key: hashes as [`CacheKey`] does (a tuple hashes its fields in order,
/// and `str`, `String` and `Arc<str>` hash alike), so a look-up allocates nothing.
#[derive(Hash)]
struct KeyRef<'a>(&'a Arc<str>, &'a str, &'a str, &'a str);

impl quick_cache::Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        *self.0 == key.0 && self.1 == key.1 && self.2 == key.2 && self.3 == key.3
    }
}

/// A kid that names the key itself (a prefix of the SHA-256 of its public point), so
/// restarts with the same key file publish the same kid.
fn kid_for(key: &SigningKey) -> Result<String, SignError> {
    let jwk = key.public_jwk()?;
    let material = format!(
        "{}.{}",
        jwk.get("x").and_then(Value::as_str).unwrap_or_default(),
        jwk.get("y").and_then(Value::as_str).unwrap_or_default()
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, material.as_bytes());
    Ok(digest
        .as_ref()
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_stable_for_a_key() {
        let key = SigningKey::generate_es256("x").unwrap();
        assert_eq!(kid_for(&key).unwrap(), kid_for(&key).unwrap());
        assert_eq!(kid_for(&key).unwrap().len(), 20);
    }
}
