//! gatehouse-client against real local HTTP servers: stand-ins for the metadata server, a
//! token endpoint, the emulator and a receiving service, each counting what it was asked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod adc;
mod cache;
mod emulator;
mod http;
mod key_file;
mod metadata;
mod support;
