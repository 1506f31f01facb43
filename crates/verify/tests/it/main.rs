//! The integration tests of `gatehouse-verify`: one binary, one module per concern. Every
//! test pins time by passing `now`; each one fails if the rule it names is removed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod claims;
mod fuzz;
mod header;
mod jwks_cache;
mod layer;
mod members;
mod mutations;
mod support;
mod token_cache;
mod wycheproof;
