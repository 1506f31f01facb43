//! Files only their owner may read: a service-account key written by `keys create-sa-key`
//! (to `--output`, or to standard output redirected into a file), and the data directory of
//! `up` and `idp`, whose SQLite files hold the emulator's signing keys and password hashes.
//! With the usual umask (022) these would otherwise be readable by every local user.

use anyhow::Context as _;
use std::io::Write as _;
use std::path::Path;

/// Writes `contents` to `path`, readable by its owner only: into a new file beside it created
/// 0600, then renamed over `path`. Nobody ever sees a partial file, and a file already at
/// `path` is replaced whole, so its old (perhaps world-readable) mode does not carry over.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".gatehouse-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    // tempfile creates it 0600 already; said here so the mode does not rest on its default.
    #[cfg(unix)]
    restrict(file.as_file())?;
    file.write_all(contents)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Makes standard output readable by its owner only when it is a regular file, as the shell
/// makes it for `> key.json`; a terminal or a pipe is left alone. Says whether it did.
#[cfg(unix)]
pub fn restrict_stdout_if_file() -> std::io::Result<bool> {
    use std::os::fd::AsFd as _;
    // A duplicate of the descriptor, as a `File`, for fstat and fchmod on what stdout is.
    let file = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    if !file.metadata()?.is_file() {
        return Ok(false);
    }
    restrict(&file)?;
    Ok(true)
}

#[cfg(unix)]
fn restrict(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

/// Prepares the data directory `dir` for the SQLite databases `files`: the directory, when
/// this call creates it, is made 0700 (an existing one is the user's and keeps its mode), and
/// each database not there yet is created empty with 0600, a mode SQLite keeps and gives the
/// database's `-wal` and `-shm` files too. An existing database others can read is reported.
pub fn prepare_data_dir(dir: &Path, files: &[&str]) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    for name in files {
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => warn_if_shared(&path),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", path.display()));
            }
        }
    }
    Ok(())
}

/// A database from an earlier run (or an older gatehouse) may be readable by others; it is
/// the user's file, so say so rather than change it.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the database can be read by other users (it holds signing keys); `chmod 600` it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    // Helpers return errors for the tests to unwrap (clippy allows that only in tests).
    fn mode(path: &Path) -> std::io::Result<u32> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
    }

    fn scratch(name: &str) -> std::io::Result<std::path::PathBuf> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-private-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    #[test]
    fn a_written_key_is_the_owners_alone_even_over_a_readable_file() {
        let dir = scratch("write").unwrap();
        let path = dir.join("key.json");
        write_private(&path, b"{\"private_key\": \"1\"}\n").unwrap();
        assert_eq!(mode(&path).unwrap(), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"private_key\": \"1\"}\n");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"second").unwrap();
        assert_eq!(mode(&path).unwrap(), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["key.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_data_directory_and_its_databases_are_private_an_existing_directory_is_left_alone() {
        let root = scratch("data").unwrap();
        let data = root.join("nested").join(".gatehouse");
        prepare_data_dir(&data, &["idp.db", "vote.sqlite3"]).unwrap();
        assert_eq!(mode(&data).unwrap(), 0o700);
        assert_eq!(mode(&data.join("idp.db")).unwrap(), 0o600);
        assert_eq!(mode(&data.join("vote.sqlite3")).unwrap(), 0o600);
        // A second run keeps what is there.
        std::fs::write(data.join("idp.db"), b"data").unwrap();
        prepare_data_dir(&data, &["idp.db"]).unwrap();
        assert_eq!(std::fs::read(data.join("idp.db")).unwrap(), b"data");

        let own = root.join("mine");
        std::fs::create_dir(&own).unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_data_dir(&own, &["idp.db"]).unwrap();
        assert_eq!(
            mode(&own).unwrap(),
            0o755,
            "a user's existing directory keeps its mode"
        );
        assert_eq!(mode(&own.join("idp.db")).unwrap(), 0o600);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
