//! Token strings through every entry point of gatehouse-verify (the check is shared with
//! the stable tests: crates/verify/tests/it/fuzz.rs).
#![no_main]
#![allow(dead_code, unused_imports)]

#[path = "../../crates/verify/tests/it/fuzz.rs"]
mod fuzz;
#[path = "../../crates/verify/tests/it/support.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::check_token(data));
