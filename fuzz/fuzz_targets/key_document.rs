//! JWK sets and kid -> PEM certificate maps through `KeySet::from_document` (the check is
//! shared with the stable tests: crates/verify/tests/it/fuzz.rs).
#![no_main]
#![allow(dead_code, unused_imports)]

#[path = "../../crates/verify/tests/it/fuzz.rs"]
mod fuzz;
#[path = "../../crates/verify/tests/it/support.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::check_key_document(data));
