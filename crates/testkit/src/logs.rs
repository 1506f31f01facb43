//! Where tests put what their processes log: `${CARGO_TARGET_DIR:-target}/test-logs/`, one
//! file per process, kept after the run so that the `secrets` suite of `scripts/test` can
//! read every log a run wrote and fail on any token, key or password in it.
//!
//! Std only, so that test crates without this crate as a dev-dependency can compile the
//! file in with `#[path]`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

/// A password planted where the tests configure database credentials, so that the
/// secrets check has a real secret to look for. `scripts/check-secrets` greps for it.
pub const PLANTED_DB_PASSWORD: &str = "gh-planted-db-pw-5f0c2e9a71";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The directory of test logs, created if needed: `GATEHOUSE_TEST_LOGS` (scripts/test sets
/// it), else `test-logs` under `CARGO_TARGET_DIR` or the target directory the running test
/// binary was built in.
pub fn log_dir() -> PathBuf {
    let dir = std::env::var_os("GATEHOUSE_TEST_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("test-logs"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return dir;
        }
        // Relative to the workspace root, where cargo was run.
        return workspace_root().join(dir);
    }
    // Test binaries live in <target>/<profile>/deps; cargo marks <target> with CACHEDIR.TAG.
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A new, empty log file for one process: `<name>-<pid>-<n>.log`.
pub fn log_file(name: &str) -> (PathBuf, File) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = log_dir().join(format!("{safe}-{}-{n}.log", std::process::id()));
    match File::create(&path) {
        Ok(file) => (path, file),
        Err(e) => panic!("cannot create the test log {}: {e}", path.display()),
    }
}

/// A log file and the `Stdio` that writes to it, for a child's stdout or stderr.
pub fn log_stdio(name: &str) -> (PathBuf, Stdio) {
    let (path, file) = log_file(name);
    (path, Stdio::from(file))
}

/// Stdout and stderr of a child into one log file (appended in write order).
pub fn log_both(name: &str) -> (PathBuf, Stdio, Stdio) {
    let (path, file) = log_file(name);
    match file.try_clone() {
        Ok(copy) => (path, Stdio::from(file), Stdio::from(copy)),
        Err(e) => panic!("cannot share the test log {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_land_under_the_target_directory() {
        let (path, _file) = log_file("unit test/name");
        assert!(path.is_file());
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("unit_test_name-"), "{name}");
        assert_eq!(path.parent().unwrap().file_name().unwrap(), "test-logs");
        std::fs::remove_file(path).unwrap();
    }
}
