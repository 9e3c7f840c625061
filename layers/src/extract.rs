//! Writes a scanned, clean archive into an empty directory. Directories first, then files on
//! every core (largest first, each worker with its own reader), then symlinks last, so that no
//! entry can ever be written through a link. Sizes are counted on the real bytes as they stream:
//! a header that lies about its size cannot fill the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::limits::Limits;
use crate::problem::{Problem, Problems};
use crate::scan::{EntryKind, Scan};

/// Why extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The archive's content broke a rule its headers hid (corruption, lying sizes).
    #[error(transparent)]
    Problems(#[from] Problems),
    /// Writing the tree failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Extracts `scan` into `dest` (which must exist and be empty). `progress` is called with
/// (bytes written, bytes declared) as files complete. Files become 0o555 or 0o444: extracted
/// trees are shared by hard links and must not be edited in place.
pub fn extract(
    scan: &Scan,
    dest: &Path,
    limits: &Limits,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(), ExtractError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ExtractError::Write { path, source }
    };
    for entry in &scan.entries {
        let dir = match entry.kind {
            EntryKind::Dir => Some(entry.path.as_path()),
            _ => entry.path.parent(),
        };
        if let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty()) {
            let target = dest.join(dir);
            fs::create_dir_all(&target).map_err(write_err(&target))?;
        }
    }
    let mut files: Vec<(usize, &PathBuf, bool, u64)> = scan
        .entries
        .iter()
        .filter_map(|e| match e.kind {
            EntryKind::File { executable, size } => Some((e.index, &e.path, executable, size)),
            _ => None,
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.3));
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
        .min(files.len().max(1));
    let shared = Shared {
        next: AtomicUsize::new(0),
        written: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        failure: Mutex::new(None),
    };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| worker(scan, dest, limits, &files, &shared, progress));
        }
    });
    if let Some(failure) = shared
        .failure
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        return Err(failure);
    }
    for entry in &scan.entries {
        if let EntryKind::Symlink { target } = &entry.kind {
            let link = dest.join(&entry.path);
            std::os::unix::fs::symlink(target, &link).map_err(write_err(&link))?;
        }
    }
    Ok(())
}

struct Shared {
    next: AtomicUsize,
    written: AtomicU64,
    stop: AtomicBool,
    failure: Mutex<Option<ExtractError>>,
}

impl Shared {
    fn fail(&self, error: ExtractError) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(error);
    }
}

fn worker(
    scan: &Scan,
    dest: &Path,
    limits: &Limits,
    files: &[(usize, &PathBuf, bool, u64)],
    shared: &Shared,
    progress: &(dyn Fn(u64, u64) + Sync),
) {
    let problem = |entry: &Path, reason: String| {
        ExtractError::Problems(Problems(vec![Problem {
            archive: scan.archive.clone(),
            entry: Some(entry.display().to_string()),
            reason,
        }]))
    };
    let mut zip = match File::open(&scan.archive)
        .map_err(zip::result::ZipError::Io)
        .and_then(zip::ZipArchive::new)
    {
        Ok(zip) => zip,
        Err(e) => {
            let whole = Problem {
                archive: scan.archive.clone(),
                entry: None,
                reason: format!("cannot reopen: {e}"),
            };
            return shared.fail(ExtractError::Problems(Problems(vec![whole])));
        }
    };
    let mut buf = vec![0u8; 256 * 1024];
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(&(index, path, executable, declared)) =
            files.get(shared.next.fetch_add(1, Ordering::Relaxed))
        else {
            return;
        };
        let target = dest.join(path);
        let mut entry = match zip.by_index(index) {
            Ok(entry) => entry,
            Err(e) => return shared.fail(problem(path, format!("corrupt: {e}"))),
        };
        let mode = if executable { 0o755 } else { 0o644 };
        let mut out = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&target)
        {
            Ok(out) => out,
            Err(source) => {
                return shared.fail(ExtractError::Write {
                    path: target,
                    source,
                });
            }
        };
        let mut this_entry: u64 = 0;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return shared.fail(problem(path, format!("corrupt data: {e}"))),
            };
            this_entry += n as u64;
            if this_entry > declared {
                return shared.fail(problem(
                    path,
                    format!("holds more data than the {declared} bytes its header declares"),
                ));
            }
            let total = shared.written.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            if total > limits.max_unzipped_bytes {
                return shared.fail(problem(
                    path,
                    format!(
                        "unzipped size passes the limit of {} bytes here",
                        limits.max_unzipped_bytes
                    ),
                ));
            }
            if let Err(source) = out.write_all(&buf[..n]) {
                return shared.fail(ExtractError::Write {
                    path: target,
                    source,
                });
            }
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
        }
        if this_entry != declared {
            return shared.fail(problem(
                path,
                format!("holds {this_entry} bytes, not the {declared} its header declares"),
            ));
        }
        let read_only = if executable { 0o555 } else { 0o444 };
        if let Err(source) = fs::set_permissions(&target, fs::Permissions::from_mode(read_only)) {
            return shared.fail(ExtractError::Write {
                path: target,
                source,
            });
        }
        progress(shared.written.load(Ordering::Relaxed), scan.total_bytes);
    }
}
