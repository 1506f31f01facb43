//! Google-style ID tokens for service-to-service calls, as Cloud Run's callers get them:
//! from the metadata server, by exchanging a service account's self-signed JWT, or (in
//! development) from the emulator for a test user — cached per audience, refreshed ahead of
//! expiry, and attached to outgoing requests by [`AuthorizedClient`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{AdcOptions, AuthorizedClient, Env, TokenCache};
//! let source = gatehouse_client::application_default(&Env::process(), &AdcOptions::default()).await?;
//! let client = AuthorizedClient::new(TokenCache::new(source))?;
//! let answer = client.get("https://receiver-xyz.a.run.app/hello").send().await?;
//! # let _ = answer; Ok(()) }
//! ```

mod adc;
mod cache;
mod emulator;
mod env;
mod error;
mod http;
mod key_file;
mod metadata;
mod source;
mod transport;

pub use adc::{AdcOptions, application_default};
pub use cache::{MAX_AUDIENCES, REFRESH_BEFORE_EXPIRY_SECS, TokenCache};
pub use emulator::{EMULATOR_USER_TOKEN_PATH, EmulatorUser};
pub use env::Env;
pub use error::{Error, KeyFileError, OAuthError};
pub use http::{AuthorizedClient, AuthorizedRequest, audience_for_url};
pub use key_file::{
    AssertionClaims, GOOGLE_TOKEN_AUDIENCE, JWT_BEARER_GRANT_TYPE, KeyFileSource, ServiceAccountKey,
};
pub use metadata::{DEFAULT_METADATA_HOST, DEFAULT_METADATA_IP, MetadataServer};
/// The HTTP method type [`AuthorizedClient::request`] takes.
pub use reqwest::Method;
pub use source::{IdToken, IdTokenSource};
pub use transport::{default_http_client, direct_http_client, is_bidi_control};
