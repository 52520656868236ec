//! Permissions of the data directory (OPERATIONS.md "Secrets and files"): the directory is 0700
//! and every file the guard keeps in it (database, write-ahead log, generated master key) 0600,
//! whatever the process umask. Files are created with that mode and then set to it explicitly
//! (a umask can only remove bits, and a umask that removed the owner's write bit would leave a
//! file the guard cannot use); an existing directory or file that is looser is tightened at
//! start, and each change is logged.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::Result;

/// Mode of the data directory.
pub const DATA_DIR_MODE: u32 = 0o700;
/// Mode of every file in the data directory.
pub const DATA_FILE_MODE: u32 = 0o600;
/// Bits that make a file or directory reachable by anyone but its owner.
const OTHERS: u32 = 0o077;

/// Create `dir` with mode 0700 (its parents with the default mode), or tighten an existing one
/// and the files in it. Returns one line per change made, also logged at `warn`.
pub fn secure_data_dir(dir: &Path) -> Result<Vec<String>> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(DATA_DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    let mut changed = Vec::new();
    tighten(dir, DATA_DIR_MODE, &mut changed)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        // A symbolic link's own mode means nothing; what it points to is not ours to change.
        if kind.is_file() {
            tighten(&entry.path(), DATA_FILE_MODE, &mut changed)?;
        } else if kind.is_dir() {
            tighten(&entry.path(), DATA_DIR_MODE, &mut changed)?;
        }
    }
    for line in &changed {
        tracing::warn!(change = %line, "tightened the data directory's permissions");
    }
    Ok(changed)
}

/// Set `path` to `mode` when others can reach it or the owner lacks a bit of `mode`.
fn tighten(path: &Path, mode: u32, changed: &mut Vec<String>) -> Result<()> {
    let before = fs::metadata(path)?.permissions().mode() & 0o7777;
    if before & OTHERS != 0 || before & mode != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        changed.push(format!("{}: {before:o} -> {mode:o}", path.display()));
    }
    Ok(())
}

/// Create `path` (if missing) as an empty file with mode 0600, and make sure it has that mode;
/// called for the files the store opens before the libraries that create them do.
pub(crate) fn ensure_private_file(path: &Path) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(DATA_FILE_MODE)
        .open(path)?;
    let mode = fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode != DATA_FILE_MODE {
        fs::set_permissions(path, fs::Permissions::from_mode(DATA_FILE_MODE))?;
    }
    Ok(())
}

/// Write `bytes` to a new file `path` with mode 0600, durably (the file and its directory entry).
/// Fails if `path` exists.
pub(crate) fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DATA_FILE_MODE)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(DATA_FILE_MODE))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_parent(path)
}

/// Make a created, renamed or removed directory entry under `path`'s parent durable.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_0700_and_files_0600_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        assert!(secure_data_dir(&dir).unwrap().is_empty());
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("x");
        ensure_private_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
    }

    #[test]
    fn a_loose_directory_and_its_files_are_tightened_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let f = dir.join("guard.redb");
        fs::write(&f, b"").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let changed = secure_data_dir(&dir).unwrap();
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!((mode(&dir), mode(&f)), (0o700, 0o600));
        assert!(
            secure_data_dir(&dir).unwrap().is_empty(),
            "nothing left to change"
        );
    }
}
