//! Request heads chosen by the input, over a real socket through an in-process gateway to
//! recording upstreams (the harness and its invariants are shared with the stable tests:
//! crates/gateway/tests/it/fuzz.rs). Coverage is the gateway's, as it runs in this process.
#![no_main]
#![allow(dead_code, unused_imports)]

#[path = "../../crates/gateway/tests/it/fuzz.rs"]
mod fuzz;
#[path = "../../crates/gateway/tests/it/support.rs"]
mod support;

use std::sync::{LazyLock, Mutex};

static HARNESS: LazyLock<Mutex<fuzz::Harness>> =
    LazyLock::new(|| Mutex::new(fuzz::Harness::start()));

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut harness = HARNESS.lock().unwrap();
    harness.check(data);
    if harness.stats.cases % 64 == 0 {
        harness.assert_serving();
    }
});
