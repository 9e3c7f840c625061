//! Extraction of one ZIP archive into an empty directory, refusing anything that could write
//! outside it or smuggle in something other than plain files and directories.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Limits applied while extracting; the defaults follow Lambda's quotas.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes written for all entries (Lambda: 250 MB for function and layers unzipped).
    pub max_unzipped_bytes: u64,
    /// Number of entries in one archive.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_unzipped_bytes: 250 * 1024 * 1024,
            max_entries: 100_000,
        }
    }
}

/// Why an archive could not be extracted. Every variant names the archive, and the entry where
/// there is one.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The archive could not be opened or is not a valid ZIP.
    #[error("{archive}: not a readable zip archive: {source}")]
    Open {
        /// The archive.
        archive: PathBuf,
        /// What the zip reader said.
        source: zip::result::ZipError,
    },
    /// One entry is refused.
    #[error("{archive}: entry {entry:?}: {reason}")]
    Entry {
        /// The archive.
        archive: PathBuf,
        /// The entry's name as stored.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A size or count limit was passed.
    #[error("{archive}: {what}")]
    Limit {
        /// The archive.
        archive: PathBuf,
        /// Which limit, with the numbers.
        what: String,
    },
    /// Writing the extracted tree failed.
    #[error("{archive}: writing {path}: {source}")]
    Write {
        /// The archive.
        archive: PathBuf,
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Extracts `archive` into `dest`, which must exist and be empty. On error `dest` may hold a
/// partial tree: callers extract into a temporary directory and drop it on failure.
pub fn extract_zip(archive: &Path, dest: &Path, limits: Limits) -> Result<(), ExtractError> {
    let open_err = |source| ExtractError::Open {
        archive: archive.to_owned(),
        source,
    };
    let file = File::open(archive).map_err(|e| open_err(zip::result::ZipError::Io(e)))?;
    let mut zip = zip::ZipArchive::new(file).map_err(open_err)?;
    if zip.len() > limits.max_entries {
        return Err(ExtractError::Limit {
            archive: archive.to_owned(),
            what: format!(
                "{} entries, more than the limit of {}",
                zip.len(),
                limits.max_entries
            ),
        });
    }
    let mut written: u64 = 0;
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(open_err)?;
        let raw_name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let utf8_name = entry.name().map(|n| n.into_owned());
        let name = raw_name.clone();
        let refuse = |reason: &str| ExtractError::Entry {
            archive: archive.to_owned(),
            entry: name.clone(),
            reason: reason.to_owned(),
        };
        let Ok(utf8_name) = utf8_name else {
            return Err(refuse("name is not valid UTF-8"));
        };
        let relative = safe_relative_path(&utf8_name).map_err(refuse)?;
        let mode = entry.unix_mode();
        let kind = mode.map(|m| m & 0o170000);
        if entry.is_symlink() || kind == Some(0o120000) {
            return Err(refuse(
                "symbolic links are not supported in function packages yet",
            ));
        }
        let target = dest.join(&relative);
        let write_err = |source| ExtractError::Write {
            archive: archive.to_owned(),
            path: target.clone(),
            source,
        };
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(write_err)?;
            continue;
        }
        if kind.is_some_and(|k| k != 0o100000 && k != 0) {
            return Err(refuse("not a regular file (device, FIFO or socket)"));
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(write_err)?;
        }
        // Keep only the executable bits a runtime needs; setuid, setgid and sticky bits and
        // group/world write never survive extraction. Archives made on Windows carry no mode:
        // there a file named `bootstrap` must still be executable, as on Lambda.
        let executable = match mode {
            Some(m) => m & 0o111 != 0,
            None => relative.file_name().is_some_and(|f| f == "bootstrap"),
        };
        let perm = if executable { 0o755 } else { 0o644 };
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perm)
            .open(&target)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    refuse("duplicate entry")
                } else {
                    write_err(e)
                }
            })?;
        // Count real bytes, not the declared size: a lying header must not fill the disk.
        let budget = limits.max_unzipped_bytes - written;
        let copied = copy_limited(&mut entry, &mut out, budget).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                ExtractError::Limit {
                    archive: archive.to_owned(),
                    what: format!(
                        "unzipped size passes the limit of {} bytes (at entry {name:?})",
                        limits.max_unzipped_bytes
                    ),
                }
            } else {
                write_err(e)
            }
        })?;
        written += copied;
        fs::set_permissions(&target, fs::Permissions::from_mode(perm)).map_err(write_err)?;
    }
    Ok(())
}

fn copy_limited(from: &mut impl Read, to: &mut impl Write, budget: u64) -> io::Result<u64> {
    let mut limited = from.take(budget + 1);
    let copied = io::copy(&mut limited, to)?;
    if copied > budget {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "size limit"));
    }
    Ok(copied)
}

/// Turns an entry name into a relative path made only of normal components, or says why not.
fn safe_relative_path(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') {
        return Err("name contains a NUL byte");
    }
    if name.contains('\\') {
        return Err("name contains a backslash");
    }
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("name contains a `..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("name is an absolute path"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("name is empty");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_names_pass_and_hostile_ones_are_refused() {
        assert_eq!(
            safe_relative_path("a/./b/c.txt").unwrap(),
            PathBuf::from("a/b/c.txt")
        );
        assert_eq!(safe_relative_path("bin/").unwrap(), PathBuf::from("bin"));
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/../b",
            "a\0b",
            "..\\x",
            "",
            "./",
        ] {
            assert!(safe_relative_path(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
