//! Integration tests of the gateway: real sockets, a real upstream that reports what it
//! received, tokens really signed and keys really fetched. One test binary, one module per
//! concern.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attacks;
mod decisions;
mod endpoints;
mod faults;
mod fuzz;
mod hygiene;
mod lifecycle;
mod proxying;
mod support;
mod targets;
mod upstream_edges;
