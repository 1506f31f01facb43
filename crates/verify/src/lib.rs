//! Verification of Google-style OpenID Connect ID tokens (Google, Firebase, IAP, any OIDC
//! issuer): strict parsing, issuer profiles that fix keys and algorithms, a JWKS cache, a
//! verified-token cache, IAM-style members and policies, and a tower layer / axum extractor.
//!
//! The hot path reads neither the clock nor the network: callers pass `now`, and key
//! documents are fetched off to the side by [`jwks::JwksCache`].

pub mod claims;
pub mod clock;
pub mod error;
mod json;
pub mod jwks;
pub mod jws;
pub mod keys;
pub mod layer;
pub mod members;
pub mod profile;
pub mod sign;
pub mod unverified;
pub mod verifier;

pub use claims::Claims;
pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{Error, Malformed};
pub use jwks::{CacheConfig, JwksCache};
pub use keys::{Algorithm, KeyError, KeyLimits, KeySet, PublicKey};
pub use layer::{AuthRejection, Mode, RepeatedToken, VerifyLayer, bearer_token};
pub use members::{Groups, Member, Policy, RUN_INVOKER};
pub use profile::{IssuerProfile, KeySource, ProfileKind};
pub use sign::{SignError, SigningKey};
pub use verifier::{BuildError, Identity, Verifier};
