//! What a token source is, and the token it hands out.

use crate::error::Error;
use futures_util::future::BoxFuture;
use gatehouse_verify::unverified::danger_decode_unverified;
use std::fmt;
use std::sync::Arc;

/// A Google-style ID token with the expiry read from its own `exp`. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdToken {
    token: Arc<str>,
    expires_at: u64,
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdToken")
            .field("token", &"<hidden>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl IdToken {
    /// A token just minted by `service` at `url`. Its `exp` is read without verifying the
    /// signature: we asked for this token ourselves and use the claim only to know when to
    /// ask again; whoever receives it verifies it.
    pub fn from_minted(service: &'static str, url: &str, token: &str) -> Result<Self, Error> {
        let token = token.trim();
        let bad = |detail: &str| Error::BadAnswer {
            service,
            url: url.to_owned(),
            detail: detail.to_owned(),
        };
        let decoded = danger_decode_unverified(token).map_err(|_| bad("not a JWT"))?;
        let expires_at = match decoded.claims.get("exp") {
            Some(exp) => exp
                .as_u64()
                .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .ok_or_else(|| bad("the token's `exp` is not a number"))?,
            None => return Err(bad("the token has no `exp`")),
        };
        Ok(IdToken {
            token: Arc::from(token),
            expires_at,
        })
    }

    /// The compact JWT, for an `Authorization: Bearer` header. Never log it.
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// Its `exp` (seconds since the Unix epoch).
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// Something that mints ID tokens for an audience. Every call mints: caching is
/// [`crate::TokenCache`]'s job, so a source stays a plain protocol client.
pub trait IdTokenSource: Send + Sync + fmt::Debug {
    /// A fresh token whose `aud` is `audience`.
    fn mint<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<IdToken, Error>>;

    /// What this source is, for messages ("metadata server at http://...").
    fn describe(&self) -> String;
}

impl<T: IdTokenSource + ?Sized> IdTokenSource for Arc<T> {
    fn mint<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<IdToken, Error>> {
        (**self).mint(audience)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

impl<T: IdTokenSource + ?Sized> IdTokenSource for Box<T> {
    fn mint<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<IdToken, Error>> {
        (**self).mint(audience)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}
