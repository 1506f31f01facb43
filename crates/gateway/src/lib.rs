//! The identity-aware gateway (`gatehouse proxy`): Cloud Run's invoker check and IAP's
//! signed identity in front of any HTTP service (DESIGN §5).
//!
//! - [`config`]: the TOML file and the flags-only form, checked with line numbers;
//! - [`routes`]: the compiled routing table (one verifier per route), swapped whole on reload;
//! - [`stack`]: the request path, built in one function
//!   (strip identity headers -> extract token -> verify -> authorize -> set identity -> proxy);
//! - [`proxy`]: streaming forwarding to the upstream, WebSocket upgrades;
//! - `pool`: a worker's plain HTTP/1.1 upstream connections;
//! - `exchange`: one HTTP/1.1 exchange on such a connection (request out, answer framed in);
//! - `h2c`: a worker's HTTP/2 (prior knowledge) upstream connections, one per origin;
//! - [`assertion`]: IAP-shaped ES256 assertions, cached per identity and route;
//! - [`server`]: listeners, TLS, limits, graceful shutdown and reload;
//! - `http1`: the plain HTTP/1.1 request served without hyper, everything else handed to it.

pub mod assertion;
pub mod config;
mod cors;
mod endpoints;
mod exchange;
mod h2c;
mod headers;
mod http1;
mod idle;
pub mod metrics;
mod paths;
mod pool;
mod proxy;
mod ratelimit;
pub mod routes;
pub mod server;
mod stack;

pub use config::{Config, ConfigError, Flags};
pub use server::{Gateway, Handle, ServeError};

/// The gateway's own endpoints live under this prefix, as IAP's under `/_gcp_iap/`.
pub const OWN_PREFIX: &str = "/_gatehouse/";
