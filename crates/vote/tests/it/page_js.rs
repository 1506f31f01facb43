//! The page's own JavaScript (`src/static/*.js`) under node's test runner
//! (`tests/js/*.test.mjs`): the rules of the sign-in module that no Rust test reaches.
//! Skipped with a note when there is no `node`, unless `GATEHOUSE_TEST_REQUIRE` names
//! `interop` (the suite that needs node elsewhere).

use std::path::Path;
use std::process::Command;

#[test]
fn page_scripts_pass_their_node_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let required = std::env::var("GATEHOUSE_TEST_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|s| s.trim() == "interop");
    let output = match Command::new("node").arg("--test").arg(&dir).output() {
        Ok(output) => output,
        Err(e) if !required => {
            eprintln!("SKIPPED page_scripts_pass_their_node_tests: no node ({e})");
            return;
        }
        Err(e) => panic!("GATEHOUSE_TEST_REQUIRE names interop, but node did not start: {e}"),
    };
    assert!(
        output.status.success(),
        "node --test {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
