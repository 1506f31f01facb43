//! An emulator of Google's identity endpoints (DESIGN §4): OpenID discovery and key
//! documents, the sign-in page and `/token`, the metadata server, service-account keys, and
//! the Identity Toolkit subset the Firebase SDKs use. Unmodified official clients work
//! against it by changing only a host.
//!
//! Protocol logic lives in plain modules that take `now` (`keys`, `oauth`, `metadata`,
//! `accounts`, `service_accounts`, `toolkit`, `signin`); `http` holds thin axum handlers and
//! [`app`] builds the router.

pub mod accounts;
pub mod config;
pub mod db;
pub mod error;
pub mod hosts;
pub mod http;
pub mod keys;
pub mod metadata;
pub mod oauth;
pub mod service_accounts;
pub mod signin;
pub mod state;
pub mod toolkit;
mod util;

pub use config::IdpConfig;
pub use error::IdpError;
pub use http::{app, metadata_app};
pub use state::IdpState;
