//! IAP-shaped assertions (`X-Goog-Iap-Jwt-Assertion`): ES256 JWTs saying who the gateway
//! admitted, so IAP-style backends work unchanged. One ES256 signature per identity and
//! route per lifetime, not per request: assertions are cached until shortly before expiry.

use gatehouse_verify::sign::{SignError, SigningKey};
use gatehouse_verify::verifier::Identity;
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

type CacheKey = (Arc<str>, String, String);

/// Signs and caches assertions; publishes its public key as a JWK set.
pub struct AssertionSigner {
    key: SigningKey,
    issuer: String,
    lifetime: u64,
    cache: quick_cache::sync::Cache<CacheKey, (Arc<str>, u64)>,
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

    /// The assertion for `identity` on the route whose assertion audience is `audience`,
    /// from the cache while it has more than a minute left.
    pub fn assertion(
        &self,
        audience: &Arc<str>,
        identity: &Identity,
        now: u64,
    ) -> Result<Arc<str>, SignError> {
        let email = identity.email().unwrap_or_default();
        let key: CacheKey = (
            audience.clone(),
            identity.subject().to_owned(),
            email.to_owned(),
        );
        if let Some((token, exp)) = self.cache.get(&key) {
            if now.saturating_add(REISSUE_MARGIN) < exp {
                return Ok(token);
            }
        }
        let exp = now + self.lifetime;
        let mut claims = json!({
            "iss": self.issuer,
            "aud": &**audience,
            "sub": identity.subject(),
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
        let token: Arc<str> = self.key.sign_jwt(&claims)?.into();
        self.cache.insert(key, (token.clone(), exp));
        Ok(token)
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
