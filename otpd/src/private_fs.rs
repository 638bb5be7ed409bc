//! Files only otpd's own user may read: the database (password hashes, account names), event
//! logs (addresses, account names), exports of the store, the process log. New files are made
//! mode 0600 and new folders 0700, set explicitly after creation, so the result does not depend
//! on the umask otpd was started with. docs/security.md lists which files these are.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file otpd creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every folder otpd creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents, each new one with mode 0700. Folders that exist
/// already are left as they are.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)),
        // Made by someone else meanwhile: theirs, left alone.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path` if it is missing, with mode 0600. Returns whether it was created (an
/// existing file is left as it is).
pub fn create_file_if_missing(path: &Path) -> io::Result<bool> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(f) => {
            f.set_permissions(Permissions::from_mode(FILE_MODE))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens `path` to append to it, creating it with mode 0600 if it is missing. An existing file
/// keeps its mode (an operator may have opened it to a log reader's group on purpose).
pub fn open_append(path: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(f) => {
            f.set_permissions(Permissions::from_mode(FILE_MODE))?;
            Ok(f)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path)
        }
        Err(e) => Err(e),
    }
}

/// Creates `path`, or empties it if it exists, to write it anew; a regular file ends up with
/// mode 0600 whether it was there before or not. (A device or pipe, such as /dev/stdout, is
/// written but its mode is not touched.)
pub fn create_truncate(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    restrict(&f)?;
    Ok(f)
}

/// Sets an open regular file to 0600 (nothing else: changing a terminal's or a pipe's mode
/// would be wrong).
fn restrict(f: &File) -> io::Result<()> {
    let meta = f.metadata()?;
    if meta.is_file() && meta.permissions().mode() & 0o7777 != FILE_MODE {
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// Whether users other than the owner may read or write `path` (for start-up warnings about
/// files otpd did not create itself).
pub fn open_to_others(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_files_and_folders_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_dir_all(&nested).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(d)), DIR_MODE, "{d}");
        }
        let f = nested.join("f");
        assert!(create_file_if_missing(&f).unwrap());
        assert!(!create_file_if_missing(&f).unwrap());
        assert_eq!(mode(&f), FILE_MODE);
        let g = nested.join("g");
        std::fs::write(&g, b"old").unwrap();
        std::fs::set_permissions(&g, Permissions::from_mode(0o644)).unwrap();
        drop(create_truncate(&g).unwrap());
        assert_eq!(mode(&g), FILE_MODE);
        assert_eq!(std::fs::read(&g).unwrap(), b"");
        assert_eq!(open_to_others(&g), None);
        std::fs::set_permissions(&g, Permissions::from_mode(0o640)).unwrap();
        assert_eq!(open_to_others(&g), Some(0o640));
        drop(open_append(&g).unwrap());
        assert_eq!(mode(&g), 0o640, "an existing file keeps its mode");
        let h = nested.join("h");
        drop(open_append(&h).unwrap());
        assert_eq!(mode(&h), FILE_MODE);
    }
}
