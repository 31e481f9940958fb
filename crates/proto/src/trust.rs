//! Whether a file may be trusted by a process running as root, the way sshd's StrictModes
//! decides: nobody but root may be able to change it or swap it for another.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Why a path is not trusted. Display gives the admin the fix.
#[derive(Debug)]
pub enum Untrusted {
    /// The path or one of its directories could not be examined.
    Io(PathBuf, io::Error),
    /// Owned by someone other than root.
    Owner(PathBuf, u32),
    /// Writable by group or other.
    Writable(PathBuf, u32),
    /// Not a regular file.
    NotAFile(PathBuf),
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Untrusted::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Untrusted::Owner(p, uid) => write!(
                f,
                "{} is owned by uid {uid}, not root: fix with chown root: {}",
                p.display(),
                p.display()
            ),
            Untrusted::Writable(p, mode) => write!(
                f,
                "{} is writable by group or other (mode {:04o}): fix with chmod go-w {}",
                p.display(),
                mode & 0o7777,
                p.display()
            ),
            Untrusted::NotAFile(p) => write!(f, "{} is not a regular file", p.display()),
        }
    }
}

/// Checks that `file` is a regular file owned by root and not writable by group or other,
/// and that every directory above it is owned by root and not writable by group or other
/// (a root-owned sticky directory such as /tmp is accepted: nobody else can rename or
/// remove what root put there).
///
/// A symlink is followed, and both the path as given and the path it resolves to are
/// checked: whoever can change either could point us elsewhere.
pub fn check_root_only(file: &Path) -> Result<(), Untrusted> {
    let given = std::path::absolute(file).map_err(|e| Untrusted::Io(file.to_path_buf(), e))?;
    let real = std::fs::canonicalize(&given).map_err(|e| Untrusted::Io(given.clone(), e))?;
    check_chain(&real)?;
    if real != given {
        check_chain(&given)?;
    }
    Ok(())
}

fn check_chain(file: &Path) -> Result<(), Untrusted> {
    let file = file.to_path_buf();
    let meta = std::fs::metadata(&file).map_err(|e| Untrusted::Io(file.clone(), e))?;
    if !meta.is_file() {
        return Err(Untrusted::NotAFile(file));
    }
    check_one(&file, &meta, false)?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        let meta = std::fs::metadata(d).map_err(|e| Untrusted::Io(d.to_path_buf(), e))?;
        check_one(d, &meta, true)?;
        dir = d.parent();
    }
    Ok(())
}

fn check_one(path: &Path, meta: &std::fs::Metadata, is_dir: bool) -> Result<(), Untrusted> {
    if meta.uid() != 0 {
        return Err(Untrusted::Owner(path.to_path_buf(), meta.uid()));
    }
    let mode = meta.mode();
    if mode & GROUP_OR_OTHER_WRITE != 0 && !(is_dir && mode & STICKY != 0) {
        return Err(Untrusted::Writable(path.to_path_buf(), mode));
    }
    Ok(())
}
