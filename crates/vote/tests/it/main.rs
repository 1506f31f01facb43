//! The voting app's integration tests (one binary): routes and rules through
//! `app.oneshot`, PostgreSQL for real, and the `gatehouse vote` process itself.

// Test helpers outside #[test] functions panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod budget;
mod counts;
mod faults;
mod page_js;
mod postgres;
mod process;
mod routes;
mod server;
mod support;
mod up;
