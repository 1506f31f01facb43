//! Verification of Google-style OpenID Connect ID tokens (Google, Firebase, IAP, any OIDC
//! issuer): strict parsing, issuer profiles that fix keys and algorithms, a JWKS cache, a
//! verified-token cache, IAM-style members and policies, and a tower layer / axum extractor.
//!
//! The hot path reads neither the clock nor the network: callers pass `now`, and key
//! documents are fetched off to the side by [`jwks::JwksCache`].

pub mod error;
mod json;
pub mod jws;
pub mod keys;
pub mod sign;

pub use error::{Error, Malformed};
pub use keys::{Algorithm, KeyError, KeyLimits, KeySet, PublicKey};
pub use sign::{SignError, SigningKey};
